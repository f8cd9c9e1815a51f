"""Run bookkeeping that must survive a resume: failed attempts and the answers of a layer.

LangGraph saves a node's writes only when the node finishes, and `RetryPolicy` re-runs a node
without telling its body; so a call's failed attempts, and the proposals of its layer that
already answered, are not in the state a running node sees. They are kept here per step (one
LangGraph superstep: a layer's fan-out, or one final-step call) and, with a checkpointer,
written as the step's own pending writes as they happen. A run resumed in another process
reads them back once per step, so a record still counts every attempt the provider saw and a
layer's deadline still knows its quorum.

The step's writes go to a channel no node reads (`ATTEMPT_CHANNEL`) under task ids no task
has: LangGraph keeps such writes with the checkpoint and ignores them when it resumes.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, NamedTuple

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.config import get_config

# Public re-exports of LangGraph (kept for langgraph-api): where a node finds the checkpointer
# of its run, including one the LangGraph server supplies at run time.
from langgraph.constants import CONF, CONFIG_KEY_CHECKPOINTER
from langgraph.runtime import get_runtime

from langgraph_moa._forklock import ForkSafeLock
from langgraph_moa._lru import BoundedLRU
from langgraph_moa.run import _clock as clock

ATTEMPT_CHANNEL = "moa:attempt"
"""Channel of the pending writes that record a failed attempt of a call."""

AttemptKey = tuple[str, str, int, int, int]
"""A call within a run: run token, role, layer, proposer, sample."""


class Durable(NamedTuple):
    """Where the running task's step is checkpointed, when the run has a checkpointer."""

    saver: BaseCheckpointSaver[Any]
    config: RunnableConfig
    task_id: str


class Here(NamedTuple):
    """The running task: its step, its id, and where the step is checkpointed (if it is)."""

    checkpoint_id: str
    task_id: str
    durable: Durable | None


def here() -> Here:
    """Locate the running task; outside a graph, an anonymous one with no checkpoint."""
    try:
        info = get_runtime().execution_info
        saver = get_config().get(CONF, {}).get(CONFIG_KEY_CHECKPOINTER)
    except RuntimeError:
        return Here("", "", None)
    if info is None:
        return Here("", "", None)
    if not isinstance(saver, BaseCheckpointSaver) or info.thread_id is None:
        return Here(info.checkpoint_id, info.task_id, None)
    # The task's namespace is the graph's plus "|node:task"; the step is the graph's.
    namespace = info.checkpoint_ns.rpartition("|")[0]
    config: RunnableConfig = {
        "configurable": {
            "thread_id": info.thread_id,
            "checkpoint_ns": namespace,
            "checkpoint_id": info.checkpoint_id,
        }
    }
    return Here(info.checkpoint_id, info.task_id, Durable(saver, config, info.task_id))


class ReadStep(NamedTuple):
    """A request to read back the step's pending writes (`run` sync, `arun` async)."""

    where: Durable

    def run(self) -> list[tuple[str, str, Any]]:
        """Read the step's pending writes: (task id, channel, value)."""
        return _pending(self.where.saver.get_tuple(self.where.config))

    async def arun(self) -> list[tuple[str, str, Any]]:
        """Read the step's pending writes without blocking the event loop."""
        try:
            found = await self.where.saver.aget_tuple(self.where.config)
        except NotImplementedError:  # a sync-only checkpointer used by `ainvoke`
            found = await asyncio.to_thread(self.where.saver.get_tuple, self.where.config)
        return _pending(found)


def _pending(found: CheckpointTuple | None) -> list[tuple[str, str, Any]]:
    return list(found.pending_writes or []) if found is not None else []


class SaveAttempt(NamedTuple):
    """A request to checkpoint one failed attempt of a call."""

    where: Durable
    key: AttemptKey
    attempt: int
    error: str

    def _args(self) -> tuple[RunnableConfig, list[tuple[str, Any]], str]:
        value = {"call": list(self.key), "attempt": self.attempt, "error": self.error}
        task_id = f"{self.where.task_id}:attempt-{self.attempt}"
        return self.where.config, [(ATTEMPT_CHANNEL, value)], task_id

    def run(self) -> None:
        """Write the attempt."""
        self.where.saver.put_writes(*self._args())

    async def arun(self) -> None:
        """Write the attempt without blocking the event loop."""
        try:
            await self.where.saver.aput_writes(*self._args())
        except NotImplementedError:
            await asyncio.to_thread(self.where.saver.put_writes, *self._args())


