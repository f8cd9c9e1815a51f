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

import functools
import hashlib
import json
import os
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import aclosing, closing, contextmanager
from contextvars import ContextVar
from copy import deepcopy
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal, Self, TypeVar, cast, overload

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.load import dumpd
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolCallChunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, ensure_config
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from langgraph.constants import CONF, CONFIG_KEY_CHECKPOINTER
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from langgraph_moa._lru import BoundedLRU
from langgraph_moa._redact import redact, redact_urls_in, redacted_repr
from langgraph_moa.config._digest import fingerprint
from langgraph_moa.config._loader import load_config
from langgraph_moa.config._schema import MoAConfig, explain_validation_error, list_presets
from langgraph_moa.config.context import MoAContext, answer_cap, apply_context
from langgraph_moa.errors import (
    AggregatorFailedError,
    MoAConfigError,
    MoAInputError,
    StructuredOutputError,
)
from langgraph_moa.graph._builder import create_moa_graph
from langgraph_moa.graph.streaming import AnswerStream
from langgraph_moa.providers._models import OpenAIEndpoint, parse_endpoint_string
from langgraph_moa.providers._table import table_version
from langgraph_moa.run._direct import check_call_switches
from langgraph_moa.run._inputs import (
    check_nesting,
    check_schema,
    check_tool_choice,
    openai_tools,
)
from langgraph_moa.run._interrupt import interruptibly
from langgraph_moa.run._options import split_call_kwargs
from langgraph_moa.run.state import MoAInput, MoAOutput, MoAState

_Model = TypeVar("_Model", bound=BaseModel)
"""A pydantic schema: `with_structured_output` answers an instance of it."""


