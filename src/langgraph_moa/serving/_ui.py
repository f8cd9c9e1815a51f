"""The web page of `moa serve`: watch every model of a run, keep runs, compare them.

(No `from __future__ import annotations` here: FastAPI reads the handlers' `Request` hints.)

- ``GET /ui`` (and ``/`` redirects to it): the page, plain HTML, CSS and JavaScript shipped
  in the package (``serving/static``), no CDN and no build step. Every URL the page and the
  redirect name is relative (``ui/static/app.js``, ``v1/models``), so that behind a reverse
  proxy serving it under a path prefix (``/moa/ui``) they stay under that prefix.
- ``POST /v1/moa/runs``: the body of a chat completion (``model``, ``messages`` and MoA's
  overrides, under the same model policy and limits); the answer is the run's event stream
  (`_events`, documented in docs/event-stream.md). The run is kept in the history.
- ``GET /v1/moa/runs``: the history, newest first; ``GET /v1/moa/runs/{id}``: one run with
  its events, which the page replays to draw it again; ``DELETE /v1/moa/runs/{id}``: erase it.

Security is the API's: these routes sit behind the same key check (only the page's shell,
which holds no data, loads without it; the page asks for the key and sends it), the same
model policy and limits. A browser on another site cannot drive them: a run needs a JSON
body (so a cross-site form cannot post one, and a script needs a CORS preflight this server
never grants), and a request whose ``Origin`` is not this server's is refused. The page's
Content-Security-Policy allows only its own scripts; model text is untrusted and the page
only ever inserts it as text.
"""

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote_to_bytes, urlsplit

from langchain_core.messages import HumanMessage

from langgraph_moa._parts import MEDIA_PARTS
from langgraph_moa._redact import clip, redact_machine
from langgraph_moa.config._limits import RequestLimits
from langgraph_moa.config._prices import Prices
from langgraph_moa.config._schema import MoAConfig
from langgraph_moa.config.context import apply_context
from langgraph_moa.graph.streaming import RunEvents
from langgraph_moa.run._answer import is_degraded
from langgraph_moa.serving._access import CUT_KEY, note_facts
from langgraph_moa.serving._errors import CRASHED, MAX_BODY_BYTES, _APIError, _run_failed
from langgraph_moa.serving._events import (
    STREAM_HEADERS,
    TokenJoiner,
    answer_event,
    pump,
    run_event,
    sse,
    stopped_calls,
)
from langgraph_moa.serving._history import Compactor, History, HistoryError, RunRecord
from langgraph_moa.serving._policy import _Job, _Preparer
from langgraph_moa.serving._request_id import with_id
from langgraph_moa.serving._requests import Drain, _disconnected, _read_body, _timed

STATIC = Path(__file__).parent / "static"

CLIENT_LEFT = "Cancelled: the client closed the event stream, so the run stopped."
"""The error of the calls a run's client left in flight (kept in the history)."""

SERVER_CUT = "Cancelled: the server closed the event stream ({}), so the run stopped."
"""The error of the calls in flight of a run whose reader the server cut off (`CUT_KEY`):
kept as `CLIENT_LEFT`, the history blamed a client the server had closed on."""

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _check_origin(request: Any) -> None:
    """Refuse a browser request sent from another site's page (its Origin is not ours)."""
    origin = request.headers.get("origin")
    if origin is None:
        return  # not a browser's cross-origin request (curl, an SDK, a same-origin GET)
    host = request.headers.get("host", "")
    if urlsplit(origin).netloc != host:
        raise _APIError(
            403,
            f"Requests from the page at {origin} are refused; open the page this server "
            "serves at /ui instead.",
            "permission_error",
            "origin_not_allowed",
        )


def _question(job: _Job) -> str:
    """Return the last user turn as the page shows it: its text, a short mark per other part.

    An image-only question was kept as "" (a blank row); its base64 data, whole, would
    make every history row and ``run`` event as large as the image.
    """
    human = [m for m in job.messages if isinstance(m, HumanMessage)]
    if not human:
        return ""
    content = human[-1].content
    if isinstance(content, str):
        return content
    marks = [_mark(part) for part in content]
    return " ".join(mark for mark in marks if mark)


