"""An interrupted sync run cancels its model calls in flight (`run._interrupt`)."""

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from typing import TypeVar

import pytest

from langgraph_moa import MoAChatModel, MoAConfig, create_moa_graph
from langgraph_moa.run import _calls
from tests.fakes import FakeChat

T = TypeVar("T")

QUESTION = {"messages": [("user", "What is MoA?")]}


class Upstream:
    """What the proposers' server saw: the calls started, finished, and cancelled."""

    def __init__(self, n: int) -> None:
        self.started = threading.Semaphore(0)
        self.n = n
        self.finished: list[str] = []
        self.cancelled: list[str] = []
        self.released = threading.Event()

    def all_started(self, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        return all(self.started.acquire(timeout=deadline - time.monotonic()) for _ in range(self.n))


class Hanging(FakeChat):
    """A model on a client of its own that answers only after a long while."""

    upstream: Upstream

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        self.upstream.started.release()
        self.upstream.released.wait(10)  # a blocking request runs to its end
        self.upstream.finished.append(self.label)
        return super()._generate(messages, stop, run_manager, **kwargs)

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
        self.upstream.started.release()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.upstream.cancelled.append(self.label)
            raise
        self.upstream.finished.append(self.label)
        return await super()._agenerate(messages, stop, run_manager, **kwargs)


def ctrl_c_during(run, upstream: Upstream) -> None:
    """Press Ctrl-C once every call has reached `upstream`; the run raises it."""
    main = threading.get_ident()

    def ctrl_c_once_all_called() -> None:
        if upstream.all_started(within_s=30):
            signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=ctrl_c_once_all_called, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run()


def cancelled(upstream: Upstream) -> list[str]:
    """Return the calls `upstream` saw cancelled, once all were (or after a while)."""
    deadline = time.monotonic() + 30
    while len(upstream.cancelled) < upstream.n and time.monotonic() < deadline:
        time.sleep(0.01)
    return sorted(upstream.cancelled)


def test_ctrl_c_during_a_sync_run_cancels_its_calls_in_flight(monkeypatch):
    """LangGraph's executor, interrupted while it waits for a layer's proposers, waited on
    until each call had finished (and been paid for) before the caller saw the interrupt.
    Now the run's calls are cancelled first, and no call follows them."""
    # As a model this package builds on its client (an endpoint): its calls can be stopped.
    monkeypatch.setattr(_calls, "has_own_timeout", lambda spec: True)
    upstream = Upstream(2)
    proposers = [Hanging(label=f"P{i}", upstream=upstream) for i in range(2)]
    aggregator = FakeChat(label="AGG")
    graph = create_moa_graph(MoAConfig(proposers=proposers, aggregator=aggregator))
    try:
        ctrl_c_during(lambda: graph.invoke(QUESTION), upstream)
        assert cancelled(upstream) == ["P0", "P1"]
    finally:
        upstream.released.set()
    assert upstream.finished == []
    assert aggregator.log.calls == []


def test_ctrl_c_during_a_sync_run_leaves_a_users_model_to_its_thread():
    """A model instance of the user's cannot be stopped: the run no longer waits for it."""
    upstream = Upstream(2)
    proposers = [Hanging(label=f"P{i}", upstream=upstream) for i in range(2)]
    graph = create_moa_graph(MoAConfig(proposers=proposers, aggregator=FakeChat(label="AGG")))
    try:
        ctrl_c_during(lambda: graph.invoke(QUESTION), upstream)
        assert upstream.finished == []  # still blocked when the interrupt reached the caller
    finally:
        upstream.released.set()


def test_a_sync_stream_closed_early_cancels_its_calls_in_flight(monkeypatch):
    monkeypatch.setattr(_calls, "has_own_timeout", lambda spec: True)
    upstream = Upstream(2)
    proposers = [Hanging(label=f"P{i}", upstream=upstream) for i in range(2)]
    graph = create_moa_graph(MoAConfig(proposers=proposers, aggregator=FakeChat(label="AGG")))
    try:
        for _ in graph.stream(QUESTION, stream_mode="custom"):  # a call started
            assert upstream.all_started(within_s=30)
            break
        assert cancelled(upstream) == ["P0", "P1"]
    finally:
        upstream.released.set()
    assert upstream.finished == []


@pytest.mark.parametrize("of", ["graph", "chat model"])
def test_ctrl_c_during_a_sync_batch_cancels_the_calls_of_its_runs(monkeypatch, of):
    """`batch` makes its runs on worker threads, which the interrupt never reaches: the
    caller's Ctrl-C waited for every call of every run, all layers of them, to finish (and
    be paid for) before it was raised. Now the batch's runs are interrupted with it."""
    monkeypatch.setattr(_calls, "has_own_timeout", lambda spec: True)
    upstream = Upstream(4)
    proposers = [Hanging(label=f"P{i}", upstream=upstream) for i in range(2)]
    config = MoAConfig(proposers=proposers, aggregator=FakeChat(label="AGG"))
    runnable = create_moa_graph(config) if of == "graph" else MoAChatModel(config=config)
    question = QUESTION if of == "graph" else "What is MoA?"
    try:
        ctrl_c_during(lambda: runnable.batch([question, question]), upstream)
        assert cancelled(upstream) == ["P0", "P0", "P1", "P1"]
    finally:
        upstream.released.set()
    assert upstream.finished == []


STUCK_RUN = """
import signal, sys, time
from langgraph_moa.run._interrupt import interruptible

def ctrl_c(signum, frame):
    ctrl_c.count += 1
    if ctrl_c.count == 2:  # the user's second Ctrl-C, then no more
        signal.setitimer(signal.ITIMER_REAL, 0)
    raise KeyboardInterrupt
ctrl_c.count = 0
signal.signal(signal.SIGALRM, ctrl_c)

def run():
    # A step that does not end soon (a Retry-After's wait): Ctrl-C comes while it waits.
    signal.setitimer(signal.ITIMER_REAL, 0.2, 0.2)
    time.sleep(3600)
    yield "never"

try:
    list(interruptible(run()))
except KeyboardInterrupt:
    print("interrupted", ctrl_c.count, flush=True)
"""


def test_a_second_ctrl_c_while_a_run_closes_leaves_without_waiting_for_its_step(tmp_path):
    # The first Ctrl-C waits for the step under way before closing the run; a second one is
    # the user's way out. The run's thread was a ThreadPoolExecutor's, which the
    # interpreter's exit joins: the process then waited out the step (a backoff or a
    # Retry-After of up to 60 s) after the user had left.
    import os
    import subprocess
    import sys

    script = tmp_path / "stuck.py"
    script.write_text(STUCK_RUN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.stdout == "interrupted 2\n", (done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr


class HangingOnce(Hanging):
    """`Hanging` until a call of it is cancelled: the run resumed after that is answered."""

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
        if not self.upstream.cancelled:
            return await super()._agenerate(messages, stop, run_manager, **kwargs)
        return await FakeChat._agenerate(self, messages, stop, run_manager, **kwargs)


def test_a_run_interrupted_mid_layer_resumes_with_its_finished_proposers(monkeypatch):
    """LangGraph saves an interrupted task as an error write (`__error__`) of its step, and
    the step's finished tasks as theirs: the thread resumes at that step, calling again
    only the proposer that had not answered, as one that never started, not as a failure."""
    from langgraph.checkpoint.memory import InMemorySaver

    from tests.fakes import CallLog

    monkeypatch.setattr(_calls, "has_own_timeout", lambda spec: True)
    log, upstream, saver = CallLog(), Upstream(1), InMemorySaver()
    fast = [FakeChat(label=label, log=log) for label in ("A", "B")]
    slow = HangingOnce(label="C", upstream=upstream, log=log)
    config = MoAConfig(proposers=[*fast, slow], aggregator=FakeChat(label="AGG", log=log), layers=2)
    thread = {"configurable": {"thread_id": "t"}}

    def saved() -> list[str]:
        writes = [w for d in list(saver.writes.values()) for w in list(d.values())]
        records = [saver.serde.loads_typed(w[2]) or [] for w in writes if w[1] == "calls"]
        return sorted(r["configured_model"] for written in records for r in written)

    main = threading.get_ident()

    def ctrl_c_once_a_and_b_are_saved() -> None:
        deadline = time.monotonic() + 30
        while saved() != ["A", "B"] and time.monotonic() < deadline:
            time.sleep(0.01)
        if upstream.all_started(within_s=30):
            signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=ctrl_c_once_a_and_b_are_saved, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            create_moa_graph(config, checkpointer=saver).invoke(QUESTION, thread)
        assert cancelled(upstream) == ["C"]
    finally:
        upstream.released.set()
    called = len(log.calls)
    out = create_moa_graph(config, checkpointer=saver).invoke(None, thread)
    assert [c.label for c in log.calls[called:]] == ["C", "AGG"]
    records = {c["configured_model"]: c for c in out["calls"]}
    assert [(r["status"], r["attempts"]) for r in records.values()] == [("ok", 1)] * 4
    assert (records["A"]["output"], records["B"]["output"]) == ("A #1", "B #1")


def interrupted_once_stepping() -> tuple[threading.Event, threading.Event]:
    """Send SIGINT to this thread once the first event is set; the second says it was sent."""
    stepping, sent, main = threading.Event(), threading.Event(), threading.get_ident()

    def interrupt() -> None:
        if stepping.wait(30):
            signal.pthread_kill(main, signal.SIGINT)
            sent.set()

    threading.Thread(target=interrupt, daemon=True).start()
    return stepping, sent


def not_raising(run: Iterator[T]) -> list[T]:
    """Return what `run` yields, failing the test (not ending pytest) on KeyboardInterrupt."""
    try:
        return list(run)
    except KeyboardInterrupt:
        pytest.fail("the interrupt was raised in the sync call, not left to the host")


def this_runs_interrupt() -> threading.Event:
    """Return what is set once the sync run whose step calls this is interrupted."""
    from langgraph_moa.run._interrupt import RUN_CALLS

    calls = RUN_CALLS.get()
    assert calls is not None
    return calls.interrupted


async def test_ctrl_c_during_a_sync_call_in_an_async_endpoint_is_left_to_uvicorn():
    """An async endpoint under uvicorn calling a sync run: uvicorn's SIGINT handler (which
    starts its graceful shutdown) was replaced while the run waited, so Ctrl-C raised
    KeyboardInterrupt in the endpoint instead. A handler the package does not know as one
    that only cancels a task now stays, and the run goes on."""
    import uvicorn

    from langgraph_moa.run._interrupt import interruptible

    server = uvicorn.Server(uvicorn.Config(app=lambda *_: None, log_config=None))
    signal.signal(signal.SIGINT, server.handle_exit)  # as uvicorn's capture_signals; restored
    stepping, _ = interrupted_once_stepping()

    def run():
        stepping.set()
        deadline, stopped = time.monotonic() + 30, this_runs_interrupt()
        while not (server.should_exit or stopped.is_set()) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield server.should_exit

    assert not_raising(interruptible(run())) == [True]  # uvicorn heard it
    assert signal.getsignal(signal.SIGINT) == server.handle_exit


async def test_ctrl_c_during_a_sync_call_reaches_a_loops_signal_handler_once():
    """`loop.add_signal_handler(SIGINT, cb)` leaves asyncio's Python handler doing nothing:
    the signal reaches the loop through its wake-up fd. That handler was replaced while a
    sync run waited, so Ctrl-C raised KeyboardInterrupt there and `cb` ran as well, later:
    handled twice. Now only `cb` runs, once the loop runs again."""
    from langgraph_moa.run._interrupt import interruptible

    loop, heard = asyncio.get_running_loop(), []
    loop.add_signal_handler(signal.SIGINT, heard.append, "cb")
    try:
        installed = signal.getsignal(signal.SIGINT)
        stepping, sent = interrupted_once_stepping()
        during = []

        def run():
            stepping.set()
            sent.wait(30)
            during.append(signal.getsignal(signal.SIGINT))
            yield "done"

        assert not_raising(interruptible(run())) == ["done"]
        assert during == [installed]
        for _ in range(3000):  # up to 30 s where the test fails
            if heard:
                break
            await asyncio.sleep(0.01)
        assert heard == ["cb"]
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def test_ctrl_c_during_a_sync_call_under_asyncio_run_raises_there():
    """Under `asyncio.run` (Python 3.11+) SIGINT's handler only cancels the main task, which
    a sync run blocking it never lets run: that one is still replaced, and Ctrl-C raises
    KeyboardInterrupt in the coroutine."""
    import functools

    from langgraph_moa.run._interrupt import interruptible

    signal.signal(signal.SIGINT, signal.default_int_handler)  # so asyncio.run installs its own
    stepping, _ = interrupted_once_stepping()
    found = []

    def run():
        stepping.set()
        this_runs_interrupt().wait(30)
        yield "never"

    async def main():
        found.append(signal.getsignal(signal.SIGINT))
        return list(interruptible(run()))

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert isinstance(found[0], functools.partial)  # asyncio.Runner's
    assert found[0].func.__name__ == "_on_sigint"
