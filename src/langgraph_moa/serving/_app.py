"""`moa serve`: MoA behind an OpenAI-compatible HTTP API, so any OpenAI client can pick it.

(No `from __future__ import annotations` here: FastAPI reads the handlers' `Request` hints.)

- ``GET /v1/models`` lists the served presets as models.
- ``POST /v1/chat/completions`` runs the chosen MoA. With ``stream: true`` the aggregator's
  tokens go out as they are generated (server-sent events in OpenAI's chunk format); with
  ``stream_options: {"include_usage": true}`` a last chunk carries usage summed over every
  inner call. Per-call provenance is in the extension field ``moa``. Per-request overrides
  go in the body (``extra_body`` in the OpenAI client): ``layers``, ``proposers``,
  ``aggregator``, ``samples``, ``variant``; ``temperature`` sets the proposers'
  temperature and ``max_tokens`` caps the answer.

The operator pays for every call, so clients are held to what the operator enabled (see
docs/security.md): the served presets' own models (plus ``--allow-model``), no endpoint of
their own unless ``--allow-client-endpoints``, and per-request limits on proposers, samples,
layers, calls, messages and characters. Binds 127.0.0.1 by default; an optional bearer key,
checked before anything else; a body size limit enforced while the body arrives; one
pydantic model reads every body, and every refusal is an OpenAI-style error body with one
sentence. A client that disconnects cancels its run, so nothing is paid for after it left.
"""

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, convert_to_messages
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from langgraph_moa._redact import redact, register_secret, summarize_error
from langgraph_moa.config._limits import RequestLimits
from langgraph_moa.config._loader import load_config
from langgraph_moa.config._schema import MoAConfig, explain_errors, explain_validation_error
from langgraph_moa.config.context import MoAContext, apply_context
from langgraph_moa.errors import (
    AggregatorFailedError,
    AllProposersFailedError,
    LimitExceededError,
    MissingAPIKeyError,
    MoAConfigError,
    MoAError,
    ModelNotAllowedError,
    RequestTimeoutError,
)
from langgraph_moa.graph._builder import create_moa_graph, validate_conversation
from langgraph_moa.graph.streaming import AnswerStream
from langgraph_moa.providers._models import OpenAIEndpoint, parse_endpoint_string
from langgraph_moa.run._calls import request_deadline
from langgraph_moa.serving._guard import BrowserGuard, ServeSecurity, uvicorn_options

MAX_BODY_BYTES = 1_000_000


class _APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = (
            status,
            message,
            kind,
            code,
            param,
        )

    def body(self) -> dict[str, Any]:
        """Return the OpenAI-style error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


async def _within(seconds: float, run: Awaitable[Any]) -> Any:
    """Await a run under the request's deadline: ``Retry-After`` waits and the run itself.

    The deadline is set inside the task that runs the graph, so every call sees it.
    """
    with request_deadline(seconds):
        try:
            async with asyncio.timeout(seconds):
                return await run
        except TimeoutError:
            raise RequestTimeoutError(seconds) from None


def _api_error(exc: MoAError) -> _APIError:
    """Map one of the package's errors to its HTTP status, OpenAI error type and code."""
    if isinstance(exc, RequestTimeoutError):
        return _APIError(504, str(exc), "timeout_error", "request_timeout")
    if isinstance(exc, AllProposersFailedError):
        return _APIError(502, exc.summary, "upstream_error")
    if isinstance(exc, AggregatorFailedError):
        return _APIError(502, summarize_error(str(exc), 400), "upstream_error")
    if isinstance(exc, MissingAPIKeyError):
        return _APIError(500, str(exc), "server_configuration_error")
    if isinstance(exc, ModelNotAllowedError):
        return _APIError(403, str(exc), "permission_error", "model_not_allowed")
    if isinstance(exc, LimitExceededError):
        return _APIError(400, str(exc), code="limit_exceeded")
    return _APIError(400, redact(str(exc)))  # some carry a provider's words


# --- the request body ------------------------------------------------------------------------


class _Body(BaseModel):
    """Base of the request models: unknown fields are refused, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


def _text_content(value: Any, *, optional: bool = False) -> Any:
    """Accept a string or a list of content parts (dicts with a 'type'), as OpenAI does."""
    if value is None and optional:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(part, dict) and isinstance(part.get("type"), str) for part in value
    ):
        if any(p["type"] == "text" and not isinstance(p.get("text"), str) for p in value):
            raise ValueError("a content part of type 'text' needs a string 'text'")
        return value
    raise ValueError("content must be a string or a list of content parts with a 'type'")


def _string_chars(value: Any) -> int:
    """Count the characters of every string in `value` (nested lists and dicts included)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_string_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_string_chars(v) for v in value)
    return 0


