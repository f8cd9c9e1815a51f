"""One request's life on the wire: the ASGI guard, body reading, deadline, disconnects."""

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

from langgraph_moa._digits import at_most
from langgraph_moa.errors import (
    RequestTimeoutError,
)
from langgraph_moa.run._calls import request_deadline
from langgraph_moa.serving._addresses import route_path
from langgraph_moa.serving._errors import ServerStoppingError, _APIError, _too_large

T = TypeVar("T")


DRAIN_TIMEOUT_S = 8.0
"""Seconds a stop waits for the requests in flight by default (``--drain-timeout``): inside
`docker stop`'s 10 s and Kubernetes' 30 s before their SIGKILL, so that every open stream
still gets its last event."""


class Drain:
    """The end of the server's drain on a stop: it brings every run's deadline forward to it.

    On SIGTERM or Ctrl-C uvicorn waits for the requests in flight, and a run's own deadline
    (``--request-timeout``, 600 s) outlasted `docker stop`'s 10 s and Kubernetes' 30 s: their
    SIGKILL cut a stream mid-answer, and its client never heard why. `end_in` moves the
    deadline of each run in flight, and of any run that starts later, to the drain's end; a
    run stopped there fails with `ServerStoppingError`, which a started stream sends as its
    last event (then ``[DONE]``) and any other request as a 503. `stopped` counts them.
    """

    def __init__(self) -> None:
        self.due: float | None = None
        """The event loop's time the drain ends at; None until the server stops."""
        self.seconds = 0.0
        self.stopped = 0
        self.leaving = False
        """True from a SIGTERM under ``--shutdown-delay``: /ready answers 503 (`_access`)
        while every request is still served, until the stop (and this drain) begins."""
        self._open: set[asyncio.Timeout] = set()

    def end_in(self, seconds: float) -> None:
        """Start the drain: every run still open `seconds` from now is stopped then."""
        self.seconds, self.due = seconds, asyncio.get_running_loop().time() + seconds
        for timeout in self._open:
            self._bound(timeout)

    @contextlib.contextmanager
    def bounding(self, timeout: asyncio.Timeout) -> Iterator[None]:
        """Hold `timeout` (a run's deadline) to the drain's end while the run is open."""
        self._open.add(timeout)
        self._bound(timeout)
        try:
            yield
        finally:
            self._open.discard(timeout)

    def ended(self, deadline: float | None) -> bool:
        """Tell whether a run whose own deadline was `deadline` was stopped by the drain."""
        return self.due is not None and (deadline is None or self.due < deadline)

    def _bound(self, timeout: asyncio.Timeout) -> None:
        when = timeout.when()
        if self.due is not None and (when is None or when > self.due):
            timeout.reschedule(self.due)


@contextlib.asynccontextmanager
async def _deadline(
    seconds: float, drain: Drain | None = None, since: float | None = None
) -> AsyncIterator[None]:
    """Bound what runs inside to the request's deadline; past it, `RequestTimeoutError`.

    The deadline is `seconds` from `since` (the event loop's time its body was read, `_Job`),
    or from now: a request's wait to be prepared counts against it, as its run does.

    The deadline is set in the task that runs the graph, so every call, and every
    ``Retry-After`` wait, sees it. A `drain` that ends first stops the run with
    `ServerStoppingError` instead; only this timer's expiry is the drain's, not a
    ``TimeoutError`` the run raised itself while the drain went on. Nor is such a
    ``TimeoutError`` the request's: it goes on as what it is (a model call's
    `CallTimeoutError`, say), since only this timer's expiry is past ``--request-timeout``.
    """
    own: float | None = None
    loop = asyncio.get_running_loop()
    due = (loop.time() if since is None else since) + seconds
    with request_deadline(max(due - loop.time(), 0.0)):
        try:
            async with asyncio.timeout_at(due) as timeout:
                own = timeout.when()
                with drain.bounding(timeout) if drain else contextlib.nullcontext():
                    yield
        except TimeoutError:
            if not timeout.expired():
                raise
            if drain is not None and drain.ended(own):
                drain.stopped += 1
                raise ServerStoppingError(drain.seconds) from None
            raise RequestTimeoutError(seconds) from None


