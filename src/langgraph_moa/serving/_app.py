"""`moa serve`: MoA behind an OpenAI-compatible HTTP API, so any OpenAI client can pick it.

(No `from __future__ import annotations` here: FastAPI reads the handlers' `Request` hints.)

- ``GET /v1/models`` lists the served presets as models.
- ``POST /v1/chat/completions`` runs the chosen MoA. With ``stream: true`` the aggregator's
  tokens go out as they are generated (server-sent events in OpenAI's chunk format); with
  ``stream_options: {"include_usage": true}`` a last chunk carries usage summed over every
  inner call. Per-call provenance is in the extension field ``moa``. Per-request overrides
  go in the body (``extra_body`` in the OpenAI client): ``layers``, ``proposers``,
  ``aggregator``, ``samples``, ``variant``; ``temperature`` sets the proposers'
  temperature and ``max_tokens`` caps the answer (the aggregator's call, or the proposers'
  where the answer is a proposal: ``select``, ``ranker``). ``moa_progress: true`` (opt-in)
  adds every call's progress to the stream as ``event: moa.progress`` events
  (docs/event-stream.md).
  A stream's status waits for its first content or keep-alive (`_first_content`), so a run
  failing before any text answers with an error status, as without ``stream``.
- ``GET /ui``, ``POST /v1/moa/runs`` and the history: the web page and the run event stream
  it is drawn from (see `_ui`). Streams send a keep-alive comment in long silences.

The operator pays for every call, so clients are held to what the operator enabled (see
docs/security.md): the served presets' own models (plus ``--allow-model``), no endpoint of
their own unless ``--allow-client-endpoints``, and per-request limits on proposers, samples,
layers, calls, messages and characters. Binds 127.0.0.1 by default; an optional bearer key,
checked before anything else; a body size limit enforced while the body arrives; one
pydantic model reads every body, and every refusal is an OpenAI-style error body with one
sentence. A client that disconnects cancels its run, so nothing is paid for after it left.
"""

import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

from langgraph_moa._json import dumps
from langgraph_moa._redact import clip, redact_spec, register_secret
from langgraph_moa.config._limits import RequestLimits
from langgraph_moa.config._prices import Prices
from langgraph_moa.config._schema import MoAConfig, explain_errors
from langgraph_moa.errors import (
    MoAConfigError,
    MoAError,
)
from langgraph_moa.graph._builder import create_moa_graph
from langgraph_moa.graph.streaming import AnswerStream, RunEvents
from langgraph_moa.providers._models import describe_model
from langgraph_moa.serving._access import note_facts
from langgraph_moa.serving._errors import (
    DEGRADED_HEADER,
    MAX_BODY_BYTES,
    _api_error,
    _APIError,
    _run_failed,
    degraded_header,
)
from langgraph_moa.serving._events import (
    KEEPALIVE_S,
    STREAM_HEADERS,
    ProgressChunks,
    final_logprobs,
    finish_reason,
    pump,
    wire_tool_calls,
)
from langgraph_moa.serving._guard import (
    BrowserGuard,
    CorsEverywhere,
    OriginCors,
    PrefixRedirect,
    RunCap,
    RunLoad,
    ServeSecurity,
    cors_options,
    send_crash,
)
from langgraph_moa.serving._history import History
from langgraph_moa.serving._policy import ModelPolicy, _Job, _Preparer, check_allowed_models
from langgraph_moa.serving._request_id import RequestID, answer_id, with_id
from langgraph_moa.serving._requests import (
    Drain,
    _ClientGone,
    _disconnected,
    _Guard,
    _HeadAsGet,
    _read_body,
    _timed,
    _unless_disconnected,
    _within,
    key_check,
)

if TYPE_CHECKING:  # the serve extra; imported when the app is built
    from fastapi import FastAPI


