"""What `moa serve` says while it runs: one line per request and per failure, and /health.

An operator watching the terminal must see that requests arrive and what they cost, and see
a failure when it happens rather than learn of it from a client. This ASGI wrapper sits
outside the app: it names the request's ``model`` the app read (`note_model`), else reads it
from a body short enough to keep whole as it passes, and it reads the status,
usage, call counts, fallback, layers passed over and error message from the response as it
passes (the last event of a stream carries the same provenance), and whether the client left
before the response's end (its run was cancelled), then writes one line. It also answers
``GET /health`` so a supervisor or load balancer can check the server without a model call:
always 200 with the status, and the served models only to a client that sends the server's
key (or when it has none) and passes the Host and Origin rules, since ``/v1/models`` refuses
them to anyone else. That client also reads ``in_flight``, the requests being answered (runs
and streams included, /health itself not): the one way an operator can see the server's load.
Past ``--max-runs`` the server is alive but refuses runs (503): /health stays 200 "ok" (a
supervisor must not restart a busy server) and says ``"busy": true`` to every client, the
readiness a load balancer routes by; a key holder also reads ``runs`` and ``max_runs``.
``GET /ready`` says the same by its status (503 while busy), for a probe that reads no body.
With ``json_lines`` (``--log-format json``) each line is one JSON object for a log pipeline.
With ``metrics`` (``--metrics``, `_metrics`) every request is counted too, and ``GET /metrics``
answers the counts to a client the app lets in (the key, the Host and Origin rules).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from langgraph_moa._redact import redact, redact_spec
from langgraph_moa._unicode import beginning
from langgraph_moa.serving._request_id import of as request_id_of

_KEEP = 256 * 1024
"""Bytes of a response kept for the log line, at least: its tail (`_cut` keeps more only for
the event that carries the facts); a body up to twice this is kept whole."""


class AccessLog:
    """Wrap an ASGI app: answer /health, and log one line per HTTP request through `write`."""

    def __init__(
        self,
        app: Any,
        models: list[str],
        write: Callable[[str], None],
        *,
        json_lines: bool = False,
        metrics: Any = None,
    ) -> None:
        """Log requests to `app` with `write`; /health lists `models` to whom `app` lets in.

        The test is the app's own (``state.lets_in``, see `create_app`: the key and the Host
        and Origin rules); an app without one lets everyone in. With `json_lines` each line
        is one JSON object (`json_line`), for a log pipeline, instead of the text line.
        With `metrics` (a `_metrics.Metrics`) every request is counted, and ``GET /metrics``
        answers them to whom the app lets in, as /health its models.
        """
        self.app = app
        state = getattr(app, "state", None)
        if state is not None and isinstance(getattr(state, "extra_routes", None), list):
            state.extra_routes += ["GET /health", "GET /ready"]  # listed in the app's 404s
            state.extra_routes += ["GET /metrics"] if metrics is not None else []
        self.json_lines = json_lines
        self.lets_in: Callable[[Any], bool] = getattr(state, "lets_in", lambda scope: True)
        self.models = models
        self.write = write
        self.load = getattr(state, "run_load", None)  # runs in flight and the cap (`RunLoad`)
        self.drain = getattr(state, "drain", None)  # its `leaving`: a stop is coming (`Drain`)
        self.in_flight = 0
        """Requests being answered now; each is counted out however it ends (`__call__`)."""
        self.metrics = metrics
        if metrics is not None:
            metrics.in_flight = lambda: self.in_flight

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD"):
            if scope["path"] in ("/health", "/ready"):
                await (self._health if scope["path"] == "/health" else self._ready)(scope, send)
                return
            if scope["path"] == "/metrics" and self.metrics is not None and self.lets_in(scope):
                body, kind = self.metrics.exposition(), self.metrics.content_type
                await _send_whole(send, 200, body, kind)  # else the app's 401, 421 or 403
                return
        started = time.perf_counter()
        seen: dict[str, Any] = {
            "status": 0,
            "request": bytearray(),  # its head: the first `_KEEP` bytes
            "request_cut": False,  # more arrived, and was dropped
            "response": bytearray(),
            "whole": False,  # the response's last body message went out
            "left": False,  # the client disconnected before that
            "cancelled": False,  # the request's task was cancelled (the server stopping)
            "completion": None,  # the body is a chat completion (known at its first bytes)
        }

        async def tap_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                _keep_request(seen, message.get("body", b""))
            elif message["type"] == "http.disconnect" and not seen["whole"]:
                seen["left"] = True  # before the response's end: its run was cancelled
            return message

        async def tap_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["whole"] = not message.get("more_body", False)
                body, part = seen["response"], message.get("body", b"")
                if seen["completion"] is None and part:
                    seen["completion"] = part.startswith(_COMPLETION_HEAD)
                body += part
                if len(body) > 2 * _KEEP:
                    del body[: _cut(body, completion=bool(seen["completion"]))]
            await send(message)

        self.in_flight += 1
        try:
            await self.app(scope, tap_receive, tap_send)
        except Exception as exc:
            crash = f"{type(exc).__name__}: {exc}"
            self._done(scope, 500, started, seen, crash)
            raise
        except asyncio.CancelledError:  # uvicorn past its shutdown backstop, a client gone
            # Logged and counted as any request: 499 (nginx's "client closed request")
            # unless its status had gone out, marked cancelled.
            seen["cancelled"] = True
            self._done(scope, seen["status"] or CANCELLED_STATUS, started, seen)
            raise
        finally:  # answered, failed or cancelled (the client left, the server stopped)
            self.in_flight -= 1
        self._done(scope, seen["status"], started, seen)

    def _done(
        self,
        scope: Any,
        status: int,
        started: float,
        seen: dict[str, Any],
        crash: str | None = None,
    ) -> None:
        """Write the request's line, and count it in the metrics."""
        facts = _facts(scope, seen)
        record = self._record(scope, status, started, seen, facts, crash)
        self.write(self._line(record))
        if self.metrics is not None:
            # Every call record of a run ends through its tally (`emit`): answered, failed,
            # or stopped from outside (its calls as they ended, those cut off cancelled).
            tally = scope.get(CALLS_KEY)
            self.metrics.observe(scope["path"], record, [] if tally is None else tally.records())

    async def _health(self, scope: Any, send: Any) -> None:
        health: dict[str, Any] = {"status": "ok"}  # liveness: the process answers
        if self.load is not None:  # readiness: whether a run now would get a 503
            health["busy"] = self.load.busy
        if self.lets_in(scope):
            health["models"] = self.models
            health["in_flight"] = self.in_flight
            if self.load is not None:
                health["runs"] = self.load.running
                health["max_runs"] = self.load.max_runs
        await _send_json(send, 200, health)

    async def _ready(self, scope: Any, send: Any) -> None:
        """Answer /ready: 200 while a run would be admitted, 503 while it would be refused.

        A Kubernetes probe reads the status code, not the body, and /health is 200 as long as
        the process answers (liveness: a busy server must not be restarted): a readiness probe
        on it kept a full server in the Service, and its clients met the 503 of
        ``--max-runs``. No key and no Host rule here, as for /health: a probe names the pod's
        address and holds no key; ``busy`` is told there to everyone already. Under
        ``--shutdown-delay`` it is 503 ``draining`` from a SIGTERM until the server stops.
        """
        if self.drain is not None and self.drain.leaving:
            await _send_json(send, 503, {"ready": False, "draining": True})
        elif self.load is not None and self.load.busy:
            await _send_json(send, 503, {"ready": False, "busy": True})
        else:
            await _send_json(send, 200, {"ready": True})

    def _line(self, record: dict[str, Any]) -> str:
        return json_line(record) if self.json_lines else _text_line(record)

    def _record(
        self,
        scope: Any,
        status: int,
        started: float,
        seen: dict[str, Any],
        facts: dict[str, Any],
        crash: str | None = None,
    ) -> dict[str, Any]:
        """Return the facts of one request's line, each fit for the log (one line, no key)."""
        seconds = time.perf_counter() - started
        path = beginning(_printable(scope["path"]), 200)  # a client's
        record: dict[str, Any] = {"method": scope["method"], "path": path, "status": status}
        model = scope.get(MODEL_KEY)  # what the app read, else what the log can tell
        if model is None and not seen["request_cut"]:
            model = _field(bytes(seen["request"]), "model")
        if model:
            # A client's: one line, short, and no part of a key of an endpoint URL it named
            # (`redact_spec`: a spec alone, its key's quote or "<>" no end of it).
            record["model"] = beginning(_printable(redact_spec(str(model))), 100)
        if "calls" in facts:
            record["calls"], record["failed"] = facts["calls"], facts["failed"]
            if failed_models := facts.get("failed_models"):
                record["failed_models"] = _log_names(failed_models)
        if "tokens" in facts:
            record["tokens"] = facts["tokens"]
        for key in DEGRADED_BY:
            if facts.get(key):
                record[key] = facts[key]
        error = crash or facts.get("error")
        if error:
            # A crash says anything; an upstream's sentence may quote the user's input.
            record["error"] = beginning(_printable(_said(error)), 300)
        elif cut := scope.get(CUT_KEY):
            record["cut"] = cut
        elif seen.get("left"):  # a 200 that never answered: the run was cancelled
            record["client_left"] = True
            if (tally := scope.get(CALLS_KEY)) is not None:
                record["calls_ended"], record["calls_failed"] = tally.ended, tally.failed
        elif seen.get("cancelled"):  # only where nothing above says why it ended
            record["cancelled"] = True
        record["duration_s"] = round(seconds, 6)
        client = scope.get("client")  # a trusted proxy's client (`_guard.forwarded_clients`)
        record["client"] = _printable(str(client[0]))[:64] if client else None
        record["request_id"] = request_id_of(scope) or None
        return record


