"""`moa serve`: MoA behind an OpenAI-compatible HTTP API (needs the ``serve`` extra).

Also its web page and run event stream (`_ui`, docs/event-stream.md), whose runs a `History`
keeps: ``create_app(systems, history=History(default_history_path()))``.

The names below are imported on first use, so that the CLI can read this package's limits and
checks without the ``serve`` extra (FastAPI, uvicorn) installed.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "MAX_BODY_BYTES": "_errors",
    "History": "_history",
    "create_app": "_app",
    "default_history_path": "_history",
    "serve": "_server",
}

__all__ = ["MAX_BODY_BYTES", "History", "create_app", "default_history_path", "serve"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