def _mark(part: Any) -> str:
    """Return a text part's text, or ``[image: 34 kB png]`` / ``[image: URL]`` for another.

    OpenAI's parts hold theirs in a mapping named by their type (``image_url.url``,
    ``input_audio.data``, ``file.file_data``), LangChain's blocks at their top level. A part
    with no data, URL nor id is marked by its type alone (``[video]``): no size is known.
    """
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return ""
    kind = str(part.get("type", ""))
    if kind == "text":
        return str(part.get("text", ""))
    inner: dict[str, Any] = part[kind] if isinstance(part.get(kind), dict) else {}
    field = {**part, **inner, **({"url": part[kind]} if isinstance(part.get(kind), str) else {})}
    kind = MEDIA_PARTS.get(kind) or _word(kind) or "part"
    url = str(field.get("url") or "")
    data = str(field.get("data") or field.get("base64") or field.get("file_data") or "")
    mime = str(field.get("mime_type") or field.get("format") or "")
    encoded = True  # OpenAI's data and LangChain's are base64
    inline = next((given for given in (url, data) if given[:5].lower() == "data:"), "")
    if inline:  # a data URL, its scheme in either case: the type, then the data
        url, (mime, _, data) = "", inline[5:].partition(",")
        encoded = mime.lower().endswith(";base64")  # else its bytes as written (RFC 2397)
    if url:
        return f"[{kind}: {_place(url)}]"
    if not data:
        ref = field.get("file_id") or field.get("id")
        return f"[{kind}: {_word(str(ref), 80)}]" if ref else f"[{kind}]"
    size = f"{(len(data) * 3 // 4 if encoded else len(unquote_to_bytes(data))) / 1000:.0f} kB"
    mime = mime.split(";")[0]
    subtype = _word(mime.rpartition("/")[2] or str(field.get("filename") or "").rpartition(".")[2])
    return f"[{kind}: {size} {subtype}]" if subtype else f"[{kind}: {size}]"


def _word(text: str, limit: int = 20) -> str:
    """Return a client's type, subtype or file id as a mark shows it: no bracket nor newline.

    Bounded to `limit` characters. It is kept in the history and sent in every ``run``
    event, as the page shows it.
    """
    return clip(re.sub(r"[^A-Za-z0-9_.-]+", "", text), limit)


_FILE_NAME = re.compile(r"[\w%.-]+\.[A-Za-z0-9]{1,8}")
"""A path segment that reads as a file name: letters, digits, ``_%.-``, and an extension."""


