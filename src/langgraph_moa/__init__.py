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

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as the type checkers see them; imported on first use below
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
        EndpointNotFoundError,
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
        UnsupportedContentError,
        UnsupportedParameterError,
        UpstreamResponseError,
    )
    from langgraph_moa.graph import TAG_FINAL, create_moa_graph, final_answer_only
    from langgraph_moa.graph.durable import open_checkpointer
    from langgraph_moa.graph.streaming import AnswerStream, RunEvents
    from langgraph_moa.providers._models import OpenAIEndpoint
    from langgraph_moa.run.cache import CallCache, SQLiteCallCache
    from langgraph_moa.run.state import CallRecord, MoAInput, MoAOutput, MoAState, UsageSummary
    from langgraph_moa.text._prompts import AGGREGATE_AND_SYNTHESIZE_PROMPT, inject_references
    from langgraph_moa.text._selection import SelectionConfig

_EXPORTS = {
    "MoAChatModel": "langgraph_moa.chat_model",
    "DEFAULT_PRESET": "langgraph_moa.config",
    "AggregatorConfig": "langgraph_moa.config",
    "Budget": "langgraph_moa.config",
    "MoAConfig": "langgraph_moa.config",
    "ProposerConfig": "langgraph_moa.config",
    "RequestLimits": "langgraph_moa.config",
    "SelfMoASeqConfig": "langgraph_moa.config",
    "list_presets": "langgraph_moa.config",
    "load_config": "langgraph_moa.config",
    "RetrySettings": "langgraph_moa.config._schema",
    "MoAContext": "langgraph_moa.config.context",
    "AggregatorFailedError": "langgraph_moa.errors",
    "AllProposersFailedError": "langgraph_moa.errors",
    "BudgetExhaustedError": "langgraph_moa.errors",
    "CallTimeoutError": "langgraph_moa.errors",
    "ContentFilteredError": "langgraph_moa.errors",
    "ContextLengthError": "langgraph_moa.errors",
    "EmptyResponseError": "langgraph_moa.errors",
    "EndpointNotFoundError": "langgraph_moa.errors",
    "EvalDatasetError": "langgraph_moa.errors",
    "LimitExceededError": "langgraph_moa.errors",
    "LocalModelError": "langgraph_moa.errors",
    "LocalRuntimeError": "langgraph_moa.errors",
    "MissingAPIKeyError": "langgraph_moa.errors",
    "MissingExtraError": "langgraph_moa.errors",
    "MoAConfigError": "langgraph_moa.errors",
    "MoAError": "langgraph_moa.errors",
    "MoAInputError": "langgraph_moa.errors",
    "ModelNotAllowedError": "langgraph_moa.errors",
    "ModelResolutionError": "langgraph_moa.errors",
    "RequestTimeoutError": "langgraph_moa.errors",
    "RetryPastDeadlineError": "langgraph_moa.errors",
    "StragglerCancelledError": "langgraph_moa.errors",
    "StreamBrokenError": "langgraph_moa.errors",
    "StructuredOutputError": "langgraph_moa.errors",
    "ThreadBusyError": "langgraph_moa.errors",
    "ToolCallError": "langgraph_moa.errors",
    "UnsupportedContentError": "langgraph_moa.errors",
    "UnsupportedParameterError": "langgraph_moa.errors",
    "UpstreamResponseError": "langgraph_moa.errors",
    "TAG_FINAL": "langgraph_moa.graph",
    "create_moa_graph": "langgraph_moa.graph",
    "final_answer_only": "langgraph_moa.graph",
    "open_checkpointer": "langgraph_moa.graph.durable",
    "AnswerStream": "langgraph_moa.graph.streaming",
    "RunEvents": "langgraph_moa.graph.streaming",
    "OpenAIEndpoint": "langgraph_moa.providers._models",
    "CallCache": "langgraph_moa.run.cache",
    "SQLiteCallCache": "langgraph_moa.run.cache",
    "CallRecord": "langgraph_moa.run.state",
    "MoAInput": "langgraph_moa.run.state",
    "MoAOutput": "langgraph_moa.run.state",
    "MoAState": "langgraph_moa.run.state",
    "UsageSummary": "langgraph_moa.run.state",
    "AGGREGATE_AND_SYNTHESIZE_PROMPT": "langgraph_moa.text._prompts",
    "inject_references": "langgraph_moa.text._prompts",
    "SelectionConfig": "langgraph_moa.text._selection",
}
"""Where each public name lives: imported on first use (see `__getattr__`)."""

_SUBMODULES = frozenset(
    {
        "chat_model",
        "cli",
        "config",
        "errors",
        "eval",
        "graph",
        "local",
        "providers",
        "run",
        "serving",
        "testing",
        "text",
        "transport",
        "variants",
    }
)
"""The public submodules, reachable as attributes before they are imported by name.

Any other name is refused without a look at the disk: it was tried as a submodule first,
so each name a tool probed (``hasattr(langgraph_moa, "setup")``) searched the package.
"""


if not TYPE_CHECKING:  # a `__getattr__` type checkers saw would make every name exist (Any)

    def __getattr__(name: str) -> Any:
        """Import a public name, or a subpackage, when it is first used (PEP 562).

        Importing the package used to import langgraph and langchain at once: over a second in
        which any ``moa`` command, even ``moa --help``, could not yet handle Ctrl-C and printed
        a traceback. The package now imports only what is used; ``from langgraph_moa import X``
        works for every name in ``__all__`` as before, and so does ``langgraph_moa.config``.
        """
        module = _EXPORTS.get(name)
        if module is not None:
            value = getattr(importlib.import_module(module), name)
        elif name in _SUBMODULES:
            value = importlib.import_module(f"{__name__}.{name}")
        else:  # refused at once: tools probe names (`hasattr`) that are no module of ours
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    """List the public names too, imported or not yet."""
    return sorted({*globals(), *__all__})


__version__ = "0.1.0"
"""The package's version, written only here: the build reads it (pyproject.toml's
``dynamic``), and `moa --version` and an evaluation's provenance print it."""

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
    "EndpointNotFoundError",
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
    "RunEvents",
    "SQLiteCallCache",
    "SelectionConfig",
    "SelfMoASeqConfig",
    "StragglerCancelledError",
    "StreamBrokenError",
    "StructuredOutputError",
    "ThreadBusyError",
    "ToolCallError",
    "UnsupportedContentError",
    "UnsupportedParameterError",
    "UpstreamResponseError",
    "UsageSummary",
    "__version__",
    "create_moa_graph",
    "final_answer_only",
    "inject_references",
    "list_presets",
    "load_config",
    "open_checkpointer",
]
