"""What a run is: validated configuration models, limits, presets and the one loader."""

from langgraph_moa.config._aggregation import AggregationConfig
from langgraph_moa.config._limits import Budget, RequestLimits
from langgraph_moa.config._schema import (
    VARIANTS,
    AggregatorConfig,
    MoAConfig,
    ProposerConfig,
    RoleConfig,
    SelfMoASeqConfig,
    list_presets,
)

__all__ = [
    "VARIANTS",
    "AggregationConfig",
    "AggregatorConfig",
    "Budget",
    "MoAConfig",
    "ProposerConfig",
    "RequestLimits",
    "RoleConfig",
    "SelfMoASeqConfig",
    "list_presets",
]