class _RoleMessage(_Body):
    name: StrictStr | None = None

    def chars(self) -> int:
        """Characters this message sends to the models (what the character limit counts).

        Every string it carries counts, wherever it sits: the content or its parts, the
        ``name``, tool calls and their arguments, ids. Each of them reaches every call.
        """
        return _string_chars(self.model_dump(exclude={"role"}, exclude_none=True))


class _SystemMessage(_RoleMessage):
    role: Literal["system", "developer"]
    content: Any

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> Any:
        return _text_content(value)


class _UserMessage(_SystemMessage):
    role: Literal["user"]  # type: ignore[assignment]


class _AssistantMessage(_RoleMessage):
    role: Literal["assistant"]
    content: Any = None
    tool_calls: list[dict[str, Any]] | None = None
    refusal: StrictStr | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> Any:
        return _text_content(value, optional=True)

    @model_validator(mode="after")
    def _says_something(self) -> "_AssistantMessage":
        if self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs 'content' or 'tool_calls'")
        return self


class _ToolMessage(_SystemMessage):
    role: Literal["tool"]  # type: ignore[assignment]
    tool_call_id: StrictStr


_Message = Annotated[
    _SystemMessage | _UserMessage | _AssistantMessage | _ToolMessage, Field(discriminator="role")
]


class _StreamOptions(_Body):
    include_usage: StrictBool = False


class ChatRequest(_Body):
    """The body of ``POST /v1/chat/completions``: OpenAI's fields MoA honours, and its own.

    Fields MoA cannot honour are refused rather than ignored; the sampling fields some
    clients always send (``top_p``, the penalties) pass only at their neutral values.
    """

    model: StrictStr
    messages: list[_Message]
    stream: StrictBool = False
    stream_options: _StreamOptions | None = None
    n: StrictInt | None = None
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, strict=True)
    presence_penalty: float | None = Field(default=None, strict=True)
    frequency_penalty: float | None = Field(default=None, strict=True)
    user: StrictStr | None = None
    metadata: dict[str, StrictStr] | None = None
    store: StrictBool | None = None
    # MoA's own overrides (``extra_body`` in the OpenAI client).
    layers: StrictInt | None = None
    samples: StrictInt | None = None
    variant: StrictStr | None = None
    proposers: list[StrictStr | dict[str, Any]] | None = None
    aggregator: StrictStr | dict[str, Any] | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("only n=1 is supported, since MoA returns one answer per request")
        return value

    @field_validator("top_p", "presence_penalty", "frequency_penalty")
    @classmethod
    def _neutral(cls, value: float | None, info: ValidationInfo) -> float | None:
        neutral = 1 if info.field_name == "top_p" else 0
        if value is not None and value != neutral:
            raise ValueError(
                f"this server does not support it; leave it out (or at {neutral}) and use "
                "temperature instead"
            )
        return value

    @model_validator(mode="after")
    def _usage_needs_a_stream(self) -> "ChatRequest":
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self


def _invalid_body(exc: ValidationError) -> _APIError:
    """Turn the request model's error into one sentence naming the field (OpenAI's param)."""
    first = exc.errors(include_url=False)[0]
    loc = [str(part) for part in first["loc"] if not _is_union_tag(part)]
    param = ".".join(loc) or None
    if first["type"] == "json_invalid":
        return _APIError(400, f"The body is not valid JSON: {first['msg']}.", code="invalid_json")
    if not loc and first["type"] in ("model_type", "dict_type"):
        return _APIError(
            400,
            "The body must be a JSON object with at least 'model' and 'messages'.",
            code="invalid_body",
        )
    if first["type"] == "extra_forbidden":
        return _APIError(
            400,
            f"The field {param!r} is not supported by this server; remove it.",
            param=param,
            code="unsupported_parameter",
        )
    # The first broken rule only, located by field names alone: one sentence.
    message = explain_errors([{**first, "loc": tuple(loc)}], "request")
    return _APIError(400, message, param=param, code="invalid_value")


_UNION_TAGS = {"system", "developer", "user", "assistant", "tool", "str", "int", "float", "bool"}


