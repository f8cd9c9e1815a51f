"""The step ledger holds only the runs in flight: a finished run's steps are dropped."""

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from langgraph_moa import MoAConfig, RetrySettings, create_moa_graph
from langgraph_moa.graph import _nodes
from langgraph_moa.run._ledger import Ledger
from tests.helpers import QUESTION


@pytest.fixture
def ledgers(monkeypatch):
    """Every ledger a graph built in the test made."""
    made = []

    class Seen(Ledger):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(_nodes, "Ledger", Seen)
    return made


def _held(ledger) -> int:
    return len(ledger)


@pytest.mark.parametrize(
    "variant", [{"layers": 3}, {"variant": "ranker", "layers": 3}, {"variant": "select"}]
)
def test_a_finished_runs_steps_are_dropped(fake, ledgers, variant):
    agg = {} if variant.get("variant") == "select" else {"aggregator": fake("AGG")}
    config = MoAConfig(proposers=[fake("A"), fake("B")], **agg, **variant)
    graph = create_moa_graph(config)
    for _ in range(3):
        graph.invoke(QUESTION)
    [ledger] = ledgers
    assert _held(ledger) == 0


class Killed(BaseException):
    """Stands for a run cut off mid-step: no node catches it."""


def test_a_cut_off_run_keeps_one_step_and_its_resume_counts_every_attempt(fake, ledgers):
    def fail(n, _messages):
        return {2: ConnectionError("reset by peer"), 3: Killed()}.get(n)  # in layer 2

    config = MoAConfig(
        proposers=[fake("A"), fake("FLAKY", fail=fail)],
        aggregator=fake("AGG"),
        layers=3,
        retry=RetrySettings(max_attempts=3, initial_interval=0.0, jitter=False),
    )
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "t"}}
    with pytest.raises(Killed):
        graph.invoke(QUESTION, thread)
    [ledger] = ledgers
    assert (
        _held(ledger) == 1
    )  # the step it stopped at (not layer 1's), for a resume in this process
    out = graph.invoke(None, thread)  # resumed by the same graph, in the same process
    flaky = [c for c in out["calls"] if c["configured_model"] == "FLAKY"]
    assert [(c["layer"], c["status"], c["attempts"]) for c in flaky] == [
        (1, "ok", 1),
        (2, "ok", 2),  # the attempt that failed before the cut counts
    ]
    assert _held(ledger) == 0


async def test_a_finished_async_runs_steps_are_dropped(fake, ledgers):
    graph = create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=3))
    for _ in range(3):
        await graph.ainvoke(QUESTION)
    [ledger] = ledgers
    assert len(ledger) == 0


def test_a_run_ended_by_an_edit_drops_its_step(fake, ledgers):
    """An edit that writes the answer (`update_state` as the aggregator, at an interrupt
    before it) ends the run in a router LangGraph runs with no runtime: the ledger looked
    for the running task there and failed (AttributeError), and the run's step stayed."""
    from langchain_core.messages import AIMessage

    graph = create_moa_graph(
        MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG")),
        checkpointer=InMemorySaver(),
    )
    thread = {"configurable": {"thread_id": "edited"}}
    graph.invoke(QUESTION, thread, interrupt_before=["aggregate"])
    [ledger] = ledgers
    assert _held(ledger) == 1  # the layer's step, kept for a resume
    graph.update_state(thread, {"messages": [AIMessage("answered by hand")]}, as_node="aggregate")
    assert graph.get_state(thread).next == ()
    assert _held(ledger) == 0


def test_a_copy_of_a_thread_running_beside_it_keeps_its_own_step(fake, ledgers):
    """A thread's state copied to another thread (`update_state` on a new thread_id) keeps
    its run token, and ThreadBusyError does not refuse it (another thread): the two runs
    shared one ledger entry, so the copy's step replaced the original's mid-call, and the
    copy's end dropped the step the original was still working on."""
    import threading

    entered, release = threading.Event(), threading.Event()

    def hold_first(n, _messages):
        if n == 1:  # the original's aggregator call waits while the copy runs
            entered.set()
            release.wait(30)

    graph = create_moa_graph(
        MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG", fail=hold_first)),
        checkpointer=InMemorySaver(),
    )
    original, copy = ({"configurable": {"thread_id": t}} for t in ("a", "b"))
    graph.invoke(QUESTION, original, interrupt_before=["aggregate"])
    graph.update_state(copy, graph.get_state(original).values, as_node="join_layer")
    assert graph.get_state(copy).next == ("aggregate",)
    [ledger] = ledgers
    done: list = []
    runner = threading.Thread(target=lambda: done.append(graph.invoke(None, original)))
    runner.start()
    try:
        assert entered.wait(30)
        assert graph.invoke(None, copy)["messages"][-1].text == "AGG #2"
        assert _held(ledger) == 1  # the original's step, still there for its call
    finally:
        release.set()
        runner.join(30)
    assert done[0]["messages"][-1].text == "AGG #1"
    assert _held(ledger) == 0