class MoAChatModel(BaseChatModel):
    """A chat model whose every answer is a full Mixture-of-Agents run.

    An argument it has no field for is refused with `MoAConfigError`, naming the fix. Many
    LangChain chat models move unknown arguments to ``model_kwargs`` with a warning and send
    them to their one API; a MoA run has no one API to send them to, and the usual unknown
    argument is a typo (``temprature=``) or a MoA setting that belongs in the config
    (``layers=3``): accepted and ignored, either would run a different MoA than the one
    asked for, at full price, with nothing said. A config of the wrong type is refused the
    same way, as `create_moa_graph` refuses it, never with pydantic's multi-line error.
    So is a call's argument (``invoke(q, layers=3)``, ``.bind(temprature=0)``) that is a MoA
    setting, ``api_key`` or a near miss of a call argument this model reads itself.

    ``temperature`` and ``max_tokens`` mean the same whether set as fields or given with a
    call (``invoke(q, max_tokens=77)``, ``.bind(temperature=0)``): the proposers'
    temperature, and the cap on the answer (the aggregator's completion tokens). Passed on
    as they are, a call's would reach every proposer and the aggregator alike, capping each
    proposal at the answer's length. Other call arguments (``seed``, ...) go to every
    answering call (each proposal of a layer gets ``seed`` plus its position, so that the
    samples of one model differ).

    The answer's ``usage_metadata`` is the whole run's (every proposer and aggregator call):
    its cost, as LangChain's standard tests and cost tracking read it. The inner calls run
    under this model's run, so a usage handler (``get_usage_metadata_callback()``) sees each
    of them, keyed by its model's name, and this run too, whose usage is that total, keyed
    by the answer's ``model_name`` (the aggregator's, or the picked proposal's): its entries
    add up to twice the run's tokens. A call whose provider reported no usage is in the
    total by its estimate (``usage_estimated``), which `UsageMetadata` has no field to mark,
    and has no entry of its own: ``response_metadata["moa"]["usage"]["total"]``'s
    ``estimated_calls`` says how many there were.
    """

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
    streaming: bool | None = Field(
        default=None,
        description="True: invoke() streams the answer's tokens to callbacks; False: never; "
        "None (the default): LangChain decides, streaming where a handler asks for tokens.",
    )
    """None, not False, by default: a copy LangChain rebuilds with every field given
    (`configurable_fields`) would otherwise set False explicitly and stop LangGraph's
    ``stream_mode="messages"`` from streaming tokens."""

    _graph: CompiledStateGraph[MoAState, MoAContext, MoAInput, MoAOutput] | None = PrivateAttr(
        default=None
    )
    _resolved: MoAConfig | None = PrivateAttr(default=None)
    _graphs: _GraphCache = PrivateAttr(default_factory=lambda: _GraphCache())
    _fingerprint: str | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        """Validate, and resolve the config now: a typo fails here, not at the first call.

        Raises:
            MoAConfigError: an argument it has no field for, a config that is not one
                (`load_config`'s error), a field's value of the wrong type, or a bad
                ``MOA_DIRECT_CALLS`` or ``MOA_SDK_TRANSFORM`` switch; one line each.
        """
        _refuse_unknown(data)
        config = data.get("config")
        if config is not None and not isinstance(config, (str, MoAConfig)):
            data["config"] = load_config(config)  # a mapping or a path; anything else refused
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise MoAConfigError(explain_validation_error(exc, "MoAChatModel argument")) from None
        _ = self.moa_config
        check_call_switches()  # the graph is built at the first call: refused here, before it

    @property
    def _llm_type(self) -> str:
        return "langgraph-moa"

    @cached_property
    def _serialized(self) -> dict[str, Any]:
        """The model as a tracer records every run of it: its ``repr``, less any URL's key.

        The repr holds the config, whose model specs may be endpoint URLs with a key in the
        query string (``?key=...``); LangChain computes this once per model, and so does this.
        """
        return cast("dict[str, Any]", redact_urls_in(dumpd(self), redact))

    @property
    def moa_config(self) -> MoAConfig:
        """The MoA config with this model's parameters applied (validated, like the CLI's)."""
        if self._resolved is None:
            self._resolved = self._with_fields(load_config(self.config))
        return self._resolved

    def _with_fields(self, cfg: MoAConfig) -> MoAConfig:
        """Return `cfg` with this model's fields applied: the config's, or a `model=` preset's."""
        return apply_context(
            cfg,
            MoAContext(temperature=self.temperature, **answer_cap(cfg.variant, self.max_tokens)),
            call_timeout_s=self.timeout,
            max_attempts=None if self.max_retries is None else self.max_retries + 1,
        )

    @property
    def graph(self) -> CompiledStateGraph[MoAState, MoAContext, MoAInput, MoAOutput]:
        """The compiled MoA graph, built on first use and shared by the models of one config.

        Why: `configurable_fields` and `configurable_alternatives` make a new model per call.
        Kept in `_SHARED_GRAPHS` by config digest and ``config`` as given (a name, or the object).
        Model instances are keyed by identity: two of equal settings never share a graph.
        The environment is keyed (`_environment_digest`): clients read their keys when built;
        so is the provider table (`table_version`): models are built by its rows.
        """
        if self._graph is None:
            cfg, name = self.moa_config, self.model_name or "moa"
            given = self.config if isinstance(self.config, str) else id(self.config)
            instances = _model_instances(cfg)
            self._graph = _SHARED_GRAPHS.get(
                (
                    given,
                    name,
                    self._config_digest(),
                    _environment_digest(),
                    table_version(),
                    tuple(map(id, instances)),
                ),
                lambda: create_moa_graph(cfg, name=name),
                held=(self.config, instances),
            )
        return self._graph

    def __eq__(self, other: object) -> bool:
        """Equal when the type and the fields are; the private caches do not count.

        pydantic compares private attributes too: a pickled copy, whose graph is compiled
        again on first use, was unequal to the model it was made from.
        """
        if not isinstance(other, MoAChatModel):
            return NotImplemented
        fields = type(self).model_fields
        return type(self) is type(other) and all(
            getattr(self, name) == getattr(other, name) for name in fields
        )

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Copy, and with `update`, run the copy with its own fields.

        Pydantic copies the private caches (the resolved config, the compiled graphs) with
        the fields, so ``model_copy(update={"max_tokens": 99})`` would run the original's
        graph. The copy drops them when a field changes, and resolves its config at once, so
        a bad one fails here as in `__init__`.
        """
        if update:
            _refuse_unknown(dict(update))
            # pydantic's update takes field names only: ``model`` would be set beside them.
            aliases = {f.alias: name for name, f in type(self).model_fields.items() if f.alias}
            update = {aliases.get(key, key): value for key, value in update.items()}
        copy = super().model_copy(update=update, deep=deep)
        if update:
            copy._graph, copy._resolved, copy._fingerprint = None, None, None
            copy._graphs = _GraphCache()
            _ = copy.moa_config
        return copy

    def __getstate__(self) -> dict[Any, Any]:
        """Pickle the fields and the resolved config, not the compiled graphs.

        A compiled graph holds locks and local functions, so ``pickle.dumps(model)`` (what
        multiprocessing and process pools do with it) failed for every model, a preset's
        too; the copy compiles its own on first use, as a deep copy does. The graphs of
        overrides are left behind by `_GraphCache` itself, which pickles empty.
        """
        state = super().__getstate__()
        private = dict(state.get("__pydantic_private__") or {})
        private.update(_graph=None)
        return {**state, "__pydantic_private__": private}

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Any:
        """Deep-copy the fields and caches but the compiled graph, found again on first use.

        A compiled graph holds locks: ``model_copy(deep=True)`` of a model that had been
        called raised. The copy is made of what is pickled (`__getstate__`, without the
        graph): the graph's copy was given as None in ``memo``, which is the caller's, and
        ``deepcopy({"m": model, "g": model.graph})`` gave None for the graph without a word.
        """
        memo = {} if memo is None else memo
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__setstate__(deepcopy(self.__getstate__(), memo))
        return copied

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """What tells this model's answers apart: LangChain's LLM cache keys on it.

        The name, variant and layers alone would let two MoAs with other models, prompts or
        limits share cached answers; ``config`` is a digest of the whole resolved config
        (every role's model, limits and prompts, the selection, the fallbacks) and ``stop``
        is this model's own stop sequences.
        """
        cfg = self.moa_config
        return {
            "moa": cfg.name or cfg.variant,
            "variant": cfg.variant,
            "layers": cfg.layers,
            "config": self._config_digest(),
            "stop": self.stop,
        }

    def _config_digest(self) -> str:
        """Return the digest of the resolved config (`fingerprint`), computed once."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.moa_config)
        return self._fingerprint

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        # A `model=` override names what answers (a preset or the aggregator), so the trace
        # names it; `_override` refuses one that cannot be honored before any call.
        params = LangSmithParams(
            ls_provider="langgraph-moa",
            ls_model_name=kwargs.get("model") or self.model_name or self.moa_config.name or "moa",
            ls_model_type="chat",
        )
        if (temperature := kwargs.get("temperature", self.temperature)) is not None:
            params["ls_temperature"] = temperature
        if (max_tokens := kwargs.get("max_tokens", self.max_tokens)) is not None:
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # --- tools and structured output -----------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        parallel_tool_calls: bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: every proposer and the final step see them; the answer may call them.

        Synthesizing variants give the aggregator the tools and show it, in the references,
        which tool calls each proposer wanted; ``select`` votes over the proposed tool calls
        (name and normalized arguments); the ranker picks a proposal with its tool calls.

        Args:
            tools: LangChain tools, functions, pydantic models or OpenAI tool schemas.
            tool_choice: ``"auto"``, ``"none"``, ``"any"`` (or OpenAI's ``"required"``),
                a tool's name, or an OpenAI ``tool_choice`` dict; passed to every model's
                own `bind_tools`. ``"any"`` is LangChain's value for "call some tool" that
                each integration maps to its API (ChatOpenAI to ``"required"``, ChatAnthropic
                to ``{"type": "any"}``), so it is kept, and ``"required"`` is sent on as
                ``"any"``: ChatAnthropic would read ``"required"`` as a tool's name.
            parallel_tool_calls: Allow several tool calls per answer (OpenAI-compatible
                models only).
            strict: OpenAI's strict schema adherence.
            kwargs: Further arguments bound to the call.
        """
        check_nesting(list(tools), "The tools are")  # LangChain's conversion walks them
        formatted = openai_tools(list(tools), strict)
        names = [t["function"]["name"] for t in formatted]
        check_tool_choice(tool_choice, names)  # before True is read: a refusal names it
        if tool_choice is True:
            tool_choice = names[0] if len(names) == 1 else "any"
        bound: dict[str, Any] = {"tools": formatted, **kwargs}
        if tool_choice is not None and tool_choice is not False:
            bound["tool_choice"] = tool_choice
        if parallel_tool_calls is not None:
            bound["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(**bound)

    @overload
    def with_structured_output(
        self,
        schema: type[_Model],
        *,
        include_raw: Literal[False] = False,
        method: str = "json_schema",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, _Model]: ...

    @overload
    def with_structured_output(
        self,
        schema: Any,
        *,
        include_raw: Literal[True],
        method: str = "json_schema",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any]]: ...

    @overload
    def with_structured_output(
        self,
        schema: Any,
        *,
        include_raw: bool = False,
        method: str = "json_schema",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]: ...

    def with_structured_output(
        self,
        schema: Any,
        *,
        include_raw: bool = False,
        method: str = "json_schema",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Answer in `schema` (a pydantic model, TypedDict or JSON schema).

        Synthesizing variants: the proposers answer freely and the final aggregator answers
        through its own `with_structured_output(schema, method=method)` (llama.cpp's server
        constrains decoding to the schema with the default ``json_schema``). ``select`` and
        ``ranker`` return a proposal verbatim, so there the proposers answer in the schema
        (``function_calling``: as a forced tool call that `select` votes on; ``json_schema``
        and ``json_mode``: with the ``response_format`` sent to each of them).

        `invoke` and `ainvoke` return the parsed object; an answer that does not parse,
        after every aggregator tried, raises `AggregatorFailedError`, or with
        ``include_raw=True`` is returned as ``parsing_error`` beside the raw message. A
        stream of a synthesizing variant with ``json_schema`` or ``json_mode`` and a
        dict-shaped schema (a JSON schema or a TypedDict) yields partial objects as the
        aggregator writes, then the whole one; with a pydantic class, ``function_calling``,
        ``select`` or ``ranker`` it yields the object once, when the run is over (a partial
        pydantic object would not validate, and a picked proposal arrives whole).

        ``strict`` (OpenAI's strict schema adherence) goes where the structure is asked
        for: to the final aggregator's `with_structured_output`, or to the proposers' tool
        or ``response_format`` for ``select`` and ``ranker``; with ``json_mode``, which has
        no schema to adhere to, it is refused.
        """
        if method not in ("json_schema", "function_calling", "json_mode"):
            raise MoAInputError(
                f"Unknown structured-output method {method!r}: use 'json_schema', "
                "'function_calling' or 'json_mode'."
            )
        if kwargs:
            raise MoAInputError(
                f"with_structured_output got unsupported arguments {sorted(kwargs)}: "
                "MoAChatModel takes schema, include_raw, method and strict."
            )
        if strict is not None and method == "json_mode":
            raise MoAInputError(
                f"strict={strict!r} has no meaning with method='json_mode', which answers any "
                "JSON object: use method='json_schema' for strict adherence to the schema, or "
                "leave strict out."
            )
        if schema is None:
            if method != "json_mode":
                raise MoAInputError(
                    f"with_structured_output(None, method={method!r}) has no schema to answer "
                    "in: give one (a pydantic model, TypedDict or JSON schema), or use "
                    "method='json_mode' for any JSON object."
                )
            # Without a schema the graph was built for a plain answer: the parsed object
            # came back None, silently. Any JSON object is a schema too.
            schema = _ANY_JSON_OBJECT
        check_nesting(schema, "The structured-output schema is")
        # What MoA makes a tool of must convert; a dict the aggregator takes is its to judge.
        picks_proposal = self.moa_config.rules.returns_proposal()
        check_schema(schema, method, as_tool=picks_proposal)
        trace = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        if picks_proposal:
            return self._picked_structure(schema, include_raw, method, strict, trace)
        llm = self.bind(
            moa_structured=_Structured(schema, method, strict), ls_structured_output_format=trace
        )
        if not include_raw:
            partial = method != "function_calling" and not _is_pydantic_class(schema)
            return llm | _StructuredAnswer(partial=partial)
        return _raw_and_parsed(llm)

    def _picked_structure(
        self, schema: Any, include_raw: bool, method: str, strict: bool | None, trace: Any
    ) -> Runnable[Any, Any]:
        """Structured output where a proposal is the answer: the proposers answer in it."""
        pydantic = _is_pydantic_class(schema)
        if method == "function_calling" and strict is None:
            return super().with_structured_output(schema, include_raw=include_raw)
        parser: Runnable[Any, Any]
        if method == "function_calling":
            # LangChain's own takes no `strict`: the same forced call, its tool made strict.
            llm = self.bind_tools(
                [schema], tool_choice="any", strict=strict, ls_structured_output_format=trace
            )
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)
                if pydantic
                else JsonOutputKeyToolsParser(
                    key_name=convert_to_openai_tool(schema)["function"]["name"],
                    first_tool_only=True,
                )
            )
            return _parsed_with(llm, parser, include_raw)
        if method == "json_mode":
            response_format: dict[str, Any] = {"type": "json_object"}
        else:
            tool = convert_to_openai_tool(schema, strict=strict)["function"]
            spec = {"name": tool["name"], "schema": tool.get("parameters", {})}
            if strict is not None:
                spec["strict"] = strict
            response_format = {"type": "json_schema", "json_schema": spec}
        llm = self.bind(response_format=response_format, ls_structured_output_format=trace)
        parser = PydanticOutputParser(pydantic_object=schema) if pydantic else JsonOutputParser()
        return _parsed_with(llm, parser, include_raw)

    # --- calls ---------------------------------------------------------------------------

    def _inner_config(self, run_manager: Any) -> RunnableConfig:
        """Run the graph as a child of this model's run, so traces nest under it.

        LangChain hands `_stream` no run manager from `stream`, `astream`, or an `invoke`
        that streams (it sends the tokens to the callbacks itself); then the child config
        that `stream`/`astream`/`_generate_with_cache` below put in `_PARENT` is used.
        """
        if run_manager is None:
            return _PARENT.get() or {}
        return _child_config(run_manager, run_manager.run_id)

    def _generate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """LangChain's, with this run's child config at hand for a streaming `_stream`."""
        with _parent(None if run_manager is None else self._inner_config(run_manager)):
            return super()._generate_with_cache(messages, stop, run_manager, **kwargs)

    async def _agenerate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Async `_generate_with_cache`."""
        with _parent(None if run_manager is None else self._inner_config(run_manager)):
            return await super()._agenerate_with_cache(messages, stop, run_manager, **kwargs)

    def _stream_parent(
        self, config: RunnableConfig | None, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[RunnableConfig, RunnableConfig]:
        """Return the config to stream with and the graph's config (a child of its run).

        `stream` opens this model's run with a callback manager it never shows `_stream`.
        The same `CallbackManager.configure` call is made here, and its manager is what
        `stream` is given as callbacks, with the run's id decided now: the run then has the
        very handlers the graph inherits. Configured twice, a tracer LangChain adds from
        the environment (LangSmith) would be two instances, and the second, never having
        seen this run, would post the inner calls as traces of their own.
        """
        config = ensure_config(config)
        run_id = config.get("run_id") or uuid.uuid4()
        manager = CallbackManager.configure(
            config.get("callbacks"),
            self.callbacks,
            self.verbose,
            config.get("tags"),
            self.tags,
            {
                **(config.get("metadata") or {}),
                **self._get_ls_params_with_defaults(stop=stop, **kwargs),
            },
            self.metadata,
        )
        return {**config, "callbacks": manager, "run_id": run_id}, _child_config(manager, run_id)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """LangChain's `stream`, with the inner calls nested under this model's run."""
        config, parent = self._stream_parent(config, stop, kwargs)
        steps = cast(Generator[AIMessageChunk], super().stream(input, config, stop=stop, **kwargs))
        with closing(steps):
            while True:
                with _parent(parent):
                    chunk = next(steps, None)
                if chunk is None:
                    return
                yield chunk

    def batch(self, *args: Any, **kwargs: Any) -> list[Any]:
        """LangChain's `batch`; a caller who stops waiting interrupts every run of it.

        Its runs are made on worker threads, which Ctrl-C does not reach (`run._interrupt`).
        """
        return interruptibly(functools.partial(super().batch, *args, **kwargs))

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """LangChain's `astream`, with the inner calls nested under this model's run."""
        config, parent = self._stream_parent(config, stop, kwargs)
        steps = cast(
            AsyncGenerator[AIMessageChunk], super().astream(input, config, stop=stop, **kwargs)
        )
        async with aclosing(steps):
            while True:
                with _parent(parent):
                    chunk = await anext(steps, None)
                if chunk is None:
                    return
                yield chunk

    def _run(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[Any, dict[str, Any], MoAContext]:
        """Return the graph to run, its input (conversation and call options) and context."""
        kwargs = dict(kwargs)
        kwargs.pop("ls_structured_output_format", None)
        structured: _Structured | None = kwargs.pop("moa_structured", None)
        graph, context = self._override(kwargs.pop("model", None), structured)
        context = _with_call_fields(
            self.moa_config, context, kwargs.pop("temperature", None), kwargs
        )
        # Never None: LangGraph gives a graph started without a context its caller's (an
        # app's own context_schema), which is no MoA setting; an empty one is the config.
        context = context if context is not None else MoAContext()
        run_input: dict[str, Any] = {"messages": messages}
        for key in ("tools", "tool_choice", "parallel_tool_calls"):
            if kwargs.get(key) is not None:
                run_input[key] = kwargs.pop(key)
            kwargs.pop(key, None)
        if stop or self.stop:
            run_input["stop"] = list(stop or self.stop or [])
        call_kwargs, final_kwargs = split_call_kwargs(
            kwargs, picks_proposal=self.moa_config.rules.returns_proposal()
        )
        _refuse_call_arguments(kwargs)
        if call_kwargs:
            run_input["call_kwargs"] = call_kwargs
        if final_kwargs:
            run_input["final_kwargs"] = final_kwargs
        return graph, run_input, context

    def _override(
        self, model: Any, structured: _Structured | None
    ) -> tuple[Any, MoAContext | None]:
        """Honor a per-call `model=` (see `model_override`), refusing it in one sentence."""
        cfg = self.moa_config
        if model is None or model in (self.model_name, cfg.name):
            return self._graph_for(None, structured), None
        preset, context = model_override(cfg, model)
        return self._graph_for(preset, structured), context

    def _graph_for(self, preset: str | None, structured: _Structured | None) -> Any:
        """Return the compiled graph for a preset override and a structured answer (cached).

        The cache keys a schema by its content (`_schema_key`), not by ``id()``: a caller
        that passed a fresh dict per call compiled a graph per call, and a new dict made at
        a freed one's address was served the freed schema's graph.
        """
        if preset is None and structured is None:
            return self.graph
        key: tuple[Any, ...] = (preset,)
        content: tuple[Any, Any] | None = None
        if structured is not None:
            content = _schema_key(structured.schema)
            key = (preset, content, structured.method, structured.strict)

        def build() -> Any:
            cfg = self.moa_config
            if preset is not None:
                cfg = self._with_fields(MoAConfig.from_preset(preset))
            return create_moa_graph(
                cfg,
                name=preset or self.model_name or "moa",
                response_format=_schema_of(content, structured),
                response_method=structured.method if structured else "json_schema",
                response_strict=structured.strict if structured else None,
            )

        return self._graphs.get(key, build, held=structured.schema if structured else None)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        graph, run_input, context = self._run(messages, stop, kwargs)
        nested = _Nested(self._inner_config(run_manager))
        with nested.active():
            state = graph.invoke(run_input, nested.config, context=context)
        return _result(state, stop or self.stop)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        graph, run_input, context = self._run(messages, stop, kwargs)
        nested = _Nested(self._inner_config(run_manager))
        with nested.active():
            state = await graph.ainvoke(run_input, nested.config, context=context)
        return _result(state, stop or self.stop)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        graph, run_input, context = self._run(messages, stop, kwargs)
        nested = _Nested(self._inner_config(run_manager))
        stream = AnswerStream(graph, run_input, nested.config, context=context)
        cut = _StopFilter(stop or self.stop)
        pieces = iter(stream)
        while True:
            with nested.active():  # only while the graph runs: never across a yield
                piece = next(pieces, None)
            if piece is None:
                break
            if text := cut.take(piece, streamed=stream.streamed):
                yield _text_chunk(text, run_manager)
        if rest := cut.flush():
            yield _text_chunk(rest, run_manager)
        yield from _closing_chunks(stream.final)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        graph, run_input, context = self._run(messages, stop, kwargs)
        nested = _Nested(self._inner_config(run_manager))
        stream = AnswerStream(graph, run_input, nested.config, context=context)
        cut = _StopFilter(stop or self.stop)
        pieces = aiter(stream)
        while True:
            with nested.active():  # only while the graph runs: never across a yield
                piece = await anext(pieces, None)
            if piece is None:
                break
            if text := cut.take(piece, streamed=stream.streamed):
                yield await _atext_chunk(text, run_manager)
        if rest := cut.flush():
            yield await _atext_chunk(rest, run_manager)
        for chunk in _closing_chunks(stream.final):
            yield chunk


_PARENT: ContextVar[RunnableConfig | None] = ContextVar("moa_chat_parent", default=None)
"""The graph's config (this model's run as parent) for a `_stream` that LangChain calls
without a run manager; set only while LangChain's own code runs that call."""


