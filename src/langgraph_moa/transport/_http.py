"""The async HTTP client the package gives the models it builds (the local runtime's too).

It is the openai SDK's own aiohttp-based client (`openai.DefaultAioHttpClient`): measured on
the simulated 200 ms server (benchmarks/orchestration_overhead.py), the same bare MoA calls
took 0.95x the time of the SDK's default httpx client at 1 run, 0.61x at 16 and 0.43x at 64,
because httpx's pool scans its connections on every request. ``MOA_HTTP_TRANSPORT=httpx``
selects the SDK's default httpx client instead (a proxy setup that only httpx handles, or a
comparison).

An aiohttp session belongs to the event loop it was opened on and must be closed there: one
left open logs "Unclosed client session" when it is collected. The SDK opens the session on
the first request, so that is where this module hooks in (`_close_at_loop_end`): each session
is closed when its loop shuts down (``asyncio.run`` and uvicorn shut loops down through
`loop.shutdown_asyncgens`), and the package's call loop, which never ends, is shut down the
same way at interpreter exit (`_call_loop`). `ModelCache` still closes a client as soon as no
model uses it; closing twice is harmless.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncGenerator
from typing import Any, Literal

from langgraph_moa.errors import MoAConfigError

Transport = Literal["aiohttp", "httpx"]
TRANSPORT_ENV = "MOA_HTTP_TRANSPORT"


def transport_in_use() -> Transport:
    """Return the transport `own_async_client` builds: aiohttp unless the env var says httpx.

    Raises:
        MoAConfigError: the variable names another transport (a ValueError too).
    """
    chosen = os.environ.get(TRANSPORT_ENV, "aiohttp").strip().lower() or "aiohttp"
    if chosen not in ("aiohttp", "httpx"):
        raise MoAConfigError(
            f"{TRANSPORT_ENV} must be 'aiohttp' or 'httpx', got {chosen!r}: set one or unset it"
        )
    return chosen  # type: ignore[return-value]


def own_async_client(transport: Transport | None = None) -> Any:
    """Return a fresh async HTTP client, to be shared by the models of one event loop.

    langchain-openai otherwise shares one cached async client per process, which binds to
    the first event loop that uses it; a model built under a later `asyncio.run` would then
    fail with "Event loop is closed". `ModelCache` keeps one client per endpoint and loop.

    Args:
        transport: "aiohttp" (the default, see the module docstring) or "httpx"; None reads
            ``MOA_HTTP_TRANSPORT``.
    """
    import openai

    timeout = openai.Timeout(600.0, connect=10.0)
    if (transport or transport_in_use()) == "httpx":
        return openai.DefaultAsyncHttpxClient(timeout=timeout)
    client = openai.DefaultAioHttpClient(timeout=timeout)
    _hook_session_opening(client._transport)
    for mount in client._mounts.values():  # proxies from the environment
        if mount is not None:
            _hook_session_opening(mount)
    return client


def _hook_session_opening(transport: Any) -> None:
    """Have the aiohttp session the transport opens on its first request closed with its loop.

    `AiohttpTransport.handle_async_request` opens it through `self.get_client()`; wrapping
    that method on this instance costs nothing per request. A transport without it (another
    SDK version) is left alone: its sessions are then closed by `ModelCache` alone.
    """
    opener = getattr(transport, "get_client", None)
    if opener is None:
        return

    def get_client() -> Any:
        session = opener()
        _close_at_loop_end(session)
        return session

    transport.get_client = get_client


_sessions_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakSet[Any]] = (
    weakref.WeakKeyDictionary()
)
_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = (
    weakref.WeakKeyDictionary()
)

_starting: set[asyncio.Future[Any]] = set()


def _close_at_loop_end(session: Any) -> None:
    """Close `session` when the running loop shuts down its async generators.

    The loop has no shutdown callback, but `shutdown_asyncgens` closes every async generator
    that was started on it: one per loop, suspended at its ``yield``, closes the sessions in
    its ``finally``. It is kept here (the loop holds its generators weakly).
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # opened outside a loop: nothing to hook (aiohttp needs one anyway)
        return
    sessions = _sessions_by_loop.get(loop)
    if sessions is None:
        sessions = _sessions_by_loop[loop] = weakref.WeakSet()
        watcher = _close_when_closed(sessions)
        _watchers[loop] = watcher
        start = asyncio.ensure_future(watcher.__anext__())  # runs it to its `yield`
        _starting.add(start)  # the loop holds tasks weakly
        start.add_done_callback(_starting.discard)
    sessions.add(session)


async def _close_when_closed(sessions: weakref.WeakSet[Any]) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        open_sessions = [s for s in list(sessions) if not s.closed]
        await asyncio.gather(*(s.close() for s in open_sessions), return_exceptions=True)
