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
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.runnables import RunnableConfig
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

from langgraph_moa.config._limits import RequestLimits
from langgraph_moa.config._schema import MoAConfig, explain_errors, explain_validation_error
from langgraph_moa.errors import (
    AggregatorFailedError,
    AllProposersFailedError,
    LimitExceededError,
    MissingAPIKeyError,
    MoAConfigError,
    MoAError,
    ModelNotAllowedError,
)
from langgraph_moa.graph._builder import create_moa_graph, validate_conversation
from langgraph_moa.graph.streaming import AnswerStream
from langgraph_moa.providers._models import OpenAIEndpoint, parse_endpoint_string
from langgraph_moa.run._options import split_call_kwargs
from langgraph_moa.run.context import MoAContext, apply_context

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


def _api_error(exc: MoAError) -> _APIError:
    """Map one of the package's errors to its HTTP status, OpenAI error type and code."""
    if isinstance(exc, (AllProposersFailedError, AggregatorFailedError)):
        return _APIError(502, str(exc), "upstream_error")
    if isinstance(exc, MissingAPIKeyError):
        return _APIError(500, str(exc), "server_configuration_error")
    if isinstance(exc, ModelNotAllowedError):
        return _APIError(403, str(exc), "permission_error", "model_not_allowed")
    if isinstance(exc, LimitExceededError):
        return _APIError(400, str(exc), code="limit_exceeded")
    return _APIError(400, str(exc))


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
        return value
    raise ValueError("content must be a string or a list of content parts with a 'type'")


class _RoleMessage(_Body):
    name: StrictStr | None = None

    def chars(self) -> int:
        """Characters of text this message carries (what the character limit counts)."""
        content = getattr(self, "content", None)
        calls = getattr(self, "tool_calls", None) or []
        size = len(json.dumps(calls)) if calls else 0  # arguments are text the models read
        if isinstance(content, str):
            return size + len(content)
        parts = content or []
        return size + sum(len(p["text"]) for p in parts if isinstance(p.get("text"), str))


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


class _ResponseFormat(_Body):
    """OpenAI's ``response_format``: plain text, any JSON object, or a JSON schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "_ResponseFormat":
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is required with type 'json_schema', and only then")
        return self


class _Tool(_Body):
    type: Literal["function"]
    function: dict[str, Any]

    @field_validator("function")
    @classmethod
    def _named(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("name"), str) or not value["name"]:
            raise ValueError("a function tool needs a 'name'")
        return value


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
    """Forwarded as the run's trace metadata (``user``), not to the models."""
    metadata: dict[str, StrictStr] | None = None
    """Forwarded as the run's trace metadata (``request_metadata``)."""
    store: StrictBool | None = None
    # Passed through to the model calls (see `run._options`).
    tools: list[_Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    response_format: _ResponseFormat | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=20)
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
        if self.tool_choice is not None and not self.tools:
            raise ValueError("tool_choice needs tools")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def run_options(self, *, picks_proposal: bool) -> dict[str, Any]:
        """Return the graph input's call options (see `MoAInput`) this request asks for."""
        options: dict[str, Any] = {}
        if self.tools:
            options["tools"] = [t.model_dump() for t in self.tools]
            if self.tool_choice is not None:
                options["tool_choice"] = self.tool_choice
            if self.parallel_tool_calls is not None:
                options["parallel_tool_calls"] = self.parallel_tool_calls
        if self.stop:
            options["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        extra: dict[str, Any] = {}
        if self.seed is not None:
            extra["seed"] = self.seed
        if self.response_format is not None and self.response_format.type != "text":
            extra["response_format"] = self.response_format.model_dump(exclude_none=True)
        if self.logprobs:
            extra["logprobs"] = True
            if self.top_logprobs is not None:
                extra["top_logprobs"] = self.top_logprobs
        every, final = split_call_kwargs(extra, picks_proposal=picks_proposal)
        if every:
            options["call_kwargs"] = every
        if final:
            options["final_kwargs"] = final
        return options

    def trace_metadata(self) -> dict[str, Any]:
        """Return what the request forwards to the run's trace (``user``, ``metadata``)."""
        out: dict[str, Any] = {}
        if self.user is not None:
            out["user"] = self.user
        if self.metadata:
            out["request_metadata"] = dict(self.metadata)
        return out


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
    options: dict[str, Any]
    """The graph input's call options: tools, stop, response_format, ... (see `MoAInput`)."""
    trace: dict[str, Any]
    """Run metadata the request forwards (``user``, ``metadata``)."""
    logprobs: bool = False

    def run_input(self) -> dict[str, Any]:
        """Return the graph's input: the conversation and the call options."""
        return {"messages": self.messages, **self.options}

    def config(self) -> RunnableConfig:
        """Return the run's config: the forwarded trace metadata."""
        return RunnableConfig(metadata=self.trace) if self.trace else RunnableConfig()


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
        variant = context.variant or self.systems[body.model].variant
        return _Job(
            body.model,
            messages,
            context,
            body.stream,
            include_usage,
            body.run_options(picks_proposal=variant in ("select", "ranker")),
            body.trace_metadata(),
            bool(body.logprobs),
        )

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
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect

    graphs: dict[str, Any] = {
        name: create_moa_graph(config, name=name) for name, config in systems.items()
    }
    policy = ModelPolicy.for_systems(
        systems, allow_models, allow_client_endpoints=allow_client_endpoints
    )
    prepare = _Preparer(systems, policy, limits or RequestLimits())
    app = FastAPI(title="langgraph-moa", description="Mixture-of-Agents, OpenAI-compatible.")
    app.add_middleware(_Guard, api_key=api_key, max_body_bytes=max_body_bytes)
    app.state.policy = policy

    @app.exception_handler(_APIError)
    async def _send_error(request: Request, exc: _APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _route_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes and methods answer in OpenAI's error shape too, not {"detail"}.
        what = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = (
            f"There is no route {request.method} {request.url.path} on this server; it serves "
            "GET /v1/models, GET /v1/models/{model} and POST /v1/chat/completions."
            if what
            else str(exc.detail)
        )
        return JSONResponse(_APIError(exc.status_code, message, code=what).body(), exc.status_code)

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
                f"The model {model!r} does not exist; served models: {', '.join(graphs)}.",
                code="model_not_found",
                param="model",
            )
        return model_card(model)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        try:
            raw = await _read_body(request, max_body_bytes)
        except ClientDisconnect:
            return Response(status_code=499)  # nobody reads it; it only ends the exchange
        job = await run_in_threadpool(prepare, raw)
        graph = graphs[job.name]
        run_input = job.run_input()
        if job.stream:
            stream = _sse(request, graph, run_input, job)
            return StreamingResponse(stream, media_type="text/event-stream")
        try:
            state = await _unless_disconnected(
                request, graph.ainvoke(run_input, job.config(), context=job.context)
            )
        except _ClientGone:
            return Response(status_code=499)
        except MoAError as exc:
            raise _api_error(exc) from None
        return _completion(job.name, state, logprobs=job.logprobs)

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
    }