def _is_union_tag(part: Any) -> bool:
    """Tell pydantic's union-member labels in an error's location from real field names."""
    return isinstance(part, str) and (part in _UNION_TAGS or "[" in part)


# --- the operator's policy -------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPolicy:
    """Which models a client may name in ``proposers`` and ``aggregator``.

    By default only the served presets' own models: a client that could name any model
    would spend any key the server holds, and one that could name any URL would make the
    server call hosts of its choosing (server-side request forgery, port scans).
    """

    allowed: frozenset[str]
    """The model specs clients may name, each spelled as `_label` spells it."""
    allow_client_endpoints: bool = False
    """Whether clients may name OpenAI-compatible endpoints of their own (URLs or objects)."""

    @classmethod
    def for_systems(
        cls,
        systems: Mapping[str, MoAConfig],
        allow: Iterable[str] = (),
        *,
        allow_client_endpoints: bool = False,
    ) -> "ModelPolicy":
        """Enable every model the served configs use, plus the specs in `allow`."""
        served = [
            role.model
            for config in systems.values()
            for role in [*config.proposers, *config.final_chain]
            if not isinstance(role.model, BaseChatModel)  # instances cannot be named in JSON
        ]
        labels = {_label(spec) for spec in [*served, *allow]}
        return cls(frozenset(labels), allow_client_endpoints)

    def admit(self, spec: Any, field: str) -> str:
        """Return the spec as the run context takes it, or refuse it.

        Raises:
            ModelNotAllowedError: the spec is not enabled, or is an endpoint while client
                endpoints are not.
            MoAConfigError: the spec is malformed.
        """
        if isinstance(spec, dict):
            return self._client_endpoint(spec, field)
        try:
            label = _label(spec)
        except ValidationError as exc:
            raise MoAConfigError(explain_validation_error(exc, f"'{field}'")) from None
        if label in self.allowed:
            return label
        if parse_endpoint_string(label) is not None:
            if self.allow_client_endpoints:
                return label
            raise ModelNotAllowedError(
                f"'{field}' names an endpoint URL, but this server only calls the models its "
                "operator enabled; the operator can let clients name endpoints with "
                "--allow-client-endpoints."
            )
        raise ModelNotAllowedError(
            f"The model {spec!r} in '{field}' is not enabled on this server, which runs only "
            "its presets' own models; the operator can enable more with --allow-model."
        )

    def _client_endpoint(self, spec: dict[str, Any], field: str) -> str:
        if not self.allow_client_endpoints:
            raise ModelNotAllowedError(
                f"'{field}' names an endpoint object, but this server only calls the models "
                "its operator enabled; the operator can let clients name endpoints with "
                "--allow-client-endpoints."
            )
        if spec.get("api_key_env") is not None:
            raise ModelNotAllowedError(
                f"'{field}' asks for the server's key {spec['api_key_env']!r}, which is never "
                "sent to a client's endpoint; remove 'api_key_env'."
            )
        try:
            return OpenAIEndpoint.model_validate(spec).label()
        except ValidationError as exc:
            raise MoAConfigError(explain_validation_error(exc, f"'{field}'")) from None


def _label(spec: str | OpenAIEndpoint) -> str:
    """Spell a spec one way, so that the same endpoint written twice compares equal."""
    if isinstance(spec, OpenAIEndpoint):
        return spec.label()
    endpoint = parse_endpoint_string(spec.strip())
    return endpoint.label() if endpoint else spec.strip()


# --- turning a body into a run ---------------------------------------------------------------


@dataclass
class _Job:
    name: str
    messages: list[BaseMessage]
    context: MoAContext
    stream: bool
    include_usage: bool


