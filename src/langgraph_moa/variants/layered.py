"""Layered MoA and its one-model forms: moa, single-proposer and self-moa.

All three share the base plan's routing (layers of proposers, then an aggregator); they
differ only in what a config may say.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from langgraph_moa.providers._models import same_model
from langgraph_moa.variants._base import Plan

if TYPE_CHECKING:
    from langgraph_moa.config._schema import MoAConfig


class LayeredMoA(Plan):
    """MoA (arXiv 2406.04692): layers of different proposers, then one aggregator."""

    name = "moa"
    description = "`layers - 1` layers of heterogeneous proposers, then the aggregator"
    default_layers = 3


class SingleProposer(Plan):
    """One model sampled n times as the proposers, aggregated by any model."""

    name = "single-proposer"
    description = "one model sampled n times as the proposers, any aggregator"
    one_model = True


class SelfMoA(Plan):
    """Self-MoA (arXiv 2502.00674): n samples of one model, aggregated by that same model."""

    name = "self-moa"
    description = "k samples of one model, aggregated by that model"
    one_model = True
    aggregates_with_proposer = True
    fixed_layers = True
    derived_fields: ClassVar[tuple[str, ...]] = ("layers", "aggregator")
    aggregator_temperature: ClassVar[float | None] = None
    """The aggregator's temperature (None: the proposer's)."""

    @classmethod
    def derive(cls, cfg: MoAConfig) -> dict[str, Any]:
        """Aggregate with the proposer's own model unless the config names the same model.

        The derived aggregator is that model, so it takes the model's context window too:
        it is the one reader of the samples, and references are trimmed to its window.
        """
        derived = super().derive(cfg)
        proposer = cfg.proposers[0]
        if proposer.samples < 2:
            raise ValueError(f"variant {cls.name!r} needs samples >= 2 on its proposer")
        if cfg.aggregator is None:
            temperature = cls.aggregator_temperature
            derived["aggregator"] = {
                "model": proposer.model,
                "name": proposer.name,
                "temperature": proposer.temperature if temperature is None else temperature,
                "context_window": proposer.context_window,
            }
        elif not same_model(cfg.aggregator.model, proposer.model):
            raise ValueError(
                f"variant {cls.name!r} aggregates with the proposer's own model; to aggregate "
                "with another model use variant 'single-proposer'"
            )
        return derived
