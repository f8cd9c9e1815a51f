"""`moa serve`: MoA behind an OpenAI-compatible HTTP API (needs the ``serve`` extra).

Also its web page and run event stream (`_ui`, docs/event-stream.md), whose runs a `History`
keeps: ``create_app(systems, history=History(default_history_path()))``.
"""

from langgraph_moa.serving._app import create_app
from langgraph_moa.serving._errors import MAX_BODY_BYTES
from langgraph_moa.serving._history import History, default_history_path
from langgraph_moa.serving._server import serve

__all__ = ["MAX_BODY_BYTES", "History", "create_app", "default_history_path", "serve"]
