"""The event loop on which sync runs make the model calls they may have to abandon.

A blocking HTTP call cannot be stopped halfway, so a sync run whose layer has a deadline
makes its calls as async calls here and cancels them when the layer goes on (`calls`). The
models of sync runs are built outside any loop (`models.ModelCache`), so their async HTTP
clients bind to this one loop and no other, and are closed on it.
"""

from __future__ import annotations

import asyncio
import os
import threading

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def call_loop() -> asyncio.AbstractEventLoop:
    """Return the process's call loop, started on a daemon thread on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, daemon=True, name="moa calls").start()
        return _loop


def loop_of_this_thread() -> asyncio.AbstractEventLoop | None:
    """Return the event loop running in the calling thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def running_call_loop() -> asyncio.AbstractEventLoop | None:
    """Return the call loop if it was started, without starting it."""
    return _loop


def _forget_after_fork() -> None:
    """Start afresh when needed: a forked child has no thread running the parent's loop."""
    global _loop, _lock
    _loop, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
