"""Turns of one checkpointed thread: each run's accounting is its own, never its last turn's.

A follow-up question on a `thread_id` starts a fresh run (`prepare` resets the run's data);
what a run shows before it ends, or leaves behind when it fails, must not be the turn before.
"""

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel

from langgraph_moa import AllProposersFailedError, MoAConfig, RetrySettings, create_moa_graph
from tests.helpers import QUESTION

THREAD = {"configurable": {"thread_id": "t"}}
FOLLOW_UP = {"messages": [("user", "And Y?")]}


class Verdict(BaseModel):
    """A `response_format` model, as a user's application defines it."""

    city: str


def test_a_follow_up_stopped_before_its_aggregator_shows_no_usage_of_the_turn_before(fake):
    """`usage` was written only at a run's end and never reset: a second turn stopped at
    `interrupt_before=["aggregate"]` returned (and its state held) the first turn's totals
    beside its own calls, 3 calls summed where 2 were made."""
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    first = graph.invoke(QUESTION, THREAD, interrupt_before=["aggregate"])
    graph.invoke(None, THREAD)
    second = graph.invoke(FOLLOW_UP, THREAD, interrupt_before=["aggregate"])
    assert len(second["calls"]) == 2
    assert first.get("usage") is None
    assert second.get("usage") is None
    assert graph.get_state(THREAD).values.get("usage") is None
    done = graph.invoke(None, THREAD)
    assert done["usage"]["total"]["calls"] == 3  # the second turn's own, once it ends


def test_a_failed_follow_up_leaves_no_answer_or_usage_of_the_turn_before(fake):
    """A second turn that failed left the thread with the first turn's
    `structured_response` and `usage` beside its own failed calls: `get_state` read as if
    the failed question had been answered, with the first answer."""
    agg = fake("AGG", reply=lambda label, n, msgs: '{"city": "Paris"}')
    proposer = fake("A", fail=lambda n, m: RuntimeError("down") if n > 1 else None)
    config = MoAConfig(
        proposers=[proposer], aggregator=agg, layers=2, retry=RetrySettings(max_attempts=1)
    )
    graph = create_moa_graph(config, checkpointer=InMemorySaver(), response_format=Verdict)
    assert graph.invoke(QUESTION, THREAD)["structured_response"] == Verdict(city="Paris")
    with pytest.raises(AllProposersFailedError):
        graph.invoke(FOLLOW_UP, THREAD)
    state = graph.get_state(THREAD).values
    assert [c["status"] for c in state["calls"]] == ["failed"]
    assert state.get("structured_response") is None
    assert state.get("usage") is None
