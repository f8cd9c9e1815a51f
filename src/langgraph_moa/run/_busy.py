"""One run at a time on a checkpointed thread, within this process.

LangGraph does not lock a thread: two runs, or two resumes, of one ``thread_id`` both read
the same checkpoint and call the proposers that had not answered yet, so each call is paid
twice and the history gets two answers. `MoAGraph` claims the thread for the length of a
run and refuses a second run while it is held (`ThreadBusyError`), before any node runs.

The claim lives in this process's memory: runs of one thread in two processes (two
workers sharing a database) are not seen. A graph without a checkpointer has no thread
history, so a ``thread_id`` claims nothing; neither does the graph run as a subgraph (its
parent's checkpointer, not its own). A forked child starts with no claims.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from langgraph_moa._forklock import ForkSafeLock
from langgraph_moa.errors import ThreadBusyError

ThreadKey = tuple[int, str, str]
"""The checkpointer's store (by identity), the thread and the checkpoint namespace of a run."""

_busy: set[ThreadKey] = set()
_lock = ForkSafeLock()


def _forget_after_fork() -> None:
    """Start a forked child with no claims: the parent's runs are not the child's.

    No thread of the child would end them, so each of its runs on such a thread was refused
    as busy for ever.
    """
    _busy.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def thread_key(saver: Any, config: Any) -> ThreadKey | None:
    """Return the thread a run with `config` writes to through `saver`, or None if none."""
    if not isinstance(saver, BaseCheckpointSaver) or not isinstance(config, dict):
        return None
    configurable = config.get("configurable") or {}
    thread = configurable.get("thread_id")
    if thread is None:
        return None
    return (id(_store(saver)), str(thread), str(configurable.get("checkpoint_ns") or ""))


def _store(saver: BaseCheckpointSaver) -> Any:
    """Return what `saver` keeps its threads in: its connection, or its memory.

    A compiled graph may hold a shallow copy of the caller's saver (LangGraph's under strict
    msgpack, `allowing_answers`'s for an answer's model), one per graph: two graphs on one
    saver are told apart by the saver's identity, not by the store the copies share.
    """
    for name in ("conn", "storage"):  # LangGraph's SQL savers; `InMemorySaver`
        store = getattr(saver, name, None)
        if store is not None:
            return store
    return saver


def _claim(key: ThreadKey) -> None:
    if not _try_claim(key):
        raise _busy_error(key)


def _try_claim(key: ThreadKey) -> bool:
    with _lock:
        if key in _busy:
            return False
        _busy.add(key)
        return True


def _busy_error(key: ThreadKey) -> ThreadBusyError:
    return ThreadBusyError(
        f"Thread {key[1]!r} already has a run in progress in this process: wait for it to "
        "end (or stop it) before running or resuming it again, or start this run on "
        "another thread_id."
    )


ABANDONED_GRACE_S = 0.5
"""How long an async run waits for a busy thread before it is refused.

An ``async for`` left with ``break`` does not close its stream: the event loop closes it
once it is collected, a few turns of the loop later. A run started right after it on the
same thread waits for that instead of being refused; a thread whose run is really going on
is refused after this wait.
"""


async def _aclaim(key: ThreadKey) -> None:
    due = time.monotonic() + ABANDONED_GRACE_S
    while not _try_claim(key):
        if time.monotonic() >= due:
            raise _busy_error(key)
        await asyncio.sleep(0.01)


def _release(key: ThreadKey) -> None:
    with _lock:
        _busy.discard(key)


def held(key: ThreadKey, run: Iterator[Any]) -> Iterator[Any]:
    """Iterate `run` holding thread `key`; it is free again once the run ends, however."""
    _claim(key)
    try:
        yield from run
    finally:
        _release(key)


async def aheld(key: ThreadKey, run: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Async twin of `held`."""
    await _aclaim(key)
    try:
        async for item in run:
            yield item
    finally:
        try:
            # A consumer that stops reading ends the run now, not when it is collected
            # (`yield from` does this for `held`).
            await run.aclose()  # type: ignore[attr-defined]
        finally:
            _release(key)
