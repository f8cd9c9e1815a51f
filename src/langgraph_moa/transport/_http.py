"""The HTTP clients the package gives the models it builds (the local runtime's too).

The async client is the openai SDK's own aiohttp-based client (`openai.DefaultAioHttpClient`):
on the simulated 200 ms server (benchmarks/orchestration_overhead.py) the same bare MoA calls
took 0.95x the time of the SDK's default httpx client at 1 run, 0.61x at 16 and 0.43x at 64,
because httpx's pool scans its connections on every request. ``MOA_HTTP_TRANSPORT=httpx``
selects the SDK's default httpx client instead (a proxy setup that only httpx handles, or a
comparison).

Every error response (status 400 and up) passes through `_redact` before the openai SDK reads
it, on either transport: the SDK puts the body into the exception's message, and from there it
would reach the client of `moa serve`, logs, traces and call records. An upstream that repeats
the request's ``Authorization`` header, the organization id or a key sent in the URL's query
string (``?key=...``) in its error thus leaks nothing.

An aiohttp session belongs to the event loop it was opened on and must be closed there: one
left open logs "Unclosed client session" when it is collected. The SDK opens the session on
the first request, so that is where this module hooks in (`_close_at_loop_end`): each session
is closed when its loop shuts down (``asyncio.run`` and uvicorn shut loops down through
`loop.shutdown_asyncgens`), and the package's call loop, which never ends, is shut down the
same way at interpreter exit (`_call_loop`). `ModelCache` still closes a client as soon as no
model uses it; closing twice is harmless.

An endpoint is the operator's, but its server may still misbehave (a buggy proxy, a server
that ignores ``max_tokens``, a compromised host). Every answer's body is counted as it is
read, after decompression, and the call fails with `UpstreamResponseError` past
`max_response_bytes` (`_capped`): an answer that never ends, streamed or not, held the whole
of itself in memory (a 200 MB body took the process to 2.3 GB). An error body is read
only up to `MAX_ERROR_BODY_BYTES`, decompressed (`_ErrorBody`). Redirects are not followed
(the SDK's clients follow them by default): a 3xx would send the call, and its prompt, to a
host the operator never named; it fails the call instead, naming where it pointed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Literal

from langgraph_moa._redact import LABEL_CHARS, clip, redact, url_secrets, without
from langgraph_moa.errors import MoAConfigError, UpstreamResponseError
from langgraph_moa.transport._call_loop import leave_the_parents_loop

MAX_ERROR_BODY_BYTES = 64_000
"""An error body is read up to this size; the rest is dropped (an error needs no more)."""


MAX_RESPONSE_BYTES = 32 * 1024 * 1024
"""The most one answer's body may hold, decompressed, unless ``MOA_MAX_RESPONSE_BYTES`` says
otherwise: at about 250 bytes a streamed token, over 100,000 tokens, past most models'
output limits and far past what `moa serve` lets a client ask for (``--max-answer-tokens``,
4,096)."""

RESPONSE_BYTES_ENV = "MOA_MAX_RESPONSE_BYTES"


def max_response_bytes() -> int:
    """Return the bound on one answer's body: ``MOA_MAX_RESPONSE_BYTES``, else the default.

    Read as a client is built. An operator whose models write longer answers raises it: one
    of 128,000 tokens, streamed, is about 35 MB.

    Raises:
        MoAConfigError: the variable is not a whole number of bytes above 0 (a ValueError too).
    """
    given = os.environ.get(RESPONSE_BYTES_ENV, "").strip()
    if not given:
        return MAX_RESPONSE_BYTES
    try:
        bound = int(given)
    except ValueError:  # "32MB", "1.5"
        bound = 0
    if bound <= 0:
        raise MoAConfigError(
            f"{RESPONSE_BYTES_ENV} must be a whole number of bytes above 0, got {given!r}: "
            "set one or unset it"
        )
    return bound


def _upstream_error(request: Any, what: str) -> UpstreamResponseError:
    """Return the error of a call whose answer broke a bound, naming its model and host."""
    try:
        model = json.loads(request.content).get("model")
    except Exception:  # a body that is not a JSON object: the host alone names the endpoint
        model = None
    url = request.url
    host = clip(f"{url.host}:{url.port}" if url.port else url.host, LABEL_CHARS)
    # Both clipped: a failed call's line keeps 300 characters, and `what` holds the fix.
    who = (
        f"Model {clip(model, LABEL_CHARS)!r} at {host}"
        if isinstance(model, str)
        else f"The server at {host}"
    )
    return UpstreamResponseError(f"{who} {what}")


def _decoder_of(response: Any) -> Any:
    """Return the decoder of `response`'s content encoding, None where it has none.

    Built as httpx builds it; the response then says no encoding, so httpx does not decode
    it twice.
    """
    if "content-encoding" not in response.headers:  # rare: most answers come as they are
        return None
    import httpx2

    decoder = httpx2.Response(200, headers=response.headers)._get_content_decoder()
    for name in _DECODED_AWAY:
        response.headers.pop(name, None)
    return decoder


class _ErrorBody:
    """Gathers an error body, decoded, up to `MAX_ERROR_BODY_BYTES`, and says when it has them.

    The rest is never read: an error needs no more, and a body read whole (a gzip 500 of
    292 KB inflates to 300 MB) held all of itself in memory. A compressed piece is decoded
    a little at a time, so no one piece inflates far past the bound.
    """

    STEP = 1024
    """Compressed bytes decoded at a time: at most about 1 MB once inflated."""

    def __init__(self, response: Any) -> None:
        self.decoder = _decoder_of(response)
        self.body = bytearray()

    def full(self, raw: bytes) -> bool:
        """Add what `raw` decodes to; return whether the body holds all it may."""
        if self.decoder is None:
            self.body += raw
            return len(self.body) >= MAX_ERROR_BODY_BYTES
        for at in range(0, len(raw), self.STEP):
            for data in self.decoder.decode(raw[at : at + self.STEP]):
                self.body += data
                if len(self.body) >= MAX_ERROR_BODY_BYTES:
                    return True
        return False

    def end(self, full: bool) -> bytes:
        """Return the body, its decoder's rest added where the whole of it was read."""
        if not full and self.decoder is not None:
            for data in self.decoder.flush():
                self.body += data
        return bytes(self.body[:MAX_ERROR_BODY_BYTES])