@contextmanager
def _parent(config: RunnableConfig | None) -> Iterator[None]:
    """Set `_PARENT` for the code inside (LangChain's, which calls `_stream`)."""
    token = _PARENT.set(config)
    try:
        yield
    finally:
        _PARENT.reset(token)


def _child_config(manager: Any, run_id: uuid.UUID) -> RunnableConfig:
    """Return a config whose runs are children of run `run_id` of `manager`'s run.

    An LLM run manager has no `get_child()`; this builds the same child manager that chain
    run managers do (inheritable handlers, tags and metadata, the run as parent).
    """
    child = CallbackManager(handlers=[], parent_run_id=run_id)
    child.set_handlers(manager.inheritable_handlers)
    child.add_tags(manager.inheritable_tags)
    child.add_metadata(manager.inheritable_metadata)
    return {"callbacks": child}


_CALLERS_ONLY = ("recursion_limit", "max_concurrency")
"""Settings of the caller's own graph or batch, not of this model's run: inherited, a
one-node app's ``recursion_limit=2`` would end the MoA's graph with LangGraph's
GraphRecursionError, and ``max_concurrency=1`` would run its proposers one at a time
toward their layer's deadline. A direct ``invoke`` never passed them on either."""


class _Nested:
    """The inner graph's config, as a child of this model's run inside a chain too.

    Inside a chain step or a LangGraph node, LangGraph merges the ambient config (the
    step's, `var_child_runnable_config`) with the one a graph is given, and a merge of two
    callback managers keeps the ambient one's parent run: the graph's runs would be
    siblings of this model's run instead of its children. So where there is an ambient
    config, this model's child callbacks replace the ambient ones while the graph starts
    (`active`), and the graph is given the rest; everything else in the ambient config (a
    parent graph's configurable, tags) is inherited as before, less `_CALLERS_ONLY` and the
    parent graph's checkpointer: the MoA run is this model's call, not a step of the app's
    thread. Inherited, every inner step was saved into the app's thread, and a call argument
    no checkpoint can hold (``response_format=`` a pydantic class) failed the app's turn.
    """

    def __init__(self, config: RunnableConfig) -> None:
        ambient = var_child_runnable_config.get()
        self._ambient: RunnableConfig | None = None
        self.config = config
        if not ambient:
            return
        own = {k: v for k, v in ambient.items() if k not in _CALLERS_ONLY}
        if CONFIG_KEY_CHECKPOINTER in (ambient.get(CONF) or {}):
            own[CONF] = {k: v for k, v in ambient[CONF].items() if k != CONFIG_KEY_CHECKPOINTER}
        if config.get("callbacks") is not None:
            own["callbacks"] = config["callbacks"]
            self.config = cast(
                RunnableConfig, {k: v for k, v in config.items() if k != "callbacks"}
            )
        self._ambient = cast(RunnableConfig, own)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Make the child callbacks the ambient ones for the code inside."""
        if self._ambient is None:
            yield
            return
        token = var_child_runnable_config.set(self._ambient)
        try:
            yield
        finally:
            var_child_runnable_config.reset(token)


@dataclass(frozen=True)
class _Structured:
    """A structured answer asked of the graph's final aggregator (bound as a call kwarg)."""

    schema: Any
    method: str
    strict: bool | None = None
    """Passed on to the aggregator's `with_structured_output` when given (not None)."""


