"""What `moa serve` checks before a request reaches a handler: browsers, hosts, slow clients.

(No `from __future__ import annotations`: uvicorn's protocol class is subclassed here.)

Two layers, because they see different things:

- `BrowserGuard`, an ASGI middleware, sees a request once its head has arrived. It refuses
  a ``Host`` the server does not answer to (DNS rebinding: a page on ``evil.example`` whose
  name now resolves to 127.0.0.1 would otherwise read the answers), an ``Origin`` that is
  neither the server's own nor allowed by the operator (a cross-site ``text/plain`` or form
  POST needs no preflight, so the browser sends it and the server would pay for it), and an
  API POST that is not ``application/json`` (the content types a browser sends cross-site
  without asking). It also bounds the time the body may take to arrive.
- `guarded_protocol`, uvicorn's HTTP protocol (httptools' parser when installed, else
  h11) with two more rules, sees connections: a
  request head must arrive within a time limit (a client that sends one byte a second holds
  a descriptor for nothing), and one client address may hold only so many connections, so
  a slow or idle flood from one address cannot take the descriptors every other client
  needs. Both act before any application code runs, and a refused connection is closed at
  once, which costs the server almost nothing.
"""

import asyncio
import functools
import json
from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware, _TrustedHosts
from uvicorn.protocols.http.h11_impl import H11Protocol

from langgraph_moa._redact import clip
from langgraph_moa.serving._access import note_cut
from langgraph_moa.serving._addresses import path_prefix, proxies_problem, route_path
from langgraph_moa.serving._errors import CRASHED, DEGRADED_HEADER, RETRY_AFTER_S
from langgraph_moa.serving._request_id import HEADER as REQUEST_ID_HEADER
from langgraph_moa.serving._request_id import with_id

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
"""The names a loopback server answers to by default."""