class _Budget:
    """Counts an answer's bytes as they are read, decoded, and fails past the bound."""

    def __init__(self, request: Any, response: Any, bound: int) -> None:
        self.request, self.bound = request, bound
        self.decoder = _decoder_of(response)
        self.read = 0

    def take(self, raw: bytes | None) -> Iterator[bytes]:
        """Yield the decoded pieces of `raw` (None: the decoder's rest), counting them."""
        if self.decoder is None:
            pieces: Any = (raw,) if raw is not None else ()
        else:
            pieces = self.decoder.decode(raw) if raw is not None else self.decoder.flush()
        for data in pieces:
            self.read += len(data)
            if self.read > self.bound:
                raise _upstream_error(
                    self.request,
                    f"sent an answer of more than {self.bound:,} bytes (it ignores "
                    "max_tokens, or never ends): the call was stopped there",
                )
            yield data


@functools.cache
def _capped_streams() -> tuple[type, type]:
    """Return the async and sync byte streams that count an answer (httpx checks their base).

    Built on first use: the module imports httpx only when a client is made.
    """
    import httpx2

    class CappedAsyncStream(httpx2.AsyncByteStream):
        def __init__(self, stream: Any, budget: _Budget) -> None:
            self.stream, self.budget = stream, budget

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for raw in self.stream:
                if raw:  # an empty piece would defeat httpx's raw-deflate fallback
                    for data in self.budget.take(raw):
                        yield data
            for data in self.budget.take(None):
                yield data

        async def aclose(self) -> None:
            await self.stream.aclose()

    class CappedSyncStream(httpx2.SyncByteStream):
        def __init__(self, stream: Any, budget: _Budget) -> None:
            self.stream, self.budget = stream, budget

        def __iter__(self) -> Iterator[bytes]:
            for raw in self.stream:
                if raw:
                    yield from self.budget.take(raw)
            yield from self.budget.take(None)

        def close(self) -> None:
            self.stream.close()

    return CappedAsyncStream, CappedSyncStream


_DECODED_AWAY = ("content-length", "content-encoding")


def _redirect_refused(request: Any, response: Any) -> UpstreamResponseError:
    """Return the error of a call answered with a redirect (the clients follow none)."""
    where = response.headers.get("location", "")
    return _upstream_error(
        request,
        f"answered {response.status_code}, a redirect, which is not followed: name the "
        f"endpoint's final URL in the config (it pointed to {clip(redact(where), 80)!r})",
    )


