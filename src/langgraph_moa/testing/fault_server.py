"""A fault-injecting OpenAI-compatible server, on loopback, for tests and benchmarks.

Each model name gets a `FaultProfile`: a latency range, an error rate and the kinds of fault
to inject (server errors, 429 with Retry-After, bad requests, hangs, truncated or garbage
bodies). The server counts every request and every fault it injected, per model, so a test
can check that the client's own accounting tells the truth.

```python
with FaultServer({"flaky": FaultProfile(error_rate=0.3)}) as server:
    config = MoAConfig(proposers=[f"flaky@{server.url}"], ...)
```
"""

import asyncio
import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, Field

from langgraph_moa.testing._uvicorn import BackgroundServer, free_port

FaultKind = Literal[
    "500", "503", "429", "400", "401", "hang", "truncated", "garbage", "cut", "echo"
]
"""'cut' drops a streamed answer's connection halfway (a non-streamed one is 'truncated');
'echo' is a 400 whose message repeats the request's credentials (a careless upstream)."""


class FaultProfile(BaseModel):
    """How one model behaves."""

    latency_s: tuple[float, float] = (0.0, 0.0)
    """Uniform range of the delay before a normal answer."""
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    errors: list[FaultKind] = Field(default_factory=lambda: list[FaultKind](["500"]))
    """Kinds drawn uniformly when a fault is injected."""
    retry_after_s: float = 0.0
    hang_s: float = 30.0
    """How long a 'hang' fault keeps the request open before answering."""
    reply_words: int = 12
    """Length of a normal answer; streamed one word per chunk."""
    token_s: float = Field(default=0.0, ge=0.0)
    """Seconds per word of the answer, after the latency: a streamed answer sends one word
    every `token_s` (timed token streaming); a whole answer comes after all its words."""
    honor_max_tokens: bool = False
    """Cut the answer at the request's max_tokens (in words), as a real server would; an
    answer so cut says ``finish_reason: "length"``."""
    reply_text: str | None = None
    """A fixed answer instead of the numbered filler (HTML in it tests a viewer's escaping);
    ``""`` is an empty answer, as a model that said nothing sends."""
    finish_reason: str = "stop"
    """The finish reason every answer reports (but one `honor_max_tokens` cut): ``"length"``
    as a server whose max_tokens cut the answer says, ``"content_filter"`` as a filtered one."""
    refusal: str | None = None
    """Refuse as OpenAI does: no content, this text in the message's ``refusal`` field
    (streamed: in ``refusal`` deltas)."""
    scripted_error: tuple[int, dict[str, Any]] | None = None
    """Answer every request with this HTTP status and JSON body: a real server's own error,
    word for word (Ollama's model that is not pulled, vLLM's context overflow)."""
    raw_body: bytes | None = None
    """Answer every request with these bytes, as they are, status `raw_status`: JSON (or, to
    a streamed request, server-sent events) no well-behaved server sends; a hostile or broken
    upstream's answer."""
    raw_status: int = 200
    """The status `raw_body` comes with (500: an error body, a huge or compressed one)."""
    flood_bytes: int | None = None
    """Send an answer of about this many bytes whatever max_tokens asks, in 64 KB pieces: a
    server that ignores max_tokens (a stream with no end, for a number past any bound)."""
    redirect_to: str | None = None
    """Answer every request with a 307 to this URL (a proxy that sends the call elsewhere)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Headers added to every answer (a ``Retry-After`` to a 429, a lying one)."""


