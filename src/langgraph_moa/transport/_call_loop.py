"""The event loop on which sync runs make the model calls they may have to abandon.

A blocking HTTP call cannot be stopped halfway, so a sync run whose layer has a deadline
makes its calls as async calls here and cancels them when the layer goes on (`calls`). The
models of sync runs are built outside any loop (`models.ModelCache`), so their async HTTP
clients bind to this one loop and no other, and are closed on it.

The loop never ends while the process runs; at exit its async generators are shut down, as
``asyncio.run`` does for its loop, so the HTTP sessions opened on it are closed (`_http`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import functools
import os
import selectors
import signal
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeGuard, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()
_hooked = False
"""Whether `_shut_down_at_exit` is registered: once per process, a forked child's included
(it inherits the registration, so the flag is not reset after a fork)."""
_left: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
"""The loops a forked child has left to its parent since the fork (`leave_the_parents_loop`).

Each fork handler that holds a loop's models or sessions leaves it: a second copy of its
selector would cost the child another epoll instance and every registration again. Emptied
at each fork by `_forget_after_fork`, which runs before those handlers (their modules import
this one, so it registers first).
"""


def call_loop() -> asyncio.AbstractEventLoop:
    """Return the process's call loop, started on a daemon thread on first use.

    The exit hook is registered then, not on import: a process that never uses the loop
    (most importers of the package) has no hook to run.
    """
    global _loop, _hooked
    with _lock:
        if _loop is None or _loop.is_closed():
            # In a context of its own: the loop copies the current one into the callback that
            # hears its wake-ups, kept as long as it runs, and the first sync run's context
            # holds that run's graph.
            _loop = contextvars.Context().run(asyncio.new_event_loop)
            threading.Thread(target=_loop.run_forever, daemon=True, name="moa calls").start()
            if not _hooked:
                atexit.register(_shut_down_at_exit)
                _hooked = True
        return _loop


EXIT_WAIT_S = 5.0
"""How long interpreter exit waits for the call loop to close its HTTP sessions."""


def _shut_down_at_exit() -> None:
    """Close what the call loop's async generators hold (HTTP sessions) before exiting.

    It reads the loop now, not when registered: a forked child has none of its parent's.
    """
    loop = _loop
    if loop is None or loop.is_closed() or not loop.is_running():
        return
    try:
        asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(EXIT_WAIT_S)
    except Exception:  # exiting anyway; a session left open only logs a warning
        pass


def loop_of_this_thread() -> asyncio.AbstractEventLoop | None:
    """Return the event loop running in the calling thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@contextlib.contextmanager
def interrupts_raised_here() -> Iterator[None]:
    """Make an interrupt (SIGINT) raise KeyboardInterrupt here while a sync call waits.

    A Jupyter kernel runs a cell with a top-level ``await`` as a task of its event loop, and
    its interrupt then only schedules that task's cancellation on the loop (as
    ``asyncio.run``'s handler does for its main task). A sync call blocking such a cell (a
    run, `serve`) keeps the loop from running: the interrupt never reached it, the run's
    calls went on to their end and the server served on. During the wait the interrupt
    raises KeyboardInterrupt, as in a cell without ``await``; the host's handler is back
    after it. Only in the main thread (the one signals reach), where a loop runs in it,
    and for those two handlers (`ONLY_CANCELLING`): any other is the host's way of
    handling the interrupt (uvicorn's starts its shutdown; ``loop.add_signal_handler``'s
    hears it through the loop's wake-up fd once the loop runs) and is left as it is.
    """
    host = _handler_to_replace()
    if host is None:
        yield
        return
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        yield
    finally:
        _put_back(host)


def _put_back(host: Callable[..., object]) -> None:
    """Make `host` SIGINT's handler again, even where an interrupt comes meanwhile.

    `signal.signal` runs a pending handler before it changes it: an interrupt that came as
    `host` was put back raised KeyboardInterrupt there and left ours in its place. It is
    raised once `host` is back.
    """
    try:
        signal.signal(signal.SIGINT, host)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, host)
        raise


def interrupts_raised_at_each_wait() -> Callable[[], contextlib.AbstractContextManager[None]]:
    """Return the context each of a sync caller's many waits enters, decided once.

    `interrupts_raised_here`, or one that does nothing where that would leave the handler as
    it is: a stream's reader waits once for every token, and looked the handler, the thread
    and its loop up again each time.
    """
    return contextlib.nullcontext if _handler_to_replace() is None else interrupts_raised_here


ONLY_CANCELLING = frozenset(
    {
        ("asyncio.runners", "Runner._on_sigint"),
        ("ipykernel.ipkernel", "IPythonKernel._cancel_on_sigint.<locals>.handle_sigint"),
    }
)
"""The SIGINT handlers, by module and qualified name, that only cancel a task of the loop
running in their thread, which does nothing while a sync call blocks that loop:
``asyncio.run``'s for its main task (Python 3.11+, a `functools.partial` of the method),
and ipykernel's for a cell with a top-level ``await`` (6.3 to 7.4; 7.4 checked in a real
kernel). Known by name: the package imports neither, and the kernel's is a new function for
each cell."""


def _handler_to_replace() -> Callable[..., Any] | None:
    """Return the SIGINT handler `interrupts_raised_here` replaces here, or None if none."""
    host = signal.getsignal(signal.SIGINT)
    if (
        not _only_cancels(host)
        or threading.current_thread() is not threading.main_thread()
        or loop_of_this_thread() is None
    ):
        return None
    return host


