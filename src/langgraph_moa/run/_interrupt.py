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

The run's thread is a daemon (`_Driver`): an interrupted run is closed only after the step
under way ends (a backoff, a Retry-After of up to a minute), and a second Ctrl-C while it
waits is the user's way out, which the interpreter's exit must not undo by joining the
thread (as it joins a ThreadPoolExecutor's) and waiting for that step after all.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from langgraph_moa.transport._call_loop import interrupts_raised_at_each_wait

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
    driver = _Driver()
    step: Future[Any] | None = None
    waiting = interrupts_raised_at_each_wait()  # in a cell with a top-level await too
    try:
        while True:
            step = driver.submit(context.run, _next, run)
            with waiting():
                item = step.result()
            if item is _END:
                return
            yield item
    except BaseException as exc:
        if step is None or not step.done() or step.exception() is not exc:
            calls.interrupt()  # the run did not end by itself: its caller stopped waiting
            closed = driver.submit(context.run, _close, run)  # after the step under way
            with waiting():  # a second interrupt leaves, with an await too
                closed.result()
        raise
    finally:
        driver.shutdown()
        if whole is not None:
            whole.forget(calls.interrupt)


class _Driver:
    """One daemon thread that takes a run's steps in turn (see the module for why a daemon)."""

    def __init__(self) -> None:
        self._steps: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None]
        self._steps = queue.SimpleQueue()
        threading.Thread(target=self._drive, name="moa run", daemon=True).start()

    def submit(self, call: Callable[..., Any], *args: Any) -> Future[Any]:
        """Return the future of `call(*args)`, taken after the steps submitted before it."""
        future: Future[Any] = Future()
        self._steps.put((future, lambda: call(*args)))
        return future

    def shutdown(self) -> None:
        """End the thread once the steps submitted are taken."""
        self._steps.put(None)

    def _drive(self) -> None:
        while (work := self._steps.get()) is not None:
            future, step = work
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(step())
            except BaseException as exc:  # the caller's to see, as a ThreadPoolExecutor's
                future.set_exception(exc)


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