GRAPH_CACHE_SIZE = 32
"""Compiled graphs kept, the most recent: of the models' own configs, shared by every model
(`_SHARED_GRAPHS`), and, in each model, of its structured outputs and presets. A kept graph
holds its model cache (the clients it built, their open connections) and what it was
compiled from (the config and the model instances in it)."""


def _schema_key(schema: Any) -> tuple[Any, Any]:
    """Return what identifies a structured-output schema in the graph cache.

    A dict (a JSON schema) is its JSON text, keys in the caller's order (the order in which
    the model is asked for the fields), and its graph gets a copy read back from that text
    (`_schema_of`): a dict changed in place later is another key and never alters a compiled
    graph. A class (pydantic, TypedDict) is its own key, held by the cache. Anything else,
    or a dict that is not JSON, is keyed by its ``id()`` while the cache holds it, so the
    address cannot be reused by another object meanwhile.
    """
    if isinstance(schema, dict):
        try:
            return "json", json.dumps(schema, separators=(",", ":"))
        except (TypeError, ValueError):
            return "object", id(schema)
    try:
        hash(schema)
    except TypeError:
        return "object", id(schema)
    return "value", schema


def _schema_of(content: tuple[Any, Any] | None, structured: _Structured | None) -> Any:
    """Return the schema a graph is compiled for: a JSON schema's own copy, read from its key.

    Read only when a graph is built, not on every call that finds its graph cached.
    """
    if structured is None or content is None:
        return None
    return json.loads(content[1]) if content[0] == "json" else structured.schema


