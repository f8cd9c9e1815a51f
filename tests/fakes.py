"""Deterministic chat models for orchestration tests.

`FakeChat` logs every call (who, with which messages and limits) into a shared `CallLog`,
answers with a distinct, predictable text per call, reports token usage, streams word by
word, and can be told to fail.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field


@dataclass
class Call:
    label: str
    messages: list[BaseMessage]
    temperature: float | None
    max_tokens: int | None
    output: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    """What the call was sent besides the messages (tools, tool_choice, stop, ...)."""


@dataclass
class CallLog:
    calls: list[Call] = field(default_factory=list)
    lock: Any = field(default_factory=threading.Lock)

    def by(self, label: str) -> list[Call]:
        return [c for c in self.calls if c.label == label]

    def add(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)


def words(messages: list[BaseMessage]) -> int:
    return sum(len(m.text.split()) for m in messages)


class FakeChat(BaseChatModel):
    """A chat model whose every answer says who gave it: ``"<label> #<n>"``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    label: str
    log: CallLog = Field(default_factory=CallLog)
    temperature: float | None = None
    max_tokens: int | None = None
    reply: Callable[[str, int, list[BaseMessage]], str] | None = None
    fail: Callable[[int, list[BaseMessage]], BaseException | None] | None = None
    reported_model: str | None = None
    delay: Callable[[int], float] | None = None
    """Seconds to spend on call n before answering (a slow or hung model)."""
    logprob: Callable[[int], float] | None = None
    """The per-token logprob reported for call n, as llama.cpp or OpenAI would."""
    logprobs_extra: dict[str, Any] | None = None
    """More keys of the reported logprobs object (a provider's own, such as ``usage``)."""
    cut_off: Callable[[int], bool] | None = None
    """Whether call n reports finish_reason "length" (max_tokens ended it), else "stop"."""
    finish: Callable[[int], str | None] | None = None
    """The finish_reason call n reports, if any ("content_filter": the provider's filter)."""
    usage_details: Callable[[int], dict[str, Any]] | None = None
    """More keys of each answer's usage (``input_token_details``, ``output_token_details``)."""
    no_usage: bool = False
    """Report no usage at all, as a server that ignores ``stream_options`` or a proxy does."""
    counter: Any = Field(default_factory=lambda: itertools.count(1))
    tool_calls: Callable[[str, int, list[BaseMessage], dict[str, Any]], list[dict]] | None = None
    """The tool calls call n asks for (given its kwargs: tools, tool_choice), if any."""
    released: Any = Field(default_factory=threading.Event)
    """Set when the test ends (`release`): a sync call still sleeping out its delay in a
    thread the run abandoned stops sleeping, instead of living on into later tests."""

    def release(self) -> None:
        """End the delays of this model's abandoned sync calls (called at the test's end)."""
        self.released.set()

    @property
    def model_name(self) -> str:
        return self.label

    @property
    def _llm_type(self) -> str:
        return "fake-chat"

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kwargs: Any) -> Any:
        """Bind tools as chat models do: they arrive as call kwargs."""
        return self.bind(tools=list(tools), tool_choice=tool_choice, **kwargs)

    def _answer(
        self, messages: list[BaseMessage], n: int | None = None, kwargs: dict | None = None
    ) -> AIMessage:
        kwargs = dict(kwargs or {})
        if n is None:
            n = next(self.counter)
            if self.delay is not None:
                self.released.wait(self.delay(n))
        call = Call(self.label, list(messages), self.temperature, self.max_tokens, kwargs=kwargs)
        self.log.add(call)
        if self.fail is not None and (exc := self.fail(n, messages)) is not None:
            raise exc
        text = self.reply(self.label, n, messages) if self.reply else f"{self.label} #{n}"
        call.output = text
        meta: dict[str, Any] = {"model_name": self.reported_model or self.label}
        if self.logprob is not None:
            meta["logprobs"] = {
                "content": [{"token": t, "logprob": self.logprob(n)} for t in text.split()],
                **(self.logprobs_extra or {}),
            }
        if self.cut_off is not None:
            meta["finish_reason"] = "length" if self.cut_off(n) else "stop"
        if self.finish is not None and (reason := self.finish(n)) is not None:
            meta["finish_reason"] = reason
        tool_calls = []
        if self.tool_calls is not None and kwargs.get("tools"):
            tool_calls = self.tool_calls(self.label, n, messages, kwargs)
            if tool_calls:
                text = ""
                call.output = ""
                meta["finish_reason"] = "tool_calls"
        return AIMessage(
            content=text,
            tool_calls=tool_calls,
            response_metadata=meta,
            usage_metadata=None
            if self.no_usage
            else {
                "input_tokens": words(messages),
                "output_tokens": len(text.split()),
                "total_tokens": words(messages) + len(text.split()),
                **(self.usage_details(n) if self.usage_details else {}),
            },
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        kwargs = {**kwargs, **({"stop": stop} if stop else {})}
        return ChatResult(
            generations=[ChatGeneration(message=self._answer(messages, kwargs=kwargs))]
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Like a real async client, a slow answer is an await, so cancelling it stops it.
        n = next(self.counter)
        if self.delay is not None:
            await asyncio.sleep(self.delay(n))
        kwargs = {**kwargs, **({"stop": stop} if stop else {})}
        message = self._answer(messages, n, kwargs=kwargs)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def with_structured_output(
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Any:
        """Parse the reply as JSON into `schema`, as real structured-output models do."""
        from langchain_core.runnables import RunnableLambda

        def parse(messages: Any) -> dict[str, Any]:
            raw = self.invoke(messages)
            try:
                return {
                    "raw": raw,
                    "parsed": schema.model_validate_json(raw.text)
                    if hasattr(schema, "model_validate_json")
                    else json.loads(raw.text),  # a JSON schema: a dict
                    "parsing_error": None,
                }
            except Exception as exc:
                return {"raw": raw, "parsed": None, "parsing_error": exc}

        return RunnableLambda(parse)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        kwargs = {**kwargs, **({"stop": stop} if stop else {})}
        message = self._answer(messages, kwargs=kwargs)
        tokens = message.text.split(" ")
        for i, token in enumerate(tokens):
            piece = token if i == 0 else " " + token
            last = i == len(tokens) - 1
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(
                    content=piece,
                    usage_metadata=message.usage_metadata if last else None,
                    response_metadata=message.response_metadata if last else {},
                    tool_call_chunks=[
                        {
                            "name": c["name"],
                            "args": json.dumps(c["args"]),
                            "id": c["id"],
                            "index": k,
                            "type": "tool_call_chunk",
                        }
                        for k, c in enumerate(message.tool_calls)
                    ]
                    if last
                    else [],
                )
            )
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk


class WordStreamer(BaseChatModel):
    """An async chat model that streams ``<label><i>`` words on a schedule, for chunk-wise runs.

    It waits `first` seconds, then writes `words` words `gap` seconds apart (usage on the last
    chunk; `sep` between them, "" for a script written without spaces), raising `fail_exc`
    (a reset connection by default) before word `fail_at` if set
    (in every call, or only in the first `fail_at_calls`). Its first `fail_attempts` calls
    fail before any word. `state` records how many calls
    started and when one was cancelled, so a test can tell whether its request was closed.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    label: str
    words: int = 4
    gap: float = 0.0
    first: float = 0.0
    fail_at: int | None = None
    fail_exc: Any = None
    fail_at_calls: int | None = None
    fail_attempts: int = 0
    sep: str = " "
    state: dict[str, Any] = Field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.label

    @property
    def _llm_type(self) -> str:
        return "word-streamer"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        raise NotImplementedError("WordStreamer answers async streams only")

    async def _astream(  # type: ignore[override]
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        calls = self.state["calls"] = self.state.get("calls", 0) + 1
        self.state.setdefault("kwargs", []).append(kwargs)
        if calls <= self.fail_attempts:
            raise ConnectionError("connection reset before the first word")
        fail_at = self.fail_at if calls <= (self.fail_at_calls or calls) else None
        try:
            await asyncio.sleep(self.first)
            for i in range(self.words):
                if fail_at is not None and i == fail_at:
                    raise self.fail_exc or ConnectionError("stream reset")
                if i:
                    await asyncio.sleep(self.gap)
                self.state["words"] = i + 1  # written so far: a test counts how far it got
                last = i == self.words - 1
                usage = {
                    "input_tokens": 1,
                    "output_tokens": self.words,
                    "total_tokens": 1 + self.words,
                }
                yield ChatGenerationChunk(
                    message=AIMessageChunk(
                        content=("" if i == 0 else self.sep) + f"{self.label}{i}",
                        usage_metadata=usage if last else None,  # type: ignore[arg-type]
                    )
                )
        except asyncio.CancelledError:
            self.state["cancelled_at"] = asyncio.get_running_loop().time()
            raise
        finally:  # also when its reader stops reading it (closed, not cancelled)
            self.state["ended"] = True
