"""Which request a response, a log line, an error and a trace belong to: ``X-Request-ID``.

An operator asked "what happened to request X?" needs one key that the client, the access
log and the run's trace all hold. A client (or the proxy in front) may send its own
``X-Request-ID``; it is kept if it is short and made of characters safe in a log line and a
header (`SAFE_ID`), else the server makes one (32 hex digits), so that no control character
or unbounded text of a client's reaches the operator's terminal. Every response that passes
through the app carries it back in ``X-Request-ID``, the header the OpenAI SDK reads into
``exc.request_id`` and ``completion._request_id``; error bodies carry it as
``error.request_id`` (the SDK keeps the body whole and reads only its own fields), the
access log writes it, and the run's trace metadata holds it as ``request_id``, so a LangSmith
trace is found by it.

The completion's ``id`` (``chatcmpl-...``) carries the request ID the server made
(`answer_id`): most OpenAI clients send none and report that id, which then leads to the log
line and the trace. A client's own ID is never put in it: a client may send one ID for
several requests (its retries), and each answer's id must stay unique.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

HEADER = b"x-request-id"

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")
"""A client's request ID that is kept: up to 128 characters, none of which a log line, a
header or a LangSmith search must escape."""

SCOPE_KEY = "langgraph_moa.request_id"
"""The ASGI scope's key of the request's ID (the access log wraps the app and reads it)."""
MADE_KEY = "langgraph_moa.request_id_made"
"""The scope's key that says the server made the ID (the client sent none that it kept)."""

_current: ContextVar[str | None] = ContextVar("langgraph_moa_request_id", default=None)


def current() -> str | None:
    """Return the ID of the request being answered (None outside one): for error bodies."""
    return _current.get()


def of(scope: Any) -> str | None:
    """Return the ID the app gave the request of `scope`, if it did."""
    return scope.get(SCOPE_KEY) if scope is not None else None


def with_id(fields: dict[str, Any]) -> dict[str, Any]:
    """Return `fields` (an OpenAI error object, a run's event) with the request's ID, if any."""
    request_id = current()
    return {**fields, "request_id": request_id} if request_id else fields


def request_metadata(scope: Any) -> dict[str, str]:
    """Return the run's trace metadata naming its request (the server's, over a client's)."""
    request_id = of(scope)
    return {"request_id": request_id} if request_id else {}


def answer_id(scope: Any) -> str:
    """Return the ``chatcmpl-`` id of the answer to the request of `scope`: unique per answer.

    The server's own request ID where it made one (it is unique), else a fresh one.
    """
    made = of(scope) if scope is not None and scope.get(MADE_KEY) else None
    return f"chatcmpl-{made or uuid.uuid4().hex}"


def chosen(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Return the first safe (`SAFE_ID`) ``X-Request-ID`` the request carries, if any.

    Several may come (a client's, then a proxy's): an unsafe first one is passed over, as a
    made-up ID would match none of the logs that the safe one is in.
    """
    for name, value in headers:
        if name.lower() == HEADER and SAFE_ID.fullmatch(text := value.decode("latin-1")):
            return text
    return None


class RequestID:
    """ASGI middleware: give each HTTP request its ID and send it back on the response."""

    def __init__(self, app: Any, on_crash: Callable[[Any], Awaitable[None]]) -> None:
        """Wrap `app`; it must be the outermost middleware, so every response passes it.

        `on_crash(send)` answers a request `app` raised on before answering (a bug).
        """
        self.app = app
        self.on_crash = on_crash

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one ASGI connection."""
        if scope["type"] != "http" or of(scope) is not None:
            # Around the app too (`_server.stacked`): the outer copy chose the ID, set it
            # for this task, sends its header and answers a crash; this one has nothing to add.
            await self.app(scope, receive, send)
            return
        request_id = chosen(scope.get("headers") or [])
        if request_id is None:
            request_id = uuid.uuid4().hex
            scope[MADE_KEY] = True
        scope[SCOPE_KEY] = request_id
        encoded = request_id.encode()

        started = False

        async def send_with_id(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, encoded)]}
            await send(message)

        token = _current.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # A bug's 500 was Starlette's bare text, outside this middleware: no ID on the
            # one answer an operator most needs to find. The error itself goes on up, to
            # the access log and uvicorn's traceback; the client reads no Python text.
            if not started:
                await self.on_crash(send_with_id)
            raise
        finally:
            _current.reset(token)
