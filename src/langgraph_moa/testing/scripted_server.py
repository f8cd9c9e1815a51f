"""An OpenAI-compatible server whose models follow rules, for tests of tools and formats.

Real HTTP on loopback, the chat-completions protocol as OpenAI's SDK and `ChatOpenAI` speak
it (streamed or not), but answers are computed by rules from the request, so a test can
predict them without a real model:

- tools bound and ``tool_choice`` not ``"none"``: when the last message is the user's (or a
  tool is forced), the model calls the tool that ``tool_choice`` names, else the one whose
  name shares most words with the user's text; integer and number arguments take the numbers
  of the user's text in order, string arguments its first quoted span (else its text);
- after a tool's result (the last message is a tool message): a text answer quoting it;
- ``response_format`` ``json_schema``: an object of that schema; ``json_object``: an object
  whose keys are the words the user quoted (or put in backticks);
- otherwise a short text answer naming the model; ``stop`` cuts it, ``max_tokens`` (in
  words) cuts it with finish reason ``length``; ``logprobs`` are returned when asked;
- a model named in `thinking` thinks first, as reasoning models do: ``"inline"`` writes
  ``<think>THOUGHT</think>`` before its answer's text, ``"field"`` sends the thought apart,
  in ``reasoning_content`` (the message's, or each stream delta's), and ``"unclosed"``
  thinks until ``max_tokens`` cuts it (the block never closes, finish reason ``length``);
  `THOUGHT` is a draft with a wrong number, which no answer should carry; ``"openai"``
  thinks out of sight and refuses, as OpenAI's reasoning models do, a ``temperature``
  other than 1 and any ``max_tokens`` (with OpenAI's own 400 bodies);
- a model given a context size in `n_ctx` refuses a prompt of more words than that with
  llama.cpp's own 400 body (``exceed_context_size_error``), as a local model whose
  conversation outgrew its slot does.

Every request body is kept in `requests`, so a test can check what each call was sent.

```python
with ScriptedServer() as server:
    config = MoAConfig(proposers=[f"a@{server.url}"], aggregator=f"agg@{server.url}")
```
"""

import json
import re
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from langgraph_moa.testing._uvicorn import BackgroundServer, free_port

_QUOTED = re.compile("['\"\u2018\u201c\u300c]([^'\"\u2019\u201d\u300d]+)['\"\u2019\u201d\u300d]")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

THOUGHT = "Maybe the answer is 12. Let me check that again."
"""What a model named in `ScriptedServer`'s `thinking` thinks before it answers."""


class ScriptedServer:
    """Runs the rule-following server in a background thread; use as a context manager."""

    def __init__(
        self,
        *,
        multimodal: bool = True,
        n_ctx: dict[str, int] | None = None,
        thinking: dict[str, str] | None = None,
        no_usage: frozenset[str] = frozenset(),
    ) -> None:
        """Prepare the server; `multimodal=False` makes it refuse image, audio and files.

        `n_ctx` maps a model name to its context size, in words of the prompt; `thinking`
        maps a model name to how it thinks: ``"inline"``, ``"field"`` or ``"unclosed"``.
        A model named in `no_usage` reports no usage, streamed or not, as an older Ollama
        that ignores ``stream_options`` or a proxy that drops ``usage`` does.
        """
        self.multimodal = multimodal
        self.n_ctx = n_ctx or {}
        self.thinking = thinking or {}
        self.no_usage = no_usage
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._count = 0
        self._background: BackgroundServer | None = None

    def bodies(self, model: str) -> list[dict[str, Any]]:
        """Return the request bodies sent for `model`, in order."""
        with self._lock:
            return [b for b in self.requests if b.get("model") == model]

    def app(self) -> Any:
        """Build the FastAPI app (handlers read `Request`: no lazy annotations here)."""
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, Response, StreamingResponse

        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Response:
            body = await request.json()
            with self._lock:
                self.requests.append(body)
                self._count += 1
                n = self._count
            if not self.multimodal and _has_media(body):
                return JSONResponse(
                    {
                        "error": {
                            "message": "image input is not supported",  # llama.cpp's words
                            "type": "invalid_request_error",
                            "code": None,
                        }
                    },
                    status_code=400,
                )
            n_ctx = self.n_ctx.get(body.get("model", ""))
            if n_ctx is not None and (prompt := _prompt_words(body)) > n_ctx:
                return JSONResponse(_overflow(prompt, n_ctx), status_code=400)
            how = self.thinking.get(body.get("model", ""))
            if how == "openai" and (refusal := _openai_refusal(body)) is not None:
                return JSONResponse(refusal, status_code=400)
            reply = _thought(_reply(body, n), how)
            silent = body.get("model") in self.no_usage
            if body.get("stream"):
                sent = {k: v for k, v in body.items() if not (silent and k == "stream_options")}
                return StreamingResponse(_chunks(sent, reply), media_type="text/event-stream")
            completion = _completion(body, reply)
            if silent:
                del completion["usage"]
            return JSONResponse(completion)

        return app

    def start(self) -> "ScriptedServer":
        """Start serving on 127.0.0.1 and wait until the port accepts connections."""
        self._background = BackgroundServer(self.app(), port=self.port).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._background is not None:
            self._background.stop()

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- reading the request ------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        ).strip()
    return ""


