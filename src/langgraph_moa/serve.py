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
- Binds 127.0.0.1 by default; an optional bearer key; a request size limit; OpenAI-style
  error bodies.
"""

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.messages import convert_to_messages

from langgraph_moa.config import MoAConfig
from langgraph_moa.context import MoAContext, apply_context
from langgraph_moa.errors import (
    AggregatorFailedError,
    AllProposersFailedError,
    MissingAPIKeyError,
    MoAError,
)
from langgraph_moa.graph import create_moa_graph, final_answer_only, validate_conversation

MAX_BODY_BYTES = 1_000_000
_OVERRIDES = ("layers", "proposers", "aggregator", "samples", "variant")


class _APIError(Exception):
    def __init__(self, status: int, message: str, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


def _status_for(exc: MoAError) -> tuple[int, str]:
    if isinstance(exc, (AllProposersFailedError, AggregatorFailedError)):
        return 502, "upstream_error"
    if isinstance(exc, MissingAPIKeyError):
        return 500, "server_configuration_error"
    return 400, "invalid_request_error"


def create_app(
    systems: dict[str, MoAConfig],
    *,
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Any:
    """Build the FastAPI app serving `systems` (model name -> MoA config)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    graphs: dict[str, Any] = {
        name: create_moa_graph(config, name=name) for name, config in systems.items()
    }
    app = FastAPI(title="langgraph-moa", description="Mixture-of-Agents, OpenAI-compatible.")

    @app.exception_handler(_APIError)
    async def _api_error(request: Request, exc: _APIError) -> JSONResponse:
        body = {
            "error": {"message": exc.message, "type": exc.kind, "param": None, "code": exc.code}
        }
        return JSONResponse(body, status_code=exc.status)

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Any:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return await _api_error(
                request,
                _APIError(
                    401,
                    "Missing or wrong API key: send 'Authorization: Bearer <key>'.",
                    "authentication_error",
                    "invalid_api_key",
                ),
            )
        size = request.headers.get("content-length")
        if size is not None and int(size) > max_body_bytes:
            return await _api_error(
                request,
                _APIError(
                    413,
                    f"Request body of {size} bytes exceeds the limit of {max_body_bytes}.",
                    "invalid_request_error",
                    "request_too_large",
                ),
            )
        return await call_next(request)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "langgraph-moa"}
            for name in graphs
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        raw = await request.body()
        if len(raw) > max_body_bytes:
            raise _APIError(
                413,
                f"Request body exceeds the limit of {max_body_bytes} bytes.",
                "invalid_request_error",
                "request_too_large",
            )
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _APIError(
                400, f"The body is not valid JSON: {exc}.", "invalid_request_error"
            ) from None
        name = body.get("model")
        if name not in graphs:
            raise _APIError(
                404,
                f"The model {name!r} does not exist. Served models: {', '.join(graphs)}.",
                "invalid_request_error",
                "model_not_found",
            )
        try:
            messages = convert_to_messages(body.get("messages") or [])
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise _APIError(
                400, f"'messages' is not a valid chat conversation: {exc}", "invalid_request_error"
            ) from None
        try:
            context = MoAContext(
                **{k: body[k] for k in _OVERRIDES if body.get(k) is not None},
                temperature=body.get("temperature"),
                aggregator_max_tokens=body.get("max_tokens") or body.get("max_completion_tokens"),
            )
        except MoAError as exc:
            raise _APIError(400, str(exc), "invalid_request_error") from None
        try:  # input and overrides are checked here, so they fail as HTTP 400, not mid-stream
            validate_conversation(messages)
            if not context.is_empty():
                apply_context(systems[name], context)
        except (MoAError, ValueError) as exc:
            raise _APIError(400, str(exc), "invalid_request_error") from None
        graph = graphs[name]
        run_input = {"messages": messages}
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            stream = _sse(graph, run_input, context, name, include_usage)
            return StreamingResponse(stream, media_type="text/event-stream")
        try:
            state = await graph.ainvoke(run_input, context=context)
        except MoAError as exc:
            status, kind = _status_for(exc)
            raise _APIError(status, str(exc), kind) from None
        return _completion(name, state)

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
    graph: Any, run_input: dict[str, Any], context: MoAContext, name: str, include_usage: bool
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format: role, tokens, finish, usage, [DONE]."""
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": name,
    }

    def event(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps({**base, **payload}, default=str)}\n\n"

    yield event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    final: dict[str, Any] = {}
    streamed = False
    try:
        async for mode, part in graph.astream(
            run_input, context=context, stream_mode=["messages", "values"]
        ):
            if mode == "values":
                final = part
            elif final_answer_only(part[1]) and part[0].text:
                streamed = True
                yield event({"choices": [{"index": 0, "delta": {"content": part[0].text}}]})
    except MoAError as exc:  # the status line is already sent: report in-band, as OpenAI does
        status, kind = _status_for(exc)
        error = {"error": {"message": str(exc), "type": kind, "code": status}}
        yield f"data: {json.dumps(error)}\n\n"
        yield "data: [DONE]\n\n"
        return
    answer = final["messages"][-1]
    if not streamed and answer.text:  # a ranker's pick or a fallback answer: sent whole
        yield event({"choices": [{"index": 0, "delta": {"content": answer.text}}]})
    finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    yield event({**finish, "moa": _provenance(answer)})
    if include_usage:
        yield event({"choices": [], "usage": _usage(answer)})
    yield "data: [DONE]\n\n"


def serve(
    presets: list[str], *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None
) -> None:
    """Serve the presets until interrupted (what `moa serve` runs)."""
    import uvicorn

    systems = {name: MoAConfig.from_preset(name) for name in presets}
    uvicorn.run(create_app(systems, api_key=api_key), host=host, port=port, log_level="warning")