class _Preparer:
    """Reads a body into a run, or refuses it; runs in a worker thread, off the event loop.

    Parsing and converting a large conversation takes CPU time, and the event loop must
    stay free for other clients meanwhile (``GET /v1/models`` included).
    """

    def __init__(
        self,
        systems: Mapping[str, MoAConfig],
        policy: ModelPolicy,
        limits: RequestLimits,
    ) -> None:
        self.systems = systems
        self.policy = policy
        self.limits = {name: limits.covering(config) for name, config in systems.items()}

    def __call__(self, raw: bytes) -> _Job:
        try:
            body = ChatRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise _invalid_body(exc) from None
        if body.model not in self.systems:
            raise _APIError(
                404,
                f"The model {body.model!r} does not exist; served models: "
                f"{', '.join(self.systems)}.",
                code="model_not_found",
                param="model",
            )
        limits = self.limits[body.model]
        try:
            limits.check_conversation(len(body.messages), sum(m.chars() for m in body.messages))
            context = self._context(body, limits)
            # LangChain wants 'content' even beside tool calls, where OpenAI allows null.
            dumped = [{"content": "", **m.model_dump(exclude_none=True)} for m in body.messages]
            messages = convert_to_messages(dumped)
            validate_conversation(messages)
            if not context.is_empty():
                limits.check_config(apply_context(self.systems[body.model], context))
        except MoAError as exc:
            raise _api_error(exc) from None
        except (ValueError, TypeError, NotImplementedError) as exc:
            reason = str(exc).splitlines()[0].rstrip(". ")  # LangChain adds a link below
            raise _APIError(400, f"'messages' is not a valid conversation: {reason}.") from None
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _Job(body.model, messages, context, body.stream, include_usage)

    def _context(self, body: ChatRequest, limits: RequestLimits) -> MoAContext:
        proposers = None
        if body.proposers is not None:
            if len(body.proposers) > limits.max_proposers:
                raise LimitExceededError(
                    f"This request names {len(body.proposers)} proposers, over the server's "
                    f"limit of {limits.max_proposers}: name fewer, or have the operator raise "
                    "--max-proposers."
                )
            proposers = [
                self.policy.admit(spec, f"proposers[{i}]") for i, spec in enumerate(body.proposers)
            ]
        aggregator = None
        if body.aggregator is not None:
            aggregator = self.policy.admit(body.aggregator, "aggregator")
        limits.check_answer_tokens(body.max_tokens)
        limits.check_answer_tokens(body.max_completion_tokens)
        return MoAContext(
            layers=body.layers,
            samples=body.samples,
            variant=body.variant,
            proposers=proposers,
            aggregator=aggregator,
            temperature=body.temperature,
            aggregator_max_tokens=body.max_tokens or body.max_completion_tokens,
        )


# --- the app ---------------------------------------------------------------------------------


class _Guard:
    """Checks the key first, then the declared body size, before any handler runs.

    A plain ASGI middleware (not ``@app.middleware``), so that it never buffers a body and
    the handlers still see the client's disconnect.
    """

    def __init__(self, app: Any, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key is not None else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (refusal := self._refusal(scope)) is not None:
            from fastapi.responses import JSONResponse

            response = JSONResponse(refusal.body(), status_code=refusal.status)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Any) -> _APIError | None:
        headers = dict(scope.get("headers") or [])
        if self.expected is not None and not hmac.compare_digest(
            headers.get(b"authorization", b""), self.expected
        ):
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
        if int(size) > self.max_body_bytes:
            return _too_large(self.max_body_bytes)
        return None


def _too_large(limit: int) -> _APIError:
    return _APIError(
        413,
        f"The request body exceeds the limit of {limit} bytes; send a shorter conversation.",
        code="request_too_large",
    )


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


_END, _GONE = object(), object()
"""Queue markers of a streamed run: the events are over; the client disconnected."""


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