def _facts(scope: Any, seen: dict[str, Any]) -> dict[str, Any]:
    """Return the facts of a request's answer: noted by the app, else read from its bytes."""
    try:
        facts = scope.get(FACTS_KEY)
        if facts is None:
            kept = bytes(seen["response"])
            facts = _response_facts(kept, completion=bool(seen["completion"]))
    except Exception:  # the line matters more than its details; never fail the request
        facts = {}
    return dict(facts)


def _text_line(record: dict[str, Any]) -> str:
    """Return the terminal's line of a request: its facts joined by `` · ``.

    Its ``request <id>`` part comes last: the key the client and the trace hold (the ID is
    the app's, `_request_id`: a client's only where it is short and safe).
    """
    parts = [f"{record['method']} {record['path']} {record['status']}"]
    if "model" in record:
        parts.append(record["model"])
    if "calls" in record:
        failed = f", {record['failed']} failed" if record["failed"] else ""
        failed += _named(record.get("failed_models"))
        parts.append(f"{record['calls']} calls{failed}")
    if "tokens" in record:
        parts.append(f"{record['tokens']} tokens")
    if "fallback" in record:
        parts.append(f"fallback: {record['fallback']}")
    if "passed_over" in record:
        parts.append("passed over: layer " + ", ".join(map(str, record["passed_over"])))
    if "incomplete_call" in record:
        parts.append("incomplete tool call")
    if "error" in record:
        parts.append("error: " + record["error"])
    elif "cut" in record:
        parts.append(f"cut: {record['cut']}")
    elif record.get("client_left"):
        left = "client left"
        if "calls_ended" in record:
            ended, failed = record["calls_ended"], record["calls_failed"]
            left += f" after {ended} call{'s' * (ended != 1)}"
            left += f", {failed} failed" if failed else ""  # as an answer's
        parts.append(left)
    elif record.get("cancelled"):
        parts.append("cancelled")
    parts.append(f"{record['duration_s']:.2f}s")
    parts.append(record["client"] or "-")
    if record["request_id"]:
        parts.append(f"request {record['request_id']}")
    return " · ".join(parts)


