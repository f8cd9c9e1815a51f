"""`moa serve`: MoA behind an OpenAI-compatible HTTP API (needs the ``serve`` extra).

Also its web page and run event stream (`_ui`, docs/event-stream.md), whose runs a `History`
keeps: ``create_app(systems, history=History(default_history_path()))``.
"""

from langgraph_moa.serving._app import MAX_BODY_BYTES, create_app, serve
from langgraph_moa.serving._history import History, default_history_path

__all__ = ["MAX_BODY_BYTES", "History", "create_app", "default_history_path", "serve"]
