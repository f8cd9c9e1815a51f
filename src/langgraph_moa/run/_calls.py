"""One model call: its identity, timeout, layer deadline, call cache and error translation.

A node body is written once as a generator (`NodeSteps`) that yields what it needs done (a
`ModelRequest`, or a checkpoint read or write of `ledger`) and receives the result; `run_sync`
and `run_async` do it the way `invoke` or `ainvoke` needs, so the logic around a call (cache,
accounting, retries) exists once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import copy
import functools
import hashlib
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, cast

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from langchain_core.callbacks.manager import dispatch_custom_event
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config
from langchain_core.tracers._streaming import _StreamingCallbackHandler
from langgraph._internal._constants import CONFIG_KEY_RUNTIME
from langgraph.config import get_config
from langgraph.constants import CONF

from langgraph_moa._redact import LABEL_CHARS, clip, describe_error
from langgraph_moa._unicode import beginning
from langgraph_moa.errors import (
    CallTimeoutError,
    RetryPastDeadlineError,
    RunInterrupted,
    StragglerCancelledError,
)
from langgraph_moa.errors import _RejectedAnswer as RejectedAnswer
from langgraph_moa.providers._models import (
    ModelSpec,
    OpenAIEndpoint,
    describe_model,
    has_own_timeout,
)
from langgraph_moa.providers._retry import (
    explain_failure,
    is_retryable,
    retry_after_s,
    too_long_a_wait,
)
from langgraph_moa.providers._table import LOCAL_PREFIX, is_sdk_timeout
from langgraph_moa.run import _clock as clock
from langgraph_moa.run._accounting import (
    failed_record,
    ok_record,
    openai_finish_reason,
)
from langgraph_moa.run._direct import ainvoke_direct, invoke_direct
from langgraph_moa.run._interrupt import RUN_CALLS
from langgraph_moa.run.cache import CallCache, call_key, refused_hit
from langgraph_moa.run.state import CallRecord, Role
from langgraph_moa.transport._call_loop import call_loop, loop_of_this_thread

if TYPE_CHECKING:
    from langgraph_moa.config._schema import MoAConfig

T = TypeVar("T")


class CallId(NamedTuple):
    """Who one model call asks: its record, events, trace and attempts all derive from it."""

    role: Role
    layer: int
    proposer: int
    """Index of the proposer in the config; -1 for the aggregator or ranker."""
    sample: int
    """Sample index; for the aggregator, its position in the fallback chain."""
    configured_model: str

    def fields(self) -> dict[str, Any]:
        """Return the identity as the fields of a call record and of its progress events."""
        return self._asdict()

    def attempt_key(self, run_token: str) -> tuple[str, str, int, int, int]:
        """Return the key of this call's attempts within a run (see `ledger`)."""
        return (run_token, self.role, self.layer, self.proposer, self.sample)

    def trace_metadata(self, cfg: MoAConfig) -> dict[str, Any]:
        """Return the metadata a trace shows on this call's run."""
        return {
            "moa_role": self.role,
            "moa_layer": self.layer,
            "moa_proposer": self.proposer,
            "moa_sample": self.sample,
            "moa_variant": cfg.variant,
            "moa_preset": cfg.name,
        }

    def trace(self, cfg: MoAConfig, run_name: str, tags: list[str]) -> RunnableConfig:
        """Return the config this call is traced with: its run's name, tags and metadata.

        See `with_trace` for how it reaches the model.
        """
        return {"run_name": run_name, "tags": tags, "metadata": self.trace_metadata(cfg)}

    def draw(self, offsets: Sequence[int]) -> int:
        """Return which call of its model this is in its layer: 0 for the first.

        A proposer's samples are draws 0, 1, ...; a proposer whose model and parameters an
        earlier one of the layer has too (``proposers=[m, m]``, or two instances either cache
        keys alike: the same model name when unnamed, or the same LangChain settings; a
        class that reports no settings keys all its instances alike, `_call_keys`) goes on
        from that one's samples: the same call. Keyed by the sample alone,
        the package's call cache served the second proposer the first's answer, and
        LangChain's LLM cache did so for either (see `without_llm_cache`). Any other call's
        is its ``sample``, so a config without a repeated model keeps its keys.
        `offsets`: the config's `draw_offsets`.
        """
        return self.sample + offsets[self.proposer] if self.role == "proposer" else self.sample


def draw_offsets(cfg: MoAConfig) -> tuple[int, ...]:
    """Return, per proposer of `cfg`, where its draws start (`CallId.draw`).

    They follow from the config alone, so a graph computes them once per config
    (`MoANodes.derived`): compared per call, every earlier proposer's model and parameters
    were about 20 of the 1926 Python function calls a model call cost
    (benchmarks/graph_call_work.py). Each proposer is asked for its keys and parameters
    once: asked again for every earlier proposer, 256 model instances took over a second.
    """
    seen: list[tuple[frozenset[tuple[str, Any]], dict[str, Any], int]] = []
    offsets: list[int] = []
    for p in cfg.proposers:
        keys, params = _call_keys(p.model, p.label), p.call_params()
        offsets.append(sum(n for k, q, n in seen if keys & k and q == params))
        seen.append((keys, params, p.samples))
    return tuple(offsets)