DEGRADED_BY = ("fallback", "passed_over", "incomplete_call")
"""What makes an answer degraded, as the ``X-MoA-Degraded`` header says it."""


def degraded_reasons(record: dict[str, Any]) -> list[str]:
    """Return why a request's answer was degraded (`DEGRADED_BY`), for its line and metrics."""
    return [reason for reason in DEGRADED_BY if record.get(reason)]


def json_line(record: dict[str, Any]) -> str:
    """Return `record` as one JSON object on one line (``--log-format json``), for a pipeline.

    It leads with the time (UTC, ISO 8601) and says ``degraded``: whether the answer was a
    fallback or passed a layer over, what the ``X-MoA-Degraded`` header says.
    """
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    head: dict[str, Any] = {"time": now.replace("+00:00", "Z")}
    if "status" in record:
        head["degraded"] = bool(degraded_reasons(record))
    return json.dumps({**head, **record}, separators=(",", ":"))


async def _send_json(send: Any, status: int, payload: dict[str, Any]) -> None:
    """Send `payload` as a whole JSON response with `status`."""
    await _send_whole(send, status, json.dumps(payload).encode(), "application/json")


async def _send_whole(send: Any, status: int, body: bytes, content_type: str) -> None:
    """Send a whole response (HEAD's client reads no body: the server drops it)."""
    kind = content_type.encode()
    headers = [(b"content-type", kind), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


CANCELLED_STATUS = 499
"""The status a request's line says when its task was cancelled before any status went out:
nginx's "client closed request", which log tools already read."""

_ERROR_READ = 4096
"""Characters of a failure's sentence read for its log line (300 are kept): a bound on the
work on a long one."""

_INPUT_VALUE = re.compile(r"input_value=.*?(?=, input_type=)|input_value=.*", re.DOTALL)
"""Pydantic's quote of a value it refused, up to its ``input_type`` (or the text's end)."""
_INPUT_KEY = re.compile(r"""(\\*)(['"])input\1\2:\s*""")
"""The ``'input':`` key of a validation error's dict (pydantic's ``errors()``, FastAPI's 422),
also where that dict is itself quoted in a string with its quotes escaped (``\\'input\\':``,
as the openai SDK prints a body whose message holds both quote characters)."""
_OPEN, _CLOSE = "{[(", "}])"


def without_quoted_input(text: str) -> str:
    """Return `text` with the input a validation error quotes replaced by ``[input]``.

    An OpenAI-compatible server (vLLM, any FastAPI app) refuses a request with its
    validation error, which quotes the value it refused: a user's message, personal data
    that the access log must not keep. The error's words (which field, what was wrong) stay.
    """
    text = _INPUT_VALUE.sub("input_value=[input]", text)
    parts: list[str] = []
    at = 0
    for match in _INPUT_KEY.finditer(text):
        if match.start() < at:
            continue  # inside an input already cut
        parts += [text[at : match.end()], "[input]"]
        at = _value_end(text, match.end(), len(match[1]))
    return "".join([*parts, text[at:]])


def _said(error: object) -> str:
    """Return a failure's message as the log may keep it: no quoted input, no secret."""
    return redact(without_quoted_input(str(error)[:_ERROR_READ]))


def crash_text(exc: BaseException) -> str:
    """Return a crash's traceback for the server's log, its messages as the access log's.

    Python's traceback quotes each exception's message whole, and a crash's may quote the
    request (a validation error's input: a user's message). The frames and the exception
    types stay, each cause and context in the order Python prints them, and the exceptions
    an exception group holds (anyio's task group, under a stream: the group's own message
    names none of them); each message is read as the access log reads a failure
    (`without_quoted_input`, `redact`).
    """
    import textwrap
    import traceback

    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    parts: list[str] = []
    for at, each in enumerate(reversed(chain)):
        if at:
            parts.append("\nThe above exception led to the one below.\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts += traceback.format_tb(each.__traceback__)
        said = _said(each)
        kind = type(each)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        parts.append(f"{name}: {said}\n" if said else f"{name}\n")
        held = each.exceptions if isinstance(each, BaseExceptionGroup) else ()
        for number, inner in enumerate(held[:_GROUP_SHOWN], 1):  # as Python prints them
            parts.append(f"\n+-- its exception {number} of {len(held)} --\n")
            parts.append(textwrap.indent(crash_text(inner), "| ") + "\n")
        if len(held) > _GROUP_SHOWN:
            parts.append(f"\n+-- and {len(held) - _GROUP_SHOWN} more --\n")
    return "".join(parts).rstrip("\n")


_GROUP_SHOWN = 15
"""The exceptions of a group (a task group's crash) shown in its traceback, as Python shows:
the default of `traceback.TracebackException`'s ``max_group_width``, which no constant names."""


class CrashWithoutInput(logging.Filter):
    """Set a logged crash's traceback text to `crash_text`: no request content in the log.

    On the loggers that log a request's crash with its traceback (uvicorn's
    "Exception in ASGI application", `_errors._run_failed`); a formatter writes the
    record's ``exc_text`` where it is set instead of formatting the exception again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, its traceback text made from `crash_text`."""
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = crash_text(record.exc_info[1])
        return True


def _value_end(text: str, start: int, slashes: int = 0) -> int:
    """Return where the Python or JSON literal at `start` ends (its brackets and quotes).

    A literal quoted within a string has `slashes` backslashes before each of its own quotes
    (1 in a repr within a repr, 3 a level deeper): a quote is the literal's own where the run
    of backslashes before it is `slashes` plus a multiple of ``2 * (slashes + 1)`` (its own
    escaped backslashes); any other quote is an escaped one, part of a string's text.
    """
    depth, quote, run = 0, "", 0
    for at in range(start, len(text)):
        char = text[at]
        if char == "\\":
            run += 1
            continue
        own = run % (2 * (slashes + 1)) == slashes
        run = 0
        if quote:
            if char == quote and own:
                quote = ""
        elif char in "'\"" and own:
            quote = char
        elif char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            if depth == 0:
                return at
            depth -= 1
        elif char == "," and depth == 0:
            return at
    return len(text)


def _printable(text: str) -> str:
    """Return a client's text fit for the log: one line, no control characters.

    A newline in it would forge a second log line, and a terminal escape sequence (ESC ...)
    would act on the operator's terminal; both become spaces or are dropped.
    """
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _field(body: bytes, name: str) -> Any:
    """Return the body's top-level field `name`, or None for a body that is not a JSON object.

    The body is the client's, so anything may arrive: bytes that are not UTF-8, and JSON
    nested deeper than Python's parser recurses (``[[[...]]]``, which the app refuses with a
    400 while ``json.loads`` raises RecursionError). None of it may cost the log line.
    """
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value.get(name) if isinstance(value, dict) else None


def _keep_request(seen: dict[str, Any], part: bytes) -> None:
    """Keep a request body's first `_KEEP` bytes, and whether more arrived."""
    head = seen["request"]
    room = max(_KEEP - len(head), 0)
    if len(part) > room:
        seen["request_cut"] = True  # no longer JSON: `AccessLog._line` does not read it
    head += part[:room]


MODEL_KEY = "langgraph_moa.model"
"""The ASGI scope's key under which the app notes the ``model`` of a request it read
(`note_model`). The log names that one rather than reading the body again: a body
reread by the log cost the event loop up to tens of milliseconds (a hostile one repeats
nested keys), and a cut one could be read otherwise than the app read it (a repeated
``model``: JSON's last one counts), so the line could name a model the request did not
run under."""


FACTS_KEY = "langgraph_moa.facts"
"""The ASGI scope's key under which the app notes the facts of an answer it sends, a chat
completion's or a page run's (`note_facts`). Read back from the bytes sent, a large
completion was kept from its first ``"usage":``, and a provider's logprobs (which come
before the completion's own usage) may carry one: the kept bytes were no longer JSON, and
the line lost its calls and tokens."""


def note_facts(scope: Any, payload: dict[str, Any]) -> None:
    """Note in `scope` the log's facts of the answer the app is about to send.

    `payload` is a chat completion, or any payload with its ``moa`` (`payload_facts`): the
    page's run stream notes its answer's, whose ``answer`` event names no failed call's model.
    """
    if scope is not None:
        scope[FACTS_KEY] = payload_facts(payload)


CALLS_KEY = "langgraph_moa.calls"
"""The ASGI scope's key of the run's call tally (`note_calls`): the chat route sees no call
events, so a client that left was logged without a word of what its run had cost, and a run
its deadline or the drain stopped (whose error carries no calls) was counted in the metrics
without any of its calls."""


def note_calls(scope: Any, tally: Any) -> None:
    """Note in `scope` the run's `CallTally`: its calls ended (``.ended``, ``.records()``)."""
    if scope is not None:
        scope[CALLS_KEY] = tally


CUT_KEY = "langgraph_moa.cut"
"""The ASGI scope's key of why the server cut a response short (`note_cut`): its status line
had gone out as a 200, and the log said no more than that of a stream that never ended."""


def note_cut(scope: Any, reason: str) -> None:
    """Note in `scope` why the server ended the request's response before its end."""
    if scope is not None:
        scope[CUT_KEY] = reason


def note_model(scope: Any, model: str) -> None:
    """Note in `scope` the ``model`` the app read from its request's body, for the log."""
    if scope is not None:
        scope[MODEL_KEY] = model


def _response_facts(body: bytes, *, completion: bool = False) -> dict[str, Any]:
    """Read calls, failures, tokens, fallback and error from a JSON body or an event stream.

    A `completion` (a chat completion, not streamed) may have been kept from its ``usage``
    on (`_cut`): it is then ``{`` short of a JSON object.
    """
    payloads: list[dict[str, Any]] = []
    text = body.decode("utf-8", "replace")
    if completion and body.startswith(_USAGE_KEY):
        text = "{" + text
    if text.lstrip().startswith("{"):
        try:
            payloads = [json.loads(text)]
        except (ValueError, RecursionError):
            payloads = []
    else:
        for line in _fact_lines(text):
            try:
                payloads.append(json.loads(line[len("data: ") :]))
            except (ValueError, RecursionError):
                continue
    facts: dict[str, Any] = {}
    for payload in payloads:
        facts.update(payload_facts(payload))
    return facts


def payload_facts(payload: dict[str, Any]) -> dict[str, Any]:
    """Read the facts of one response payload: a completion, a chunk, or a run event.

    Only its top-level ``usage`` counts: a provider's logprobs may carry a ``usage`` of
    their own.
    """
    facts: dict[str, Any] = {}
    if isinstance(payload.get("error"), dict):
        facts["error"] = payload["error"].get("message")
    moa = payload.get("moa")
    if isinstance(moa, dict):
        calls = moa.get("calls") or []
        facts["calls"] = len(calls)
        facts["failed"] = sum(c.get("status") == "failed" for c in calls)
        if failed_models := _failed_models(calls):
            facts["failed_models"] = failed_models
        total = (moa.get("usage") or {}).get("total") or {}
        if "total_tokens" in total:
            facts["tokens"] = total["total_tokens"]
        facts["fallback"] = moa.get("fallback")
        facts.update(_passed_over(moa))
        if moa.get("incomplete_call"):
            facts["incomplete_call"] = True
    usage = payload.get("usage")
    if isinstance(usage, dict) and "total_tokens" in usage:
        facts["tokens"] = usage["total_tokens"]
    facts.update(_run_event_facts(payload))
    return facts


_FACT_EVENTS = ("answer", "error")
"""The run event stream's events that carry the log's facts; its others (tokens) never do."""
_FACT_KEYS = ('"moa":', '"usage":', '"error":')
"""The keys of an OpenAI chunk that carry them. In a token's text their quotes are escaped
(JSON), so a text that spells one out is never taken for one."""
_FACT_EVENT_HEADS = tuple(f"event: {name}\n".encode() for name in _FACT_EVENTS)
_FACT_KEY_BYTES = tuple(key.encode() for key in _FACT_KEYS)
"""The same, as `_cut` finds them in the kept bytes."""


def _cut(body: bytearray, *, completion: bool = False) -> int:
    """Return how much of a response's kept bytes to drop: all but the last `_KEEP`.

    Except the head of the event that the cut falls in, if that event carries the log's
    facts: an answer with logprobs is larger than `_KEEP`, and cut at its head it was no
    longer JSON, so a degraded run was logged as a plain 200. That event is kept whole (the
    app held it whole too), and so is an OpenAI chunk still arriving (its ``moa`` comes
    last). A `completion` (a chat completion, not streamed: the caller knows it by its first
    bytes) is kept from its ``usage`` on (`_completion_facts`). Any other event, or body, is
    cut as before.
    """
    facts = _completion_facts(body) if completion else None
    if facts is not None:
        return facts
    cut = len(body) - _KEEP
    found = body.rfind(b"\n\n", 0, cut)
    start = found + 2 if found >= 0 else 0
    if body.startswith(_FACT_EVENT_HEADS, start):
        return start
    if body.startswith(b"data: {", start):
        end = body.find(b"\n\n", start)
        if end < 0:  # still arriving: its keys may be in its last part (a chunk's "moa")
            return start
        if any(body.find(key, start, end) >= 0 for key in _FACT_KEY_BYTES):
            return start
    return cut


_COMPLETION_HEAD = b'{"id":"chatcmpl-'
"""How a chat completion (not streamed) begins, as the app writes it."""
_USAGE_KEY = b'"usage":'
"""The key that begins a chat completion's facts: ``usage``, then ``moa``, then its end."""


def _completion_facts(body: bytearray) -> int | None:
    """Return where a chat completion's kept facts begin, or None if they have not arrived.

    A completion's ``usage`` and ``moa`` come last, after its choices (the answer and its
    logprobs, which can pass 512 KiB), and ``moa`` repeats every call's output, so its tail
    may hold no ``usage`` and only part of ``moa``: cut there it was no longer JSON. Kept
    from its ``usage`` on, it is ``{`` short of a JSON object (`_response_facts`), and the
    logprobs are never kept. The first ``"usage":`` is the completion's own: before it there
    is only text, whose quotes are escaped. A body already cut there is kept as it is (its
    first ``"usage":`` is at 0); one whose ``usage`` has not arrived yet is cut as any other.
    """
    found = body.find(_USAGE_KEY)
    return found if found >= 0 else None


def _fact_lines(text: str) -> list[str]:
    """Return the stream's ``data:`` lines that can carry the facts, without parsing the rest.

    A stream's tail holds thousands of token events, and parsing each one's JSON when the
    stream ends cost the event loop about 20 ms per run: a named event is kept only if it is
    the answer or the error, an unnamed one (OpenAI's chunks) only if it has one of the keys.
    """
    lines: list[str] = []
    event = ""
    for line in text.splitlines():
        if not line:
            event = ""  # a blank line ends an event
        elif line.startswith("event:"):
            event = line[len("event:") :].strip()
        elif line.startswith("data: {") and (
            event in _FACT_EVENTS if event else any(key in line for key in _FACT_KEYS)
        ):
            lines.append(line)
    return lines


def _failed_models(calls: list[Any]) -> list[str]:
    """Return the models of a run's failed calls, each once, in call order."""
    failed = [c.get("model") for c in calls if isinstance(c, dict) and c.get("status") == "failed"]
    return list(dict.fromkeys(str(m) for m in failed if m))


def _log_names(models: list[str]) -> list[str]:
    """Return models fit for the log: one line each, short, key-free (a client's may be a URL)."""
    return [beginning(_printable(redact_spec(m)), 100) for m in models]


def _named(models: list[str] | None) -> str:
    """Return `` (a, b)``: the failed calls' models for the line, short and key-free."""
    if not models:
        return ""
    return f" ({beginning(', '.join(_log_names(models)), 300)})"


def _passed_over(moa: dict[str, Any]) -> dict[str, Any]:
    """Read the layers a run passed over (`failed_layers`), if any: degraded, as a fallback is."""
    skipped = moa.get("failed_layers")
    if not isinstance(skipped, list):
        return {}
    layers = [
        s["layer"] for s in skipped if isinstance(s, dict) and isinstance(s.get("layer"), int)
    ]
    return {"passed_over": layers} if layers else {}


def _run_event_facts(payload: dict[str, Any]) -> dict[str, Any]:
    """Read the same facts from the run event stream's `answer` or `error` event.

    Its events carry them in their own shape (docs/event-stream.md), and without this a run
    that degraded or failed there was logged as a plain 200.
    """
    event = payload.get("event")
    if event == "error":
        return {"error": payload.get("message")}
    if event != "answer":
        return {}
    usage = payload.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    facts: dict[str, Any] = {"fallback": payload.get("fallback"), **_passed_over(payload)}
    if payload.get("incomplete_call"):
        facts["incomplete_call"] = True
    if isinstance(usage.get("calls"), int):
        facts["calls"] = usage["calls"]
        facts["failed"] = usage.get("failed") or 0
    return facts
