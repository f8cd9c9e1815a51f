"""LangSmith without the network: one second and one line, never a hang or a dumped key.

With tracing on and no network, the answer used to come, then the process hung 13-22 s at
exit retrying uploads and printed 5-10 lines of connection errors (one with the API key's
ends). One connection attempt of at most a second decides up front instead.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

from langgraph_moa.cli._output import out

PROBE_S = 1.0
DEFAULT_ENDPOINT = "https://api.smith.langchain.com"


def endpoint() -> str:
    """Return the LangSmith API the SDK would call."""
    return (
        os.environ.get("LANGSMITH_ENDPOINT")
        or os.environ.get("LANGCHAIN_ENDPOINT")
        or DEFAULT_ENDPOINT
    )


def reachable(url: str, probe_s: float = PROBE_S) -> bool:
    """Tell whether a TCP connection to `url`'s host opens within `probe_s` seconds."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    reached: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=probe_s):
                reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=attempt, daemon=True)  # DNS too is bounded by the join
    thread.start()
    thread.join(probe_s)
    return bool(reached)


TRACING_VARIABLES = (
    "LANGSMITH_TRACING_V2",
    "LANGCHAIN_TRACING_V2",
    "LANGSMITH_TRACING",
    "LANGCHAIN_TRACING",
)
"""The variables LangSmith's SDK reads to trace, in its order: the first one set (not blank)
decides, and only ``true`` turns tracing on (``langsmith.utils.tracing_is_enabled``)."""


def tracing_variable() -> str | None:
    """Return the variable that turns LangSmith's tracing on, or None if tracing is off."""
    name = next((n for n in TRACING_VARIABLES if os.environ.get(n, "").strip()), None)
    return name if name is not None and os.environ[name] == "true" else None


def tracing() -> bool:
    """Tell whether LangSmith's SDK traces the runs, read as the SDK reads its variables."""
    return tracing_variable() is not None


def warn_if_tracing() -> None:
    """Say, as a server starts, that its users' text goes to LangSmith while tracing is on.

    A trace holds each request's messages and every model's answer: text that may be
    personal data leaves the machine, which an operator must know of (docs/security.md,
    "What is kept, where").
    """
    if name := tracing_variable():
        out.warn(
            f"LangSmith tracing is on: every question and answer is sent to {endpoint()} "
            f"(unset {name} to keep them here)."
        )


def check_langsmith(probe_s: float = PROBE_S) -> None:
    """Turn tracing off, with one line of warning, when the LangSmith endpoint is unreachable."""
    if not tracing():
        return
    url = endpoint()
    if not reachable(url, probe_s):
        for name in TRACING_VARIABLES:  # each one, whichever of them the SDK reads first
            os.environ[name] = "false"
        out.warn(f"LangSmith tracing is off for this run: {url} cannot be reached.")