def _place(url: str) -> str:
    """Return where `url` points, ``https://host/…/cat.png``: its scheme, host and file name.

    Never its user and password, query or fragment, nor the folders of its path, where a
    presigned or keyed URL holds its credential (``?X-Amz-Signature=``, ``?key=``, a bot's
    token in its path): the mark is kept in the history and sent in every ``run`` event.
    Nor the path parameters after a ``;`` (``cat.png;jsessionid=...``), and the last segment
    only when it reads as a file name (`_FILE_NAME`): one that is not (``/sk-...``, an id)
    may be the credential itself, and is shown as ``/…/``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed IPv6 host ("http://[oops"): the provider refuses it
        return "a URL"
    if not parts.scheme or not parts.netloc:
        return "a URL"
    folders, _, name = parts.path.rpartition("/")
    name = name.partition(";")[0]
    if name and not _FILE_NAME.fullmatch(name):
        path = "/\u2026/"
    elif folders.strip("/"):
        path = f"/\u2026/{name}"
    else:
        path = f"/{name}" if name else ""
    return clip(f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{path}", 80)


async def _run(
    graph: Any,
    job: _Job,
    run_id: str,
    config: MoAConfig,
    history: History | None,
    running: dict[str, bool],
    prices: Prices | None = None,
    seconds: float = RequestLimits().request_timeout_s,
    drain: Drain | None = None,
    scope: Any = None,
) -> AsyncIterator[Any]:
    """Run the job watched, as server-sent events, and keep it in the history.

    Its `run_id` is in `running` until it is saved: a DELETE of it meanwhile is refused (409),
    as the history does not hold it yet and its end would save it. Its response (`RunStream`)
    puts it there (False: not begun) before the ID goes out in its header, as a client may
    send that DELETE at once; the run marks it begun (True) as it starts.

    ``token`` events are yielded as dicts, for `pump`'s `TokenJoiner` to join; every other
    event as its text.

    The run gets the chat route's input, trace metadata and deadline (`seconds`, the
    server's ``--request-timeout``); a run past it ends with its ``error`` event (504).
    Its answer's facts are noted in the request's `scope` for the access log, as the chat
    route's are (`note_facts`): the ``answer`` event counts the failed calls but names none.
    """
    record = RunRecord(run_id, job.name, _question(job))
    log = Compactor()  # compacted as the run goes: memory grows with calls, not tokens

    def out(event: dict[str, Any]) -> str:
        log.add(event)
        return sse(event)

    saved = False

    def kept() -> RunRecord:
        record.events = log.events  # each call's tokens joined now, once
        return record

    def save() -> None:
        nonlocal saved
        if history is not None and not saved:
            saved = True
            _keep(history, kept())

    running[run_id] = True
    try:
        # The request ID is kept with the run: one reopened from the history leads to its
        # log line and its trace, whether it failed or not.
        yield out(with_id(run_event(run_id, job.name, record.question, config)))
        events = RunEvents(graph, job.run_input(), job.config(), context=job.context)
        try:
            async for event in _timed(aiter(events), seconds, drain, job.since):
                if event["event"] == "token":  # joined with its call's next ones (`pump`)
                    log.add(event)
                    yield event
                else:
                    yield out(event)
            # Kept first: a client leaving while the event is built must not lose the answer.
            record.answer = str(events.answer.text)
            # Off the event loop: its agreement compares the answer with every proposal, a
            # long answer (1 MB, or many long proposals) held every other client meanwhile.
            answer = await asyncio.to_thread(
                answer_event, events.final, prices, logprobs=job.logprobs
            )
            record.answer = answer["text"]
            note_facts(scope, {"moa": events.answer.response_metadata.get("moa", {})})
            # The answer event carries the run's fallback and failed_layers as they are.
            record.status = "degraded" if is_degraded(answer) else "done"
            yield out(answer)
        except Exception as exc:
            refusal = _run_failed(exc)
            record.status = "failed"
            for stopped in stopped_calls(log.events, f"Stopped: {refusal.message}"):
                yield out(stopped)
            # The chat route's sentence: one line, redacted (not the Python error's text).
            yield out({"event": "error", **with_id(refusal.in_stream())})
        done: dict[str, Any] = {"event": "done", "run_id": run_id, "status": record.status}
        if history is not None:  # before 'done': a client reloading the history then sees it
            saved = True  # off the event loop: a commit waits for the disk
            if not await asyncio.to_thread(_keep, history, kept()):
                done["kept"] = False
        yield sse(done)
    except asyncio.CancelledError:
        record.status = "cancelled"  # the client left, or was cut off; what it saw is kept
        cut = scope.get(CUT_KEY) if scope is not None else None
        why = CLIENT_LEFT if cut is None else SERVER_CUT.format(cut)
        for stopped in stopped_calls(log.events, why):
            log.add(stopped)
        raise
    except Exception:
        record.status = "failed"  # not one of the package's errors: a bug, kept as failed
        for stopped in stopped_calls(log.events, f"Stopped: {CRASHED}"):  # as `_run_failed`
            log.add(stopped)
        raise
    finally:
        try:
            save()  # a run cut short (the client left) is kept too
        finally:
            running.pop(run_id, None)


def _never_begun(running: dict[str, bool], run_id: str) -> None:
    """Take out of `running` a run whose stream never began (`_run`): none of its code ran.

    Called once its response has ended: a stream that began had its `_run` started by then
    (`pump` sends nothing before), which takes it out itself once it is saved.
    """
    if running.get(run_id) is False:
        del running[run_id]


def _keep(history: History, record: RunRecord) -> bool:
    """Save `record`; if the history cannot, log why in one line and return False.

    The run itself went well: its client already has its answer, and the stream still ends
    with its 'done' (saying ``"kept": false``), not with the file's error.
    """
    try:
        history.save(record)
    except HistoryError as exc:
        logging.getLogger(__name__).warning("%s", exc)
        return False
    return True


ERROR_KEYS = frozenset({"error", "message", "fallback_reason"})
"""The keys of a run's events whose text is an error's, never a model's (not a selection's
``reason``: it quotes the proposals' answer)."""


