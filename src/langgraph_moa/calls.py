"""One model call: its identity, timeout, layer deadline, call cache and error translation.

A node body is written once as a generator (`NodeSteps`) that yields the `ModelRequest` it
needs and receives the answer; `run_sync` and `run_async` make the call the way `invoke` or
`ainvoke` needs, so the logic around a call (cache, accounting, retries) exists once.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, NamedTuple

from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable
from langgraph.config import get_stream_writer

from langgraph_moa.cache import CallCache, call_key
from langgraph_moa.config import MoAConfig
from langgraph_moa.reliability import (
    CallTimeoutError,
    StragglerCancelledError,
    explain_failure,
    retry_after_s,
)
from langgraph_moa.state import Role


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


def emit(event: str, **fields: Any) -> None:
    """Send a progress event to ``stream_mode="custom"`` (a no-op when nobody listens)."""
    get_stream_writer()({"type": "moa", "event": event, **fields})


_POLL_S = 0.05
"""How often a running call checks its timeout and its layer's deadline: the stated margin."""

StopCheck = Callable[[], str | None]
"""Returns why a running call should be abandoned (its layer went on), or None."""


def call_model(
    model: Runnable[Any, Any],
    messages: list[BaseMessage],
    label: str,
    timeout: float | None,
    stop: StopCheck | None = None,
) -> BaseMessage:
    """Invoke a model, giving up on a timeout or when the layer went on without this call.

    The call runs in a daemon thread so that the node can return when it gives up: a
    blocking HTTP call cannot be interrupted, only abandoned (it ends at its client's own
    timeout). Errors that cannot succeed on retry are translated (see reliability).
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["result"] = model.invoke(messages)
        except BaseException as exc:  # handed to the node's thread below
            outcome["error"] = exc
        finally:
            done.set()

    # The thread runs in a copy of this context: LangChain's callbacks (tracing, LangGraph's
    # token stream) travel in context variables, which a bare thread would not see.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(run,), daemon=True, name=f"moa {label}").start()
    started = time.monotonic()
    while not done.wait(_POLL_S):
        _check_limits(label, started, timeout, stop)
    if "error" in outcome:
        error = outcome["error"]
        if wait := retry_after_s(error):
            time.sleep(wait)  # the provider said when to come back; backoff adds to it
        explained = explain_failure(error, label) if isinstance(error, Exception) else error
        raise explained from (error if explained is not error else None)
    result: BaseMessage = outcome["result"]
    return result


async def acall_model(
    model: Runnable[Any, Any],
    messages: list[BaseMessage],
    label: str,
    timeout: float | None,
    stop: StopCheck | None = None,
) -> BaseMessage:
    """Async twin of `call_model`: the call is a task, cancelled when the node gives up."""
    task = asyncio.ensure_future(model.ainvoke(messages))
    started = time.monotonic()
    try:
        while True:
            finished, _ = await asyncio.wait({task}, timeout=_POLL_S)
            if finished:
                break
            _check_limits(label, started, timeout, stop)
    except BaseException:
        task.cancel()
        raise
    try:
        result: BaseMessage = task.result()
    except Exception as exc:
        if wait := retry_after_s(exc):
            await asyncio.sleep(wait)  # the provider said when to come back
        explained = explain_failure(exc, label)
        if explained is exc:
            raise
        raise explained from exc
    return result


def _check_limits(
    label: str, started: float, timeout: float | None, stop: StopCheck | None
) -> None:
    if timeout is not None and time.monotonic() - started > timeout:
        raise CallTimeoutError(f"{label} did not answer within {timeout:g}s")
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


NodeSteps = Generator[ModelRequest, Any, Any]
"""A node body written once: it yields the model call it needs and receives the answer.

A failed call is thrown into the body at its `yield`, where the body's own `except` sees it.
"""


def run_sync(steps: NodeSteps) -> Any:
    """Run a node body, making its model calls in this thread (`call_model`)."""
    try:
        request = next(steps)
        while True:
            try:
                response = call_model(*request)
            except Exception as exc:
                request = steps.throw(exc)
            else:
                request = steps.send(response)
    except StopIteration as done:
        return done.value


async def run_async(steps: NodeSteps) -> Any:
    """Run a node body, awaiting its model calls (`acall_model`)."""
    try:
        request = next(steps)
        while True:
            try:
                response = await acall_model(*request)
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
) -> Generator[ModelRequest, Any, tuple[Any, bool]]:
    """Answer from the call cache, or have the node's runner call the model; tell which."""
    key = None
    if cache is not None:
        key = call_key(
            model=call.configured_model,
            params=params,
            messages=messages,
            role=call.role,
            sample=call.sample,
        )
        if (hit := cache.get(key)) is not None:
            return hit, True
    response = yield ModelRequest(model, messages, call.configured_model, timeout, stop)
    if cache is not None and key is not None and isinstance(response, BaseMessage):
        cache.put(key, response)
    return response, False


class LayerClock:
    """Per run and layer: when the deadline falls and how many proposals arrived."""

    def __init__(self) -> None:
        self._state: dict[tuple[str, int], list[float | int | None]] = {}
        self._lock = threading.Lock()

    def start(self, token: str, layer: int, deadline_s: float | None) -> None:
        """Start the layer's deadline at its first call (later calls keep it)."""
        with self._lock:
            if (token, layer) not in self._state:
                due = time.monotonic() + deadline_s if deadline_s else None
                self._state[(token, layer)] = [due, 0]

    def answered(self, token: str, layer: int) -> None:
        """Count one more proposal of the layer."""
        with self._lock:
            entry = self._state.setdefault((token, layer), [None, 0])
            entry[1] = int(entry[1] or 0) + 1

    def stop_reason(self, token: str, layer: int, quorum: int) -> str | None:
        """Tell why the layer's remaining calls should stop, or None."""
        with self._lock:
            due, count = self._state.get((token, layer), [None, 0])
        if due is not None and time.monotonic() >= float(due) and int(count or 0) >= quorum:
            return f"the layer deadline passed and {count} proposals (quorum {quorum}) had answered"
        return None

    def close(self, token: str, layer: int) -> None:
        """Forget a joined layer."""
        with self._lock:
            self._state.pop((token, layer), None)


class AttemptLog:
    """The errors of each call's failed attempts, so provenance shows every retry.

    `RetryPolicy` re-runs a node without telling the node's body; this log, keyed by the run
    and the call, is how a record learns how many attempts it took and what went wrong.
    """

    def __init__(self) -> None:
        self._errors: dict[tuple[Any, ...], list[str]] = {}
        self._lock = threading.Lock()

    def failed(self, key: tuple[Any, ...], exc: BaseException) -> None:
        """Remember a failed attempt."""
        with self._lock:
            self._errors.setdefault(key, []).append(f"{type(exc).__name__}: {exc}")

    def pop(self, key: tuple[Any, ...]) -> list[str]:
        """Return and forget the failed attempts of a call."""
        with self._lock:
            return self._errors.pop(key, [])
