"""A run cut off mid-layer and resumed by a new graph (as another process would) keeps its history."""

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from langgraph_moa import MoAConfig, RetrySettings, create_moa_graph
from tests.unit_tests.test_graph import QUESTION


class Killed(BaseException):
    """Stands for the process dying: no node catches it, nothing after it runs."""


def test_a_resumed_call_counts_the_attempts_made_before_the_resume(fake):
    def flaky(n, messages):
        if n == 1:
            return ConnectionError("reset by peer")
        if n == 2:
            return Killed()
        return None

    config = MoAConfig(
        proposers=[fake("A"), fake("FLAKY", fail=flaky)],
        aggregator=fake("AGG"),
        layers=2,
        retry=RetrySettings(max_attempts=3, initial_interval=0.0, jitter=False),
    )
    saver = InMemorySaver()
    thread = {"configurable": {"thread_id": "t"}}
    with pytest.raises(Killed):
        create_moa_graph(config, checkpointer=saver).invoke(QUESTION, thread)
    # A new graph has none of the first one's memory, like a worker in another process.
    out = create_moa_graph(config, checkpointer=saver).invoke(None, thread)
    record = next(c for c in out["calls"] if c["configured_model"] == "FLAKY")
    assert (record["status"], record["attempts"]) == ("ok", 2)
    assert record["retried_errors"] == ["ConnectionError: reset by peer"]
