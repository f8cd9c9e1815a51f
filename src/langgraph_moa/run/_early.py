"""Early aggregation: a proposer layer goes on once its quorum has answered.

A proposal of a layer that feeds the final step (or of every layer, with
``aggregation.every_layer``) watches its step's answers while it runs (`QuorumStart`); once
`aggregation.quorum` proposals answered, the ones still running are cancelled like layer
stragglers (`StragglerCancelledError`: their HTTP request is closed, their record says
``cancelled``), the join runs and the final step starts. The answer's provenance names what
was dropped (`early_start_provenance`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langgraph_moa.run._calls import QUORUM_POLL_S, StopCheck
from langgraph_moa.run.state import CallRecord

if TYPE_CHECKING:
    from langgraph_moa.config._schema import MoAConfig
    from langgraph_moa.run._clock import Held

EARLY_REASON = "the next step started early"
"""The start of a cancelled straggler's reason, which provenance looks for."""


@dataclass(frozen=True)
class QuorumStart:
    """A proposal's watch: stop once the layer's quorum answered, or at its layer deadline."""

    quorum: int
    answers: Callable[[], int]
    deadline: StopCheck | None = None

    @property
    def held(self) -> Held | None:
        return self.deadline.held if self.deadline is not None else None

    def __call__(self) -> str | None:
        count = self.answers()
        if count >= self.quorum:
            return (
                f"{EARLY_REASON}: {count} proposals had answered (aggregation quorum {self.quorum})"
            )
        return self.deadline() if self.deadline is not None else None

    def wait_s(self) -> float:
        if self.deadline is None:
            return QUORUM_POLL_S
        return min(QUORUM_POLL_S, self.deadline.wait_s())


def early_watch(
    cfg: MoAConfig, feeds_final: bool, answers: Callable[[], int], deadline: StopCheck | None
) -> StopCheck | None:
    """Return the watch of a proposal in a layer that may start the next step early.

    `deadline` (the layer deadline's own watch, or None) is returned as is where the quorum
    does not apply: aggregation starts after every proposal, or this layer does not feed the
    final step and the quorum is for the last layer only.
    """
    agg = cfg.aggregation
    # Chunk-wise: the proposer nodes run only the layers before the last (`_chunkwise`).
    applies = agg.chunked or feeds_final or agg.every_layer
    if not agg.early or agg.quorum is None or not applies:
        return deadline
    return QuorumStart(agg.quorum, answers, deadline)


def early_start_provenance(cfg: MoAConfig, calls: list[CallRecord]) -> dict[str, Any]:
    """Return what an early start dropped, for the answer's provenance (empty if not early)."""
    if cfg.aggregation.quorum is None:
        return {}
    dropped = [
        {k: c[k] for k in ("layer", "proposer", "sample", "configured_model", "latency_s")}
        for c in calls
        if c["role"] == "proposer"
        and c["status"] == "cancelled"
        and EARLY_REASON in (c["error"] or "")
    ]
    return {
        "early_start": {
            "quorum": cfg.aggregation.quorum,
            "every_layer": cfg.aggregation.every_layer,
            "dropped": dropped,
        }
    }