def _call_keys(model: Any, label: str) -> frozenset[tuple[str, Any]]:
    """Return the keys of a proposer's model: two that share one make one call to a cache.

    The same spec, or two instances either cache keys alike (``[make(), make()]``: the call
    cache by `cache_name`, LangChain's by the model's settings). Counted as one, their draws
    go on from each other's: only a cache miss, never another model's answer, if they
    differ after all.
    """
    if not isinstance(model, BaseChatModel):
        return frozenset({("spec", describe_model(model))})
    keys = {("instance", id(model)), ("cache", cache_name(model, label))}
    try:  # LangChain's own key of its cache; a model that cannot say is not shared
        keys.add(("llm", model._get_llm_string()))
    except Exception:
        pass
    return frozenset(keys)


def with_trace(
    model: Runnable[Any, Any], trace: RunnableConfig | None
) -> tuple[Runnable[Any, Any], RunnableConfig | None]:
    """Return the runnable to call and the config to call it with, traced under `trace`.

    A bare chat model (the usual call) takes the trace as the config of its ``invoke``:
    binding it with ``with_config`` built a `RunnableBinding` per call whose ``invoke`` merged
    the config twice, 136 of the 526 Python function calls the package made per model call
    (benchmarks/graph_call_work.py). Anything else (a model with tools or other options
    bound, a structured-output chain) gets it bound, as before: a binding's ``invoke`` merges
    a given config with its own, both carrying the run's callback manager, and LangChain
    merges a manager with itself through sets, so handlers and tags would run in no fixed
    order.
    """
    if trace is None:
        return model, None
    if isinstance(model, BaseChatModel):
        return model, trace
    return model.with_config(trace), None


def without_llm_cache(model: Runnable[Any, Any]) -> Runnable[Any, Any]:
    """Return `model` made to skip LangChain's LLM cache, where one would answer it.

    LangChain's cache (``set_llm_cache``, or a model's own ``cache=``) keys a call by the
    model's parameters and the messages, and the samples of one proposer are the same call:
    the second and third sample were served the first's answer, so a Self-MoA run aggregated
    one proposal three times (and counted its tokens thrice). A proposer's call after the
    first of its model in its layer (`CallId.draw`) is therefore always generated; the first
    is cached as any call of that model, and a whole `MoAChatModel` answer is cached under
    the MoA's own key. A model with tools or options bound is its bound model made so;
    anything else is called as it is.
    """
    if isinstance(model, RunnableBinding):
        bound = without_llm_cache(model.bound)
        return model if bound is model.bound else model.model_copy(update={"bound": bound})
    if not isinstance(model, BaseChatModel) or model.cache is False:
        return model
    if model.cache is None and get_llm_cache() is None:
        return model
    return model.model_copy(update={"cache": False})


def emit(event: str, ended: CallRecord | None = None, **fields: Any) -> None:
    """Send a progress event to ``stream_mode="custom"`` (a no-op when nobody listens).

    A run whose reader wants only ``discarded`` (`DISCARDS_ONLY`: `AnswerStream` without
    progress) sends nothing else: every call's started and finished went through LangGraph's
    stream unread. The writer is looked up as `get_stream_writer` does, so telling costs a
    plain run no more function calls than before. `ended`: the record of the call that a
    ``finished`` or ``failed`` event ends, for the run's `CallTally` (not sent).
    """
    configurable = get_config()[CONF]
    # Only a real tally: a LangGraph server client sets any `configurable` key, and counting
    # into its JSON value raised in every node (retried for minutes by the retry policy).
    # `in` first: a run with no tally and no reader of discards alone (most) makes no call
    if CALL_TALLY in configurable and isinstance(tally := configurable[CALL_TALLY], CallTally):
        if ended is not None:
            tally.end(ended)
        elif event == "started":
            tally.start(fields)
    if event != DISCARDED and DISCARDS_ONLY in configurable and configurable[DISCARDS_ONLY]:
        return
    configurable[CONFIG_KEY_RUNTIME].stream_writer({"type": "moa", "event": event, **fields})


def record_answer(
    call: CallId,
    errors: list[str],
    response: BaseMessage,
    latency: float,
    cached: bool = False,
    prompt: Sequence[BaseMessage] = (),
    estimated: bool = False,
    tools: Callable[[], Any] | None = None,
) -> CallRecord:
    """Record a call that answered, with its retries, and tell the progress stream.

    `prompt` and `tools`: what it was sent (its messages; a function returning its tools'
    schemas), for the estimate of a call that reported no usage; `estimated`: its usage is
    partly an estimate already (`ok_record`).
    """
    fields = call.fields()  # the record's and the event's: made once
    record = ok_record(
        response=response,
        latency_s=latency,
        retried_errors=errors,
        cached=cached,
        prompt=prompt,
        estimated=estimated,
        tools=tools,
        **fields,
    )
    line = " ".join((record["output"] or "").split())
    emit(
        "finished",
        record,
        **fields,
        model=record["model"],
        latency_s=record["latency_s"],
        prompt_tokens=record["prompt_tokens"],
        completion_tokens=record["completion_tokens"],
        cached=record["cached"],
        **({"usage_estimated": True} if "usage_estimated" in record else {}),
        retries=len(errors),
        preview=beginning(line, 200),  # no half an emoji
        # "length" for every provider's spelling of a max_tokens cut: a card says so
        finish_reason=openai_finish_reason(record["finish_reason"]),
    )
    return record