def _has_media(body: dict[str, Any]) -> bool:
    return any(
        isinstance(part, dict) and part.get("type") not in (None, "text")
        for m in body.get("messages", [])
        if isinstance(m.get("content"), list)
        for part in m["content"]
    )


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _prompt_words(body: dict[str, Any]) -> int:
    return sum(len(_text_of(m.get("content")).split()) for m in body.get("messages", []))


def _overflow(prompt: int, n_ctx: int) -> dict[str, Any]:
    """Return llama.cpp's answer to a prompt longer than its context, word for word."""
    error = {
        "code": 400,
        "message": "the request exceeds the available context size, try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": prompt,
        "n_ctx": n_ctx,
    }
    return {"error": error}


def _words(text: str) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", text.lower()) if len(w) > 2}


# --- the rules ------------------------------------------------------------------------------


def _reply(body: dict[str, Any], n: int) -> dict[str, Any]:
    """Return what the model answers: text, tool calls, finish reason."""
    messages = body.get("messages", [])
    last = messages[-1] if messages else {}
    user = _last_user_text(body)
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    forced = isinstance(choice, dict) or choice == "required"
    if tools and choice != "none" and (last.get("role") == "user" or forced):
        tool = _pick_tool(tools, choice, user)
        args = _arguments(tool["function"].get("parameters") or {}, user)
        call = {
            "id": f"call_{n}",
            "type": "function",
            "function": {"name": tool["function"]["name"], "arguments": json.dumps(args)},
        }
        return {"content": None, "tool_calls": [call], "finish_reason": "tool_calls"}
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        return _text(body, json.dumps(_instance(schema, user, optional=True)), cut=False)
    if fmt.get("type") == "json_object":
        keys = re.findall(r"[`'\"](\w+)[`'\"]", user) or ["answer"]
        return _text(body, json.dumps({k: f"{k} about {user[:30]}" for k in keys}), cut=False)
    if last.get("role") == "tool":
        return _text(body, f"The tool answered {_text_of(last.get('content'))}.")
    return _text(body, f"{body.get('model', 'model')} answers: {' '.join(user.split()[:12])}")


def _text(body: dict[str, Any], text: str, *, cut: bool = True) -> dict[str, Any]:
    finish = "stop"
    if cut:
        for stop in body.get("stop") or []:
            if stop and stop in text:
                text = text[: text.index(stop)]
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if limit and len(text.split()) > limit:
            text, finish = " ".join(text.split()[:limit]), "length"
    return {"content": text, "tool_calls": None, "finish_reason": finish}


def _openai_refusal(body: dict[str, Any]) -> dict[str, Any] | None:
    """Return OpenAI's 400 body for a parameter its reasoning models refuse, if one was sent."""
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        message = (
            f"Unsupported value: 'temperature' does not support {temperature} with this "
            "model. Only the default (1) value is supported."
        )
        param, code = "temperature", "unsupported_value"
    elif body.get("max_tokens") is not None:
        message = (
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead."
        )
        param, code = "max_tokens", "unsupported_parameter"
    else:
        return None
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }


def _thought(reply: dict[str, Any], how: str | None) -> dict[str, Any]:
    """Return `reply` as a model that thinks `how` writes it (see `ScriptedServer`)."""
    if how == "inline":
        return {**reply, "content": f"<think>\n{THOUGHT}\n</think>\n\n{reply['content'] or ''}"}
    if how == "field":
        return {**reply, "reasoning_content": THOUGHT}
    if how == "unclosed":
        return {**reply, "content": f"<think>\n{THOUGHT}", "finish_reason": "length"}
    return reply


def _pick_tool(tools: list[dict[str, Any]], choice: Any, user: str) -> dict[str, Any]:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        for tool in tools:
            if tool["function"]["name"] == name:
                return tool
    said = _words(user)
    return max(tools, key=lambda t: len(_words(t["function"]["name"]) & said))


def _arguments(schema: dict[str, Any], user: str) -> dict[str, Any]:
    return dict(_instance(schema, user, optional=False))


def _instance(schema: dict[str, Any], user: str, *, optional: bool) -> Any:
    """Build a value of `schema` from the user's text (numbers, a quoted span)."""
    numbers = iter(_NUMBER.findall(user))
    quoted = _QUOTED.search(user)
    phrase = quoted.group(1) if quoted else " ".join(user.split()[:6]) or "something"

    def value(prop: dict[str, Any]) -> Any:
        kind = prop.get("type")
        if "anyOf" in prop:
            kinds = [p for p in prop["anyOf"] if p.get("type") != "null"]
            return value(kinds[0]) if kinds else None
        if kind == "integer":
            return int(float(next(numbers, "1")))
        if kind == "number":
            return float(next(numbers, "1"))
        if kind == "boolean":
            return True
        if kind == "array":
            return [value(prop.get("items") or {"type": "string"})]
        if kind == "object":
            return obj(prop)
        return phrase

    def obj(node: dict[str, Any]) -> dict[str, Any]:
        props = node.get("properties") or {}
        required = set(node.get("required") or props)
        return {k: value(p) for k, p in props.items() if optional or k in required}

    return obj(schema)


# --- the answer -------------------------------------------------------------------------------


def _usage(body: dict[str, Any], reply: dict[str, Any]) -> dict[str, int]:
    prompt = _prompt_words(body)
    completion = len((reply["content"] or "").split()) + 5 * len(reply["tool_calls"] or [])
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _logprobs(body: dict[str, Any], text: str) -> dict[str, Any] | None:
    if not body.get("logprobs"):
        return None
    return {"content": [{"token": t, "logprob": -0.25, "top_logprobs": []} for t in text.split()]}


def _completion(body: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply["content"]}
    if "reasoning_content" in reply:
        message["reasoning_content"] = reply["reasoning_content"]
    if reply["tool_calls"]:
        message["tool_calls"] = reply["tool_calls"]
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "finish_reason": reply["finish_reason"],
    }
    if (logprobs := _logprobs(body, reply["content"] or "")) is not None:
        choice["logprobs"] = logprobs
    return {
        "id": f"chatcmpl-{time.time_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "model"),
        "choices": [choice],
        "usage": _usage(body, reply),
    }


async def _chunks(body: dict[str, Any], reply: dict[str, Any]) -> AsyncIterator[str]:
    base = {
        "id": f"chatcmpl-{time.time_ns()}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "model"),
    }

    def event(delta: dict[str, Any], **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, **extra}
        return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

    yield event({"role": "assistant", "content": ""})
    for word in reply.get("reasoning_content", "").split(" "):
        if word:
            yield event({"reasoning_content": word + " "})
    text = reply["content"] or ""
    for i, word in enumerate(text.split(" ") if text else []):
        piece = word if i == 0 else " " + word
        logprobs = _logprobs(body, piece)
        yield event({"content": piece}, **({"logprobs": logprobs} if logprobs else {}))
    for index, call in enumerate(reply["tool_calls"] or []):
        head = {"index": index, "id": call["id"], "type": "function"}
        head["function"] = {"name": call["function"]["name"], "arguments": ""}
        yield event({"tool_calls": [head]})
        arguments = call["function"]["arguments"]
        for start in range(0, len(arguments), 8):
            piece = {"index": index, "function": {"arguments": arguments[start : start + 8]}}
            yield event({"tool_calls": [piece]})
    yield event({}, finish_reason=reply["finish_reason"])
    if (body.get("stream_options") or {}).get("include_usage"):
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': _usage(body, reply)})}\n\n"
    yield "data: [DONE]\n\n"
