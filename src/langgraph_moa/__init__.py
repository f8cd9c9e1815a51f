"""Mixture-of-Agents as a LangGraph graph: MoA, Self-MoA, Self-MoA-Seq and the ranker baseline.

```python
from langgraph_moa import MoAConfig, create_moa_graph

graph = create_moa_graph(MoAConfig(proposers=[a, b, c], aggregator=d, layers=3))
answer = graph.invoke({"messages": [("user", "Explain X")]})["messages"][-1]
```
"""

from langgraph_moa.chat_model import MoAChatModel
from langgraph_moa.config._schema import (
    AggregatorConfig,
    MoAConfig,
    ProposerConfig,
    SelfMoASeqConfig,
    list_presets,
)
from langgraph_moa.config.context import MoAContext
from langgraph_moa.errors import (
    AggregatorFailedError,
    AllProposersFailedError,
    BudgetExhaustedError,
    ContextLengthError,
    MissingAPIKeyError,
    MoAConfigError,
    MoAError,
    MoAInputError,
    ModelResolutionError,
)
from langgraph_moa.graph._builder import TAG_FINAL, create_moa_graph, final_answer_only
from langgraph_moa.providers._models import OpenAIEndpoint
from langgraph_moa.providers._retry import RetrySettings
from langgraph_moa.run.state import CallRecord, MoAInput, MoAOutput, MoAState, UsageSummary
from langgraph_moa.text._prompts import AGGREGATE_AND_SYNTHESIZE_PROMPT, inject_references

__version__ = "0.1.0"

__all__ = [
    "AGGREGATE_AND_SYNTHESIZE_PROMPT",
    "TAG_FINAL",
    "AggregatorConfig",
    "AggregatorFailedError",
    "BudgetExhaustedError",
    "AllProposersFailedError",
    "CallRecord",
    "ContextLengthError",
    "MissingAPIKeyError",
    "MoAChatModel",
    "MoAConfig",
    "MoAConfigError",
    "MoAContext",
    "MoAError",
    "MoAInput",
    "MoAInputError",
    "MoAOutput",
    "MoAState",
    "ModelResolutionError",
    "OpenAIEndpoint",
    "ProposerConfig",
    "RetrySettings",
    "SelfMoASeqConfig",
    "UsageSummary",
    "__version__",
    "create_moa_graph",
    "final_answer_only",
    "inject_references",
    "list_presets",
]
