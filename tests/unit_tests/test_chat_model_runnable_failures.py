"""A failing MoA under LangChain's runnable wrappers: each failure stays with its input."""

import asyncio

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from langgraph_moa import AllProposersFailedError, MoAChatModel, MoAConfig, RetrySettings

ONCE = RetrySettings(max_attempts=1, initial_interval=0.0, jitter=False)


def down(n, _messages):
    return ConnectionError("down")


def moa(fake, **proposer):
    config = MoAConfig(
        proposers=[fake("A", **proposer), fake("B", **proposer)],
        aggregator=fake("AGG"),
        layers=2,
        retry=ONCE,
    )
    return MoAChatModel(config=config)


async def test_abatch_with_return_exceptions_keeps_each_inputs_own_outcome(fake):
    def down_for_x(n, messages):
        return ConnectionError("down") if messages[-1].text == "x" else None

    results = await moa(fake, fail=down_for_x).abatch(["x", "y", "x"], return_exceptions=True)
    assert [type(r).__name__ for r in results] == [
        "AllProposersFailedError",
        "AIMessage",
        "AllProposersFailedError",
    ]


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
async def test_with_fallbacks_answers_with_the_fallback_when_every_proposer_failed(fake, how):
    chain = moa(fake, fail=down).with_fallbacks([FakeListChatModel(responses=["plan B"])])
    answer = chain.invoke("hi") if how == "invoke" else await chain.ainvoke("hi")
    assert answer.content == "plan B"


async def test_with_retry_runs_the_whole_moa_again(fake, log):
    def down_first_run(n, _messages):
        return ConnectionError("down") if n == 1 else None

    retried = moa(fake, fail=down_first_run).with_retry(
        stop_after_attempt=2, wait_exponential_jitter=False
    )
    answer = await retried.ainvoke("hi")
    assert answer.content.startswith("AGG")
    assert [len(log.by(label)) for label in ("A", "B", "AGG")] == [2, 2, 1]


async def test_astream_events_of_a_run_whose_proposers_all_failed_raises_the_run_error(fake):
    with pytest.raises(AllProposersFailedError):
        async for _ in moa(fake, fail=down).astream_events("hi", version="v2"):
            pass


async def test_an_ainvoke_cancelled_mid_layer_leaves_no_task_behind(fake):
    llm = moa(fake, delay=lambda n: 30.0 if n == 1 else 0.0)
    before = asyncio.all_tasks()
    run = asyncio.create_task(llm.ainvoke("hi"))
    await asyncio.sleep(0.3)  # the proposers are waiting on their answers
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await asyncio.sleep(0.1)
    left = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not left, left
    assert (await llm.ainvoke("again")).content.startswith("AGG")  # usable after