_ANY_JSON_OBJECT: dict[str, Any] = {"title": "json_object", "type": "object"}
"""The schema of ``with_structured_output(None, method="json_mode")``: any JSON object."""


class _GraphCache:
    """Compiled graphs by key, the `GRAPH_CACHE_SIZE` most recent.

    Those of the models' own configs (`_SHARED_GRAPHS`, one for every model), or of one
    model's overrides (its structured outputs and presets). Bounded, since every distinct
    config, schema or preset compiles a graph of its own, and each holds its clients and
    their connections while it is kept. A deep copy (``model_copy(deep=True)``) or a
    pickled one starts empty: graphs are compiled again on first use.
    """

    def __init__(self, size: int = GRAPH_CACHE_SIZE) -> None:
        self._graphs: BoundedLRU[Any, tuple[Any, Any]] = BoundedLRU(size)

    def get(self, key: Any, build: Callable[[], Any], held: Any = None) -> Any:
        """Return the graph of `key`, built by `build` if it is not kept; keep `held` with it.

        Built outside the lock (compiling takes a while), so threads asking for one key at
        once may each build it: the first kept is the one every one of them gets. Each put
        its own over it, and the models made at once kept a graph apiece.
        """
        kept = self._graphs.get(key)
        if kept is not None:
            return kept[1]
        graph = build()
        return self._graphs.setdefault(key, lambda: (held, graph))[1]

    def __len__(self) -> int:
        return len(self._graphs)

    def __deepcopy__(self, memo: dict[int, Any]) -> _GraphCache:
        return _GraphCache(self._graphs.size)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled empty, as deep-copied: its lock and graphs cannot be pickled.
        return _GraphCache, (self._graphs.size,)