def record_failure(
    call: CallId,
    errors: list[str],
    error: BaseException,
    latency: float,
    paid: BaseMessage | None = None,
    estimated: bool = False,
    prompt: Sequence[BaseMessage] = (),
    tools: Any = None,
) -> CallRecord:
    """Record a call that failed for good (or was cancelled), and tell the progress stream.

    `errors` are all its attempts' errors; the last one is the record's own error. The
    latency is how long its last attempt ran: for a cancelled straggler, how long the run
    waited for it. `paid`: what the call had cost before it failed (see `failed_record`),
    `estimated` whether that is partly an estimate; `prompt` and `tools`: what it was sent,
    for the estimate of a refused answer that reported no usage.
    """
    fields = call.fields()
    record = failed_record(
        error=error,
        latency_s=latency,
        retried_errors=errors[:-1],
        paid=paid,
        estimated=estimated,
        prompt=prompt,
        tools=tools,
        **fields,
    )
    emit(
        "failed",
        record,
        **fields,
        error=record["error"],
        status=record["status"],
        retries=len(record["retried_errors"]),
    )
    return record


def discard_answer(call: CallId, error: BaseException, keep: int = 0) -> None:
    """Tell the progress stream that an attempt at the answer failed: drop its tokens.

    The answer's tokens stream as they are written (tagged ``moa:final``), before anyone
    knows whether the attempt will stand. When it fails (a broken stream, a refused answer,
    a timeout), what it sent cannot be taken back from ``stream_mode="messages"``, so the
    ``discarded`` event says that the answer's text so far is void: a retry, the next
    aggregator or a fallback answer follows. It goes to ``stream_mode="custom"`` and, for
    ``astream_events`` (which has no custom mode), as LangChain's custom event
    ``moa_discarded`` with the same fields.

    `keep`: how many characters of the answer's text so far stand (the parts of a
    chunk-wise answer written before the part that failed and is written again); 0 for a
    whole answer.
    """
    fields = {**call.fields(), "error": describe_error(error), "keep": keep}
    emit(DISCARDED, **fields)
    try:
        dispatch_custom_event(f"moa_{DISCARDED}", fields)
    except RuntimeError:  # outside a run (a node body called directly in a test)
        pass


DISCARDED = "discarded"
"""The event of `discard_answer`. The package's own readers (`AnswerStream`, `RunEvents`)
keep the answer to one attempt themselves (`OneAttempt`) and do not pass it on."""


class CallTally:
    """A run's calls as they end (answered or failed for good), and those still running.

    Counted where the progress events are sent (`emit`), even when nobody reads them, so
    that a reader without a listener (`moa serve`'s access log and metrics, for a run its
    deadline, the drain or a leaving client stopped) can say what the run had cost without
    building an event per call: such a run's error carries no call records, and the calls
    it cut off never end by themselves.
    """

    __slots__ = ("_running", "calls", "ended", "failed")

    def __init__(self) -> None:
        """Start at no call ended."""
        self.ended = 0
        self.failed = 0  # of those ended, the calls that failed for good (or were cancelled)
        self.calls: list[dict[str, Any]] = []
        """Each ended call's model, status, attempts and tokens, as its record has them."""
        self._running: dict[tuple[Any, ...], str] = {}
        """The calls started and not ended, by identity: their configured model."""

    def start(self, fields: dict[str, Any]) -> None:
        """Note a call (an attempt) that started, by its `CallId` fields."""
        self._running[_call_key(fields)] = fields["configured_model"]

    def end(self, record: CallRecord) -> None:
        """Count a call that ended with `record`."""
        self._running.pop(_call_key(record), None)
        self.ended += 1
        self.failed += record["status"] != "ok"
        self.calls.append(
            {
                "configured_model": record["configured_model"],
                "status": record["status"],
                "attempts": record["attempts"],
                "total_tokens": record["total_tokens"],
            }
        )

    def records(self) -> list[dict[str, Any]]:
        """Return the ended calls' records, then one ``cancelled`` per call still running."""
        cut = [{"configured_model": m, "status": "cancelled"} for m in self._running.values()]
        return [*self.calls, *cut]


def _call_key(fields: Any) -> tuple[Any, ...]:
    """Return a call's identity within its run, from its record or its event's fields."""
    return (fields["role"], fields["layer"], fields["proposer"], fields["sample"])