class Step:
    """What one step of one run knows: which tasks answered, and every failed attempt.

    Both are sets keyed by their identity, so what a read of the checkpoint brings back and
    what happened in this process merge without counting anything twice.
    """

    def __init__(self) -> None:
        self._lock = ForkSafeLock()
        self._answered: set[str] = set()
        self._errors: dict[AttemptKey, dict[int, str]] = {}
        self._claimed = False
        self._held: dict[AttemptKey, clock.Held] = {}
        self.ready = threading.Event()
        """Set once the checkpoint's writes were read back (or the read failed)."""

    def claim_read(self) -> bool:
        """Tell whether this task is the one to read the checkpoint back (the first one)."""
        with self._lock:
            claimed, self._claimed = self._claimed, True
            return not claimed

    def answered(self, task_id: str) -> None:
        """Count a proposal of this step that answered."""
        with self._lock:
            self._answered.add(task_id)

    def answers(self) -> int:
        """Return how many proposals of this step answered."""
        with self._lock:
            return len(self._answered)

    def failed(self, key: AttemptKey, error: str) -> int:
        """Record a failed attempt of a call; return its attempt number (1-based)."""
        with self._lock:
            errors = self._errors.setdefault(key, {})
            attempt = max(errors, default=0) + 1
            errors[attempt] = error
            return attempt

    def held(self, key: AttemptKey) -> clock.Held:
        """Return where a call's time held by its reader is noted, over all its attempts.

        One per call, not per attempt: a held call whose provider then dropped it was
        retried with none, found its layer's deadline passed and was dropped at once.
        """
        with self._lock:
            return self._held.setdefault(key, clock.Held())

    def next_attempt(self, key: AttemptKey) -> int:
        """Return the number the call's next attempt has (the one `failed` would record)."""
        with self._lock:
            return max(self._errors.get(key, {}), default=0) + 1

    def errors(self, key: AttemptKey) -> list[str]:
        """Return the errors of a call's failed attempts, in order."""
        with self._lock:
            errors = self._errors.get(key, {})
            return [errors[n] for n in sorted(errors)]

    def merge(self, writes: list[tuple[str, str, Any]], layer: int) -> None:
        """Take in what the checkpoint holds: answers of `layer` and failed attempts."""
        with self._lock:
            for task_id, channel, value in writes:
                if channel == ATTEMPT_CHANNEL and isinstance(value, dict):
                    key: AttemptKey = tuple(value["call"])
                    self._errors.setdefault(key, {})[int(value["attempt"])] = str(value["error"])
                elif channel == "calls" and isinstance(value, list):
                    if any(
                        r.get("role") == "proposer"
                        and r.get("layer") == layer
                        and r.get("status") == "ok"
                        for r in value
                        if isinstance(r, dict)
                    ):
                        self._answered.add(task_id)


class AwaitRead(NamedTuple):
    """A request to wait until another task of the step has read the checkpoint back."""

    step: Step

    def run(self) -> None:
        """Wait in this thread (bounded: a read that hangs must not hold the layer)."""
        self.step.ready.wait(_READ_WAIT_S)

    async def arun(self) -> None:
        """Wait without blocking the event loop."""
        waited = 0.0
        while not self.step.ready.is_set() and waited < _READ_WAIT_S:
            await asyncio.sleep(0.005)
            waited += 0.005


_READ_WAIT_S = 30.0


RunKey = tuple[str, str, str]
"""A run in the ledger: its token, and the thread and checkpoint namespace it runs on."""


def run_key(token: str, at: Here) -> RunKey:
    """Name the run of `token` running at `at`.

    The token alone does not: a thread's state copied to another thread (``update_state``
    on a new thread_id) carries its token, and `ThreadBusyError` lets the two run at once
    (they are two threads), each on its own step.
    """
    if at.durable is None:
        return (token, "", "")
    configurable = at.durable.config["configurable"]
    return (token, str(configurable["thread_id"]), str(configurable["checkpoint_ns"]))


def _ending(token: str) -> RunKey:
    """Name the run of `token` that ends here: in a task of it, or in an edit of its thread.

    An edit (``update_state``) that writes the answer ends the run in a router LangGraph runs
    with no runtime, so no running task; the edit's config names the thread and namespace
    the run's steps were kept under (`run_key`).
    """
    try:
        edit = get_runtime() is None
        configurable = get_config().get(CONF, {})
    except RuntimeError:
        edit, configurable = False, {}
    if edit and configurable.get("thread_id") is not None:
        return (token, str(configurable["thread_id"]), str(configurable.get("checkpoint_ns", "")))
    return run_key(token, here())


class Ledger:
    """The current step of each run this process is working on.

    A run is on one step at a time (LangGraph's supersteps follow each other), and a step
    it has left is in the checkpoint it resumes from, never needed again: so a run keeps
    only its current step, and a run that ended keeps none (`end`). A run cut off mid-step
    keeps that step, for a resume in this process; the bound drops the oldest of those.
    """

    def __init__(self, size: int = 4096) -> None:
        self._runs: BoundedLRU[RunKey, tuple[str, Step]] = BoundedLRU(size)
        self._lock = ForkSafeLock()

    def step(self, token: str, at: Here) -> Step:
        """Return the step of a run, created on first use (dropping the run's step before)."""
        key = run_key(token, at)
        with self._lock:
            current = self._runs.get(key)
            if current is not None and current[0] == at.checkpoint_id:
                return current[1]
            return self._runs.put(key, (at.checkpoint_id, Step()))[1]

    def end(self, token: str) -> None:
        """Forget the running task's run, which ended: no resume needs a step held here."""
        self._runs.pop(_ending(token))

    def __len__(self) -> int:
        return len(self._runs)