class FaultServer:
    """Runs the server in a background thread; use as a context manager."""

    def __init__(
        self,
        profiles: dict[str, FaultProfile] | None = None,
        *,
        default: FaultProfile | None = None,
        seed: int = 0,
    ) -> None:
        """Configure per-model profiles; unknown models get `default`."""
        self.profiles = profiles or {}
        self.default = default or FaultProfile()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.injected: dict[str, Counter[str]] = defaultdict(Counter)
        self.last_headers: dict[str, dict[str, str]] = {}
        """The headers of the last request for each model (what the client sent)."""
        self.max_tokens_seen: dict[str, list[Any]] = defaultdict(list)
        """Every ``max_tokens`` / ``max_completion_tokens`` asked of each model."""
        self.last_body: dict[str, dict[str, Any]] = {}
        """The JSON body of the last request for each model (messages, parameters)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._background: BackgroundServer | None = None

    # --- accounting ----------------------------------------------------------------------

    def injected_total(self, models: list[str] | None = None) -> int:
        """Faults injected into requests for `models` (all models if None)."""
        with self._lock:
            names = models if models is not None else list(self.injected)
            return sum(sum(self.injected[m].values()) for m in names)

    def _draw(self, model: str) -> tuple[FaultProfile, str | None, float, int]:
        profile = self.profiles.get(model, self.default)
        with self._lock:
            self.requests[model] += 1
            fault = None
            if self._rng.random() < profile.error_rate:
                fault = self._rng.choice(profile.errors)
                self.injected[model][fault] += 1
            delay = self._rng.uniform(*profile.latency_s)
            return profile, fault, delay, self.requests[model]

    # --- app -----------------------------------------------------------------------------

    def app(self) -> Any:
        """Build the FastAPI app (handlers read `Request`: no lazy annotations here)."""
        try:
            from fastapi import FastAPI, Request
            from fastapi.responses import JSONResponse, Response, StreamingResponse
        except ImportError:
            from langgraph_moa.errors import MissingExtraError

            raise MissingExtraError("FaultServer", "serve", "fastapi") from None

        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            names = sorted(self.profiles) or ["default"]
            return {"object": "list", "data": [{"id": n, "object": "model"} for n in names]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            model = body.get("model", "default")
            with self._lock:
                self.last_headers[model] = dict(request.headers)
                self.last_body[model] = body
                cap = body.get("max_tokens", body.get("max_completion_tokens"))
                self.max_tokens_seen[model].append(cap)
            profile, fault, delay, n = self._draw(model)
            if profile.scripted_error is not None:
                status, error = profile.scripted_error
                return JSONResponse(error, status_code=status, headers=profile.headers)
            hostile = _hostile(body, model, profile)
            if hostile is not None:
                return hostile
            if fault is None:
                await asyncio.sleep(delay)
                return await _answer(body, model, n, profile)
            if fault == "hang":
                await asyncio.sleep(profile.hang_s)
                return await _answer(body, model, n, profile)
            if fault == "cut" and body.get("stream"):
                return StreamingResponse(
                    _chunks(body, model, n, profile, cut=True), media_type="text/event-stream"
                )
            if fault == "echo":
                said = ", ".join(
                    f"{k}: {v}"
                    for k, v in request.headers.items()
                    if k in ("authorization", "openai-organization", "openai-project")
                )
                message = f"Request refused for {model}; you sent {said}"
                return JSONResponse(
                    {"error": {"message": message, "type": "invalid_request_error"}},
                    status_code=400,
                )
            if fault in ("truncated", "cut"):
                whole = json.dumps(_completion(body, model, 0, profile))
                return Response(whole[: len(whole) // 2], media_type="application/json")
            if fault == "garbage":
                return Response("<html>502 Bad Gateway</html>", media_type="application/json")
            status = int(fault)
            headers = {"retry-after": f"{profile.retry_after_s:g}"} if status == 429 else {}
            kind = {400: "invalid_request_error", 401: "authentication_error"}.get(
                status, "server_error"
            )
            return JSONResponse(
                {"error": {"message": f"injected {fault} for {model}", "type": kind, "code": None}},
                status_code=status,
                headers=headers,
            )

        async def _answer(
            body: dict[str, Any], model: str, n: int, profile: FaultProfile
        ) -> Response:
            if not body.get("stream"):
                await asyncio.sleep(
                    profile.token_s * len(_reply(model, n, profile, body)[0].split())
                )
                return JSONResponse(_completion(body, model, n, profile))
            return StreamingResponse(
                _chunks(body, model, n, profile), media_type="text/event-stream"
            )

        return app

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> "FaultServer":
        """Start serving on 127.0.0.1 and wait until the port accepts connections."""
        self._background = BackgroundServer(self.app(), port=self.port).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._background is not None:
            self._background.stop()

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _hostile(body: dict[str, Any], model: str, profile: FaultProfile) -> Any:
    """Return the answer of a profile that misbehaves on purpose, or None for the others."""
    from fastapi.responses import RedirectResponse, Response, StreamingResponse

    headers = profile.headers
    streamed = bool(body.get("stream"))
    media = "text/event-stream" if streamed else "application/json"
    if profile.redirect_to is not None:
        return RedirectResponse(profile.redirect_to, status_code=307, headers=headers)
    if profile.raw_body is not None:
        return Response(
            profile.raw_body, status_code=profile.raw_status, media_type=media, headers=headers
        )
    if profile.flood_bytes is not None:
        return StreamingResponse(
            _flood(model, profile.flood_bytes, streamed=streamed),
            media_type=media,
            headers=headers,
        )
    return None


async def _flood(model: str, size: int, *, streamed: bool) -> AsyncIterator[bytes]:
    """Yield an answer of about `size` bytes (its last piece may make it a little longer)."""
    piece = 65_536
    if streamed:
        word = json.dumps(
            {
                "id": "flood",
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": 0, "delta": {"content": "flood "}}],
            }
        )
        chunk = (f"data: {word}\n\n" * max(1, piece // (len(word) + 8))).encode()
        tail = b"data: [DONE]\n\n"
    else:
        head = {"id": "flood", "object": "chat.completion", "created": 0, "model": model}
        chunk = b"x" * piece
        yield (
            json.dumps(head)[:-1].encode()
            + b', "choices": [{"index": 0, "message": {"role": "assistant", "content": "'
        )
        tail = b'"}, "finish_reason": "stop"}]}'
    sent = 0
    while sent < size:
        yield chunk
        sent += len(chunk)
        await asyncio.sleep(0)
    yield tail


def _words(body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))


def _reply(model: str, n: int, profile: FaultProfile, body: dict[str, Any]) -> tuple[str, str]:
    """Return the answer's text (a refusal's, if the profile refuses) and its finish reason.

    An answer the request's max_tokens cut (`FaultProfile.honor_max_tokens`) says
    ``"length"``, as a real server does; it said the profile's ``"stop"``, so the cut answer
    passed as one that ended itself.
    """
    if profile.refusal is not None:
        return profile.refusal, profile.finish_reason
    if profile.reply_text is not None:
        return profile.reply_text, profile.finish_reason
    words = profile.reply_words
    cap = body.get("max_tokens") or body.get("max_completion_tokens")
    if profile.honor_max_tokens and isinstance(cap, int):
        words = max(1, min(words, cap))
    filler = " ".join(f"w{i}" for i in range(max(0, words - 3)))
    text = " ".join(f"{model} answer {n} {filler}".split()[:words])
    return text, "length" if words < profile.reply_words else profile.finish_reason


def _completion(body: dict[str, Any], model: str, n: int, profile: FaultProfile) -> dict[str, Any]:
    text, finish = _reply(model, n, profile, body)
    prompt, completion = _words(body), len(text.split())
    message = (
        {"role": "assistant", "content": text}
        if profile.refusal is None
        else {"role": "assistant", "content": None, "refusal": text}
    )
    return {
        "id": f"chatcmpl-{model}-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


class _CutStream(Exception):
    """Raised inside a streamed body: the server drops the connection mid-message."""


async def _chunks(
    body: dict[str, Any], model: str, n: int, profile: FaultProfile, *, cut: bool = False
) -> AsyncIterator[str]:
    text, finish = _reply(model, n, profile, body)
    field = "content" if profile.refusal is None else "refusal"
    base = {"id": f"chatcmpl-{model}-{n}", "object": "chat.completion.chunk", "model": model}
    words = text.split(" ")
    for i, word in enumerate(words):
        if cut and i == len(words) // 2:
            raise _CutStream(f"connection dropped after {i} words")
        piece = word if i == 0 else " " + word
        delta = {"role": "assistant", field: piece} if i == 0 else {field: piece}
        yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': delta}]})}\n\n"
        await asyncio.sleep(profile.token_s)
    done = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
    yield f"data: {json.dumps(done)}\n\n"
    if (body.get("stream_options") or {}).get("include_usage"):
        prompt, completion = _words(body), len(text.split())
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"
