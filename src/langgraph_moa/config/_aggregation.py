"""When the final step starts: after every proposal of the last layer, or after a quorum.

Standard MoA cannot write its first token until the slowest proposer of its last layer has
finished. With ``start: quorum`` the aggregator (or ranker, or selection) starts as soon as
`quorum` proposals of that layer have answered; the stragglers still running are cancelled,
and each is recorded as a ``cancelled`` call, and in the answer's provenance
(``response_metadata["moa"]["early_start"]``). ``every_layer`` applies the quorum to each
proposer layer, not only the last: a layer then goes on with its quorum's proposals.

With ``start: chunks`` (chunk-wise aggregation) the last proposer layer streams: the
aggregator starts writing once every live proposer has written its first `chunk_tokens` words
(or `first_chunk_s` passed), reading the proposals as far as they are written, and writes the
answer in parts, one per further chunk of the proposals, the last part once every proposal is
complete; the answer streams from its first part. `quorum`, if given, applies to the layers
before the last. Each part after the first continues the answer so far (`continuation`): as
the start of the aggregator's own message, which the model continues token by token
(``prefill``: llama.cpp's server does this for a trailing assistant message), or shown in the
prompt with an instruction to continue it (``instruction``: any chat model, but a small model
drops or repeats words at the seams and may echo the markers); ``auto`` takes prefill for a
local aggregator and the instruction for any other.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from langgraph_moa.config._limits import MAX_COUNT, MAX_PROPOSALS, MAX_TOKENS, MAX_WAIT_S

DEFAULT_MAX_PARTS = 16


class AggregationConfig(BaseModel):
    """When the final step may start (``MoAConfig.aggregation``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: Literal["all", "quorum", "chunks"] = Field(
        default="all",
        description="all: after every proposal of the last layer (standard MoA); quorum: "
        "once `quorum` of them answered, cancelling the rest; chunks: chunk-wise, from the "
        "proposals' first chunks on.",
    )
    quorum: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PROPOSALS,
        description="Proposals that must answer before the start.",
    )
    every_layer: bool = Field(
        default=False, description="Apply the quorum to every proposer layer, not only the last."
    )
    chunk_tokens: int = Field(
        default=32,
        ge=1,
        le=MAX_TOKENS,
        description="chunks: words of each proposal chunk and answer part.",
    )
    first_chunk_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_WAIT_S,
        description="chunks: start without the proposers that have not written their first "
        "chunk after this many seconds.",
    )
    max_parts: int = Field(
        default=DEFAULT_MAX_PARTS,
        ge=1,
        le=MAX_COUNT,
        description="chunks: most parts (aggregator calls) one answer takes; the last one "
        "waits for the complete proposals. Bounds the calls a run makes (budget.max_calls, "
        "moa serve's --max-calls).",
    )

    continuation: Literal["auto", "prefill", "instruction"] = Field(
        default="auto",
        description="chunks: how a part continues the answer so far. prefill: as the start "
        "of the aggregator's own message (llama.cpp's server continues a trailing assistant "
        "message; an API that starts a new turn instead repeats text at the seams); "
        "instruction: shown in the prompt with an instruction to continue it (any chat "
        "model); auto: prefill for a local aggregator, instruction otherwise.",
    )

    @model_validator(mode="after")
    def _quorum_with_start(self) -> Self:
        if self.start == "quorum" and self.quorum is None:
            raise ValueError("aggregation.start 'quorum' needs aggregation.quorum (a count >= 1)")
        if self.start == "all" and (self.quorum is not None or self.every_layer):
            raise ValueError(
                "aggregation.quorum and every_layer apply with start 'quorum' only: "
                "set aggregation.start to 'quorum' or remove them"
            )
        if self.start != "chunks" and self.continuation != "auto":
            raise ValueError(
                "aggregation.continuation applies with start 'chunks' only: set "
                "aggregation.start to 'chunks' or remove continuation"
            )
        if self.start != "chunks" and self.max_parts != DEFAULT_MAX_PARTS:
            raise ValueError(
                "aggregation.max_parts applies with start 'chunks' only: set "
                "aggregation.start to 'chunks' or remove max_parts"
            )
        if self.start == "chunks" and self.every_layer:
            raise ValueError(
                "with aggregation.start 'chunks' the quorum already applies to every layer "
                "before the last: remove every_layer"
            )
        return self

    @property
    def early(self) -> bool:
        """Tell whether the final step may start before every proposal is in."""
        return self.start != "all"

    @property
    def chunked(self) -> bool:
        """Tell whether the last proposer layer streams into a chunk-wise aggregator."""
        return self.start == "chunks"
