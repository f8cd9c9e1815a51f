"""The async HTTP client the package gives the models it builds (the local runtime's too)."""

from __future__ import annotations

from typing import Any


def own_async_client() -> Any:
    """Return a fresh async HTTP client, to be shared by the models of one event loop.

    langchain-openai otherwise shares one cached async client per process, which binds to
    the first event loop that uses it; a model built under a later `asyncio.run` would then
    fail with "Event loop is closed". `ModelCache` keeps one client per endpoint and loop.

    It is the openai SDK's own default client class (its connection limits and transport),
    not a plain httpx client: with httpx's pool, which keeps 20 connections alive and scans
    every connection on each request, 64 concurrent runs took 2.5-3.9x the time of bare
    openai calls (benchmarks/orchestration_overhead.py).
    """
    import openai

    return openai.DefaultAsyncHttpxClient(timeout=openai.Timeout(600.0, connect=10.0))
