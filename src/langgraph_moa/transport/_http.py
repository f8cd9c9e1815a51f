"""The HTTP clients the package gives the models it builds (the local runtime's too).

Both clients pass every error response (status 400 and up) through `_redact` before the
openai SDK reads it: the SDK puts the body into the exception's message, and from there it
would reach the client of `moa serve`, logs, traces and call records. An upstream that
repeats the request's ``Authorization`` header or the organization id in its error thus
leaks nothing, whichever of those paths the error takes.
"""

from __future__ import annotations

from typing import Any

from langgraph_moa._redact import redact

MAX_ERROR_BODY_BYTES = 64_000
"""An error body is read up to this size; the rest is dropped (an error needs no more)."""


def _redacted_response(request: Any, response: Any, body: bytes) -> Any:
    import httpx2

    text = redact(body[:MAX_ERROR_BODY_BYTES].decode("utf-8", errors="replace"))
    headers = [
        (k, v)
        for k, v in response.headers.items()
        if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")
    ]
    return httpx2.Response(
        response.status_code,
        headers=headers,
        content=text.encode(),
        request=request,
        extensions=response.extensions,
    )


def _async_transport() -> Any:
    import httpx2
    from openai._constants import DEFAULT_CONNECTION_LIMITS

    class RedactingAsyncTransport(httpx2.AsyncHTTPTransport):
        async def handle_async_request(self, request: Any) -> Any:
            response = await super().handle_async_request(request)
            if response.status_code < 400:
                return response
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            return _redacted_response(request, response, body)

    return RedactingAsyncTransport(limits=DEFAULT_CONNECTION_LIMITS)


def _sync_transport() -> Any:
    import httpx2
    from openai._constants import DEFAULT_CONNECTION_LIMITS

    class RedactingTransport(httpx2.HTTPTransport):
        def handle_request(self, request: Any) -> Any:
            response = super().handle_request(request)
            if response.status_code < 400:
                return response
            try:
                body = response.read()
            finally:
                response.close()
            return _redacted_response(request, response, body)

    return RedactingTransport(limits=DEFAULT_CONNECTION_LIMITS)


def own_async_client() -> Any:
    """Return a fresh async HTTP client, to be shared by the models of one event loop.

    langchain-openai otherwise shares one cached async client per process, which binds to
    the first event loop that uses it; a model built under a later `asyncio.run` would then
    fail with "Event loop is closed". `ModelCache` keeps one client per endpoint and loop.

    It is the openai SDK's own default client class with its connection limits, not a
    plain httpx client: with httpx's pool, which keeps 20 connections alive and scans
    every connection on each request, 64 concurrent runs took 2.5-3.9x the time of bare
    openai calls (benchmarks/orchestration_overhead.py). Error bodies are redacted (see
    the module docstring).
    """
    import openai

    return openai.DefaultAsyncHttpxClient(
        timeout=openai.Timeout(600.0, connect=10.0), transport=_async_transport()
    )


def own_sync_client() -> Any:
    """Return a sync HTTP client for the sync calls of the models of one endpoint.

    Shared by every model of the endpoint (as `own_async_client` is): left to itself each
    langchain-openai model builds its own, with its own TLS setup, about a megabyte apiece.
    """
    import openai

    return openai.DefaultHttpxClient(
        timeout=openai.Timeout(600.0, connect=10.0), transport=_sync_transport()
    )
