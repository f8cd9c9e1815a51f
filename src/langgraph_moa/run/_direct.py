"""A chat model call that skips LangChain's run bookkeeping when nothing would read it.

``BaseChatModel.ainvoke`` configures a callback manager, builds the call's invocation and
tracing parameters (dumping the whole model twice), starts an LLM run with a new run id and
ends it, on every call, even when no handler, tracer or hook is there to read any of it.
That is about a fifth of the client CPU of one model call in the graph (docs/performance.md),
and MoA makes many calls at once.

When nothing listens, `ainvoke_direct` and `invoke_direct` go straight to the model's
``_agenerate_with_cache`` (``_generate_with_cache``): the step that ``ainvoke`` itself ends
in, given a run manager with no handlers, as ``ainvoke`` gives it one when none are set. What
a call does for its caller is therefore kept: the model's own or the global LLM cache, its
rate limiter, streaming when the model is set to stream, LangChain's message conversion and
normalization, the response metadata, the message id LangChain gives, and a run manager for a
model that reads one. What is skipped has no reader: configuring the callback manager, the
invocation and tracing parameters, and the LLM run's start and end events.

Something listens, and the call goes through ``ainvoke`` unchanged, when any of these holds:
a handler in the run's callbacks (LangGraph's token stream for ``stream_mode="messages"``,
``astream_events``, a user's handler), callbacks or ``verbose`` on the model, LangChain's
debug mode, LangSmith tracing (environment, ``tracing_context`` or ``tracing_v2_enabled``),
a context hook LangChain configures handlers from (``get_usage_metadata_callback``,
``collect_runs``), or a method on ``ainvoke``'s way that is not LangChain's own: overridden
by the model's class, or patched or wrapped on the class or on ``BaseChatModel`` itself, as
instrumentation such as ddtrace's does. ``MOA_DIRECT_CALLS=0`` sends every call through
``ainvoke``.
"""

from __future__ import annotations

import inspect
import operator
from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.globals import get_debug
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models._utils import _normalize_messages
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tracers.context import _configure_hooks, _tracing_v2_is_enabled
from langchain_core.utils.env import env_var_is_set
from langchain_core.utils.uuid import uuid7

from langgraph_moa._env import switch_from_env
from langgraph_moa.transport._completions import KEEP_TRANSFORM_ENV

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langchain_core.runnables import Runnable, RunnableConfig

DIRECT_CALLS_ENV = "MOA_DIRECT_CALLS"
"""Set to ``0`` to send every model call through LangChain's ``invoke``/``ainvoke``."""


def check_call_switches() -> None:
    """Refuse a bad ``MOA_DIRECT_CALLS`` or ``MOA_SDK_TRANSFORM`` as a graph or model is built.

    Both are read on each model call, so a bad one was refused only at the first call, after
    the graph was built and a run begun (`moa serve` reads them before it starts).

    Raises:
        MoAConfigError: either holds anything but 0, 1 or nothing (`switch_from_env`).
    """
    switch_from_env(DIRECT_CALLS_ENV)
    switch_from_env(KEEP_TRANSFORM_ENV)


_ON_INVOKES_WAY = (
    "invoke",
    "ainvoke",
    "generate_prompt",
    "agenerate_prompt",
    "generate",
    "agenerate",
    "_generate_with_cache",
    "_agenerate_with_cache",
    "_convert_input",
)


_LANGCHAINS_OWN = tuple(inspect.unwrap(getattr(BaseChatModel, name)) for name in _ON_INVOKES_WAY)
"""LangChain's own functions on ``ainvoke``'s way, unwrapped from any instrumentation that
patched them before this module was imported."""
_ON_THE_WAY = operator.attrgetter(*_ON_INVOKES_WAY)
"""A class's functions on ``ainvoke``'s way, as `_LANGCHAINS_OWN` lists them."""


def _takes_invokes_way(cls: type[BaseChatModel]) -> bool:
    """Tell whether every method between ``ainvoke`` and `cls`'s model is LangChain's own.

    Looked up on each call, not cached: a test or an instrumentation library may patch a
    class, or ``BaseChatModel``, at any time.
    """
    # Looked up and compared in C: a loop of getattr made ten function calls per model call.
    return all(map(operator.is_, _ON_THE_WAY(cls), _LANGCHAINS_OWN))


def _has_handlers(callbacks: Any) -> bool:
    if callbacks is None:
        return False
    if isinstance(callbacks, list):
        return bool(callbacks)
    return bool(callbacks.handlers or callbacks.inheritable_handlers)


def nobody_listens(model: BaseChatModel, config: RunnableConfig | None) -> bool:
    """Tell whether a call of `model` under `config` would have no callback handler at all.

    Mirrors where LangChain's ``AsyncCallbackManager.configure`` finds handlers (the run's
    config and the model, debug and verbose, LangSmith tracing, the context hooks), so any
    source it would add one from sends the call the usual way.
    """
    if switch_from_env(DIRECT_CALLS_ENV) is False or not _takes_invokes_way(type(model)):
        return False
    if model.callbacks or model.verbose or get_debug():
        return False
    callbacks = config.get("callbacks") if config else None
    if callbacks is None:  # as in `ensure_config`, a None value does not override the run's
        parent = var_child_runnable_config.get()
        callbacks = parent.get("callbacks") if parent else None
    if _has_handlers(callbacks) or _tracing_v2_is_enabled():
        return False
    if env_var_is_set("LANGCHAIN_TRACING") or env_var_is_set("LANGCHAIN_HANDLER"):
        return False  # LangChain's configure refuses these with an explanation: let it
    for var, _inheritable, handler_class, env_var in _configure_hooks:
        if var.get() is not None:
            return False
        if env_var is not None and handler_class is not None and env_var_is_set(env_var):
            return False
    return True


def _prompt(model: BaseChatModel, messages: list[BaseMessage]) -> list[BaseMessage]:
    """Return the messages as ``invoke`` hands them to the model: converted, normalized."""
    return _normalize_messages(model._convert_input(messages).to_messages())


async def ainvoke_direct(
    model: Runnable[Any, Any], messages: list[BaseMessage], config: RunnableConfig | None
) -> BaseMessage:
    """Call `model` as ``ainvoke`` would, without its run bookkeeping when nobody listens."""
    if not isinstance(model, BaseChatModel) or not nobody_listens(model, config):
        answer: BaseMessage = await model.ainvoke(messages, config)
        return answer
    quiet = AsyncCallbackManagerForLLMRun(run_id=uuid7(), handlers=[], inheritable_handlers=[])
    result = await model._agenerate_with_cache(_prompt(model, messages), run_manager=quiet)
    answer = result.generations[0].message
    return answer


def invoke_direct(
    model: Runnable[Any, Any], messages: list[BaseMessage], config: RunnableConfig | None
) -> BaseMessage:
    """Sync twin of `ainvoke_direct`."""
    if not isinstance(model, BaseChatModel) or not nobody_listens(model, config):
        answer: BaseMessage = model.invoke(messages, config)
        return answer
    quiet = CallbackManagerForLLMRun(run_id=uuid7(), handlers=[], inheritable_handlers=[])
    result = model._generate_with_cache(_prompt(model, messages), run_manager=quiet)
    answer = result.generations[0].message
    return answer
