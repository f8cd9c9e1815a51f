"""Self-MoA-Seq: a long stream of samples aggregated through a sliding window.

Each window's fresh samples are aggregated together with the running synthesis, which is
carried forward as reference 1 (arXiv 2502.00674, section 6).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_core.messages import AIMessage, BaseMessage
from langgraph.graph import END
from langgraph.types import Send

from langgraph_moa.run import _clock as clock
from langgraph_moa.variants._base import AGGREGATE, Route
from langgraph_moa.variants.layered import SelfMoA

if TYPE_CHECKING:
    from langgraph_moa.config._schema import MoAConfig
    from langgraph_moa.run.state import MoAState


class SelfMoASeq(SelfMoA):
    """Self-MoA-Seq: windows of fresh samples, each aggregated with the running synthesis."""

    name = "self-moa-seq"
    description = (
        "samples drawn window by window; each step aggregates the running synthesis plus the "
        "next samples"
    )
    aggregator_temperature = 0.0
    step_name = "window"
    chunkable = False

    @classmethod
    def check(cls, cfg: MoAConfig) -> None:
        """Check that an aggregator is set; a window has no quorum to check."""
        if cfg.aggregator is None:  # pragma: no cover - derive always sets it
            raise ValueError(f"variant {cls.name!r} needs an aggregator")

    @classmethod
    def proposals_per_layer(cls, cfg: MoAConfig) -> int | None:
        """Return None: a window's sample count varies (the first holds one more)."""
        return None

    @classmethod
    def calls_per_run(cls, cfg: MoAConfig) -> int:
        """Every sample, plus one aggregation per window."""
        samples = cfg.proposers[0].samples
        return samples + len(cfg.seq.batches(samples))

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
        synthesis = state.get("running_synthesis")
        return [synthesis, *outputs] if synthesis else outputs

    def can_go_on_without_proposals(self, state: MoAState) -> bool:
        """Go on after a window whose samples all failed: the running synthesis remains."""
        return bool(state.get("running_synthesis"))

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
        return state["references"] == [state.get("running_synthesis")]

    def _windows(self) -> int:
        return len(self.cfg.seq.batches(self.cfg.proposers[0].samples))
