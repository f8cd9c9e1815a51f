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

FaultKind = Literal["500", "503", "429", "400", "401", "hang", "truncated", "garbage", "cut"]
"""``cut``: a streamed answer stops half-way and the connection drops (a plain request gets
a truncated body, as with ``truncated``)."""


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
    reply_text: str | None = None
    """A fixed answer instead of the numbered filler (HTML in it tests a viewer's escaping)."""
    token_delay_s: float = 0.0
    """Time to write one word: the pause between streamed words (so that a viewer can be
    seen receiving them one by one), and words times it before a whole answer is sent."""


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
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, Response, StreamingResponse

        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            names = sorted(self.profiles) or ["default"]
            return {"object": "list", "data": [{"id": n, "object": "model"} for n in names]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            model = body.get("model", "default")
            profile, fault, delay, n = self._draw(model)
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
                # A model takes as long to write an answer it sends whole as one it streams.
                words = len(_text(model, n, profile).split(" "))
                await asyncio.sleep(profile.token_delay_s * words)
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


def _words(body: dict[str, Any]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))


def _text(model: str, n: int, profile: FaultProfile) -> str:
    if profile.reply_text is not None:
        return profile.reply_text
    filler = " ".join(f"w{i}" for i in range(max(0, profile.reply_words - 3)))
    return f"{model} answer {n} {filler}".strip()


def _completion(body: dict[str, Any], model: str, n: int, profile: FaultProfile) -> dict[str, Any]:
    text = _text(model, n, profile)
    prompt, completion = _words(body), len(text.split())
    return {
        "id": f"chatcmpl-{model}-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


class _CutStream(Exception):
    """Ends a streamed answer half-way: the server drops the connection."""


async def _chunks(
    body: dict[str, Any], model: str, n: int, profile: FaultProfile, cut: bool = False
) -> AsyncIterator[str]:
    text = _text(model, n, profile)
    base = {"id": f"chatcmpl-{model}-{n}", "object": "chat.completion.chunk", "model": model}
    words = text.split(" ")
    for i, word in enumerate(words):
        if cut and i == len(words) // 2:
            raise _CutStream(f"{model} stopped half-way")
        piece = word if i == 0 else " " + word
        delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
        yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': delta}]})}\n\n"
        await asyncio.sleep(profile.token_delay_s)
    done = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
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