def run_apart(
    target: Callable[[], T],
    on_interrupt: Callable[[], None],
    *,
    keep_waiting: bool,
    name: str,
) -> T:
    """Return what `target` returns, run in a daemon thread of its own; raise what it raises.

    For sync code called where this thread runs an event loop (a notebook cell), which
    `asyncio.run` refuses: the thread runs `target` in a copy of this context, as
    `asyncio.run` would have (a context variable set around the call holds in it). The wait
    is interruptible (`interrupts_raised_here`), the thread's start included: it waits for
    the thread to begin, and an interrupt there leaves it running. A KeyboardInterrupt calls
    `on_interrupt` (stop the work), then is raised at once, or, with `keep_waiting`, once the
    work has ended (a server that drains), after its own failure if it failed; each further
    interrupt calls `on_interrupt` again.
    """
    outcome: Future[T] = Future()

    def run() -> None:
        try:
            outcome.set_result(target())
        except BaseException as exc:  # the caller's to see
            outcome.set_exception(exc)

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(run,), name=name, daemon=True)
    interrupted = False
    with interrupts_raised_here():
        while not outcome.done():
            try:
                if thread.ident is None:  # not running yet (an interrupt cut `start` short)
                    thread.start()
                outcome.exception()  # not `Thread.join`: interrupted, 3.11's took it for ended
            except KeyboardInterrupt:
                interrupted = True
                on_interrupt()
                if not keep_waiting:
                    raise
    if interrupted and outcome.exception() is None:
        raise KeyboardInterrupt
    return outcome.result()


def _only_cancels(handler: object) -> TypeGuard[Callable[..., Any]]:
    """Whether `handler` is one of `ONLY_CANCELLING` (bound, or in a `functools.partial`)."""
    if isinstance(handler, functools.partial):
        handler = handler.func
    function = getattr(handler, "__func__", handler)  # a bound method's function
    name = (getattr(function, "__module__", None), getattr(function, "__qualname__", None))
    return name in ONLY_CANCELLING


def running_call_loop() -> asyncio.AbstractEventLoop | None:
    """Return the call loop if it was started, without starting it."""
    return _loop


def _forget_after_fork() -> None:
    """Start afresh when needed: a forked child has no thread running the parent's loop.

    The loop is forgotten first, whatever happens to the selector: a child left holding
    the parent's loop would wait forever on it.
    """
    global _loop, _lock, _left
    inherited, _loop, _lock, _left = _loop, None, threading.Lock(), weakref.WeakSet()
    if inherited is not None:
        _leave_the_parents_selector(inherited)
        _left.add(inherited)


def _leave_the_parents_selector(loop: asyncio.AbstractEventLoop) -> None:
    """Give the parent's loop, in a forked child, a selector of the child's own.

    The epoll instance behind the loop's selector is shared with the parent. When the
    child dropped what it inherited (at its exit), each connection of the parent's HTTP
    sessions unregistered itself from that epoll instance, which removed the parent's
    registration: the parent's call loop no longer heard its connections, and its next
    sync run waited forever. With a selector of its own the child touches nothing of
    the parent's; a loop without one (not a selector loop) is left as it is.

    The child only tears that loop down, never runs it, so the new selector is an empty
    `selectors.SelectSelector`: it opens no file descriptor (a new epoll instance would
    cost each child one, and could fail where none are left). asyncio has no public way
    to detach a loop from its selector, hence the private attribute.
    """
    if getattr(loop, "_selector", None) is not None:
        loop._selector = selectors.SelectSelector()  # type: ignore[attr-defined]


def leave_the_parents_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Keep a forked child's use of an inherited loop out of the parent's epoll set.

    For any loop of the parent's the package holds models or HTTP sessions of (a server's
    loop in a thread, a loop driven by hand), not only the call loop: the child dropping
    them took their connections out of the epoll instance it shares with the parent, and
    the parent's next call on a reused keep-alive connection never woke its loop.

    A loop that ran in another thread at the fork can never run in the child (it is
    "already running" there, with no thread behind it): it gets an empty selector
    (`_leave_the_parents_selector`). Any other one (idle, or the forking thread's own) the
    child may still run: it gets a private copy of the selector, every registration of
    the parent's in a new epoll instance, so that the loop hears in the child what it
    heard at the fork and touches nothing of the parent's. Where the copy cannot be made
    (no file descriptors left) it gets the empty one: the parent's loop comes first.

    Once per loop after a fork, whichever handlers hold it (`_left`).
    """
    selector = getattr(loop, "_selector", None)
    if selector is None or loop in _left:  # closed, not a selector loop, or left already
        return
    _left.add(loop)
    if loop.is_running() and getattr(loop, "_thread_id", None) != threading.get_ident():
        _leave_the_parents_selector(loop)
        return
    try:
        own = selectors.DefaultSelector()
    except OSError:
        _leave_the_parents_selector(loop)
        return
    for key in list(selector.get_map().values()):
        with contextlib.suppress(OSError, ValueError, KeyError):  # closed since: nothing to hear
            own.register(key.fileobj, key.events, key.data)
    loop._selector = own  # type: ignore[attr-defined]


os.register_at_fork(after_in_child=_forget_after_fork)
