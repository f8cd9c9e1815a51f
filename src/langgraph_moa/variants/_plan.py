"""What each variant does: a layer's fan-out, the join, the next step and the final step.

Every variant runs on the same graph; a `Plan` is the only place that tells them apart.
Adding a variant (or a final step: synthesize, rank, select) means adding a `Plan` subclass
here and naming it in `PLANS`.
"""

from __future__ import annotations

import random
from typing import ClassVar

from langchain_core.messages import AIMessage, BaseMessage
from langgraph.graph import END
from langgraph.types import Send

from langgraph_moa.config._schema import MoAConfig
from langgraph_moa.run import _clock as clock
from langgraph_moa.run._options import run_options
from langgraph_moa.run._references import candidates, priority, with_references
from langgraph_moa.run.state import MoAState, ProposerTask
from langgraph_moa.text._selection import select

PREPARE = "prepare"
PROPOSE = "propose"
SYNTHESIZE = "synthesize"
AGGREGATE = "aggregate"
RANK = "rank"
SELECT = "select"

Route = list[Send] | str
"""A router's answer: the next layer's calls, or the name of the next node."""


class Plan:
    """Layered MoA (moa, single-proposer, self-moa): layers of proposers, then an aggregator."""

    final_node: ClassVar[str] = AGGREGATE

    def __init__(self, cfg: MoAConfig) -> None:
        self.cfg = cfg

    # --- fan-out -------------------------------------------------------------------------

    def first(self, state: MoAState) -> list[Send]:
        """Fan out layer 1."""
        return self.sends(state, layer=1)

    def sends(
        self, state: MoAState, *, layer: int, rounds: list[range] | None = None
    ) -> list[Send]:
        """Fan out one layer; `rounds` limits which samples each proposer draws now."""
        conversation: list[BaseMessage] = list(state["messages"])
        layer_input = (
            with_references(self.cfg, conversation, state, self.cfg.proposers)[0]
            if layer > 1
            else conversation
        )
        started = clock.now()
        return [
            self._send(state, layer, i, s, list(layer_input), started)
            for i, proposer in enumerate(self.cfg.proposers)
            for s in (rounds[i] if rounds is not None else range(proposer.samples))
        ]

    @staticmethod
    def _send(
        state: MoAState,
        layer: int,
        proposer: int,
        sample: int,
        messages: list[BaseMessage],
        started: float,
    ) -> Send:
        task = ProposerTask(
            layer=layer,
            proposer=proposer,
            sample=sample,
            messages=messages,
            run_token=state["run_token"],
            layer_started_at=started,
        )
        if options := run_options(state):
            task["options"] = options
        return Send(PROPOSE, task)

    # --- join ----------------------------------------------------------------------------

    def joined_layer(self, state: MoAState) -> int:
        """Return the layer a join closes."""
        return state.get("layer", 0) + 1

    def references(self, state: MoAState, layer: int, outputs: list[str]) -> list[str]:
        """Order a layer's successful outputs as the next input's references."""
        if self.cfg.reference_order == "shuffled":
            outputs = list(outputs)
            random.Random(f"{self.cfg.shuffle_seed}:{layer}").shuffle(outputs)
        return outputs

    def can_go_on_without_proposals(self, state: MoAState) -> bool:
        """Tell whether a layer whose every proposal failed still has something to pass on."""
        return False

    # --- budget --------------------------------------------------------------------------

    def tokens_used(self, state: MoAState) -> int:
        """Return the tokens this run's calls used (answers from the call cache cost none)."""
        return sum(c["total_tokens"] for c in state.get("calls", []) if not c["cached"])

    def budget_spent(self, state: MoAState) -> bool:
        """Tell whether the run reached `budget.max_tokens`: then no new call starts."""
        limit = self.cfg.budget.max_tokens
        return limit is not None and self.tokens_used(state) >= limit

    # --- next step -----------------------------------------------------------------------

    def after_layer(self, state: MoAState) -> Route:
        """Next proposer layer, or the final step (at once when the budget is spent)."""
        if state["layer"] >= self.cfg.proposer_layers or self.budget_spent(state):
            return self.final_node
        return self.sends(state, layer=state["layer"] + 1)

    def after_final(self, state: MoAState) -> Route:
        """After the aggregator: the run is done."""
        return END

    # --- final step ----------------------------------------------------------------------

    def final_position(self, state: MoAState) -> tuple[int, bool]:
        """Return the layer of the final-step call, and whether it writes the answer."""
        return self.cfg.proposer_layers + 1, True

    def skip_final(self, state: MoAState) -> bool:
        """Tell whether an intermediate aggregation has nothing new to read."""
        return False


class RankerPlan(Plan):
    """The LLM-Ranker baseline: an LLM picks the best proposal, returned verbatim."""

    final_node = RANK


class SeqPlan(Plan):
    """Self-MoA-Seq: windows of fresh samples, each aggregated with the running synthesis."""

    def sends(
        self, state: MoAState, *, layer: int, rounds: list[range] | None = None
    ) -> list[Send]:
        """Draw one window's samples, each of the bare conversation."""
        conversation: list[BaseMessage] = list(state["messages"])
        batch = self.cfg.seq.batches(self.cfg.proposers[0].samples)[layer - 1]
        started = clock.now()
        return [self._send(state, layer, 0, s, conversation, started) for s in batch]

    def references(self, state: MoAState, layer: int, outputs: list[str]) -> list[str]:
        """Put the running synthesis first, as reference 1."""
        outputs = super().references(state, layer, outputs)
        synthesis = state.get("synthesis")
        return [synthesis, *outputs] if synthesis else outputs

    def can_go_on_without_proposals(self, state: MoAState) -> bool:
        """Go on after a window whose samples all failed: the running synthesis remains."""
        return bool(state.get("synthesis"))

    def after_layer(self, state: MoAState) -> Route:
        """Every window is aggregated at once."""
        return self.final_node

    def after_final(self, state: MoAState) -> Route:
        """Draw the next window's samples, unless this was the last window."""
        layer = state["layer"]
        mine = [c for c in state["calls"] if c["role"] == "aggregator" and c["layer"] == layer]
        if mine and mine[-1]["status"] != "ok":
            return END  # a fallback aggregator is on its way (Command), or the run ended
        if layer >= self._windows():
            return END
        if self.budget_spent(state):
            # The aggregator answers with the synthesis so far, without a call; then the end.
            return END if isinstance(state["messages"][-1], AIMessage) else AGGREGATE
        return self.sends(state, layer=layer + 1)

    def final_position(self, state: MoAState) -> tuple[int, bool]:
        """Each window is its own step; only the last one writes the answer."""
        return state["layer"], state["layer"] >= self._windows()

    def skip_final(self, state: MoAState) -> bool:
        """Skip a window whose samples all failed: the synthesis stays as it was."""
        return state["references"] == [state.get("synthesis")]

    def _windows(self) -> int:
        return len(self.cfg.seq.batches(self.cfg.proposers[0].samples))


class SelectPlan(Plan):
    """Selection: no aggregator call; adaptive rounds of samples until the answers agree."""

    final_node = SELECT

    def first(self, state: MoAState) -> list[Send]:
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


PLANS: dict[str, type[Plan]] = {
    "moa": Plan,
    "single-proposer": Plan,
    "self-moa": Plan,
    "self-moa-seq": SeqPlan,
    "ranker": RankerPlan,
    "select": SelectPlan,
}


def plan_for(cfg: MoAConfig) -> Plan:
    """Return the plan of the config's variant."""
    return PLANS[cfg.variant](cfg)