def _finish_reason(answer: Any) -> str:
    """Return the final call's finish reason (``length``, ``tool_calls``, ...), as OpenAI's."""
    if answer.tool_calls:
        return "tool_calls"
    reason = answer.response_metadata.get("finish_reason")
    return reason if isinstance(reason, str) and reason else "stop"


def _tool_calls(answer: Any) -> list[dict[str, Any]]:
    """Return the answer's tool calls in OpenAI's wire format."""
    return [
        {
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
        }
        for call in answer.tool_calls
    ]


def _logprobs(answer: Any, asked: bool) -> Any:
    """Return the final call's logprobs, when the request asked for them."""
    return answer.response_metadata.get("logprobs") if asked else None


def _completion(name: str, state: dict[str, Any], *, logprobs: bool = False) -> dict[str, Any]:
    answer = state["messages"][-1]
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    if answer.tool_calls:
        message["tool_calls"] = _tool_calls(answer)
        message["content"] = answer.text or None
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": _logprobs(answer, logprobs),
                "finish_reason": _finish_reason(answer),
            }
        ],
        "usage": _usage(answer),
        "moa": _provenance(answer),
    }


async def _sse(
    request: Any, graph: Any, run_input: dict[str, Any], job: _Job
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format: role, tokens, finish, usage, [DONE].

    The run goes on in its own task, feeding a queue; a second task puts a marker on the
    same queue when the client disconnects, and the run is then cancelled, whatever it was
    doing (a proposer layer sends nothing for a long time).
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def run() -> None:
        try:
            async for item in _events(graph, run_input, job):
                queue.put_nowait(item)
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
    stream = AnswerStream(graph, run_input, job.config(), context=job.context)
    try:
        async for text in stream:
            yield event({"choices": [{"index": 0, "delta": {"content": text}}]})
    except MoAError as exc:  # the status line is already sent: report in-band, as OpenAI does
        refusal = _api_error(exc)
        error = {"error": {"message": str(exc), "type": refusal.kind, "code": refusal.status}}
        yield f"data: {json.dumps(error)}\n\n"
        yield "data: [DONE]\n\n"
        return
    answer = stream.answer
    if answer.tool_calls:
        calls = [{"index": i, **call} for i, call in enumerate(_tool_calls(answer))]
        yield event({"choices": [{"index": 0, "delta": {"tool_calls": calls}}]})
    done: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": _finish_reason(answer)}
    if job.logprobs:
        done["logprobs"] = _logprobs(answer, True)
    yield event({"choices": [done], "moa": _provenance(answer)})
    if job.include_usage:
        yield event({"choices": [], "usage": _usage(answer)})
    yield "data: [DONE]\n\n"


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve(
    presets: list[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    allow_models: Iterable[str] = (),
    allow_client_endpoints: bool = False,
    limits: RequestLimits | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> None:
    """Serve the presets until interrupted (what `moa serve` runs)."""
    import uvicorn

    systems = {name: MoAConfig.from_preset(name) for name in presets}
    app = create_app(
        systems,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        allow_models=allow_models,
        allow_client_endpoints=allow_client_endpoints,
        limits=limits,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