def create_app(
    systems: dict[str, MoAConfig],
    *,
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    allow_models: Iterable[str] = (),
    allow_client_endpoints: bool = False,
    limits: RequestLimits | None = None,
    security: ServeSecurity | None = None,
) -> Any:
    """Build the FastAPI app serving `systems` (model name -> MoA config).

    Args:
        systems: The served configs, by the model name clients use.
        api_key: If set, every request must send ``Authorization: Bearer <api_key>``.
        max_body_bytes: The largest request body read.
        allow_models: Model specs clients may name besides the served configs' own.
        allow_client_endpoints: Let clients name OpenAI-compatible endpoints of their own
            (``model@http://...`` or ``{"base_url", "model"}``); off by default, since the
            server then calls hosts its clients choose.
        limits: Per-request limits; `RequestLimits()` (its defaults) if None.
        security: Browser and connection rules (hosts, origins, docs); `ServeSecurity()`
            (loopback names only, no cross-origin requests, no docs) if None.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect

    if api_key is not None and not api_key.strip():
        raise MoAConfigError(
            "The API key is empty, which would let any client in: give a secret key, or "
            "None for no key (loopback only)."
        )
    limits = limits or RequestLimits()
    register_secret(api_key)
    systems = {name: limits.with_budget(config) for name, config in systems.items()}
    graphs: dict[str, Any] = {
        name: create_moa_graph(config, name=name) for name, config in systems.items()
    }
    policy = ModelPolicy.for_systems(
        systems, allow_models, allow_client_endpoints=allow_client_endpoints
    )
    prepare = _Preparer(systems, policy, limits)
    security = security or ServeSecurity()
    app = FastAPI(
        title="langgraph-moa",
        description="Mixture-of-Agents, OpenAI-compatible.",
        docs_url="/docs" if security.docs else None,
        redoc_url="/redoc" if security.docs else None,
        openapi_url="/openapi.json" if security.docs else None,
    )
    app.add_middleware(BrowserGuard, security=security)
    app.add_middleware(_Guard, api_key=api_key, max_body_bytes=max_body_bytes)  # runs first
    if security.allowed_origins:  # outermost: a preflight carries no key
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(security.allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
        )
    app.state.policy = policy
    app.state.models = list(systems)

    @app.exception_handler(_APIError)
    async def _send_error(request: Request, exc: _APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "langgraph-moa"}
            for name in graphs
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        try:
            raw = await _read_body(request, max_body_bytes)
        except ClientDisconnect:
            return Response(status_code=499)  # nobody reads it; it only ends the exchange
        job = await run_in_threadpool(prepare, raw)
        graph = graphs[job.name]
        run_input = {"messages": job.messages}
        seconds = limits.request_timeout_s
        if job.stream:
            stream = _sse(request, graph, run_input, job, seconds)
            return StreamingResponse(stream, media_type="text/event-stream")
        try:
            state = await _unless_disconnected(
                request, _within(seconds, graph.ainvoke(run_input, context=job.context))
            )
        except _ClientGone:
            return Response(status_code=499)
        except MoAError as exc:
            raise _api_error(exc) from None
        return _completion(job.name, state)

    return app


def _usage(answer: Any) -> dict[str, int]:
    usage = answer.usage_metadata or {}
    return {
        "prompt_tokens": usage.get("input_tokens", 0),
        "completion_tokens": usage.get("output_tokens", 0),
        "total_tokens": usage.get("total_tokens", 0),
    }


def _provenance(answer: Any) -> dict[str, Any]:
    moa = answer.response_metadata.get("moa", {})
    return {
        k: moa.get(k)
        for k in ("variant", "name", "layers", "answered_by", "calls", "usage", "fallback")
    } | {k: moa[k] for k in ("early_start", "chunkwise") if k in moa}


def _completion(name: str, state: dict[str, Any]) -> dict[str, Any]:
    answer = state["messages"][-1]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(answer),
        "moa": _provenance(answer),
    }


async def _sse(
    request: Any, graph: Any, run_input: dict[str, Any], job: _Job, seconds: float
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format: role, tokens, finish, usage, [DONE].

    The run goes on in its own task, feeding a queue; a second task puts a marker on the
    same queue when the client disconnects, and the run is then cancelled, whatever it was
    doing (a proposer layer sends nothing for a long time).
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def feed() -> None:
        async for item in _events(graph, run_input, job):
            queue.put_nowait(item)

    async def run() -> None:
        try:
            await _within(seconds, feed())
            queue.put_nowait(_END)
        except RequestTimeoutError as exc:  # the status line is sent: report in-band
            queue.put_nowait(_error_event(exc))
            queue.put_nowait("data: [DONE]\n\n")
            queue.put_nowait(_END)
        except Exception as exc:  # raised again by the reader, in the response's task
            queue.put_nowait(exc)

    async def watch() -> None:
        await _disconnected(request)
        queue.put_nowait(_GONE)

    producer, watcher = asyncio.ensure_future(run()), asyncio.ensure_future(watch())
    try:
        while (item := await queue.get()) is not _END and item is not _GONE:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        watcher.cancel()
        producer.cancel()


async def _events(graph: Any, run_input: dict[str, Any], job: _Job) -> AsyncIterator[str]:
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": job.name,
    }

    def event(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps({**base, **payload}, default=str)}\n\n"

    yield event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    stream = AnswerStream(graph, run_input, context=job.context)
    try:
        async for text in stream:
            yield event({"choices": [{"index": 0, "delta": {"content": text}}]})
    except MoAError as exc:  # the status line is already sent: report in-band, as OpenAI does
        yield _error_event(exc)
        yield "data: [DONE]\n\n"
        return
    answer = stream.answer
    finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    yield event({**finish, "moa": _provenance(answer)})
    if job.include_usage:
        yield event({"choices": [], "usage": _usage(answer)})
    yield "data: [DONE]\n\n"


def _error_event(exc: MoAError) -> str:
    """Return the in-band error event of a stream whose status line is already sent."""
    refusal = _api_error(exc)
    error = {"error": {"message": refusal.message, "type": refusal.kind, "code": refusal.status}}
    return f"data: {json.dumps(error)}\n\n"


def serve(
    presets: "list[str] | Mapping[str, MoAConfig]",
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    allow_models: Iterable[str] = (),
    allow_client_endpoints: bool = False,
    limits: RequestLimits | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    security: ServeSecurity | None = None,
    announce: "Callable[[str], None] | None" = None,
    log: "Callable[[str], None] | None" = None,
) -> None:
    """Serve the presets (or named configs) until interrupted (what `moa serve` runs).

    Everything that would make every request fail is checked before the server starts and
    before `announce` says "Serving": the serve extra is installed, every preset exists and
    validates, every model's API key is set and every local model is installed, and the port
    is free. Each failure raises `MoAError` in one sentence that names the fix. Then each
    request and each failure is written as one line through `log` (stderr by default).
    """
    import sys

    systems = (
        {name: load_config(name) for name in presets}
        if not isinstance(presets, Mapping)
        else dict(presets)
    )
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        from langgraph_moa.errors import MissingExtraError

        raise MissingExtraError("moa serve", "serve", exc.name or "fastapi") from None
    for name, config in systems.items():
        _check_served(name, config)
    _check_port(host, port)
    from langgraph_moa.serving._access import AccessLog

    security = (security or ServeSecurity()).with_bind_host(host)
    app = create_app(
        systems,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        allow_models=allow_models,
        allow_client_endpoints=allow_client_endpoints,
        limits=limits,
        security=security,
    )

    def to_stderr(line: str) -> None:
        print(line, file=sys.stderr, flush=True)  # noqa: T201

    logged = AccessLog(app, list(systems), log or to_stderr)
    if announce is not None:
        announce(f"Serving {', '.join(systems)} on http://{host}:{port}/v1")
    # uvloop when installed; the HTTP parser stays the guarded h11 protocol (`_guard`), whose
    # head deadline and per-client connection limit keep slow clients from taking the server.
    options = {**server_options(), **uvicorn_options(security)}
    uvicorn.run(logged, host=host, port=port, log_level="warning", **options)


def server_options() -> dict[str, str]:
    """Choose uvicorn's event loop and HTTP parser: uvloop and httptools when installed.

    Both come with the ``serve`` extra; without them uvicorn's pure-Python defaults (asyncio,
    h11) serve the same requests more slowly (benchmarks/serve_load.py).
    """
    import importlib.util

    def installed(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    return {
        "loop": "uvloop" if installed("uvloop") else "asyncio",
        "http": "httptools" if installed("httptools") else "h11",
    }


def _check_served(name: str, config: MoAConfig) -> None:
    """Refuse a served config whose every request would fail: a key or a local model missing."""
    import os

    from langgraph_moa.providers._table import provider_of

    roles = [*config.proposers, *config.final_chain]
    missing: list[str] = []
    for role in roles:
        spec = role.model
        if not isinstance(spec, str) or ":" not in spec:
            continue
        provider, _, model = spec.partition(":")
        if provider == "local":
            from langgraph_moa.local.catalog import lookup

            info = lookup(model)
            if not info.installed():
                raise MoAConfigError(
                    f"Preset {name!r} uses local:{model}, which is not installed: "
                    f"{info.install_hint}, or serve another preset."
                )
            continue
        env = provider_of(provider).key_env
        if env and not os.environ.get(env) and env not in missing:
            missing.append(env)
    if missing:
        raise MoAConfigError(
            f"Preset {name!r} needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not set: export "
            f"{'it' if len(missing) == 1 else 'them'} or serve another preset (e.g. local-moa)."
        )


def _check_port(host: str, port: int) -> None:
    """Refuse a port another process holds, before saying "Serving"."""
    import socket

    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise MoAConfigError(
                f"Cannot listen on {host}:{port} ({exc.strerror}): another process may hold "
                "the port; choose another with --port."
            ) from None