CALL_TALLY = "moa_call_tally"
"""``configurable`` key of a run's `CallTally`, if the caller wants one."""


DISCARDS_ONLY = "moa_discards_only"
"""``configurable`` key of a run whose custom stream carries only ``discarded`` (`emit`)."""


WATCH = "moa_watch"
"""``configurable`` key of a run whose every call streams its tokens (see `watching`)."""


def watching() -> bool:
    """Tell whether this run is watched call by call (``configurable[WATCH]`` is true).

    A watched run streams the proposers' and intermediate aggregators' tokens too, so that a
    viewer can show every model writing (`graph.streaming.RunEvents`). Unwatched, they do not
    stream: a plain run pays nothing for it.
    """
    try:
        configurable = get_config().get("configurable") or {}
    except RuntimeError:  # outside a run (a node body called directly in a test)
        return False
    return bool(configurable.get(WATCH))


QUORUM_POLL_S = 0.05
"""How often a call past its layer's deadline checks whether the quorum has answered."""


class StopCheck(Protocol):
    """Watches a running call for its layer going on without it."""

    @property
    def held(self) -> clock.Held | None:
        """Return where `off_the_clock` notes the time the call's reader held it.

        The watch leaves that time out; None for a watch that counts no time. The watch
        owns it, not the attempt: a retry of a held call keeps what was held before it.
        """

    def __call__(self) -> str | None:
        """Return why the call should be abandoned now, or None."""

    def wait_s(self) -> float:
        """Return how long the answer of `__call__` cannot change (the time to the deadline).

        Before the deadline a waiting call sleeps until it; after it, it checks the quorum
        every `QUORUM_POLL_S`.
        """


def call_model(
    model: Runnable[Any, Any],
    messages: list[BaseMessage],
    label: str,
    timeout: float | None,
    stop: StopCheck | None = None,
    own_timeout: bool = False,
    config: RunnableConfig | None = None,
    retried: bool = True,
) -> BaseMessage:
    """Invoke a model, giving up on a timeout or when the layer went on without this call.

    A model built by this package on an OpenAI-compatible client carries `timeout` as its
    HTTP timeout (`own_timeout`), so a given-up request really stops: it is called in this
    thread and its client ends a call that runs too long. When it must also watch its
    layer's deadline, a blocking call could not be stopped halfway, so it is made as an
    async call on the package's call loop (`_call_loop.call_loop`), which cancels the request (and
    closes its connection) once the layer goes on. A user's model without a timeout of its
    own runs in a daemon thread that the node abandons when it gives up: the wrapper that
    exists only because such a call cannot be interrupted. So does a sync run made from a
    thread that runs an event loop (a notebook cell): its models were built for that loop
    and cannot be used on another. `config` (the call's trace: run name, tags, metadata) is
    passed to the model's ``invoke``; with nothing listening, the model is called without
    LangChain's run bookkeeping (`_direct`). `retried`: whether a failure of this attempt
    gets another one; only then is a provider's ``Retry-After`` waited out (`_failure`).

    A call of a sync run driven by `_interrupt.interruptible` is also made on the call loop,
    so that the run's interrupt cancels it; the wait for a call in a thread ends with the
    interrupt, and once interrupted the run makes no new call (`RunInterrupted`).
    """
    calls = RUN_CALLS.get()
    if calls is not None and calls.interrupted.is_set():
        raise RunInterrupted(f"{label} was not called: the run's caller stopped waiting")
    cancellable = stop is not None or calls is not None
    if own_timeout and cancellable and loop_of_this_thread() is None:
        return wait_for(
            submit(
                acall_model(model, messages, label, timeout, stop, config=config, retried=retried)
            ),
            label,
        )
    if own_timeout and stop is None:
        try:
            return invoke_direct(model, messages, config)
        except Exception as exc:
            explained = _failure(exc, label, timeout, retried, messages)
            if explained is exc:
                raise
            raise explained from exc
    outcome: dict[str, Any] = {}
    done = threading.Event()
    cut = _StreamCut()

    def run() -> None:
        try:
            cut.install()
            outcome["result"] = invoke_direct(model, messages, config)
        except BaseException as exc:  # handed to the node's thread below
            outcome["error"] = exc
        finally:
            done.set()

    # The thread runs in a copy of this context: LangChain's callbacks (tracing, LangGraph's
    # token stream) travel in context variables, which a bare thread would not see.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(run,), daemon=True, name=f"moa {label}").start()
    started = time.monotonic()
    if calls is not None:
        calls.on_interrupt(done.set)
    try:
        while not done.wait(_next_check_s(started, timeout, stop)):
            _check_limits(label, started, timeout, stop)
        if not outcome:  # woken by the run's interrupt: the call is left to its thread
            raise RunInterrupted(f"{label} was abandoned: the run's caller stopped waiting")
    except BaseException:
        cut.close()  # before the node says `discarded`: nothing of this call follows it
        raise
    finally:
        if calls is not None:
            calls.forget(done.set)
    if "error" in outcome:
        error = outcome["error"]
        explained = (
            _failure(error, label, timeout, retried, messages)
            if isinstance(error, Exception)
            else error
        )
        raise explained from (error if explained is not error else None)
    result: BaseMessage = outcome["result"]
    return result