_SHARED_GRAPHS = _GraphCache()
"""The compiled graphs of the models' own configs (`MoAChatModel.graph`), of every model:
the `GRAPH_CACHE_SIZE` most recent, each holding its config (and the model instances in it)
while it is kept."""


def _model_instances(cfg: MoAConfig) -> tuple[BaseChatModel, ...]:
    """Return the model instances `cfg`'s roles name: its digest counts each by its settings."""
    roles = [*cfg.proposers, *cfg.final_chain]
    return tuple(role.model for role in roles if isinstance(role.model, BaseChatModel))


def _environment_digest() -> str:
    """Return a digest of the process environment, which a graph's clients read when built.

    Keys (``api_key_env``, a provider's variable) and the accounts and proxies of provider
    clients are read from it; a digest, so that the shared graphs' keys hold no key.
    """
    text = json.dumps(sorted(os.environ.items()))  # ASCII: a lone surrogate is escaped
    return hashlib.sha256(text.encode()).hexdigest()


def _with_call_fields(
    cfg: MoAConfig,
    context: MoAContext | None,
    temperature: float | None,
    kwargs: dict[str, Any],
) -> MoAContext | None:
    """Give a call's ``temperature`` and ``max_tokens`` the meaning of the fields.

    As call kwargs they would go to every proposer and aggregator alike; as the fields
    they are the proposers' temperature and the answer's (aggregator's) token cap, so a
    call's own (``invoke(q, max_tokens=77)``, ``.bind(temperature=0)``) joins the run's
    context in their place. ``max_completion_tokens``, OpenAI's newer name for
    ``max_tokens``, is the same cap (as `moa serve` reads it). A bad value, or the two
    names given different caps, fails as `MoAConfigError`, before any call.
    """
    max_tokens = kwargs.pop("max_tokens", None)
    newer = kwargs.pop("max_completion_tokens", None)
    if max_tokens is not None and newer is not None and max_tokens != newer:
        raise MoAConfigError(
            f"max_tokens={max_tokens!r} and max_completion_tokens={newer!r} are two names for "
            "the answer's token cap: give one of them."
        )
    max_tokens = max_tokens if max_tokens is not None else newer
    if temperature is None and max_tokens is None:
        return context
    given = context.model_dump(exclude_none=True) if context is not None else {}
    return MoAContext(
        **given,
        **({} if temperature is None else {"temperature": temperature}),
        **answer_cap(cfg.variant, max_tokens),
    )


