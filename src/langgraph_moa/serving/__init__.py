"""`moa serve`: MoA behind an OpenAI-compatible HTTP API (needs the ``serve`` extra).

Also its web page and run event stream (`_ui`, docs/event-stream.md), whose runs a `History`
keeps: ``create_app(systems, history=History(default_history_path()))``.

The names below are imported on first use, so that the CLI can read this package's limits and
checks without the ``serve`` extra (FastAPI, uvicorn) installed.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as type checkers see them; imported on first use below
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.serving._errors import MAX_BODY_BYTES
    from langgraph_moa.serving._guard import ServeSecurity
    from langgraph_moa.serving._history import History, default_history_path
    from langgraph_moa.serving._server import serve

_WHERE = {
    "MAX_BODY_BYTES": "_errors",
    "History": "_history",
    "ServeSecurity": "_guard",
    "create_app": "_app",
    "default_history_path": "_history",
    "serve": "_server",
}

__all__ = [
    "MAX_BODY_BYTES",
    "History",
    "ServeSecurity",
    "create_app",
    "default_history_path",
    "serve",
]


if not TYPE_CHECKING:  # a `__getattr__` type checkers saw would make every name exist (Any)

    def __getattr__(name: str) -> Any:
        if name not in _WHERE:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
