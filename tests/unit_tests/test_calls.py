"""One model call: timeouts through the client's own mechanism where there is one."""

import asyncio
import threading

import pytest
from langchain_core.messages import HumanMessage

from langgraph_moa import MoAConfig
from langgraph_moa.errors import CallTimeoutError, StragglerCancelledError
from langgraph_moa.graph._nodes import MoANodes
from langgraph_moa.providers._models import has_own_timeout
from langgraph_moa.run._calls import CALL_CLOCKS, acall_model, call_model, off_the_clock
from langgraph_moa.transport._call_loop import call_loop
from tests.fakes import FakeChat

MESSAGES = [HumanMessage("hi")]


def test_models_built_here_carry_the_call_timeout_as_their_http_timeout(fake):
    config = MoAConfig(
        proposers=["m@http://127.0.0.1:9/v1", fake("USER")],
        aggregator=fake("AGG"),
        call_timeout_s=7.0,
    )
    nodes = MoANodes(config)
    built, given = (nodes._proposer_model(config, p) for p in config.proposers)
    assert has_own_timeout(config.proposers[0].model) and built.request_timeout == 7.0
    assert not has_own_timeout(config.proposers[1].model) and given.label == "USER"


def test_a_model_with_its_own_timeout_is_called_in_the_node_thread(fake):
    seen = []
    model = fake("M", reply=lambda label, n, m: seen.append(threading.get_ident()) or "ok")
    call_model(model, MESSAGES, "M", 5.0, own_timeout=True)
    call_model(model, MESSAGES, "M", 5.0)  # a user's model: in a thread the node can abandon
    assert seen[0] == threading.get_ident() != seen[1]


async def test_an_async_call_past_its_timeout_is_cancelled(fake):
    model = fake("SLOW", delay=lambda n: 30.0)
    with pytest.raises(CallTimeoutError, match=r"within 0\.2s"):
        async with asyncio.timeout(15):  # a hang bound only: half the 30 s the model takes
            await acall_model(model, MESSAGES, "SLOW", 0.2)
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


class GoOnAfter:
    """A layer that goes on without the call once it has been asked `n` times."""

    held = None

    def __init__(self, n: int) -> None:
        self.asked = 0
        self.n = n

    def __call__(self) -> str | None:
        self.asked += 1
        return "the layer went on" if self.asked >= self.n else None

    def wait_s(self) -> float:
        return 0.01


def tasks_left_on_the_call_loop() -> set[asyncio.Task]:
    async def others() -> set[asyncio.Task]:
        for _ in range(5):  # a cancelled task ends within a few turns of its loop
            await asyncio.sleep(0)
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    return asyncio.run_coroutine_threadsafe(others(), call_loop()).result(5)


def test_a_sync_call_watching_its_deadline_is_cancelled_not_abandoned(fake):
    # The call loop and the thread list are the process's: other tests' calls may still be
    # on them (a "moa SLOW" thread abandoned by test_reliability sleeps for 5 s), so only
    # what this call added counts.
    tasks_before = tasks_left_on_the_call_loop()
    threads_before = set(threading.enumerate())
    model = fake("SLOW", delay=lambda n: 30.0)
    with pytest.raises(StragglerCancelledError, match="SLOW was still running: the layer went on"):
        call_model(model, MESSAGES, "SLOW", 60.0, stop=GoOnAfter(3), own_timeout=True)
    assert not tasks_left_on_the_call_loop() - tasks_before  # the call itself stopped...
    abandoned = set(threading.enumerate()) - threads_before
    assert not [t for t in abandoned if t.name == "moa SLOW"]  # ...none abandoned
    assert model.log.calls == []


def test_a_sync_call_watching_its_deadline_answers_and_fails_like_any_call(fake):
    model = fake("M", reply=lambda label, n, m: "fine")
    assert (
        call_model(model, MESSAGES, "M", 5.0, stop=GoOnAfter(100), own_timeout=True).text == "fine"
    )
    slow = fake("SLOW", delay=lambda n: 30.0)
    with pytest.raises(CallTimeoutError, match=r"within 0\.2s"):
        call_model(slow, MESSAGES, "SLOW", 0.2, stop=GoOnAfter(10**9), own_timeout=True)
    broken = fake("BAD", fail=lambda n, m: ValueError("bad request"))
    with pytest.raises(Exception, match="bad request"):
        call_model(broken, MESSAGES, "BAD", 5.0, stop=GoOnAfter(100), own_timeout=True)


