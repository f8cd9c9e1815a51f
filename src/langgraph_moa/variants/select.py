"""Selection: no aggregator call; the answer is picked among the proposals.

Picked by vote, confidence, consensus or SLM-MUX (`SelectionConfig`), optionally sampling in
rounds until the answers agree (adaptive consistency).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from langgraph.types import Send

from langgraph_moa.run._references import candidates, priority
from langgraph_moa.text._selection import select
from langgraph_moa.variants._base import SELECT, Plan, Route

if TYPE_CHECKING:
    from langgraph_moa.config._schema import MoAConfig
    from langgraph_moa.run.state import MoAState


class Select(Plan):
    """Selection: no aggregator call; adaptive rounds of samples until the answers agree."""

    name = "select"
    description = (
        "one proposer layer, then a proposal is picked by rule (`selection`): no aggregator call"
    )
    final_node = SELECT
    final_role = "selector"
    fixed_layers = True
    chunkable = False
    derived_fields: ClassVar[tuple[str, ...]] = ("layers", "aggregator")

    @classmethod
    def derive(cls, cfg: MoAConfig) -> dict[str, Any]:
        """One proposer layer, then the selection (a majority vote unless configured)."""
        cls._refuse_greedy_samples(cfg)
        if cfg.layers not in (None, 2):
            raise ValueError(
                "variant 'select' has one proposer layer and then the selection: remove "
                "`layers` (or set it to 2)"
            )
        if cfg.aggregator is not None:
            raise ValueError(
                "variant 'select' makes no aggregator call: remove `aggregator` (or choose a "
                "synthesizing variant such as 'moa' or 'self-moa')"
            )
        derived: dict[str, Any] = {"layers": 2}
        if cfg.selection is None:
            derived["selection"] = {}
        return derived

    @classmethod
    def check(cls, cfg: MoAConfig) -> None:
        """Adaptive early stop needs two proposals to compare in its first round."""
        assert cfg.selection is not None  # set by derive
        if cfg.selection.stop_agreement is not None and sum(cfg.first_round()) < 2:
            raise ValueError(
                "adaptive early stop needs at least 2 proposals in its first round: raise "
                "selection.round_size or add proposers"
            )
        if cfg.min_proposers > sum(p.samples for p in cfg.proposers):
            raise ValueError("min_proposers cannot exceed the proposals of the layer")

    @classmethod
    def is_adaptive(cls, cfg: MoAConfig) -> bool:
        """Draw samples in rounds when the selection sets an agreement to stop at."""
        return cfg.selection is not None and cfg.selection.stop_agreement is not None

    def first(self, state: MoAState) -> Route:
        """Fan out the first sampling round."""
        return self.sends(state, layer=1, rounds=[range(n) for n in self.cfg.first_round()])

    def joined_layer(self, state: MoAState) -> int:
        """Return 1: a sampling round adds samples to layer 1; it is no new layer."""
        return 1

    def after_layer(self, state: MoAState) -> Route:
        """Another sampling round, unless the answers agree or samples ran out; then select."""
        return self._next_round(state) or SELECT

    def _next_round(self, state: MoAState) -> list[Send]:
        cfg = self.cfg
        if not cfg.adaptive:
            return []
        assert cfg.selection is not None and cfg.selection.stop_agreement is not None
        if self.budget_spent(state):
            return []
        drawn = state.get("drawn") or [0] * len(cfg.proposers)
        left = [p.samples - n for p, n in zip(cfg.proposers, drawn, strict=True)]
        found = candidates(state)
        if not any(left) or (
            len(found) >= 2
            and select(found, cfg.selection, priority(cfg)).agreement
            >= cfg.selection.stop_agreement
        ):
            return []
        step = cfg.selection.round_size
        rounds = [range(n, n + min(step, room)) for n, room in zip(drawn, left, strict=True)]
        return self.sends(state, layer=1, rounds=rounds)
