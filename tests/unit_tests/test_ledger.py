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