class ServeSecurity(BaseModel):
    """The browser and connection rules of `moa serve`; each field has a flag.

    The defaults suit the default bind (loopback): only loopback names in ``Host``, no
    cross-origin browser requests, no interactive docs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_hosts: tuple[str, ...] = Field(default=LOOPBACK_NAMES, description="--allowed-host")
    """Host names the server answers to (port ignored); ``*`` answers to any."""
    allowed_origins: tuple[str, ...] = Field(default=(), description="--allowed-origin")
    """Browser origins (``https://app.example``) allowed besides the server's own."""
    docs: bool = Field(default=False, description="--docs")
    """Serve ``/docs`` and ``/openapi.json``."""
    header_timeout_s: float = Field(default=10.0, gt=0, description="--header-timeout")
    """Longest wait for a request's head (method, path, headers) once a connection is idle."""
    body_timeout_s: float = Field(default=30.0, gt=0, description="--body-timeout")
    """Longest time a request body may take to arrive, counted from its head; also the
    longest a run's client may leave a piece of its answer unread (`RunCap`)."""
    max_connections_per_client: int = Field(
        default=64, ge=1, description="--max-connections-per-client"
    )
    """Open connections one client address may hold; more are closed at once."""
    max_runs: int = Field(default=256, ge=1, description="--max-runs")
    """Runs (chat completions and page runs) in flight across all clients; more get 503."""
    forwarded_allow_ips: tuple[str, ...] = Field(default=(), description="--forwarded-allow-ips")
    """Proxies (addresses, networks, ``*``) whose ``X-Forwarded-For`` names the client
    (`forwarded_clients`). None by default, loopback included: uvicorn's own default trusts
    loopback, and any local process could then have written the address of its choice."""

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if problem := proxies_problem(value):
            raise ValueError(problem)
        return value

    def with_bind_host(self, host: str) -> "ServeSecurity":
        """Add the bound name to the allowed hosts (a wildcard bind adds nothing)."""
        if host in ("0.0.0.0", "::", "") or "*" in self.allowed_hosts:
            return self
        name = host.strip("[]").lower()
        if name in self.allowed_hosts:
            return self
        return self.model_copy(update={"allowed_hosts": (*self.allowed_hosts, name)})


def _error(status: int, message: str, kind: str, code: str) -> tuple[int, bytes]:
    body = {"error": with_id({"message": message, "type": kind, "param": None, "code": code})}
    return status, json.dumps(body).encode()


async def _send_error(
    send: Any, status: int, body: bytes, *, close: bool = False, retry_after: int | None = None
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if retry_after is not None:
        headers.append((b"retry-after", b"%d" % retry_after))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_crash(send: Any) -> None:
    """Answer a request the app failed on (a bug) in OpenAI's error shape, no Python text."""
    await _send_error(send, *_error(500, CRASHED, "server_error", "internal_error"))


ONCE_ONLY = (b"host", b"origin")
"""Headers a request may send once (RFC 9110 for ``Host``, RFC 6454 for ``Origin``).

Each is read by more than one layer, and they did not read the same one of two: the guard
read the last, Starlette's CORS layers and URLs the first, so ``Origin: evil`` then
``Origin: page`` passed the guard and got a 200 with no CORS headers, and ``Host: evil``
then ``Host: localhost`` passed it too. A request that repeats one is refused (`BrowserGuard`).
"""


def _repeated(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Return the name (capitalised) of a `ONCE_ONLY` header sent more than once, else None."""
    seen = set()
    for name, _ in headers:
        name = name.lower()
        if name in ONCE_ONLY:
            if name in seen:
                return name.decode().title()
            seen.add(name)
    return None


def host_name(value: str) -> str:
    """Return the host of a ``Host`` header or an origin's authority, without its port."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class BrowserGuard:
    """ASGI middleware: the ``Host``, ``Origin`` and content-type rules, and the body deadline.

    A plain ASGI middleware, like the key check, so that it never buffers a body.
    """

    def __init__(self, app: Any, security: ServeSecurity) -> None:
        self.app = app
        self.security = security
        self.any_host = "*" in security.allowed_hosts
        self.hosts = {h.lower().strip("[]") for h in security.allowed_hosts}
        self.any_origin = "*" in security.allowed_origins
        self.origins = set(allowed_origins(security))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is not None:
            await _send_error(send, *refusal)
            return
        await self.app(scope, *self._with_body_deadline(receive, send))

    def refusal(self, scope: Any) -> tuple[int, bytes] | None:
        """Return the status and body that refuse this request, or None to let it in.

        Public so that what answers around the app (``/health``) can hold back what a
        refused client must not read.
        """
        raw = scope.get("headers") or []
        if repeated := _repeated(raw):
            return _error(
                400,
                f"The header {repeated!r} was sent twice; send it once (no browser repeats it, "
                "and the server's layers would not agree on which one counts).",
                "invalid_request_error",
                "repeated_header",
            )
        headers = dict(raw)
        host = headers.get(b"host", b"").decode("latin-1")
        if host and not self.any_host and host_name(host) not in self.hosts:
            return _error(
                421,
                f"This server does not answer to the host {clip(host_name(host))!r}; the operator "
                "can allow it with --allowed-host.",
                "invalid_request_error",
                "host_not_allowed",
            )
        origin = headers.get(b"origin")
        if origin is not None and not self._origin_allowed(origin.decode("latin-1"), host):
            return _error(
                403,
                f"Requests from the web origin {clip(origin.decode('latin-1'))!r} are refused; the "
                "operator can allow it with --allowed-origin.",
                "permission_error",
                "origin_not_allowed",
            )
        if origin is None and headers.get(b"sec-fetch-site") == b"cross-site":
            return _error(
                403,
                "Cross-site browser requests are refused; the operator can allow an origin "
                "with --allowed-origin.",
                "permission_error",
                "origin_not_allowed",
            )
        if scope["method"] in ("POST", "PUT", "PATCH") and route_path(scope).startswith("/v1/"):
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind != b"application/json":
                return _error(
                    415,
                    "The body must be sent as 'Content-Type: application/json'.",
                    "invalid_request_error",
                    "unsupported_media_type",
                )
        return None

    def _origin_allowed(self, origin: str, host: str) -> bool:
        origin = origin_key(origin)
        if self.any_origin or origin in self.origins:
            return True
        scheme, sep, authority = origin.partition("://")
        # The server's own pages (same scheme-less authority as the Host it answered to).
        return bool(sep) and scheme in ("http", "https") and authority == host.strip().lower()

    def _with_body_deadline(self, receive: Any, send: Any) -> tuple[Any, Any]:
        """Wrap `receive` so the whole body must arrive within ``body_timeout_s``.

        Past it, the guard answers 408 itself (closing the connection) and tells the handler
        the client is gone, so the handler stops reading; whatever the handler then sends
        is dropped.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.security.body_timeout_s
        state = {"body_done": False, "answered": False}

        async def guarded_receive() -> Any:
            if state["body_done"] or state["answered"]:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                state["answered"] = True
                status, body = _error(
                    408,
                    "The request body did not arrive within "
                    f"{self.security.body_timeout_s:g} s; send it at once.",
                    "invalid_request_error",
                    "body_timeout",
                )
                await _send_error(send, status, body, close=True)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def guarded_send(message: Any) -> None:
            if not state["answered"]:
                await send(message)

        return guarded_receive, guarded_send


EXPOSED_HEADERS = (REQUEST_ID_HEADER.decode(), DEGRADED_HEADER.lower())
"""The response headers a page on an allowed origin may read: the request's ID, and the mark
of a degraded answer."""


def origin_key(origin: str) -> str:
    """Return an origin as every layer compares it: lowercased, without a trailing slash.

    ``https://App.example/`` (as an address bar shows it) is ``https://app.example``, as a
    browser writes an ``Origin``. The operator's flags and the request's header are both
    read so, by `BrowserGuard` and the CORS layers alike: where one layer compared them as
    written, a page the guard let in got no CORS headers and read no answer.
    """
    return origin.strip().lower().rstrip("/")


def allowed_origins(security: ServeSecurity) -> list[str]:
    """Return the operator's allowed origins as `origin_key` writes them."""
    return [origin_key(o) for o in security.allowed_origins]


def cors_options(security: ServeSecurity) -> dict[str, Any]:
    """Return Starlette's CORS settings for the operator's allowed origins (``--allowed-origin``).

    A preflight carries no key, so the CORS layer sits outside the key check. It grants no
    DELETE: the one DELETE route (a history run's, ``DELETE /v1/moa/runs/{id}``) refuses
    every page but the server's own, an allowed origin's too, as the page's other routes do.
    """
    return {
        "allow_origins": allowed_origins(security),
        "allow_methods": ["GET", "POST"],
        "allow_headers": ["authorization", "content-type", REQUEST_ID_HEADER.decode()],
        "expose_headers": list(EXPOSED_HEADERS),
    }


class OriginCors(CORSMiddleware):
    """Starlette's CORS middleware, reading the request's ``Origin`` as `origin_key` does.

    Its headers still mirror the ``Origin`` as sent, which is what the browser compares.
    """

    def is_allowed_origin(self, origin: str) -> bool:
        """Tell whether `origin` is allowed, read as `BrowserGuard` reads it."""
        return super().is_allowed_origin(origin_key(origin))


class CorsEverywhere(OriginCors):
    """ASGI middleware: an allowed origin's CORS headers on every response, wherever answered.

    Starlette's CORS middleware (inside the app: it answers the preflights, behind the log
    and the request ID) adds them only to what passes through it: /health, the forwarded-client
    cap's 429 and a crash's 500 are answered around it, and a browser hid their status from an
    allowed page, which read a network error. This one wraps everything and adds them to a
    response that has none yet, so none is added twice; preflights pass through.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = Headers(scope=scope) if scope["type"] == "http" else None
        origin = headers.get("origin") if headers is not None else None
        if headers is None or origin is None or not self.is_allowed_origin(origin):
            await self.app(scope, receive, send)
            return

        async def send_allowed(message: Any) -> None:
            start = message["type"] == "http.response.start"
            if start and "access-control-allow-origin" not in Headers(
                raw=message.get("headers") or []
            ):
                await self.send(message, send, headers)
            else:
                await send(message)

        await self.app(scope, receive, send_allowed)


RUN_ROUTES = ("/v1/chat/completions", "/v1/moa/runs")
"""The routes whose POST starts a run: the requests `RunCap` counts."""


class RunLoad:
    """The runs in flight and their cap, shared by `RunCap` (which counts) and /health.

    /health is answered around the app (`_access.AccessLog`), where the middleware that
    counts is out of reach; both hold this one object instead, built with the app.
    """

    def __init__(self, max_runs: int) -> None:
        self.max_runs = max_runs
        self.running = 0

    @property
    def busy(self) -> bool:
        """Whether the next run would be refused (503): the readiness a load balancer reads."""
        return self.running >= self.max_runs


class RunCap:
    """ASGI middleware: at most ``max_runs`` runs in flight across all clients; more get 503.

    The per-address connection limit bounds one client, not all of them: many addresses (or
    one proxy's clients) could start runs without end, each holding its graph, its calls and
    its stream in memory. A request over the cap is refused at once with ``Retry-After``,
    never queued (a queue would be the same unbounded memory, and its clients would time out
    in it). A run is counted from its request's head until its response ends, a stream's
    included; a client that leaves one write unread for ``unread_s`` ends it (`_read_within`),
    and so does the end of ``within_s`` from its admission, whatever the client reads: a
    socket's buffers (megabytes on loopback) take a client's unread pieces for long, and a
    client that takes a piece now and then kept its place for as long as the run's last
    `_events.PENDING_CHARS` took to trickle out after its deadline. Counted from the
    response's start instead, the bound began only once the run was done (a non-streamed
    answer) or had written its first text (a stream without progress events): a slow reader
    kept its place up to another ``within_s`` past the run's deadline.
    It sits inside the key check, so a client without the key is told that first.
    """

    def __init__(
        self,
        app: Any,
        max_runs: int,
        unread_s: float = 30.0,
        load: RunLoad | None = None,
        within_s: float | None = None,
    ) -> None:
        self.app = app
        self.unread_s = unread_s
        self.within_s = within_s
        """The longest a run's exchange may last from its admission: the body's upload, the
        run's deadline, which starts once the body is read, and time to send its end."""
        self.load = load or RunLoad(max_runs)  # one given holds the same max_runs

    @property
    def max_runs(self) -> int:
        """The cap (kept in `load`, which /health reads)."""
        return self.load.max_runs

    @property
    def running(self) -> int:
        """The runs that hold a place now (kept in `load`, which /health reads)."""
        return self.load.running

    @running.setter
    def running(self, value: int) -> None:
        self.load.running = value

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self._starts_run(scope):
            await self.app(scope, receive, send)
            return
        if self.load.busy:
            await self._refuse(send)
            return
        self.running += 1
        try:
            await self.app(scope, receive, _read_within(send, self.unread_s, self.within_s))
        except _Unread as cut:
            note_cut(scope, str(cut))  # the access log says why its 200 never ended
            if (close := scope.get(CLOSE_KEY)) is not None:
                close()  # no end can go out to a client that does not read: closed at once
        finally:
            self.running -= 1

    @staticmethod
    def _starts_run(scope: Any) -> bool:
        return scope["method"] == "POST" and route_path(scope).rstrip("/") in RUN_ROUTES

    async def _refuse(self, send: Any) -> None:
        status, body = _error(
            503,
            f"The server is running its limit of {self.max_runs} "
            f"run{'s' * (self.max_runs != 1)} at once; retry in a few "
            "seconds, or the operator can raise it with --max-runs (MOA_MAX_RUNS).",
            "server_error",
            "too_many_runs",
        )
        await _send_error(send, status, body, retry_after=RETRY_AFTER_S)


class _Unread(Exception):
    """A run's client left a write of its response unread for too long (`_read_within`)."""


CLOSE_KEY = "langgraph_moa.close"
"""The ASGI scope's key of a callable that closes the request's connection at once, set by
`guarded_protocol`'s protocol: `RunCap` calls it for a response it cuts. Returned without
its end, the response was closed by uvicorn after its ERROR "ASGI callable returned without
completing response", a bug's words for the server's own decision, and only once what
waited unsent had gone out, which a client that reads nothing never lets happen."""


UNREAD_PIECE = 64 * 1024
"""Bytes of a response's body sent at a time under `_read_within`'s bound."""


def _read_within(send: Any, seconds: float, within_s: float | None = None) -> Any:
    """Wrap `send` so that each `UNREAD_PIECE` of a response's body waits at most `seconds`.

    None goes out past `within_s` from now either: `RunCap` wraps a request's `send` as it
    admits it, so that is `RunCap.within_s` after the request's admission.

    A client that stays connected and reads nothing holds its response's send for ever once
    its socket's buffer is full: the run ends at its deadline, but the exchange never does,
    and its place under `RunCap` is never given back (a few such clients would refuse every
    run after them). Past `seconds` the send raises `_Unread`, which ends the exchange.
    The bound is per piece, not per write: a stream's write joins what queued up (up to
    `_events.PENDING_CHARS`), and a live reader on a slow link taking it whole past
    `seconds` was cut as if it read nothing; a piece left unread that long means it is not
    reading (64 KB in 30 s is about 2 KB/s).
    """
    loop = asyncio.get_running_loop()
    end = None if within_s is None else loop.time() + within_s
    unread = f"a piece of the answer unread for {seconds:g} s (--body-timeout)"
    late = (
        "the response outlasted --request-timeout plus --body-timeout twice, for the body's "
        f"upload and the answer's end ({within_s or 0:g} s from its admission)"
    )

    async def send_piece(message: Any) -> None:
        if end is None or seconds <= end - loop.time():
            await _send_within(send, message, seconds, unread)
        else:
            await _send_within(send, message, end - loop.time(), late)

    async def send_within(message: Any) -> None:
        if message["type"] != "http.response.body":
            await send(message)  # the head: the bound is on the body, which ends the exchange
            return
        body = message.get("body", b"")
        if len(body) <= UNREAD_PIECE:  # one piece: sent as it is
            await send_piece(message)
            return
        more = message.get("more_body", False)
        pieces = [body[i : i + UNREAD_PIECE] for i in range(0, len(body), UNREAD_PIECE)]
        for n, piece in enumerate(pieces):
            last = n == len(pieces) - 1
            part = {**message, "body": piece, "more_body": more or not last}
            await send_piece(part)

    return send_within


async def _send_within(send: Any, message: Any, seconds: float, why: str) -> None:
    """Send `message`, raising `_Unread(why)` unless it is taken within `seconds` (> 0)."""
    if seconds <= 0:
        raise _Unread(why)
    try:
        async with asyncio.timeout(seconds):
            await send(message)
    except TimeoutError:
        raise _Unread(why) from None


def fastest_protocol() -> type:
    """Return uvicorn's fastest HTTP protocol class here: httptools' C parser, else h11."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools comes with the serve extra; h11 with uvicorn itself
        return H11Protocol
    return HttpToolsProtocol


def guarded_protocol(security: ServeSecurity, base: type | None = None) -> type:
    """Return uvicorn's protocol with a head deadline and a per-address connection limit.

    `base` is uvicorn's httptools or h11 protocol (`fastest_protocol()` if None); the head
    deadline is disarmed where each tells that a request head is complete. Each call makes a
    class with its own connection count, so two servers in one process (tests) do not share
    it.
    """
    parent: type = base or fastest_protocol()
    open_by_client: Counter[str] = Counter()
    proxies = _proxies(security)

    class GuardedProtocol(parent):
        _counted: str | None = None
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            address = self.client[0] if self.client else ""
            if proxies is not None and address in proxies:  # its clients: `forwarded_clients`
                self._arm_head_timer()
                return
            if open_by_client[address] >= security.max_connections_per_client:
                transport.close()
                return
            open_by_client[address] += 1
            self._counted = address
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            if self._counted is not None:
                open_by_client[self._counted] -= 1
                if open_by_client[self._counted] <= 0:
                    del open_by_client[self._counted]
                self._counted = None
            super().connection_lost(exc)

        if issubclass(parent, H11Protocol):

            def handle_events(self) -> None:
                cycle = self.cycle
                super().handle_events()
                if self.cycle is not cycle:  # a request head arrived
                    self._disarm_head_timer()
                    self.cycle.scope[CLOSE_KEY] = functools.partial(self._close_now, self.cycle)

        else:

            def on_headers_complete(self) -> None:  # httptools' parser: the head is in
                super().on_headers_complete()
                self._disarm_head_timer()
                self.scope[CLOSE_KEY] = functools.partial(self._close_now, self.cycle)

        def _close_now(self, cycle: Any) -> None:
            """Close the connection of `cycle`, a response the app cut short (`CLOSE_KEY`).

            Its own cycle, not the protocol's current one: httptools reads a pipelined
            request's head while the one before is answered, and that later cycle is then
            the current one; marked instead, the cut one logged uvicorn's ERROR after all.
            """
            cycle.disconnected = True  # the app's return is then no error
            self.transport.abort()  # what waits unsent is dropped: nobody reads it

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (
                self.cycle is None or self.cycle.response_complete
            ):
                self._arm_head_timer()  # waiting for the next request's head

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(security.header_timeout_s, self._head_late)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{parent.__name__}"
    return GuardedProtocol


def uvicorn_options(security: ServeSecurity, base: type | None = None) -> dict[str, Any]:
    """Return the uvicorn settings that apply `security` (the protocol with its limits).

    uvicorn's own proxy headers are off: they trusted loopback by default, and they ran
    before anything could tell the proxy's connection from its client's (`forwarded_clients`
    does both, for the proxies the operator named).
    """
    return {
        "http": guarded_protocol(security, base),
        "timeout_keep_alive": 5,
        "proxy_headers": False,
    }


def _proxies(security: ServeSecurity) -> _TrustedHosts | None:
    """Return the operator's trusted proxies as uvicorn matches them; None if there are none."""
    return (
        _TrustedHosts(list(security.forwarded_allow_ips)) if security.forwarded_allow_ips else None
    )


def forwarded_clients(app: Any, security: ServeSecurity) -> Any:
    """Return `app` as seen through the operator's trusted proxies (``--forwarded-allow-ips``).

    A request from a trusted proxy's address names its client by ``X-Forwarded-For`` (and its
    scheme by ``X-Forwarded-Proto``), as uvicorn reads them: the access log then names that
    client, and each such client may hold ``max_connections_per_client`` requests in flight
    (more get 429), where the connection cap (`guarded_protocol`) would have counted every
    client of the proxy as one. Any other request is passed on as it came: no client can
    choose the address it is logged and counted under. With no trusted proxy, `app` itself.
    """
    if not security.forwarded_allow_ips:
        return app
    return _ForwardedClients(app, security)


class _ForwardedClients:
    """ASGI middleware: see `forwarded_clients`."""

    def __init__(self, app: Any, security: ServeSecurity) -> None:
        self.app = app
        self.state = getattr(app, "state", None)  # the app's, for `_access.AccessLog` around
        self.limit = security.max_connections_per_client
        self.forwarded = ProxyHeadersMiddleware(self._capped, list(security.forwarded_allow_ips))
        self.proxies = self.forwarded.trusted_hosts
        self.open_by_client: Counter[str] = Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        peer = scope.get("client")
        if scope["type"] != "http" or not peer or peer[0] not in self.proxies:
            await self.app(scope, receive, send)
            return
        await self.forwarded(scope, receive, send)

    async def _capped(self, scope: Any, receive: Any, send: Any) -> None:
        address = scope["client"][0]
        if self.open_by_client[address] >= self.limit:
            status, body = _error(
                429,
                f"This client has {self.limit} requests in flight through the proxy, the "
                "server's limit per client; wait for one to end, or the operator can raise "
                "--max-connections-per-client.",
                "rate_limit_error",
                "too_many_connections",
            )
            await _send_error(send, status, body, close=True)
            return
        self.open_by_client[address] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open_by_client[address] -= 1
            if self.open_by_client[address] <= 0:
                del self.open_by_client[address]


def served_under(app: Any, prefix: str) -> Any:
    """Return `app` answering under the path `prefix` too (``--root-path``).

    A proxy that passes its prefix on (``location /moa/ { proxy_pass http://moa/moa/; }``)
    sent ``/moa/ui`` and ``/moa/v1/...``, which nothing here answered. The prefix is now taken
    off such a path before anything sees it, so every guard, route and log line sees
    ``/ui`` and ``/v1/...``, as behind a proxy that takes the prefix off itself; the page's
    links and redirects are relative, so they stay under it; a redirect to an absolute path
    (Starlette's from ``/v1/models/`` to ``http://host/v1/models``) gets the prefix back
    (`_prefixed`). The prefix itself (``/moa``), which not every proxy redirects, is sent to
    ``/moa/`` by a relative ``Location`` (`PrefixRedirect`, in `app`). A path outside the prefix (a
    proxy that strips it, a health check that comes directly) is served as before.
    uvicorn's own ``root_path`` would not do: it is for a proxy that strips the prefix, and
    it prefixes every path once more; and a ``root_path`` in the scope makes Starlette route
    ``/moa/v1/...`` as ``/v1/...`` while the guards, which read the path, would not count it.
    """
    prefix = path_prefix(prefix)
    if not prefix:
        return app
    head, raw_head = prefix + "/", prefix.encode()

    async def under(scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] in ("http", "websocket") else ""
        if path.startswith(head):
            raw = scope.get("raw_path")
            scope = {
                **scope,
                "path": path[len(prefix) :],
                "raw_path": raw[len(raw_head) :] if raw and raw.startswith(raw_head) else None,
            }
            await app(scope, receive, _prefixed(send, prefix))
            return
        if path == prefix and scope["type"] == "http":
            # Through `app`, whose `PrefixRedirect` answers it: the access log around the
            # app writes its line, and the app's CORS and request ID layers see it.
            await app({**scope, BARE_PREFIX_KEY: prefix}, receive, send)
            return
        await app(scope, receive, send)

    return under


BARE_PREFIX_KEY = "langgraph_moa.bare_prefix"
"""The ASGI scope's key of a request for the prefix itself (`served_under`): its redirect's."""


class PrefixRedirect:
    """ASGI middleware: answer a request `served_under` marked as the bare prefix (a 307).

    Inside the app, not in `served_under`: answered there, around the access log and the
    app's CORS layer, the redirect wrote no log line and carried no CORS headers. It sits
    outside the key check, as before: a redirect names nothing a key protects.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        prefix = scope.get(BARE_PREFIX_KEY) if scope["type"] == "http" else None
        if prefix is None:
            await self.app(scope, receive, send)
            return
        await _to_the_prefix(send, prefix, scope.get("query_string", b""))


async def _to_the_prefix(send: Any, prefix: str, query: bytes) -> None:
    """Redirect a request for `prefix` itself to `prefix` with a slash, where the app is.

    The ``Location`` is relative (``./moa/`` from ``/moa``), like the page's own redirects: a
    proxy that serves moa under a longer path still has its request come back under it. The
    ``./`` keeps a last segment with a colon (``/a:b``, a valid --root-path) from reading as
    a URL scheme.
    """
    segment = prefix.rsplit("/", 1)[1].encode()
    location = b"./" + segment + b"/" + (b"?" + query if query else b"")
    headers = [(b"location", location), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 307, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _prefixed(send: Any, prefix: str) -> Any:
    """Wrap `send` so that a ``Location`` naming an absolute path names it under `prefix`.

    The app saw the path without the prefix, so a redirect it built from that path (``/v1``,
    or ``http://host/v1``) left the prefix, where the proxy serves nothing; a relative one
    (``ui``, ``../ui``) already stays under it.
    """
    from urllib.parse import urlsplit, urlunsplit

    async def send_prefixed(message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = []
            for name, value in message.get("headers") or []:
                if name.lower() == b"location":
                    url = urlsplit(value.decode("latin-1"))
                    if url.path.startswith("/"):
                        url = url._replace(path=prefix + url.path)
                        value = urlunsplit(url).encode("latin-1")
                headers.append((name, value))
            message = {**message, "headers": headers}
        await send(message)

    return send_prefixed