async def _within(
    seconds: float, run: Awaitable[Any], drain: Drain | None = None, since: float | None = None
) -> Any:
    """Await a run under the request's deadline: ``Retry-After`` waits and the run itself."""
    async with _deadline(seconds, drain, since):
        return await run


async def _timed(
    source: AsyncIterator[T],
    seconds: float,
    drain: Drain | None = None,
    since: float | None = None,
) -> AsyncIterator[T]:
    """Relay a stream under the request's deadline; past it, raise `RequestTimeoutError`.

    The deadline is set in the task that iterates it (`pump`'s producer).
    """
    async with _deadline(seconds, drain, since):
        async for item in source:
            yield item


def key_check(api_key: str | None) -> Callable[[Any], bool]:
    """Return the test a request's ASGI scope passes when it sends the server's key.

    With no key configured every request passes. One test for the guard and for what is
    answered around the app (`_access`'s /health), so both accept exactly the same clients.
    """
    if api_key is None:
        return lambda scope: True
    expected = f"Bearer {api_key}".encode()

    def sends_key(scope: Any) -> bool:
        headers = dict(scope.get("headers") or [])
        return hmac.compare_digest(headers.get(b"authorization", b""), expected)

    return sends_key


class _Guard:
    """Checks the key first, then the declared body size, before any handler runs.

    A plain ASGI middleware (not ``@app.middleware``), so that it never buffers a body and
    the handlers still see the client's disconnect.
    """

    OPEN_PATHS = ("/", "/ui", "/ui/")
    """The web page's shell: no data in it, and a browser cannot send a key to load it. The
    page asks for the key and sends it with every API call (see `_ui`)."""

    def __init__(self, app: Any, sends_key: Callable[[Any], bool], max_body_bytes: int) -> None:
        self.app = app
        self.sends_key = sends_key  # the app's `key_check`, which /health asks too
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (refusal := self._refusal(scope)) is not None:
            from fastapi.responses import JSONResponse

            response = JSONResponse(refusal.body(), refusal.status, headers=refusal.headers)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _open(self, scope: Any) -> bool:
        path = route_path(scope)  # under an embedder's mount too
        return scope.get("method") == "GET" and (
            path in self.OPEN_PATHS or path.startswith("/ui/static/")
        )

    def _refusal(self, scope: Any) -> _APIError | None:
        headers = dict(scope.get("headers") or [])
        if not self._open(scope) and not self.sends_key(scope):
            return _APIError(
                401,
                "Missing or wrong API key: send 'Authorization: Bearer <key>'.",
                "authentication_error",
                "invalid_api_key",
            )
        size = headers.get(b"content-length")
        if size is None:
            return None
        if not size.isdigit():
            return _APIError(400, "The Content-Length header is not a number.")
        if at_most(size, self.max_body_bytes) is None:  # a client's number, of any length
            return _too_large(self.max_body_bytes)
        return None


class _HeadAsGet:
    """Answer ``HEAD`` wherever ``GET`` is served (uptime checkers send HEAD).

    The request runs as a GET; its answer goes out with the GET's status and headers, no body.

    FastAPI's ``@app.get`` routes answer HEAD with 405. The scope is copied, so what logs
    the request around the app (`_access`) still says HEAD.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Any) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


async def _read_body(request: Any, limit: int) -> bytes:
    """Read the body, refusing it as soon as it passes `limit` (chunked bodies included)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


class _ClientGone(Exception):
    """The client disconnected; its run was cancelled."""


async def _disconnected(request: Any) -> None:
    """Return when the client disconnects (the body must have been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Any, run: Awaitable[Any]) -> Any:
    """Await `run`, cancelling it if the client disconnects first."""
    task = asyncio.ensure_future(run)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        raise _ClientGone
    return task.result()
