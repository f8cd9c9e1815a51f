"""When the final step starts: after every proposal of the last layer, or after a quorum.

Standard MoA cannot write its first token until the slowest proposer of its last layer has
finished. With ``start: quorum`` the aggregator (or ranker, or selection) starts as soon as
`quorum` proposals of that layer have answered; the stragglers still running are cancelled,
and each is recorded as a ``cancelled`` call, and in the answer's provenance
(``response_metadata["moa"]["early_start"]``). ``every_layer`` applies the quorum to each
proposer layer, not only the last: a layer then goes on with its quorum's proposals.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class AggregationConfig(BaseModel):
    """When the final step may start (``MoAConfig.aggregation``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: Literal["all", "quorum"] = Field(
        default="all",
        description="all: after every proposal of the last layer (standard MoA); quorum: "
        "once `quorum` of them answered, cancelling the rest.",
    )
    quorum: int | None = Field(
        default=None, ge=1, description="Proposals that must answer before the start."
    )
    every_layer: bool = Field(
        default=False, description="Apply the quorum to every proposer layer, not only the last."
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
        return self

    @property
    def early(self) -> bool:
        """Tell whether the final step may start before every proposal is in."""
        return self.start == "quorum"
