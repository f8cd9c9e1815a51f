"""`moa serve`: MoA behind an OpenAI-compatible HTTP API (needs the ``serve`` extra)."""

from langgraph_moa.serving._app import MAX_BODY_BYTES, create_app, serve

__all__ = ["MAX_BODY_BYTES", "create_app", "serve"]