def model_override(cfg: MoAConfig, model: Any) -> tuple[str | None, MoAContext | None]:
    """Read a per-call `model=`: return the preset to run, or the run context to apply.

    - a preset name: that preset answers;
    - a model spec (``provider:model`` or ``model@http://host/v1``): it becomes the
      aggregator (or the ranker);
    - a bare model name: that model on the aggregator's OpenAI-compatible server.

    Raises:
        MoAInputError: the override cannot be honored (``select`` has no aggregator; a bare
            name with an aggregator that is not on an OpenAI-compatible server).
    """
    if not isinstance(model, str) or not model.strip():
        raise MoAInputError(
            f"model= must be a preset name or a model spec, got {redacted_repr(model)}."
        )
    if model in list_presets():
        return model, None
    if cfg.final_role == "selector":
        raise MoAInputError(
            f"model={redacted_repr(model)} cannot be honored: the 'select' variant answers "
            "with a proposal and has no aggregator to replace; pass a preset name instead."
        )
    spec = model
    if parse_endpoint_string(model) is None and ":" not in model:
        current = cfg.final.model
        endpoint = (
            current
            if isinstance(current, OpenAIEndpoint)
            else parse_endpoint_string(current)
            if isinstance(current, str)
            else None
        )
        if endpoint is None:
            raise MoAInputError(
                f"model={redacted_repr(model)} is neither a preset nor a model spec, and the "
                "aggregator is not on an OpenAI-compatible server to ask for it by name: pass a "
                "preset name or a spec such as 'openai:gpt-4o-mini' or 'name@http://host:port/v1'."
            )
        spec = f"{model}@{endpoint.base_url}"
    # Self-MoA (and -Seq) is one model throughout: the override replaces it as proposer and
    # aggregator.
    context = (
        MoAContext(proposers=[spec], aggregator=spec)
        if cfg.rules.aggregates_with_proposer
        else MoAContext(aggregator=spec)
    )
    apply_context(cfg, context)  # a bad spec fails here, in one sentence, before any call
    return None, context


def _closing_chunks(final: dict[str, Any]) -> Iterator[ChatGenerationChunk]:
    """Close a stream: the answer's tool calls as tool-call chunks, then usage and metadata."""
    answer: AIMessage = final["messages"][-1]
    if answer.tool_calls:
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[
                    ToolCallChunk(
                        name=call["name"],
                        args=json.dumps(call["args"]),
                        id=call["id"],
                        index=i,
                        type="tool_call_chunk",
                    )
                    for i, call in enumerate(answer.tool_calls)
                ],
            )
        )
    parsed = final.get("structured_response")
    yield ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            additional_kwargs={"parsed": parsed} if parsed is not None else {},
            usage_metadata=answer.usage_metadata,
            response_metadata=answer.response_metadata,
            chunk_position="last",
        )
    )


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


def _is_pydantic_class(schema: Any) -> bool:
    """Tell whether `schema` is a pydantic class (a dict or TypedDict schema is not)."""
    return isinstance(schema, type) and is_basemodel_subclass(schema)


class _StructuredAnswer(JsonOutputParser):
    """The structured answer of a synthesizing run: partial objects while it streams.

    The whole answer is always the graph's own parse (``parsed`` on the last chunk, or on
    the message of `invoke`); while the aggregator's JSON text streams in, each new partial
    object is yielded when `partial` is set (`JsonOutputParser`'s cumulative parsing).
    """

    partial: bool = True

    def parse_result(self, result: list[Any], *, partial: bool = False) -> Any:
        parsed = _parsed_answer(result[0].message)
        if parsed is not None or not partial:
            return parsed
        return super().parse_result(result, partial=True) if self.partial else None

    @property
    def _type(self) -> str:
        return "moa_structured_answer"


def _parsed_answer(message: BaseMessage) -> Any:
    """Return the parsed object a structured run put on its answer."""
    return message.additional_kwargs.get("parsed")


def _raw_and_parsed(llm: Runnable[Any, Any]) -> Runnable[Any, dict[str, Any]]:
    """Run `llm` for ``include_raw=True``: an answer that never parsed is returned, not raised.

    LangChain's promise for ``include_raw=True``: a parsing error comes back as
    ``parsing_error`` with the raw message. A run whose aggregators (fallbacks included)
    all failed to give the structure raises `AggregatorFailedError` caused by a
    `StructuredOutputError`; that error is returned, with the last aggregator's message as
    ``raw``. Any other failure (a provider error) is still raised.
    """

    def parsed(message: BaseMessage) -> dict[str, Any]:
        return {"raw": message, "parsed": _parsed_answer(message), "parsing_error": None}

    def unparsed(error: AggregatorFailedError) -> dict[str, Any]:
        cause = error.__cause__
        if not isinstance(cause, StructuredOutputError):
            raise error
        raw = cause.response if isinstance(cause.response, BaseMessage) else AIMessage("")
        return {"raw": raw, "parsed": None, "parsing_error": error}

    def run(value: Any, config: RunnableConfig) -> dict[str, Any]:
        try:
            return parsed(llm.invoke(value, config))
        except AggregatorFailedError as error:
            return unparsed(error)

    async def arun(value: Any, config: RunnableConfig) -> dict[str, Any]:
        try:
            return parsed(await llm.ainvoke(value, config))
        except AggregatorFailedError as error:
            return unparsed(error)

    return RunnableLambda(run, afunc=arun, name="parsed answer")


