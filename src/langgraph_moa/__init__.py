"""Mixture-of-Agents as a LangGraph graph: MoA, Self-MoA, Self-MoA-Seq, ranker and selection.

```python
from langgraph_moa import MoAConfig, create_moa_graph

graph = create_moa_graph(MoAConfig(proposers=[a, b, c], aggregator=d, layers=3))
answer = graph.invoke({"messages": [("user", "Explain X")]})["messages"][-1]
```

Everything a user needs is importable from here; the folders below hold the layers (see the
README's "Architecture"): ``variants`` and ``providers`` are registries that a new variant or
provider is added to.
"""

from langgraph_moa.chat_model import MoAChatModel
from langgraph_moa.config import (
    DEFAULT_PRESET,
    AggregatorConfig,
    Budget,
    MoAConfig,
    ProposerConfig,
    RequestLimits,
    SelfMoASeqConfig,
    list_presets,
    load_config,
)
from langgraph_moa.config._schema import RetrySettings
from langgraph_moa.config.context import MoAContext
from langgraph_moa.errors import (
    AggregatorFailedError,
    AllProposersFailedError,
    BudgetExhaustedError,
    CallTimeoutError,
    ContentFilteredError,
    ContextLengthError,
    EmptyResponseError,
    EvalDatasetError,
    LimitExceededError,
    LocalModelError,
    LocalRuntimeError,
    MissingAPIKeyError,
    MissingExtraError,
    MoAConfigError,
    MoAError,
    MoAInputError,
    ModelNotAllowedError,
    ModelResolutionError,
    RequestTimeoutError,
    RetryPastDeadlineError,
    StragglerCancelledError,
    StreamBrokenError,
    StructuredOutputError,
    ThreadBusyError,
    ToolCallError,
)
from langgraph_moa.graph import TAG_FINAL, create_moa_graph, final_answer_only
from langgraph_moa.graph.durable import open_checkpointer
from langgraph_moa.graph.streaming import AnswerStream
from langgraph_moa.providers._models import OpenAIEndpoint
from langgraph_moa.run.cache import CallCache, SQLiteCallCache
from langgraph_moa.run.state import CallRecord, MoAInput, MoAOutput, MoAState, UsageSummary
from langgraph_moa.text._prompts import AGGREGATE_AND_SYNTHESIZE_PROMPT, inject_references
from langgraph_moa.text._selection import SelectionConfig

__version__ = "0.1.0"

__all__ = [
    "AGGREGATE_AND_SYNTHESIZE_PROMPT",
    "DEFAULT_PRESET",
    "TAG_FINAL",
    "AggregatorConfig",
    "AggregatorFailedError",
    "AllProposersFailedError",
    "AnswerStream",
    "Budget",
    "BudgetExhaustedError",
    "CallCache",
    "CallRecord",
    "CallTimeoutError",
    "ContentFilteredError",
    "ContextLengthError",
    "EmptyResponseError",
    "EvalDatasetError",
    "LimitExceededError",
    "LocalModelError",
    "LocalRuntimeError",
    "MissingAPIKeyError",
    "MissingExtraError",
    "MoAChatModel",
    "MoAConfig",
    "MoAConfigError",
    "MoAContext",
    "MoAError",
    "MoAInput",
    "MoAInputError",
    "MoAOutput",
    "MoAState",
    "ModelNotAllowedError",
    "ModelResolutionError",
    "OpenAIEndpoint",
    "ProposerConfig",
    "RequestLimits",
    "RequestTimeoutError",
    "RetryPastDeadlineError",
    "RetrySettings",
    "SQLiteCallCache",
    "SelectionConfig",
    "SelfMoASeqConfig",
    "StragglerCancelledError",
    "StreamBrokenError",
    "StructuredOutputError",
    "ThreadBusyError",
    "ToolCallError",
    "UsageSummary",
    "__version__",
    "create_moa_graph",
    "final_answer_only",
    "inject_references",
    "list_presets",
    "load_config",
    "open_checkpointer",
]
