"""The `moa` command."""

from langgraph_moa.cli._app import main

__all__ = ["main"]