def create_app(
    systems: dict[str, MoAConfig],
    *,
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    allow_models: Iterable[str] = (),
    allow_client_endpoints: bool = False,
    limits: RequestLimits | None = None,
    security: ServeSecurity | None = None,
    history: History | None = None,
    keepalive_s: float | None = KEEPALIVE_S,
    prices: Prices | None = None,
) -> "FastAPI":
    """Build the FastAPI app serving `systems` (model name -> MoA config).

    Args:
        systems: The served configs, by the model name clients use.
        api_key: If set, every request must send ``Authorization: Bearer <api_key>``.
        max_body_bytes: The largest request body read.
        allow_models: Model specs clients may name besides the served configs' own; each
            must be well formed, with its key set or its local model installed
            (`MoAConfigError` otherwise), so that no request naming one fails for the
            server's own setup.
        allow_client_endpoints: Let clients name OpenAI-compatible endpoints of their own
            (``model@http://...`` or ``{"base_url", "model"}``); off by default, since the
            server then calls hosts its clients choose.
        limits: Per-request limits; `RequestLimits()` (its defaults) if None. Its
            ``allow_client_endpoints`` allows client endpoints too (either one does).
        security: Browser and connection rules (hosts, origins, docs); `ServeSecurity()`
            (loopback names only, no cross-origin requests, no docs) if None. Its
            ``header_timeout_s``, ``max_connections_per_client`` and ``forwarded_allow_ips``
            are `moa serve`'s server's (`uvicorn_options`, `forwarded_clients`): the app
            alone applies none of them.
        history: Where the web page's runs are kept (see `_history`); None keeps none.
        keepalive_s: Seconds of silence after which a stream sends a keep-alive comment;
            None sends none.
        prices: Model -> dollars per million prompt and completion tokens
            (`langgraph_moa.config._prices`): the web page's runs show their cost by it.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect

    check_settings()
    if api_key is not None and not api_key.strip():
        raise MoAConfigError(
            "The API key is empty, which would let any client in: give a secret key, or "
            "None for no key (loopback only)."
        )
    limits = limits or RequestLimits()
    allow_models = tuple(allow_models)
    check_allowed_models(allow_models)  # a client naming one must never meet a 500
    register_secret(api_key)
    systems = {name: limits.with_budget(config) for name, config in systems.items()}
    graphs: dict[str, Any] = {
        name: create_moa_graph(config, name=name) for name, config in systems.items()
    }
    policy = ModelPolicy.for_systems(  # the same limits a LangGraph entry point is built with
        systems,
        allow_models,
        allow_client_endpoints=allow_client_endpoints or limits.allow_client_endpoints,
    )
    prepare = _Preparer(systems, policy, limits)
    security = security or ServeSecurity()
    app = FastAPI(
        title="langgraph-moa",
        description="Mixture-of-Agents, OpenAI-compatible.",
        docs_url=None,  # `_add_docs`: FastAPI's own name the schema by an absolute path
        redoc_url=None,
        openapi_url="/openapi.json" if security.docs else None,
        # The API is where the schema is: OpenAPI reads no server as "/", and "Try it out"
        # on /moa/docs (``--root-path /moa``) called the host's root, outside the prefix.
        servers=[{"url": "."}],
    )
    if security.docs:
        _add_docs(app)
    # Innermost of the guards: a refused or keyless request never takes a run's place.
    load = RunLoad(security.max_runs)  # counted by RunCap, told by /health
    app.add_middleware(  # an exchange lasts its body's upload, its run's deadline and its end
        RunCap,
        max_runs=security.max_runs,
        unread_s=security.body_timeout_s,
        load=load,
        within_s=limits.request_timeout_s + 2 * security.body_timeout_s,
    )
    app.add_middleware(BrowserGuard, security=security)
    sends_key = key_check(api_key)  # the guard and /health (`lets_in`) ask this one
    # Added after BrowserGuard, so it runs first: no page or API work before the key check.
    app.add_middleware(_Guard, sends_key=sends_key, max_body_bytes=max_body_bytes)
    app.add_middleware(_HeadAsGet)  # HEAD as GET, the key checked as for the GET
    app.add_middleware(PrefixRedirect)  # `served_under`'s bare prefix: logged, CORS, its ID
    if security.allowed_origins:  # outside the key check: a preflight carries no key
        app.add_middleware(OriginCors, **cors_options(security))
    # Every response that leaves the app, refusals too, names its request.
    app.add_middleware(RequestID, on_crash=send_crash)
    if security.allowed_origins:  # outermost: a crash's 500, answered by RequestID, too
        app.add_middleware(CorsEverywhere, **cors_options(security))
    app.state.policy = policy
    app.state.models = list(systems)
    app.state.extra_routes = []  # answered around the app: `_access.AccessLog` adds /health
    app.state.run_load = load
    app.state.model_labels = _model_labels(systems, policy)  # `_metrics`' only names
    app.state.drain = drain = Drain()  # ended by `_server.serve` when the server stops
    app.state.lets_in = _lets_in(sends_key, BrowserGuard(None, security))

    @app.exception_handler(_APIError)
    async def _send_error(request: Request, exc: _APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _route_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes and methods answer in OpenAI's error shape too, not {"detail"}.
        what = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = (
            f"There is no route {clip(request.method)} {clip(request.url.path)} on this server; "
            f"it serves "
            f"{_route_list(app)}."
            if what
            else str(exc.detail)
        )
        return JSONResponse(_APIError(exc.status_code, message, code=what).body(), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _parameter_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # A route's query or path parameter of the wrong kind (?limit=abc): FastAPI's own
        # answer is a 422 in its {"detail": [...]} shape; every error here is OpenAI's shape.
        return JSONResponse(_invalid_parameter(exc).body(), 400)

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "langgraph-moa"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card(name) for name in graphs]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> dict[str, Any]:
        if model not in graphs:
            raise _APIError(
                404,
                f"The model {clip(redact_spec(model))!r} does not exist; served models: "
                f"{', '.join(graphs)}.",
                code="model_not_found",
                param="model",
            )
        return model_card(model)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, response: Response) -> Any:
        try:
            raw = await _read_body(request, max_body_bytes)
        except ClientDisconnect:
            return Response(status_code=499)  # nobody reads it; it only ends the exchange
        job = await prepare.off_loop(raw, request.scope)
        graph = graphs[job.name]
        run_input = job.run_input()
        seconds = limits.request_timeout_s
        if job.stream:
            base = _chunk_base(job.name, answer_id(request.scope))
            progress = ProgressChunks(run_input) if job.progress else None
            stream = _sse(
                request, graph, run_input, job, seconds, drain, keepalive_s, base, progress
            )
            try:
                first = await _first_content(stream)
            except MoAError as exc:  # nothing sent yet: the status tells, as without stream
                raise _api_error(exc) from None
            if first is None:  # the client left while the run had said nothing
                return Response(status_code=499)
            opened = _role_chunk(base) + first
            return StreamingResponse(
                _after_start(opened, stream, progress),
                media_type="text/event-stream",
                headers=STREAM_HEADERS,
            )
        try:
            state = await _unless_disconnected(
                request,
                _within(
                    seconds,
                    graph.ainvoke(run_input, job.config(), context=job.context),
                    drain,
                    job.since,
                ),
            )
        except _ClientGone:
            return Response(status_code=499)
        except MoAError as exc:
            raise _api_error(exc) from None
        completion = _completion(job.name, state, answer_id(request.scope), logprobs=job.logprobs)
        note_facts(request.scope, completion)  # the log need not find them in the bytes
        if degraded := degraded_header(completion["moa"]):
            response.headers[DEGRADED_HEADER] = degraded
        return completion

    from langgraph_moa.serving._ui import add_ui

    add_ui(
        app,
        systems,
        graphs,
        prepare,
        history=history,
        keepalive_s=keepalive_s,
        max_body_bytes=max_body_bytes,
        prices=prices,
        request_timeout_s=limits.request_timeout_s,
    )
    return app


def check_settings() -> None:
    """Refuse a bad process setting that the served runs would read, in one sentence.

    ``MOA_HTTP_TRANSPORT`` and ``MOA_MAX_RESPONSE_BYTES`` (read as each endpoint's client is
    built), ``MOA_DIRECT_CALLS`` and ``MOA_SDK_TRANSFORM`` (on each call),
    ``LANGGRAPH_MOA_SHARE_CORES``, ``LANGGRAPH_MOA_THREADS`` and ``LANGGRAPH_MOA_SLOTS`` (as
    the local models' runtime is made), ``LANGGRAPH_MOA_CACHE`` (at a local model's first
    call) and ``LANGGRAPH_MOA_CONTEXT`` (as its server starts) are read on a request: a bad
    one answered every request with a 400 that blamed its client. `moa serve` calls this before it
    starts, and `create_app` as it builds, for an embedder that serves the app itself.

    Raises:
        MoAConfigError: a setting holds what it cannot.
    """
    from langgraph_moa._env import switch_from_env
    from langgraph_moa.local.catalog import chosen_cache_root, chosen_context
    from langgraph_moa.local.runtime import SHARE_CORES_ENV, default_slots, default_threads
    from langgraph_moa.run._direct import check_call_switches
    from langgraph_moa.transport._http import max_response_bytes, transport_in_use

    transport_in_use()
    max_response_bytes()
    check_call_switches()
    switch_from_env(SHARE_CORES_ENV)
    default_threads()
    default_slots()
    chosen_cache_root()
    chosen_context()


def _add_docs(app: Any) -> None:
    """Serve ``/docs`` (Swagger UI) and ``/redoc``, each loading the schema by a relative URL.

    FastAPI's own pages load ``/openapi.json`` from the root: behind a proxy that serves the
    server under a prefix (``--root-path /moa``) that is outside it, and the page showed an
    error. ``openapi.json`` from ``/moa/docs`` is ``/moa/openapi.json``, and from ``/docs``
    ``/openapi.json``, as the web page's own URLs are relative (`_ui`).
    """
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> Any:
        return get_swagger_ui_html(openapi_url="openapi.json", title=f"{app.title} - Swagger UI")

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> Any:
        return get_redoc_html(openapi_url="openapi.json", title=f"{app.title} - ReDoc")


def _lets_in(sends_key: Callable[[Any], bool], guard: BrowserGuard) -> Callable[[Any], bool]:
    """Tell whom /health may name the served models to.

    Only a client that sends the key (if one is set) and that the Host and Origin rules let
    in: /health is answered around the app, before those rules run, so that a load balancer
    with its own Host still gets its 200; a DNS-rebinding page must not read the models
    there that /v1/models refuses it.
    """

    def lets_in(scope: Any) -> bool:
        return bool(sends_key(scope)) and guard.refusal(scope) is None

    return lets_in


def _model_labels(systems: dict[str, MoAConfig], policy: ModelPolicy) -> list[str]:
    """List the labels (`describe_model`) of the models the operator named: served or allowed.

    A call's record names its model by this label; metrics count only these by name. An
    allowed model is labelled as the `policy` spells it for the runs that name it
    (``OpenAI:gpt-4o`` is ``openai:gpt-4o``): as written, its calls were counted as other.
    """
    roles = [
        role for config in systems.values() for role in [*config.proposers, *config.final_chain]
    ]
    labels = [describe_model(role.model) for role in roles]
    labels += [describe_model(label) for label in sorted(policy.allowed)]
    return list(dict.fromkeys(labels))


def _route_list(app: Any) -> str:
    """List the app's routes (``GET /v1/models, ...``) from the app itself, so none is left out.

    Read from ``app.routes`` when asked, so that routes added after `create_app` (the web
    page's) are listed too, and what answers around the app (``app.state.extra_routes``).
    """
    import re

    seen: list[str] = []
    for route in app.routes:
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # {model:path} -> {model}
        methods = sorted(getattr(route, "methods", None) or {"GET"})
        if not hasattr(route, "methods"):  # a mount: its files
            path += "/{file}"
        seen += [f"{method} {path}" for method in methods if method != "HEAD"]
    seen += app.state.extra_routes
    unique = list(dict.fromkeys(seen))
    return ", ".join(unique[:-1]) + " and " + unique[-1] if len(unique) > 1 else "".join(unique)


def _invalid_parameter(exc: Any) -> _APIError:
    """Say which query or path parameter is wrong and why, in one sentence (OpenAI's param)."""
    first = exc.errors()[0]
    loc = [str(part) for part in first.get("loc", ())]
    where, rest = (loc[0], loc[1:]) if len(loc) > 1 else ("request", loc)
    what = {"query": "query parameter", "path": "path parameter", "header": "header"}
    detail: Any = {
        "type": first.get("type", "value_error"),
        "msg": first.get("msg", "invalid value"),
        "input": first.get("input"),
        "loc": tuple(rest),
    }
    message = explain_errors([detail], what.get(where, where))  # "Invalid query parameter: ..."
    return _APIError(400, message, param=".".join(rest) or None, code="invalid_value")


# LangChain's token detail kinds, and the names OpenAI's usage gives them.
_PROMPT_DETAILS = {"cache_read": "cached_tokens", "audio": "audio_tokens"}
_COMPLETION_DETAILS = {"reasoning": "reasoning_tokens", "audio": "audio_tokens"}


def _usage(answer: Any) -> dict[str, Any]:
    """Return the answer's usage as OpenAI writes it, with the details its calls reported.

    Cached prompt tokens and reasoning tokens are what a client prices differently: they
    were summed into the answer's `usage_metadata` but dropped here, so a client reading
    `prompt_tokens_details.cached_tokens` (ChatOpenAI among them) saw none.

    ``estimated_calls``, only where any: how many calls' providers reported no usage, their
    tokens estimated, so a client billing by these counts knows they are partly estimates.
    """
    usage = answer.usage_metadata or {}
    out: dict[str, Any] = {
        "prompt_tokens": usage.get("input_tokens", 0),
        "completion_tokens": usage.get("output_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
    }
    total = (answer.response_metadata.get("moa", {}).get("usage") or {}).get("total") or {}
    if estimated := total.get("estimated_calls"):
        out["estimated_calls"] = estimated
    for field, key, names in (
        ("prompt_tokens_details", "input_token_details", _PROMPT_DETAILS),
        ("completion_tokens_details", "output_token_details", _COMPLETION_DETAILS),
    ):
        details = usage.get(key) or {}
        shown = {names[kind]: n for kind, n in details.items() if kind in names}
        if shown:
            out[field] = shown
    return out


_WHEN_SAID = ("early_start", "chunkwise", "failed_layers", "incomplete_call")
"""Provenance keys an answer has only where they apply."""


def _provenance(answer: Any) -> dict[str, Any]:
    moa = answer.response_metadata.get("moa", {})
    return {
        k: moa.get(k)
        for k in ("variant", "name", "layers", "answered_by", "calls", "usage", "fallback")
    } | {k: moa[k] for k in _WHEN_SAID if k in moa}


def _completion(
    name: str, state: dict[str, Any], completion_id: str, *, logprobs: bool = False
) -> dict[str, Any]:
    answer = state["messages"][-1]
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    if answer.tool_calls:
        message["tool_calls"] = wire_tool_calls(answer)
        message["content"] = answer.text or None
    return {
        "id": completion_id,  # `answer_id`: it leads to the request
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": final_logprobs(answer, logprobs),
                "finish_reason": finish_reason(answer),
            }
        ],
        "usage": _usage(answer),
        "moa": _provenance(answer),
    }


def _sse(
    request: Any,
    graph: Any,
    run_input: dict[str, Any],
    job: _Job,
    seconds: float,
    drain: Drain,
    keepalive_s: float | None,
    base: dict[str, Any],
    progress: ProgressChunks | None = None,
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format: tokens, finish, usage, [DONE].

    With `progress` (``moa_progress: true``), the run's progress events go between them.

    Relayed by `_events.pump`: keep-alive comments in long silences (a proposer layer), and
    the run cancelled when the client disconnects, or stopped when the server's drain ends
    (`Drain`). The role chunk is not among them: it
    opens the response (`_first_content`). A run's failure is raised, not sent.
    """
    return pump(
        _timed(_events(graph, run_input, job, base, progress), seconds, drain, job.since),
        lambda: _disconnected(request),
        keepalive_s,
        room=job.pace.room,  # its models wait for the reader too
    )


async def _first_content(stream: AsyncIterator[str]) -> str | None:
    """Wait for what opens a stream's response: its first content, or its first keep-alive.

    The status line goes out with the first bytes, so it is held until the run has said
    something: a run that fails before its first token answers with the status and error
    body a request without ``stream`` gets (502, 504, ...), not a 200 with an error inside.
    The hold ends at the first keep-alive comment too (`KEEPALIVE_S` of silence, a long
    proposer layer): proxies and clients that time out a silent response must still see
    bytes that often, so a run failing after that reports in-band as before. ``moa_progress``
    events count as content: their client asked to see the run as it goes.

    Returns:
        What the stream sent first, or None if the client left before anything was sent.

    Raises:
        MoAError: the run failed before sending anything.
    """
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return None
    except BaseException:
        await stream.aclose()  # type: ignore[attr-defined]
        raise


async def _after_start(
    opened: str,
    stream: AsyncIterator[str],
    progress: ProgressChunks | None = None,
) -> AsyncIterator[str]:
    """Relay the rest of a started stream; a failure now goes in-band, as OpenAI's does.

    A run stopped from outside (its deadline, the server's drain) cancels its calls in
    flight without their own ``failed`` events: with `progress` on, they are sent first, so
    every call the client saw start is seen to end, as on the page's stream.
    """
    yield opened
    try:
        async for item in stream:
            yield item
    except Exception as exc:  # the status line is already sent; a bug too (`_run_failed`)
        refusal = _run_failed(exc)
        if progress is not None:
            yield progress.stopped(f"Stopped: {refusal.message}")
        yield _error_event(refusal)
        yield "data: [DONE]\n\n"


def _chunk_base(model: str, completion_id: str) -> dict[str, Any]:
    """Return the fields every chunk of one stream repeats."""
    return {
        "id": completion_id,  # `answer_id`: it leads to the request
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }


def _chunk(base: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"data: {dumps({**base, **payload})}\n\n"


def _role_chunk(base: dict[str, Any]) -> str:
    return _chunk(base, {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})


async def _events(
    graph: Any,
    run_input: dict[str, Any],
    job: _Job,
    base: dict[str, Any],
    chunks: ProgressChunks | None = None,
) -> AsyncIterator[str]:
    def event(payload: dict[str, Any]) -> str:
        return _chunk(base, payload)

    def content(text: str) -> str:
        return event({"choices": [{"index": 0, "delta": {"content": text}}]})

    if chunks is not None:
        watched = RunEvents(graph, run_input, job.config(), context=job.context)
        async for item in watched:
            text, line = chunks.take(item, watched.source)
            if text:
                yield content(text)
            elif line is not None:
                yield line
        answer = watched.answer
        # Held text, or a pick or a fallback, whose answer arrives whole.
        if rest := chunks.closing(answer):
            yield content(rest)
    else:
        stream = AnswerStream(graph, run_input, job.config(), context=job.context)
        async for text in stream:
            yield content(text)
        answer = stream.answer
    if answer.tool_calls:
        calls = [{"index": i, **call} for i, call in enumerate(wire_tool_calls(answer))]
        yield event({"choices": [{"index": 0, "delta": {"tool_calls": calls}}]})
    done: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": finish_reason(answer)}
    if job.logprobs:
        done["logprobs"] = final_logprobs(answer, True)
    yield event({"choices": [done], "moa": _provenance(answer)})
    if job.include_usage:
        yield event({"choices": [], "usage": _usage(answer)})
    yield "data: [DONE]\n\n"


def _error_event(refusal: _APIError) -> str:
    """Return the in-band error event of a stream whose status line is already sent."""
    # `code` stays the status, as it always was; `in_stream` adds the body's code as `reason`.
    error = {"code": refusal.status, **refusal.in_stream()}
    return f"data: {dumps({'error': with_id(error)})}\n\n"