def _capped(request: Any, response: Any, bound: int, *, sync: bool) -> Any:
    """Return `response` with its body counted as it is read, failing past `bound` bytes."""
    budget = _Budget(request, response, bound)
    capped_async, capped_sync = _capped_streams()
    response.stream = (capped_sync if sync else capped_async)(response.stream, budget)
    return response


def _redacted_response(request: Any, response: Any, body: bytes) -> Any:
    import httpx2

    text = redact(body.decode("utf-8", errors="replace"))
    text = without(text, url_secrets(str(request.url)))  # a key sent as ``?key=...``, echoed
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


def _redact_async_errors_of(transport: Any, bound: int) -> None:
    """Have an httpx async transport redact every error body and bound every answer's size."""
    send = transport.handle_async_request

    async def handle_async_request(request: Any) -> Any:
        response = await send(request)
        if response.is_redirect:
            await response.aclose()
            raise _redirect_refused(request, response)
        if response.status_code < 400:
            return _capped(request, response, bound, sync=False)
        body, full = _ErrorBody(response), False
        try:
            async for raw in response.stream:
                if raw and (full := body.full(raw)):
                    break
        finally:
            await response.aclose()
        return _redacted_response(request, response, body.end(full))

    transport.handle_async_request = handle_async_request


def _redact_sync_errors_of(transport: Any, bound: int) -> None:
    """Have an httpx sync transport redact every error body and bound every answer's size."""
    send = transport.handle_request

    def handle_request(request: Any) -> Any:
        response = send(request)
        if response.is_redirect:
            response.close()
            raise _redirect_refused(request, response)
        if response.status_code < 400:
            return _capped(request, response, bound, sync=True)
        body, full = _ErrorBody(response), False
        try:
            for raw in response.stream:
                if raw and (full := body.full(raw)):
                    break
        finally:
            response.close()
        return _redacted_response(request, response, body.end(full))

    transport.handle_request = handle_request