def wait_for(pending: concurrent.futures.Future[T], label: str) -> T:
    """Wait for work sent to the call loop (`submit`); cancel it if this wait is given up.

    The wait is given up when this thread is interrupted, or when its sync run is
    (`_interrupt.RunCalls`): the work is then cancelled on the loop (its requests with it).
    """
    calls = RUN_CALLS.get()
    if calls is not None:
        calls.on_interrupt(pending.cancel)
    try:
        return pending.result()
    except concurrent.futures.CancelledError:
        if calls is not None and calls.interrupted.is_set():
            raise RunInterrupted(f"{label} was cancelled: its run was interrupted") from None
        raise
    finally:
        pending.cancel()  # a no-op once done
        if calls is not None:
            calls.forget(pending.cancel)


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Run `coro` on the package's call loop (`_call_loop.call_loop`), outside the graph.

    Both kinds of work a sync run sends there go through here: a call that watches its
    layer's deadline (`call_model`) and a chunk-wise layer with its aggregator
    (`ChunkwiseRequest`). The loop lives as long as the process, and so may the context the
    coroutine runs in (`_outside_the_graph`): the run's config there is emptied once the
    coroutine ends.
    """
    context, config = _outside_the_graph()
    future = context.run(asyncio.run_coroutine_threadsafe, coro, call_loop())
    if config is not None:
        future.add_done_callback(lambda _: config.clear())
    return future


def _outside_the_graph() -> tuple[contextvars.Context, dict[str, Any] | None]:
    """Return a copy of this context for the call loop, and the config of its own it holds.

    The coroutine's task runs in it, and so does every callback its HTTP connections schedule
    on the loop (asyncio copies the context into each): a connection kept in the pool, and
    its pool's cleanup timer, keep it as long as the connection lives. The run's config there
    held the graph (LangGraph's ``__pregel_*`` entries hold its run loop), so every graph run
    sync with a layer deadline or chunk-wise, and its models and clients, stayed alive. A
    model call reads the config's callbacks, tags and metadata; the node's runtime
    (`CONFIG_KEY_RUNTIME`) is kept for `emit`'s stream writer, which a chunk-wise layer tells
    its progress through. Those still held the run's callbacks and its stream after the run
    ended, so the config is a copy of the caller's, which `submit` empties (every copy of
    the context holds that one dict) once the coroutine has ended.
    """
    context = contextvars.copy_context()
    parent = context.get(var_child_runnable_config)
    if not parent:
        return context, None
    config: dict[str, Any] = dict(parent)
    if parent.get(CONF):
        config[CONF] = {
            k: v
            for k, v in parent[CONF].items()
            if not k.startswith("__pregel_") or k == CONFIG_KEY_RUNTIME
        }
    context.run(var_child_runnable_config.set, cast("RunnableConfig", config))
    return context, config


class _StreamCut:
    """Ends the token stream of a call whose thread the node abandons (see `call_model`).

    The abandoned thread goes on writing, and its tokens reached the run's streams after
    the node had given the call up (an answer's: after its ``discarded`` event, between the
    retry's tokens). In the call's thread, `install` gives the run's streaming handlers
    (LangGraph's ``messages`` stream, ``astream_events``) to the model through copies
    that pass nothing once `close` was called. Other handlers (tracing) see the call whole.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.closed = False

    def close(self) -> None:
        with self._lock:  # a token being passed on when the call is given up goes first
            self.closed = True

    def install(self) -> None:
        """Run this thread's model call with the run's streaming handlers cut by `close`."""
        parent = var_child_runnable_config.get()
        manager = parent.get("callbacks") if parent is not None else None
        if parent is None or not isinstance(manager, BaseCallbackManager):
            return
        if not any(isinstance(h, _StreamingCallbackHandler) for h in manager.handlers):
            return
        # An inheritable handler is in both lists: one copy of it serves both.
        both = [*manager.handlers, *manager.inheritable_handlers]
        gated = {id(h): self._gated(h) for h in both}
        cut = manager.copy()
        cut.handlers = [gated[id(h)] for h in manager.handlers]
        cut.inheritable_handlers = [gated[id(h)] for h in manager.inheritable_handlers]
        mine: RunnableConfig = {**parent, "callbacks": cut}
        var_child_runnable_config.set(mine)  # this thread's context only (`call_model`)

    def _gated(self, handler: BaseCallbackHandler) -> BaseCallbackHandler:
        """Return a copy of a streaming `handler` (its state shared) that `close` silences."""
        if not isinstance(handler, _StreamingCallbackHandler):
            return handler
        gated = copy.copy(handler)
        for name in ("on_llm_new_token", "on_llm_end"):
            setattr(gated, name, self._passing(getattr(handler, name)))
        return gated

    def _passing(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def passing(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return None if self.closed else method(*args, **kwargs)

        return passing


_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "moa_request_deadline", default=None
)


def cache_name(spec: Any, label: str) -> str:
    """Return how the call cache names the model of a role labelled `label`.

    A spec names its model (the provider string, the endpoint's ``model@url``), whatever
    the role is called. A model instance has no spec that tells it apart (two clients of
    one model name at two servers), so a named role's instance is its model name *and* the
    role's name: renaming it costs a cache miss, never another model's answer. An unnamed
    one keeps its model name alone, the key it always had. A ``local:`` model is its name
    and its file's pinned SHA-256 (`local_digest`).
    """
    named = describe_model(spec)
    if isinstance(spec, BaseChatModel) and label != named:
        return f"{named} as {label}"
    written = spec.label() if isinstance(spec, OpenAIEndpoint) else spec
    if isinstance(spec, OpenAIEndpoint) and spec.api_key_env:
        # Its key comes from a variable: two endpoints at one URL with two keys shared
        # one name, and the second was served the first one's answers. The same key in
        # another variable is the same account, and shares them.
        written = f"{written}\n{os.environ.get(spec.api_key_env, '')}"
    if isinstance(written, str) and written != named:
        # Its key (in its URL, redacted, or in a variable) would be another account, or
        # another deployment behind one gateway. The digest tells them apart and keeps
        # the key out of the name (the cache's key is itself a digest of it).
        return f"{named}#{_digest(written)}"
    if (digest := local_digest(spec)) is not None:
        # The name alone would serve the answers of the file an earlier release pinned.
        return f"{named}@sha256:{digest}"
    return named


@functools.lru_cache(maxsize=256)
def _digest(spec: str) -> str:
    """Return a one-way digest of a keyed spec and its key, remembered: it names a model."""
    return hashlib.sha256(spec.encode("utf-8")).hexdigest()[:32]


def local_digest(spec: Any) -> str | None:
    """Return the pinned SHA-256 of a ``local:<name>`` model's file; None for any other spec.

    A local model's name stays when a release pins another file (a new quantization, a
    fixed conversion); its digest is what tells the weights apart. A name not in the
    catalog has none (building it fails with the catalog's own sentence).
    """
    if not isinstance(spec, str) or not spec.startswith(f"{LOCAL_PREFIX}:"):
        return None
    from langgraph_moa.local.catalog import CATALOG

    info = CATALOG.get(spec.removeprefix(f"{LOCAL_PREFIX}:"))
    return info.sha256 if info is not None else None


@contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    """Bound the waits a provider asks for (``Retry-After``) by a deadline `seconds` away.

    A context variable, so every call of a run started inside it sees it (LangGraph's tasks
    and worker threads copy the context). `moa serve` sets it per request.
    """
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _retry_wait(
    error: Exception, explained: BaseException, label: str
) -> float | RetryPastDeadlineError:
    """Return how long to wait before the retry, or the error if that is past the deadline.

    Only an error that will be retried (as `explained`) is waited for: a 401 or 400
    carrying ``Retry-After`` fails at once, since no second attempt follows the wait. A
    wait longer than `MAX_RETRY_AFTER_S` fails at once too, whatever the deadline. The label
    is shortened (`LABEL_CHARS`), as an explained failure's is.
    """
    if not is_retryable(explained):
        return 0.0
    wait = retry_after_s(error) or 0.0
    if (too_long := too_long_a_wait(label, wait)) is not None:
        return too_long
    due = _DEADLINE.get()
    if wait and due is not None and time.monotonic() + wait > due:
        return RetryPastDeadlineError(
            f"{clip(label, LABEL_CHARS)} asked to be retried after {wait:g}s, past this "
            "request's deadline, so it was not retried",
            wait,
        )
    return wait


def _failure(
    error: Exception,
    label: str,
    timeout: float | None,
    retried: bool,
    messages: Sequence[BaseMessage],
) -> BaseException:
    """Return what to raise for a failed call of `messages`, after any wait asked for.

    The wait is made only for a call that will be `retried`: after the last attempt no
    retry follows, so waiting would only hold the failure back.
    """
    explained = _explained(error, label, timeout, messages)
    if not retried:
        return explained
    wait = _retry_wait(error, explained, label)
    if isinstance(wait, BaseException):
        return wait
    if wait:
        time.sleep(wait)  # the provider said when to come back; backoff adds to it
    return explained


def _too_late(label: str, timeout: float | None) -> CallTimeoutError:
    return CallTimeoutError(f"{label} did not answer within {timeout:g}s")


def _explained(
    error: Exception, label: str, timeout: float | None, messages: Sequence[BaseMessage]
) -> BaseException:
    if timeout is not None and is_sdk_timeout(error):
        return _too_late(label, timeout)
    return explain_failure(error, label, messages)


async def acall_model(
    model: Runnable[Any, Any],
    messages: list[BaseMessage],
    label: str,
    timeout: float | None,
    stop: StopCheck | None = None,
    config: RunnableConfig | None = None,
    retried: bool = True,
) -> BaseMessage:
    """Async twin of `call_model`: the call is cancelled when it runs past `timeout`."""
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            # Set and reset inline (as `_chunkwise` does): a context manager would cost every
            # model call ~10 calls more.
            clocks = CALL_CLOCKS.set((scope, stop.held if stop is not None else None))
            try:
                if stop is None:
                    result: BaseMessage = await ainvoke_direct(model, messages, config)
                else:
                    call = ainvoke_direct(model, messages, config)
                    result = await _until_stopped(call, label, stop)
            finally:
                CALL_CLOCKS.reset(clocks)
    except Exception as exc:
        # Past the timeout also when the model turned its cancellation into another error.
        timed_out = scope.expired()
        explained = await explained_failure(
            exc, label, timeout, messages, timed_out=timed_out, retried=retried
        )
        if explained is exc:
            raise
        raise explained from (None if timed_out and isinstance(exc, TimeoutError) else exc)
    if scope.expired():  # a model that swallowed its cancellation answered too late
        raise _too_late(label, timeout)
    return result


CallClocks = tuple[asyncio.Timeout, clock.Held | None]
"""A model call's ``call_timeout_s`` scope, and where it notes the time its reader held it
(its layer's deadline does not count that time), if anywhere."""

CALL_CLOCKS: contextvars.ContextVar[CallClocks | None] = contextvars.ContextVar(
    "moa_call_clocks", default=None
)
"""The clocks of the model call running in this context, which `off_the_clock` stops: set
around the call by `acall_model` (its held time: its watch's `StopCheck.held`) and chunk-wise
streaming (the layer's). One variable for both: two cost every model call a set and a reset
more."""


async def off_the_clock(waiting: Awaitable[Any]) -> None:
    """Await `waiting` with the running model call's clocks stopped.

    A served stream holds its models while its reader is behind (`serving._events.ReaderPace`):
    that wait is the client's, not the model's, and counted against ``call_timeout_s`` it cut
    a healthy call whose reader paused, which was retried and paid for again. The time left
    is kept and the timer runs again, from it, once the wait is over. The wait is noted in
    the call's held time too (`CALL_CLOCKS`), which its layer's deadline does not count.
    """
    clocks = CALL_CLOCKS.get()
    if clocks is None:
        await waiting
        return
    scope, held = clocks
    if held is None:
        await _timer_stopped(scope, waiting)
        return
    held.start()
    try:
        await _timer_stopped(scope, waiting)
    finally:
        held.stop()


async def _timer_stopped(scope: asyncio.Timeout, waiting: Awaitable[Any]) -> None:
    """Await `waiting` with the call's ``call_timeout_s`` scope, `scope`, stopped."""
    when = scope.when() if scope is not None else None
    if when is None or scope.expired() or not _reschedule(scope, None):
        await waiting
        return
    loop = asyncio.get_running_loop()
    left = max(when - loop.time(), 0.0)
    try:
        await waiting
    finally:
        _reschedule(scope, loop.time() + left)


def _reschedule(scope: asyncio.Timeout, when: float | None) -> bool:
    """Move `scope`'s deadline to `when`; False if its call is over (`off_the_clock`).

    A task the call started (`_until_stopped`'s) may outlive the call's scope: cancelled as
    the call gave up, its wait ends after the scope has been left, with no timer to restart.
    """
    try:
        scope.reschedule(when)
    except RuntimeError:
        return False
    return True


async def explained_failure(
    error: Exception,
    label: str,
    timeout: float | None,
    messages: Sequence[BaseMessage],
    *,
    timed_out: bool = False,
    retried: bool = True,
) -> BaseException:
    """Return what a failed call of `label` with `messages` is recorded and raised as.

    A call that ran past its `timeout` says so; an error whose meaning is certain is
    explained; for a call that will be `retried`, a provider's ``Retry-After`` is waited
    out first (or the error says it fell past the request's deadline). For callers that run
    a model themselves (a stream).
    """
    if timed_out:
        return _too_late(label, timeout)
    explained = _explained(error, label, timeout, messages)
    if not retried:
        return explained
    wait = _retry_wait(error, explained, label)
    if isinstance(wait, BaseException):
        return wait
    if wait:
        await asyncio.sleep(wait)  # the provider said when to come back
    return explained


async def _until_stopped(
    call: Coroutine[Any, Any, BaseMessage], label: str, stop: StopCheck
) -> BaseMessage:
    """Await a call, cancelling it once its layer goes on without it."""
    task = asyncio.ensure_future(call)
    try:
        while True:
            finished, _ = await asyncio.wait({task}, timeout=stop.wait_s())
            if finished:
                return task.result()
            if reason := stop():
                raise StragglerCancelledError(f"{label} was still running: {reason}")
    finally:
        task.cancel()


def _next_check_s(started: float, timeout: float | None, stop: StopCheck | None) -> float | None:
    """Return how long a waiting call can sleep before its limits need checking again.

    None when it has no limits: it then waits for the call alone, without waking.
    """
    waits = [stop.wait_s()] if stop is not None else []
    if timeout is not None:
        waits.append(max(timeout - (time.monotonic() - started), 0.0) + 0.001)
    return min(waits) if waits else None


def _check_limits(
    label: str, started: float, timeout: float | None, stop: StopCheck | None
) -> None:
    if timeout is not None and time.monotonic() - started > timeout:
        raise _too_late(label, timeout)
    reason = stop() if stop is not None else None
    if reason:
        raise StragglerCancelledError(f"{label} was still running: {reason}")


class ModelRequest(NamedTuple):
    """A model call a node body asks its runner to make (the arguments of `call_model`)."""

    model: Runnable[Any, Any]
    messages: list[BaseMessage]
    label: str
    timeout: float | None
    stop: StopCheck | None
    spec: ModelSpec | None = None
    """The model's spec, which tells whether its client enforces `timeout` itself
    (`has_own_timeout`, see `call_model`): only a call in a thread asks, once it is made."""
    config: RunnableConfig | None = None
    """The config of the model's ``invoke``: the call's trace, for a chat model (`with_trace`)."""
    retried: bool = True
    """A failure of this attempt gets another one (its ``Retry-After`` is waited out)."""

    def run(self) -> BaseMessage:
        """Make the call in this thread."""
        model, messages, label, timeout, stop, spec, config, retried = self
        own_timeout = spec is not None and has_own_timeout(spec)
        return call_model(model, messages, label, timeout, stop, own_timeout, config, retried)

    async def arun(self) -> BaseMessage:
        """Make the call as a task of this event loop, which cancels it past its timeout.

        Whether the model's client has a timeout of its own matters only to a call in a
        thread: it was read for every call (about six function calls), async ones included.
        """
        model, messages, label, timeout, stop, _, config, retried = self
        return await acall_model(
            model, messages, label, timeout, stop, config=config, retried=retried
        )


class Request(Protocol):
    """What a node body can ask its runner to do: a model call, or a checkpoint read or write."""

    def run(self) -> Any:
        """Do it in this thread."""

    async def arun(self) -> Any:
        """Do it on this event loop."""


NodeSteps = Generator[Request, Any, Any]
"""A node body written once: it yields what it needs done (`Request`) and receives the result.

A failed request is thrown into the body at its `yield`, where the body's own `except` sees it.
"""


def run_sync(steps: NodeSteps) -> Any:
    """Run a node body, doing its requests in this thread."""
    try:
        request = next(steps)
        while True:
            try:
                response = request.run()
            except Exception as exc:
                request = steps.throw(exc)
            else:
                request = steps.send(response)
    except StopIteration as done:
        return done.value


async def run_async(steps: NodeSteps) -> Any:
    """Run a node body, awaiting its requests."""
    try:
        request = next(steps)
        while True:
            try:
                response = await request.arun()
            except Exception as exc:
                request = steps.throw(exc)
            else:
                request = steps.send(response)
    except StopIteration as done:
        return done.value


def cached_call(
    cache: CallCache | None,
    model: Runnable[Any, Any],
    messages: list[BaseMessage],
    call: CallId,
    params: dict[str, Any],
    timeout: float | None,
    stop: StopCheck | None = None,
    config: RunnableConfig | None = None,
    *,
    spec: ModelSpec,
    accept: Callable[[Any], T],
    retried: bool = True,
    draw: int | None = None,
) -> Generator[Request, Any, tuple[T, bool]]:
    """Answer from the call cache, or have the node's runner call the model; tell which.

    The key names the model by `cache_name`, never by the role's display name alone:
    keyed by the name, a renamed role, or two roles sharing a name, were served another
    model's answers. `retried`: whether a failure gets another attempt (`call_model`).
    `draw`: the call's `CallId.draw` (its sample if None), the key's sample.

    `accept` reads the response into the answer, raising where it is none (empty, refused,
    filtered, cut off while thinking): only a response it accepted is stored, since a stored
    failure would fail every rerun again without asking the model. One that an earlier
    version stored is a miss: the model is asked, and its answer stored over it.
    """
    draw = call.sample if draw is None else draw
    key = None
    if cache is not None:
        key = call_key(
            model=cache_name(spec, call.configured_model),
            params=params,
            messages=messages,
            role=call.role,
            sample=draw,
        )
        if (hit := cache.get(key)) is not None:
            try:
                return accept(hit), True
            except RejectedAnswer:  # stored before only accepted ones were: asked again
                refused_hit(cache)
    if call.role == "proposer" and draw > 0:
        model = without_llm_cache(model)
    runnable, config = with_trace(model, config)
    response = yield ModelRequest(
        runnable, messages, call.configured_model, timeout, stop, spec, config, retried
    )
    answer = accept(response)
    if key is not None and cache is not None and isinstance(response, BaseMessage):
        cache.put(key, response)
    return answer, False
