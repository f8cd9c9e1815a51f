"""A sync run whose caller stops waiting cancels the model calls it has in flight.

LangGraph runs a sync graph's parallel nodes (the proposers of a layer) on worker threads.
When the caller's thread was interrupted while it waited for them (Ctrl-C's
KeyboardInterrupt), LangGraph waited on for every node to end (its executor's exit) before
the interrupt reached the caller: the calls in flight ran to their end, and were paid for,
for a run nobody waited for any more. A stream its reader stopped reading was closed the
same way.

So a sync run (`MoAGraph.stream`) is driven from a thread of its own (`interruptible`)
while the caller waits for each of its outputs there. An interrupted wait, or a stream
closed early, first interrupts the run (`RunCalls`): its calls on the call loop are
cancelled, its nodes stop waiting for calls in threads they cannot stop, and it makes no
new call (`run._calls`); then the run is closed in its thread, as LangGraph closes it, now
that its nodes end at once.

A batch (`interruptibly`) is driven the same way: its runs, on LangGraph's worker threads
where no interrupt reaches, are parts of it (their `RunCalls` hang off the batch's), so an
interrupted batch interrupts every run of it before the executor waits for them.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class RunCalls:
    """What stops the model calls of one sync run in flight, once its caller stops waiting."""

    def __init__(self) -> None:
        self.interrupted = threading.Event()
        self._stops: set[Callable[[], Any]] = set()

    def on_interrupt(self, stop: Callable[[], Any]) -> None:
        """Call `stop` when the run is interrupted (at once if it already is)."""
        self._stops.add(stop)
        if self.interrupted.is_set():
            stop()

    def forget(self, stop: Callable[[], Any]) -> None:
        """Forget `stop`: its call has ended."""
        self._stops.discard(stop)

    def interrupt(self) -> None:
        """Stop every call in flight; refuse the run's calls from now on."""
        self.interrupted.set()
        for stop in list(self._stops):
            stop()


RUN_CALLS: contextvars.ContextVar[RunCalls | None] = contextvars.ContextVar(
    "moa_run_calls", default=None
)
"""The calls of the sync run this context belongs to (LangGraph's workers copy it)."""

_END = object()


def interruptible(run: Iterator[T]) -> Iterator[T]:
    """Iterate `run` in a thread of its own; stopping the wait interrupts it (see the module).

    A run made within another one's context (a batch's, `interruptibly`) is interrupted
    with it.
    """
    calls = RunCalls()
    whole = RUN_CALLS.get()
    if whole is not None:
        whole.on_interrupt(calls.interrupt)
    context = contextvars.copy_context()
    context.run(RUN_CALLS.set, calls)
    driver = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="moa run")
    step: concurrent.futures.Future[Any] | None = None
    try:
        while True:
            step = driver.submit(context.run, _next, run)
            item = step.result()
            if item is _END:
                return
            yield item
    except BaseException as exc:
        if step is None or not step.done() or step.exception() is not exc:
            calls.interrupt()  # the run did not end by itself: its caller stopped waiting
            driver.submit(context.run, _close, run).result()  # after the step under way
        raise
    finally:
        driver.shutdown(wait=False)
        if whole is not None:
            whole.forget(calls.interrupt)


def interruptibly(work: Callable[[], T]) -> T:
    """Return `work()` (a batch of runs) made as `interruptible` makes a run.

    `Runnable.batch` makes each run on a worker thread and, interrupted, waits for them all
    before the interrupt reaches its caller: each would run to its end.
    """
    (result,) = interruptible(_calling(work))
    return result


def _calling(work: Callable[[], T]) -> Iterator[T]:
    yield work()


def _next(run: Iterator[Any]) -> Any:
    return next(run, _END)


def _close(run: Iterator[Any]) -> None:
    close = getattr(run, "close", None)
    if close is not None:
        close()
