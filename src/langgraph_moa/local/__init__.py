"""The embedded runtime: GGUF models shipped on PyPI, served by llama.cpp on loopback.

``local:<name>`` model specs resolve here. See `catalog` for the models and `runtime` for the
server processes.

The names below are imported on first use (PEP 562): each server process starts as
``python -m langgraph_moa.local._serve``, which imports this package first, and importing the
runtime (langchain, httpx) took seconds in which the server could not yet watch its parent:
a parent killed then left an orphan that went on to load its model (`_serve`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langgraph_moa.errors import LocalRuntimeError
    from langgraph_moa.local.catalog import CATALOG, LocalModelInfo, installed_models
    from langgraph_moa.local.runtime import LocalRuntime

_EXPORTS = {
    "CATALOG": "langgraph_moa.local.catalog",
    "LocalModelInfo": "langgraph_moa.local.catalog",
    "installed_models": "langgraph_moa.local.catalog",
    "LocalRuntime": "langgraph_moa.local.runtime",
    "LocalRuntimeError": "langgraph_moa.errors",
}

__all__ = ["CATALOG", "LocalModelInfo", "LocalRuntime", "LocalRuntimeError", "installed_models"]


if not TYPE_CHECKING:  # a `__getattr__` type checkers saw would make every name exist (Any)

    def __getattr__(name: str) -> Any:
        """Import a public name when it is first used."""
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    """List the public names too, before their first use (completion, `dir()`)."""
    return sorted(set(globals()) | set(__all__))