class _RedactedRequestLines(logging.Filter):
    """Write httpx's "HTTP Request: POST <url>" line without the URL's key.

    An endpoint's key may be a query parameter (``?key=...``, sent on every request), and
    httpx logs each request's full URL at INFO: an application that logs at INFO would
    have the key in its log. A filter runs only for a record that is written, so calls
    pay nothing while the level is above INFO.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


for _name in ("httpx", "httpx2"):  # the SDK's clients log under the second
    logging.getLogger(_name).addFilter(_RedactedRequestLines())


@contextmanager
def _proxy_setup_explained() -> Iterator[None]:
    """Turn a proxy the environment names but httpx cannot use into one sentence.

    A client honours the proxy variables (``HTTPS_PROXY``, ``ALL_PROXY``, ...) when it is
    built; a SOCKS proxy there needs the ``socksio`` package, and without it httpx raises
    ImportError as the client is built. The calls are not sent around the proxy instead:
    the environment asked for it.
    """
    try:
        yield
    except ImportError as exc:
        raise MoAConfigError(
            f"The proxy named by the environment cannot be used: {exc} Do that, or "
            "unset the proxy variable (HTTPS_PROXY, ALL_PROXY, ...) or add the host to "
            "NO_PROXY."
        ) from None


def _transports_of(client: Any) -> list[Any]:
    """Return a client's transports: its own and one per proxy the environment names.

    The hooks are put on the transports httpx built, rather than a transport of ours being
    passed in: given one, httpx mounts no proxy from ``HTTP_PROXY``/``HTTPS_PROXY``, and
    the calls to a remote endpoint would ignore the proxy they must go through. A ``None``
    mount (a ``NO_PROXY`` host) has no transport of its own.
    """
    return [t for t in (client._transport, *client._mounts.values()) if t is not None]


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


def own_async_client(transport: Transport | None = None, *, loopback: bool = False) -> Any:
    """Return a fresh async HTTP client, to be shared by the models of one event loop.

    langchain-openai otherwise shares one cached async client per process, which binds to
    the first event loop that uses it; a model built under a later `asyncio.run` would then
    fail with "Event loop is closed". `ModelCache` keeps one client per endpoint and loop.

    Args:
        transport: "aiohttp" (the default, see the module docstring) or "httpx"; None reads
            ``MOA_HTTP_TRANSPORT``.
        loopback: the client only talks to this machine (a local model, an endpoint on
            127.0.0.1): it ignores the proxy variables (``HTTP_PROXY``, ...), which would
            otherwise send a loopback request to the proxy. A remote endpoint's client keeps
            honouring them.
    """
    import openai

    timeout = openai.Timeout(600.0, connect=10.0)
    bound = max_response_bytes()
    if (transport or transport_in_use()) == "httpx":
        with _proxy_setup_explained():
            httpx_client = openai.DefaultAsyncHttpxClient(
                timeout=timeout, trust_env=not loopback, follow_redirects=False
            )
        for hooked in _transports_of(httpx_client):
            _redact_async_errors_of(hooked, bound)
        return httpx_client
    # The aiohttp client takes its proxies from the environment as mounted transports.
    with _proxy_setup_explained():
        client = openai.DefaultAioHttpClient(
            timeout=timeout, trust_env=not loopback, follow_redirects=False
        )
    for hooked in _transports_of(client):
        _hook_session_opening(hooked)
        _check_requests_of(hooked, bound)
    return client


def _check_requests_of(transport: Any, bound: int) -> None:
    """Have an aiohttp transport redact error bodies and report refused connections as such.

    Every error response's body is redacted (`_redacted_response`). And a connection that
    could not be made (refused, no route, unknown host) is raised as httpx's
    ``ConnectError``, as httpx itself raises it: the SDK's aiohttp adapter maps it to
    ``ConnectTimeout`` (its table matches aiohttp's ``ClientConnectionError``, a base
    class, first), so the SDK raised a timeout and a dead endpoint was reported as "did not
    answer within 300s" after two seconds. A real connect timeout stays a timeout.
    """
    import httpx2

    send = transport.handle_async_request

    async def handle_async_request(request: Any) -> Any:
        try:
            response = await send(request)
        except httpx2.ConnectTimeout as exc:
            cause = exc.__cause__
            # A timeout of aiohttp's, or of the OS's (ETIMEDOUT) inside a connector error.
            os_error = getattr(cause, "os_error", None)
            if (
                cause is None
                or isinstance(cause, TimeoutError)
                or isinstance(os_error, TimeoutError)
            ):
                raise
            raise httpx2.ConnectError(str(exc), request=request) from cause
        return response

    transport.handle_async_request = handle_async_request
    _redact_async_errors_of(transport, bound)


def _hook_session_opening(transport: Any) -> None:
    """Have the aiohttp session the transport opens on its first request closed with its loop.

    `AiohttpTransport.handle_async_request` opens it through `self.get_client()`; wrapping
    that method on this instance costs nothing per request. A transport without it (another
    SDK version) is left alone: its sessions are then closed by `ModelCache` alone.

    The transport holds its loop's watcher (`_close_at_loop_end`), so the watcher lives as
    long as a transport that opened a session on the loop, and no global holds it.
    """
    opener = getattr(transport, "get_client", None)
    if opener is None:
        return
    watcher = None

    def get_client() -> Any:
        nonlocal watcher
        session = opener()
        watcher = _close_at_loop_end(session)
        return session

    transport.get_client = get_client


_sessions_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakSet[Any]] = (
    weakref.WeakKeyDictionary()
)
_watchers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.ref[AsyncGenerator[None, None]]
] = weakref.WeakKeyDictionary()
"""Each loop's watcher (`_close_when_closed`), weakly: held strongly, it holds its loop."""