def _machine_redacted(value: Any, key: str | None = None) -> Any:
    """Return a stored run's events with every error text passed through `redact_machine`.

    Runs kept by an earlier version may name a dead local server's pid, port and log; a
    model's own text (``text``, ``answer``) is left as it was written.
    """
    if isinstance(value, str):
        return redact_machine(value) if key in ERROR_KEYS else value
    if isinstance(value, dict):
        return {k: _machine_redacted(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_machine_redacted(v, key) for v in value]
    return value


_T = TypeVar("_T")

HISTORY_UNREADABLE = "The run history cannot be read now; the operator's log says why."
HISTORY_UNCHANGEABLE = "The run history cannot be changed now; the operator's log says why."
"""A failed DELETE's sentence: "cannot be read" misled a user who can still list the run."""


def _read(read: Callable[[Any], _T], arg: Any, said: str = HISTORY_UNREADABLE) -> _T:
    """Read (or change) the history; a file it refuses is a 503 `said`, its reason the operator's.

    The reason names the file's path on the server's machine (see docs/security.md, "What a
    client learns of the server's machine"): it goes to the log, in one line.
    """
    try:
        return read(arg)
    except HistoryError as exc:
        logging.getLogger(__name__).warning("%s", exc)
        raise _APIError(503, said, "server_error", "history_unavailable") from None


def add_ui(
    app: Any,
    systems: Mapping[str, MoAConfig],
    graphs: Mapping[str, Any],
    prepare: _Preparer,
    *,
    history: History | None,
    keepalive_s: float | None,
    max_body_bytes: int = MAX_BODY_BYTES,
    prices: Prices | None = None,
    request_timeout_s: float = RequestLimits().request_timeout_s,
) -> None:
    """Add the page, its static files, the run event stream and the history to `app`."""
    from fastapi import Query, Request
    from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.staticfiles import StaticFiles

    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    running: dict[str, bool] = {}  # the page's runs not ended yet (`_run`): DELETE refuses them

    class RunStream(StreamingResponse):
        """A page's run stream, in flight (`running`) from before its X-MoA-Run header goes out.

        A client may send the DELETE as soon as it has the ID: 409. A stream that never began
        (its header's send failed: the client had gone) runs none of `_run`, and is taken out
        as its response ends, not when the collector takes its generator: a failed send's
        traceback holds it in a cycle, which waits for a full collection.
        """

        def __init__(self, run_id: str, source: AsyncIterator[str], **kwargs: Any) -> None:
            super().__init__(source, **kwargs)
            self.run_id = run_id

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            running[self.run_id] = False  # True once `_run` begins
            try:
                await super().__call__(scope, receive, send)
            finally:
                _never_begun(running, self.run_id)

    @app.get("/", include_in_schema=False)
    async def root() -> Any:
        return RedirectResponse("ui")  # relative: /moa/ -> /moa/ui behind a prefix

    @app.get("/ui", include_in_schema=False)
    async def page() -> Any:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/ui/", include_in_schema=False)
    async def page_with_a_slash() -> Any:
        # Relative too: its relative URLs would resolve under /ui/; /moa/ui/ -> /moa/ui.
        return RedirectResponse("../ui")

    @app.post("/v1/moa/runs")
    async def start_run(request: Request) -> Any:
        _check_origin(request)
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise _APIError(
                415,
                "Send the run as JSON with 'Content-Type: application/json'.",
                code="unsupported_media_type",
            )
        raw = await _read_body(request, max_body_bytes)
        job = await prepare.off_loop(raw, request.scope)
        if job.stream is False:
            raise _APIError(
                400,
                "The run event stream always streams, so 'stream': false cannot apply; leave "
                "'stream' out, or post to /v1/chat/completions for one JSON answer.",
                param="stream",
                code="invalid_value",
            )
        config = apply_context(systems[job.name], job.context)
        run_id = uuid.uuid4().hex[:16]
        source = _run(
            graphs[job.name],
            job,
            run_id,
            config,
            history,
            running,
            prices,
            request_timeout_s,
            app.state.drain,
            request.scope,
        )
        stream = pump(
            source, lambda: _disconnected(request), keepalive_s, TokenJoiner(), job.pace.room
        )
        headers = {**STREAM_HEADERS, "X-MoA-Run": run_id}
        return RunStream(run_id, stream, media_type="text/event-stream", headers=headers)

    @app.get("/v1/moa/runs")
    async def list_runs(
        request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, Any]:
        _check_origin(request)
        if history is None:
            return {"object": "list", "data": [], "history": False}
        runs = await run_in_threadpool(_read, history.list, limit)
        return {"object": "list", "data": runs, "history": True}

    @app.get("/v1/moa/runs/{run_id}")
    async def get_run(request: Request, run_id: str) -> dict[str, Any]:
        _check_origin(request)
        record = (
            await run_in_threadpool(_read, history.get, run_id) if history is not None else None
        )
        if record is None:
            raise _APIError(404, f"No run {clip(run_id)!r} in the history.", code="run_not_found")
        events = _machine_redacted(record.events)
        return {**record.summary(), "answer": record.answer, "events": events}

    @app.delete("/v1/moa/runs/{run_id}")
    async def delete_run(request: Request, run_id: str) -> dict[str, Any]:
        # A user's question may be personal data: its operator (or whoever holds the key)
        # can erase one run without stopping the server or opening the file.
        _check_origin(request)
        # Not in the history yet, and its end would save it; with no history, none is kept
        # to delete, now or at its end: 404 below, as for any run.
        if history is not None and run_id in running:
            raise _APIError(
                409,
                f"Run {clip(run_id)!r} is still going: stop it (close its stream) or wait for "
                "its end, then delete it.",
                code="run_in_progress",
            )
        if history is None or not await run_in_threadpool(
            _read, history.delete, run_id, HISTORY_UNCHANGEABLE
        ):
            raise _APIError(404, f"No run {clip(run_id)!r} in the history.", code="run_not_found")
        return {"id": run_id, "object": "moa.run.deleted", "deleted": True}