def _parsed_with(
    llm: Runnable[Any, Any], parser: Runnable[Any, Any], include_raw: bool
) -> Runnable[Any, Any]:
    """Return `llm` with its answer parsed; with `include_raw`, as LangChain returns it."""
    if not include_raw:
        return llm | parser
    return llm | RunnableLambda(lambda raw: _with_parsed(raw, parser), name="parsed answer")


def _with_parsed(raw: BaseMessage, parser: Runnable[Any, Any]) -> dict[str, Any]:
    """Parse a picked proposal's text, keeping the raw answer and any parsing error."""
    try:
        return {"raw": raw, "parsed": parser.invoke(raw), "parsing_error": None}
    except Exception as exc:  # what include_raw promises: the error, not a raise
        return {"raw": raw, "parsed": None, "parsing_error": exc}


def _truncate(text: str, stops: list[str]) -> str:
    cuts = [i for s in stops if (i := text.find(s)) >= 0]
    return text[: min(cuts)] if cuts else text


def _result(state: dict[str, Any], stop: list[str] | None) -> ChatResult:
    answer: AIMessage = state["messages"][-1]
    parsed = state.get("structured_response")
    message = AIMessage(
        content=_truncate(answer.text, stop or []),
        tool_calls=answer.tool_calls,
        id=answer.id,
        additional_kwargs={"parsed": parsed} if parsed is not None else {},
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


def _refuse_unknown(data: dict[str, Any]) -> None:
    """Refuse an argument `MoAChatModel` has no field for, saying where it belongs."""
    from langgraph_moa.text._names import did_you_mean

    fields = MoAChatModel.model_fields
    known = set(fields) | {f.alias for f in fields.values() if f.alias}
    for name in data:
        if name in known:
            continue
        fix = _moa_setting_fix(name, data[name]) or did_you_mean(name, sorted(known))
        if fix is None:
            own = "config, model, temperature, max_tokens, timeout, max_retries, stop"
            fix = f"its own are {own}, and LangChain's (callbacks, tags, metadata, ...)"
        raise MoAConfigError(f"MoAChatModel has no field {name!r}: {fix}.".replace("?.", "?"))


_CALL_NAMES = ("temperature", "max_tokens", "max_completion_tokens", "stop", "tool_choice")
"""The call arguments this model reads itself: a near miss of one is a typo, not an option
of some provider's API (a strict cutoff keeps ``top_p`` from reading as ``stop``)."""

_CONTEXT_ONLY = frozenset(MoAContext.model_fields) - frozenset(MoAConfig.model_fields)

_MOA_SETTINGS = tuple(
    sorted((frozenset(MoAConfig.model_fields) | _CONTEXT_ONLY) - {"name", *_CALL_NAMES})
)
"""The MoA settings a call argument may be a near miss of (``layer`` for ``layers``)."""

_PROVIDER_OPTIONS = frozenset({"samplers"})
"""Providers' own call options that are near misses of a MoA setting, passed on as given:
llama.cpp's ``samplers`` (the sampler order) is one letter off ``samples``."""


def _refuse_call_arguments(kwargs: Mapping[str, Any]) -> None:
    """Refuse a call argument that is a MoA setting or a typo of one this model reads.

    Other call arguments go on to every answering call, where a server that ignores
    unknown fields (llama.cpp does) would drop these with nothing said: the run would be
    a different MoA than the one asked for, at full price. So they fail as the
    constructor's do, before any call.
    """
    from langgraph_moa.text._names import did_you_mean

    for name, value in kwargs.items():
        fix = _per_call_fix(name, value) or _moa_setting_fix(name, value)
        if fix is None and name not in _CALL_NAMES:
            fix = did_you_mean(name, _CALL_NAMES, cutoff=0.85) or _near_setting_fix(name, value)
        if fix is not None:
            raise MoAConfigError(
                f"{name}={_shown(value)} is no call argument: {fix}.".replace("?.", "?")
            )


def _near_setting_fix(name: str, value: Any) -> str | None:
    """Where a near miss of a MoA setting belongs (``layer=3``); None for other names.

    The same strict cutoff as for this model's own names, and providers' options that are
    near misses (`_PROVIDER_OPTIONS`) pass: the rest of a provider's options are no MoA
    setting's near miss, and go on to every answering call as before.
    """
    from langgraph_moa.text._names import closest

    setting = None if name in _PROVIDER_OPTIONS else closest(name, _MOA_SETTINGS, 0.85)
    if setting is None:
        return None
    where = _per_call_fix(setting, value) or _moa_setting_fix(setting, value)
    return f"it looks like the MoA setting {setting!r}: {where}"


def _per_call_fix(name: str, value: Any) -> str | None:
    """Return the per-call way to choose a preset or an aggregator (`model_override`).

    Those two a call can choose itself: sending the caller to rebuild the model for them
    would hide the way that exists.
    """
    if name not in ("preset", "aggregator") or not isinstance(value, str) or not value.strip():
        return None
    return f"to choose the {name} for one call, pass model={value!r}"


def _moa_setting_fix(name: str, value: Any) -> str | None:
    """Where a MoA setting given as a model argument belongs (None: it is no MoA setting)."""
    if name in MoAConfig.model_fields and name != "name":
        return (
            f"set it in the config, config=MoAConfig({name}={_shown(value)}, ...) or "
            f"`{name}:` in a config file"
        )
    if name in _CONTEXT_ONLY:
        return "set it in the config the model is built with (a preset, a MoAConfig or a file)"
    if name == "api_key":
        return (
            "each inner model reads its own provider's key from the environment "
            "(OPENAI_API_KEY, ANTHROPIC_API_KEY, ...) or from the model instance the "
            "config gives"
        )
    return None


def _shown(value: Any) -> str:
    """Return `value` as an error message shows it: its repr, or "..." when that is long."""
    text = repr(value)
    return text if len(text) <= 40 else "..."