async def test_a_sync_call_made_from_a_thread_running_a_loop_keeps_to_a_thread(fake):
    # A sync run started from a notebook cell builds its models for the cell's loop; they
    # cannot be used on the call loop, so such a call takes the abandonable thread.
    threads = []
    model = fake(
        "M", reply=lambda label, n, m: threads.append(threading.current_thread().name) or "ok"
    )
    call_model(model, MESSAGES, "M", 5.0, stop=GoOnAfter(100), own_timeout=True)
    assert threads == ["moa M"]


async def test_a_wait_off_the_clock_stops_the_calls_timeout_and_keeps_what_was_left():
    # The reader's pace (serving's ReaderPace) waits through off_the_clock: a wait longer
    # than the call's whole timeout does not end the call, and the time left before the
    # wait still ends it afterwards.
    paused_through = []

    class Paused(FakeChat):
        async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
            await off_the_clock(asyncio.sleep(0.6))  # twice the timeout: not cut
            paused_through.append(True)
            await asyncio.sleep(30)  # what was left runs out here
            raise AssertionError("the call's timeout ran out before")

    with pytest.raises(CallTimeoutError, match=r"within 0\.3s"):
        await acall_model(Paused(label="P"), MESSAGES, "P", 0.3)
    assert paused_through


async def test_a_wait_off_the_clock_cancelled_after_its_call_ended_raises_only_cancelled():
    # A task the call started (`_until_stopped`'s) inherits its timer and may outlive the
    # call's scope: cancelled once the call gave up, its wait ends with no timer to restart.
    # Restarting it anyway raised RuntimeError ("Cannot change state of finished Timeout")
    # in place of the task's cancellation.
    waiting = asyncio.Event()

    async def child():
        waiting.set()
        await off_the_clock(asyncio.Event().wait())  # for ever, until cancelled

    async with asyncio.timeout(30) as scope:
        clocks = CALL_CLOCKS.set((scope, None))  # as acall_model sets it
        try:
            task = asyncio.create_task(child())
            await waiting.wait()
        finally:
            CALL_CLOCKS.reset(clocks)
    task.cancel()  # the parent has left its timeout's scope
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_call_made_on_the_call_loop_keeps_nothing_of_its_run_once_it_ended():
    """A pooled connection opened by a call on the call loop schedules its callbacks (the
    pool's cleanup timer) in the call's context, and keeps that context until it closes.
    That context held the run's config: its callbacks and the node's runtime, and through
    them what the run held, long after the run ended."""
    import contextvars
    import gc
    import weakref

    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_core.runnables.config import var_child_runnable_config
    from langgraph._internal._constants import CONFIG_KEY_RUNTIME
    from langgraph.constants import CONF

    class Pooled(FakeChat):
        async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
            asyncio.get_running_loop().call_later(60, lambda: None)  # a pool's cleanup timer
            return await super()._agenerate(messages, stop, run_manager, **kwargs)

    class Runtime:
        def stream_writer(self, chunk):
            pass

    handler, runtime = BaseCallbackHandler(), Runtime()
    gone = [weakref.ref(handler), weakref.ref(runtime)]

    def node(config: dict) -> None:  # a node of a sync run, in LangGraph's worker thread
        var_child_runnable_config.set(config)
        model = Pooled(label="M")
        answer = call_model(model, MESSAGES, "M", 30.0, stop=GoOnAfter(10**9), own_timeout=True)
        assert answer.text == "M #1"

    run_config = {"callbacks": [handler], CONF: {CONFIG_KEY_RUNTIME: runtime, "__pregel_x": 1}}
    contextvars.Context().run(node, run_config)
    del handler, runtime, run_config
    gc.collect()
    assert [ref() for ref in gone] == [None, None]
