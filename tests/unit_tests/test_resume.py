"""A run cut off mid-layer and resumed by a new graph (as another process would) keeps its history."""

import asyncio

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from langgraph_moa import MoAConfig, RetrySettings, create_moa_graph
from tests.helpers import QUESTION

THREAD = {"configurable": {"thread_id": "t"}}


class Killed(BaseException):
    """Stands for the process dying: no node catches it, nothing after it runs."""


def flaky_config(fake, **flaky):
    return MoAConfig(
        proposers=[fake("A"), fake("FLAKY", **flaky)],
        aggregator=fake("AGG"),
        layers=2,
        retry=RetrySettings(max_attempts=3, initial_interval=0.0, jitter=False),
    )


def assert_both_attempts_recorded(out):
    record = next(c for c in out["calls"] if c["configured_model"] == "FLAKY")
    assert (record["status"], record["attempts"]) == ("ok", 2)
    assert record["retried_errors"] == ["ConnectionError: reset by peer"]


def test_a_resumed_call_counts_the_attempts_made_before_the_resume(fake):
    def fail(n, messages):
        return {1: ConnectionError("reset by peer"), 2: Killed()}.get(n)

    config = flaky_config(fake, fail=fail)
    saver = InMemorySaver()
    with pytest.raises(Killed):
        create_moa_graph(config, checkpointer=saver).invoke(QUESTION, THREAD)
    # A new graph has none of the first one's memory, like a worker in another process.
    assert_both_attempts_recorded(create_moa_graph(config, checkpointer=saver).invoke(None, THREAD))


async def test_an_async_run_cancelled_mid_retry_resumes_with_its_history(fake):
    def fail(n, messages):
        return ConnectionError("reset by peer") if n == 1 else None

    config = flaky_config(fake, fail=fail, delay=lambda n: 30.0 if n == 2 else 0.0)
    saver = InMemorySaver()
    with pytest.raises(TimeoutError):  # the second attempt hangs; the run is cut off
        await asyncio.wait_for(
            create_moa_graph(config, checkpointer=saver).ainvoke(QUESTION, THREAD), 1.0
        )
    out = await create_moa_graph(config, checkpointer=saver).ainvoke(None, THREAD)
    assert_both_attempts_recorded(out)