def test_a_cut_off_run_without_a_checkpointer_keeps_no_step(fake, ledgers):
    """With no checkpointer no run is resumed, so a cut-off run's step can never be used
    again: `moa serve` (no checkpointer) kept the step of every run whose client left, up
    to the ledger's bound of 4096 per graph."""

    def fail(n, _messages):
        return Killed() if n == 2 else None  # in layer 2

    config = MoAConfig(
        proposers=[fake("A"), fake("FLAKY", fail=fail)], aggregator=fake("AGG"), layers=3
    )
    graph = create_moa_graph(config)
    with pytest.raises(Killed):
        graph.invoke(QUESTION)
    [ledger] = ledgers
    assert _held(ledger) == 0


async def test_a_cancelled_async_run_without_a_checkpointer_keeps_no_step(fake, ledgers):
    """A client that leaves `moa serve` cancels its run: none of its steps stays behind."""
    import asyncio

    reached = asyncio.Event()

    def delay(n: int) -> float:
        if n != 2:
            return 0.0
        reached.set()  # layer 2's call is under way: its step is in the ledger
        return 30.0

    config = MoAConfig(
        proposers=[fake("A"), fake("SLOW", delay=delay)], aggregator=fake("AGG"), layers=3
    )
    graph = create_moa_graph(config)
    run = asyncio.ensure_future(graph.ainvoke(QUESTION))
    await asyncio.wait_for(reached.wait(), 30)
    [ledger] = ledgers
    assert _held(ledger) == 1
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert _held(ledger) == 0


def test_a_run_whose_proposers_all_failed_keeps_no_step_without_a_checkpointer(fake, ledgers):
    """`moa serve` answers such a run with a 502; its layer's step stayed in the ledger."""
    from langgraph_moa.errors import AllProposersFailedError

    def fail(_n, _messages):
        return ValueError("refused")  # not retried

    config = MoAConfig(proposers=[fake("A", fail=fail)], aggregator=fake("AGG"))
    graph = create_moa_graph(config)
    with pytest.raises(AllProposersFailedError):
        graph.invoke(QUESTION)
    [ledger] = ledgers
    assert _held(ledger) == 0


@pytest.mark.parametrize("variant", [{}, {"variant": "ranker"}])
def test_a_run_whose_final_step_failed_for_good_keeps_no_step_without_a_checkpointer(
    fake, ledgers, variant
):
    """`AggregatorFailedError` ends a run as `AllProposersFailedError` does: `moa serve`
    answers it with an error, and the step it failed at was kept until the ledger's bound."""
    from langgraph_moa.errors import AggregatorFailedError

    def fail(_n, _messages):
        return ValueError("refused")  # not retried

    config = MoAConfig(
        proposers=[fake("A"), fake("B")],
        aggregator=fake("AGG", fail=fail),
        on_aggregator_failure="raise",
        **variant,
    )
    graph = create_moa_graph(config)
    with pytest.raises(AggregatorFailedError):
        graph.invoke(QUESTION)
    [ledger] = ledgers
    assert _held(ledger) == 0


def test_a_retried_attempt_without_a_checkpointer_still_counts(fake, ledgers):
    """A failure the node's `RetryPolicy` retries is no end of the run: the retry finds the
    step, so the call's record counts the attempt before it."""

    def fail(n, _messages):
        return ConnectionError("reset by peer") if n == 1 else None

    config = MoAConfig(
        proposers=[fake("A")],
        aggregator=fake("AGG", fail=fail),
        retry=RetrySettings(max_attempts=3, initial_interval=0.0, jitter=False),
    )
    out = create_moa_graph(config).invoke(QUESTION)
    [agg] = [
        c
        for c in out["messages"][-1].response_metadata["moa"]["calls"]
        if c["role"] == "aggregator"
    ]
    assert agg["attempts"] == 2
