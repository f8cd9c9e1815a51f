"""The async HTTP client the package gives the models it builds (the local runtime's too)."""

from __future__ import annotations

from typing import Any


def own_async_client() -> Any:
    """Return a fresh async HTTP client, to be shared by the models of one event loop.

    langchain-openai otherwise shares one cached async client per process, which binds to
    the first event loop that uses it; a model built under a later `asyncio.run` would then
    fail with "Event loop is closed". `ModelCache` keeps one client per endpoint and loop.

    Its pool is as large as the openai client's own default (1000 connections, 100 kept
    alive): httpx's default keeps 20 alive, so at 64 concurrent runs almost every call
    opened a new connection, and the graph took 3.9x the time of bare calls
    (benchmarks/orchestration_overhead.py).
    """
    import httpx

    return httpx.AsyncClient(
        timeout=httpx.Timeout(600.0, connect=10.0),
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
    )
