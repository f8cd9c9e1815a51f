"""`MoAChatModel`: a Mixture-of-Agents that LangChain can use wherever it takes a chat model.

```python
from langgraph_moa import MoAChatModel

llm = MoAChatModel(config="local-moa")          # a preset, a MoAConfig, or a config file path
llm.invoke("Why is the sky blue?")
for chunk in llm.stream("..."):                   # the aggregator's tokens, as generated
    ...
```

The answer's `usage_metadata` counts every inner call (proposers and aggregator), and
`response_metadata["moa"]` carries the per-call provenance.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from pydantic import ConfigDict, Field, PrivateAttr

from langgraph_moa.config._loader import load_config
from langgraph_moa.config._schema import MoAConfig
from langgraph_moa.config.context import MoAContext, apply_context
from langgraph_moa.graph._builder import create_moa_graph
from langgraph_moa.graph.streaming import AnswerStream


class MoAChatModel(BaseChatModel):
    """A chat model whose every answer is a full Mixture-of-Agents run."""

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    config: MoAConfig | str | None = Field(
        default=None,
        description="A MoAConfig, a preset name or a YAML/JSON file path; None: the default "
        "preset (`DEFAULT_PRESET`).",
    )
    model_name: str | None = Field(default=None, alias="model", description="Name in traces.")
    temperature: float | None = Field(default=None, description="Proposer temperature.")
    max_tokens: int | None = Field(default=None, description="Cap on the answer (aggregator).")
    timeout: float | None = Field(default=None, description="Per-call timeout, seconds.")
    max_retries: int | None = Field(default=None, description="Retries per inner call.")
    stop: list[str] | None = Field(default=None, description="Stop sequences for the answer.")

    _graph: Any = PrivateAttr(default=None)
    _resolved: MoAConfig | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        """Validate, and resolve the config now: a typo fails here, not at the first call."""
        super().__init__(**data)
        _ = self.moa_config

    @property
    def _llm_type(self) -> str:
        return "langgraph-moa"

    @property
    def moa_config(self) -> MoAConfig:
        """The MoA config with this model's parameters applied (validated, like the CLI's)."""
        if self._resolved is None:
            self._resolved = apply_context(
                load_config(self.config),
                MoAContext(temperature=self.temperature, aggregator_max_tokens=self.max_tokens),
                call_timeout_s=self.timeout,
                max_attempts=None if self.max_retries is None else self.max_retries + 1,
            )
        return self._resolved

    @property
    def graph(self) -> Any:
        """The compiled MoA graph (built once, on first use)."""
        if self._graph is None:
            self._graph = create_moa_graph(self.moa_config, name=self.model_name or "moa")
        return self._graph

    @property
    def _identifying_params(self) -> dict[str, Any]:
        cfg = self.moa_config
        return {"moa": cfg.name or cfg.variant, "variant": cfg.variant, "layers": cfg.layers}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="langgraph-moa",
            ls_model_name=kwargs.get("model") or self.model_name or self.moa_config.name or "moa",
            ls_model_type="chat",
        )
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def with_structured_output(
        self,
        schema: Any,
        *,
        include_raw: bool = False,
        method: str = "json_schema",
        **kwargs: Any,
    ) -> Runnable[Any, Any]:
        """Answer in `schema`: proposers answer freely, the final aggregator in structure.

        Works when the aggregator supports `with_structured_output` with `method`
        (llama.cpp's server constrains decoding to the schema with the default ``json_schema``).
        """
        graph = create_moa_graph(
            self.moa_config,
            name=self.model_name or "moa",
            response_format=schema,
            response_method=method,
        )

        def run(state: dict[str, Any]) -> Any:
            return _structured(state, include_raw)

        return RunnableLambda(self._convert_input).pipe(
            RunnableLambda(lambda value: {"messages": value.to_messages()}),
            graph,
            RunnableLambda(run),
        )

    # --- calls ---------------------------------------------------------------------------

    def _inner_config(self, run_manager: Any) -> RunnableConfig:
        """Run the graph as a child of this model's run, so traces nest under it.

        An LLM run manager has no `get_child()`; this builds the same child manager that
        chain run managers do (inheritable handlers, tags and metadata, this run as parent).
        """
        if run_manager is None:
            return {}
        child = CallbackManager(handlers=[], parent_run_id=run_manager.run_id)
        child.set_handlers(run_manager.inheritable_handlers)
        child.add_tags(run_manager.inheritable_tags)
        child.add_metadata(run_manager.inheritable_metadata)
        return {"callbacks": child}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        state = self.graph.invoke({"messages": messages}, self._inner_config(run_manager))
        return _result(state["messages"][-1], stop or self.stop)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        state = await self.graph.ainvoke({"messages": messages}, self._inner_config(run_manager))
        return _result(state["messages"][-1], stop or self.stop)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        stream = AnswerStream(self.graph, {"messages": messages}, self._inner_config(run_manager))
        cut = _StopFilter(stop or self.stop)
        for piece in stream:
            if text := cut.take(piece, streamed=stream.streamed):
                yield _text_chunk(text, run_manager)
        if rest := cut.flush():
            yield _text_chunk(rest, run_manager)
        yield _usage_chunk(stream.answer)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        stream = AnswerStream(self.graph, {"messages": messages}, self._inner_config(run_manager))
        cut = _StopFilter(stop or self.stop)
        async for piece in stream:
            if text := cut.take(piece, streamed=stream.streamed):
                yield await _atext_chunk(text, run_manager)
        if rest := cut.flush():
            yield await _atext_chunk(rest, run_manager)
        yield _usage_chunk(stream.answer)


def _text_chunk(text: str, run_manager: CallbackManagerForLLMRun | None) -> ChatGenerationChunk:
    """Wrap answer text, telling the callbacks (LangChain expects a token event per chunk)."""
    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
    if run_manager:
        run_manager.on_llm_new_token(text, chunk=chunk)
    return chunk


async def _atext_chunk(
    text: str, run_manager: AsyncCallbackManagerForLLMRun | None
) -> ChatGenerationChunk:
    """Wrap answer text, telling the async callbacks (see `_text_chunk`)."""
    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
    if run_manager:
        await run_manager.on_llm_new_token(text, chunk=chunk)
    return chunk


def _usage_chunk(answer: AIMessage) -> ChatGenerationChunk:
    """Close the stream with the usage of every inner call, where LangChain sums it."""
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            usage_metadata=answer.usage_metadata,
            response_metadata=answer.response_metadata,
            chunk_position="last",
        )
    )


def _structured(state: dict[str, Any], include_raw: bool) -> Any:
    parsed = state.get("structured_response")
    if include_raw:
        return {"raw": state["messages"][-1], "parsed": parsed, "parsing_error": None}
    return parsed


def _truncate(text: str, stops: list[str]) -> str:
    cuts = [i for s in stops if (i := text.find(s)) >= 0]
    return text[: min(cuts)] if cuts else text


def _result(answer: AIMessage, stop: list[str] | None) -> ChatResult:
    message = AIMessage(
        content=_truncate(answer.text, stop or []),
        id=answer.id,
        usage_metadata=answer.usage_metadata,
        response_metadata=answer.response_metadata,
    )
    return ChatResult(generations=[ChatGeneration(message=message)])


class _StopFilter:
    """Passes answer text through, holding back just enough to cut at a stop sequence."""

    def __init__(self, stops: list[str] | None) -> None:
        self.stops = [s for s in (stops or []) if s]
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._buffer = ""
        self.done = False

    def take(self, text: str, *, streamed: bool) -> str:
        """Return what of `text` can go out now; an answer sent whole is cut at once."""
        if self.done:
            return ""
        if not streamed:
            self.done = True
            return _truncate(text, self.stops)
        self._buffer += text
        cut = _truncate(self._buffer, self.stops)
        if len(cut) < len(self._buffer):
            self.done = True
            self._buffer = ""
            return cut
        keep = max(0, len(self._buffer) - self._hold)
        out, self._buffer = self._buffer[:keep], self._buffer[keep:]
        return out

    def flush(self) -> str:
        """Return the text held back, once the answer is over."""
        out, self._buffer = ("" if self.done else self._buffer), ""
        return out
