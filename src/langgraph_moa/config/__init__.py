"""What a run is: validated configuration models, limits, presets and the one loader."""

from langgraph_moa.config._limits import Budget, RequestLimits
from langgraph_moa.config._loader import DEFAULT_PRESET, ConfigSource, load_config
from langgraph_moa.config._schema import (
    AggregatorConfig,
    MoAConfig,
    ProposerConfig,
    RoleConfig,
    SelfMoASeqConfig,
    list_presets,
)

__all__ = [
    "DEFAULT_PRESET",
    "ConfigSource",
    "load_config",
    "AggregatorConfig",
    "Budget",
    "MoAConfig",
    "ProposerConfig",
    "RequestLimits",
    "RoleConfig",
    "SelfMoASeqConfig",
    "list_presets",
]
