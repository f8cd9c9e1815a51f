"""The embedded runtime: GGUF models shipped on PyPI, served by llama.cpp on loopback.

``local:<name>`` model specs resolve here. See `catalog` for the models and `runtime` for the
server processes.
"""

from langgraph_moa.errors import LocalRuntimeError
from langgraph_moa.local.catalog import CATALOG, LocalModelInfo, installed_models
from langgraph_moa.local.runtime import LocalRuntime

__all__ = ["CATALOG", "LocalModelInfo", "LocalRuntime", "LocalRuntimeError", "installed_models"]
