"""Starts every llama.cpp server from one thread that lives as long as the process.

A loading server asks the kernel to kill it when its parent goes (`_serve.py`,
``PR_SET_PDEATHSIG``): while llama.cpp loads the model it holds the GIL, so the server's
watchdog thread cannot run, and a server whose parent was killed then (SIGKILL, the
out-of-memory killer) loaded on as an orphan for seconds to minutes. The kernel's "parent"
is the thread that started the child, not the process: a server started from a worker
thread (a graph node's, ``asyncio.to_thread``'s) would die as soon as that thread ended.
So servers are started here, from a daemon thread that ends only with the process.

Not a `ThreadPoolExecutor`: its worker is joined as the interpreter begins to exit, before
the ``atexit`` hooks that stop the servers, and the kernel would kill the loading ones then
(their stop would find them dead and keep their logs as failures').
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_Hold = Callable[[subprocess.Popen[bytes]], object]
_jobs: queue.SimpleQueue[
    tuple[Future[subprocess.Popen[bytes]], list[str], _Hold | None, dict[str, Any]]
]
_jobs = queue.SimpleQueue()
_thread: threading.Thread | None = None
_lock = threading.Lock()


def popen(args: list[str], hold: _Hold | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start `args` as `subprocess.Popen` would, from the spawner thread; raise what it raised.

    A wait that ends otherwise (Ctrl-C's KeyboardInterrupt) leaves no server behind: one not
    yet started never is, one started meanwhile is killed. `hold` is given the process by
    the spawner thread (which no Ctrl-C interrupts) before this call returns: a Ctrl-C just
    after the return, before the caller stored what it returned, leaves the caller a handle
    to kill it with.
    """
    global _thread
    started: Future[subprocess.Popen[bytes]] = Future()
    try:  # from before the start is queued: Ctrl-C just after it is this start's too
        with _lock:
            if _thread is None or not _thread.is_alive():  # first use, or the thread died
                _thread = threading.Thread(target=_spawn_forever, daemon=True, name="moa spawner")
                _thread.start()
            _jobs.put((started, args, hold, kwargs))
        return started.result()
    except BaseException:
        if not started.cancel():  # already started (or failed): kill what it started
            started.add_done_callback(_kill_unwanted)
        raise


def _spawn_forever() -> None:
    while True:
        started, args, hold, kwargs = _jobs.get()
        if not started.set_running_or_notify_cancel():  # its caller stopped waiting
            continue
        process: subprocess.Popen[bytes] | None = None
        try:
            process = subprocess.Popen(args, **kwargs)
            if hold is not None:
                hold(process)
            started.set_result(process)
        except BaseException as exc:  # handed to the caller, which raises it
            if process is not None:  # `hold` raised: the caller is told of no server, none runs
                process.kill()
                process.wait()
            started.set_exception(exc)


def _kill_unwanted(started: Future[subprocess.Popen[bytes]]) -> None:
    """Kill the server started for a caller that stopped waiting (nothing if none started)."""
    if started.exception() is None:
        process = started.result()
        process.kill()
        process.wait()


def _forget_after_fork() -> None:
    """Start afresh in a forked child: it has no spawner thread, and starts its own."""
    global _thread, _lock, _jobs
    _thread, _lock, _jobs = None, threading.Lock(), queue.SimpleQueue()


os.register_at_fork(after_in_child=_forget_after_fork)