def _close_at_loop_end(session: Any) -> AsyncGenerator[None, None] | None:
    """Close `session` when the running loop shuts down its async generators.

    The loop has no shutdown callback, but `shutdown_asyncgens` closes every async generator
    that was started on it: one per loop, suspended at its ``yield``, closes the sessions in
    its ``finally``. The loop holds its generators weakly, so the caller must keep the one
    returned as long as `session` may be open (`_hook_session_opening`: its transport). No
    global may: the generator holds its loop (asyncio's finalizer hook is the loop's bound
    method), and kept here it kept every loop that ever opened a session, a loop left open
    (``run_until_complete`` on a loop never closed) with its sockets and its executor's
    threads for ever. A generator let go while its loop runs closes the sessions left.

    Returns:
        The loop's generator, or None outside a running loop (nothing to hook).
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # opened outside a loop: nothing to hook (aiohttp needs one anyway)
        return None
    sessions = _sessions_by_loop.get(loop)
    kept = _watchers.get(loop)
    watcher = kept() if kept is not None else None
    if sessions is None or watcher is None:
        sessions = _sessions_by_loop[loop] = weakref.WeakSet()
        watcher = _close_when_closed(sessions)
        _watchers[loop] = weakref.ref(watcher)
        # Run to its `yield` now, as the loop's own generator: nothing before it waits. A task
        # kept in a global set until its done callback ran held the loop: a loop stopped
        # right after runs that callback never.
        with suppress(StopIteration):
            watcher.__anext__().send(None)
    sessions.add(session)
    return watcher


async def _close_when_closed(sessions: weakref.WeakSet[Any]) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        loop = asyncio.get_running_loop()
        if _sessions_by_loop.get(loop) is sessions:  # not a later generator's
            del _sessions_by_loop[loop]
            _watchers.pop(loop, None)
        open_sessions = [s for s in list(sessions) if not s.closed]
        await asyncio.gather(*(s.close() for s in open_sessions), return_exceptions=True)


def own_sync_client(*, loopback: bool = False) -> Any:
    """Return a sync HTTP client for the sync calls of the models of one endpoint.

    Shared by every model of the endpoint (as `own_async_client` is): left to itself each
    langchain-openai model builds its own, with its own TLS setup, about a megabyte apiece.
    `loopback`: as for `own_async_client`, the client ignores the proxy variables.
    """
    import openai

    bound = max_response_bytes()
    with _proxy_setup_explained():
        client = openai.DefaultHttpxClient(
            timeout=openai.Timeout(600.0, connect=10.0),
            trust_env=not loopback,
            follow_redirects=False,
        )
    for hooked in _transports_of(client):
        _redact_sync_errors_of(hooked, bound)
    return client


_INHERITED = ("Unclosed client session", "Unclosed connector")


def _quiet_inherited_sessions() -> None:
    """Keep a forked child from reporting its parent's aiohttp sessions as unclosed.

    The child inherits the sessions its parent opened (and the connectors under them) but
    runs none of their loops; when it drops them, each reported "Unclosed client session"
    and "Unclosed connector" through its loop's exception handler, though they are the
    parent's to close and still open there. Each of those loops gets, in the child only, an
    exception handler (public `set_exception_handler`) that drops those two messages for
    exactly these sessions and connectors, and passes every other report on as before.
    They are known by id: a weak reference is cleared by the time the report is made. An
    object reports once, so its id is forgotten then: a session the child opens later at
    the freed address (CPython reuses it) is reported as any other.

    Each of those loops is first left to the parent (`leave_the_parents_loop`): the
    sessions' connections, dropped here, unregistered themselves from the parent's epoll set.
    And their connections are left to the parent without a word (`_drop_unsaid`).
    """
    for loop, sessions in list(_sessions_by_loop.items()):
        leave_the_parents_loop(loop)
        if not loop.is_closed():  # a closed loop's sessions were closed with it
            for session in list(sessions):
                _drop_unsaid(session.connector)
        inherited = {id(s) for s in list(sessions)}
        inherited |= {id(s.connector) for s in list(sessions) if s.connector is not None}
        loop.set_exception_handler(_without_reports_of(inherited, loop.get_exception_handler()))


def _drop_unsaid(connector: Any) -> None:
    """Abort, in a forked child, the connections of a parent's connector, writing nothing.

    Dropped with the connector, each was closed: a TLS one wrote its close_notify on the
    socket it shares with the parent, which ended the parent's connection for the server
    (the parent's next request on it raced the server's close, or cost a new handshake),
    and a plain one still sent what the parent had left to send. Aborted, each only leaves
    the child's loop, and closing it when the connector goes does nothing more. aiohttp has
    no public way to reach a connector's connections, hence its private attributes.
    """
    pooled = [p for entries in list(getattr(connector, "_conns", {}).values()) for p, _ in entries]
    for protocol in pooled + list(getattr(connector, "_acquired", ())):
        transport = getattr(protocol, "transport", None)
        # A loop in debug mode refuses the callback a thread of the parent's would run: the
        # abort is made by then.
        with suppress(RuntimeError):
            if transport is not None:
                transport.abort()


def _without_reports_of(inherited: set[int], previous: Any) -> Any:
    """Return an exception handler that drops the unclosed-reports of `inherited` objects."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        subject = context.get("client_session", context.get("connector"))
        if context.get("message") in _INHERITED and id(subject) in inherited:
            inherited.discard(id(subject))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    return handler


os.register_at_fork(after_in_child=_quiet_inherited_sessions)
