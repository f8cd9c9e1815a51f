"""One run at a time on a checkpointed thread, within a process.

LangGraph does not lock a thread: two runs (or two resumes) of one thread_id both called the
proposers that had not answered yet, paying twice and writing two answers into one history.
The second run is now refused at once with one sentence naming the thread and the fix.
"""

import asyncio
import threading
import time

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import BaseModel

from langgraph_moa import AllProposersFailedError, MoAConfig, MoAInputError, create_moa_graph
from langgraph_moa.errors import ThreadBusyError
from tests.helpers import QUESTION


def thread(name):
    return {"configurable": {"thread_id": name}}


def slow_graph(fake, saver, seconds=0.5):
    config = MoAConfig(proposers=[fake("A", delay=lambda n: seconds)], aggregator=fake("AGG"))
    return create_moa_graph(config, checkpointer=saver)


def test_a_second_run_on_a_busy_thread_is_refused_and_calls_nothing(fake, log):
    graph = slow_graph(fake, InMemorySaver())
    first = threading.Thread(target=graph.invoke, args=(QUESTION, thread("t")))
    first.start()
    time.sleep(0.1)  # the first run is waiting on its proposer
    with pytest.raises(ThreadBusyError) as info:
        graph.invoke(QUESTION, thread("t"))
    first.join()
    assert isinstance(info.value, MoAInputError)
    message = str(info.value)
    assert "'t'" in message and "already has a run in progress" in message
    assert "another thread_id" in message and "\n" not in message
    assert len(log.by("A")) == 2  # one per layer, of the first run only
    # The thread is free again once the run ended; another thread never waited.
    assert graph.invoke(None, thread("t"))["messages"][-1].text


async def test_a_second_async_resume_on_a_busy_thread_is_refused(fake, log):
    graph = slow_graph(fake, InMemorySaver())
    first = asyncio.ensure_future(graph.ainvoke(QUESTION, thread("t")))
    await asyncio.sleep(0.1)
    with pytest.raises(ThreadBusyError):
        async for _ in graph.astream(None, thread("t")):
            pass
    other = await graph.ainvoke(QUESTION, thread("u"))  # another thread runs meanwhile
    await first
    assert other["messages"][-1].text and len(log.by("A")) == 4


async def test_a_stream_left_early_or_a_failed_run_frees_its_thread(fake):
    saver = InMemorySaver()
    graph = slow_graph(fake, saver, seconds=0.0)
    for _ in graph.stream(QUESTION, thread("t")):
        break  # the consumer stopped reading: the run is over
    bad = MoAConfig(
        proposers=[fake("BAD", fail=lambda n, m: ValueError("400"))], aggregator=fake("AGG")
    )
    with pytest.raises(AllProposersFailedError):
        create_moa_graph(bad, checkpointer=saver).invoke(QUESTION, thread("t"))
    async for _ in graph.astream(QUESTION, thread("t")):
        break
    assert (await graph.ainvoke(QUESTION, thread("t")))["messages"][-1].text


def test_without_a_checkpointer_a_thread_id_holds_nothing(fake):
    # No checkpointer, no shared history: runs with one thread_id stay independent.
    graph = slow_graph(fake, None, seconds=0.3)
    first = threading.Thread(target=graph.invoke, args=(QUESTION, thread("t")))
    first.start()
    time.sleep(0.1)
    assert graph.invoke(QUESTION, thread("t"))["messages"][-1].text
    first.join()


def test_thread_id_1_and_1_as_text_are_one_thread_as_the_checkpointer_stores_them(fake, log):
    """LangGraph's checkpointers (in memory, SQLite) keep ``thread_id=1`` and ``"1"`` as one
    thread: a run of one resumes the other's. So the claim counts them as one too; counted
    apart, both runs would write into one history."""
    saver = InMemorySaver()
    graph = slow_graph(fake, saver)
    graph.invoke(QUESTION, thread(1))
    assert graph.get_state(thread("1")).values["messages"][-1].text  # one thread
    first = threading.Thread(target=graph.invoke, args=(QUESTION, thread(1)))
    first.start()
    time.sleep(0.1)
    with pytest.raises(ThreadBusyError, match="Thread '1' already has a run"):
        graph.invoke(QUESTION, thread("1"))
    first.join()


class Verdict(BaseModel):
    """A `response_format` model, as a user's application defines it."""

    city: str


def test_two_graphs_with_an_answer_model_on_one_saver_share_its_threads(fake, log):
    """With a serializer that lists the types it reads back, `create_moa_graph` gives
    LangGraph a copy of the saver that allows the answer's model (`allowing_answers`), one
    copy per graph: the claim must still see one saver, or a second graph's run on a busy
    thread writes a second answer into its history."""
    serde = JsonPlusSerializer(allowed_msgpack_modules=[("tests", "Unrelated")])
    saver = InMemorySaver(serde=serde)
    agg = fake("AGG", reply=lambda label, n, msgs: '{"city": "Paris"}')
    config = MoAConfig(proposers=[fake("A", delay=lambda n: 0.5)], aggregator=agg)
    first_graph, second_graph = (
        create_moa_graph(config, checkpointer=saver, response_format=Verdict) for _ in range(2)
    )
    first = threading.Thread(target=first_graph.invoke, args=(QUESTION, thread("t")))
    first.start()
    time.sleep(0.1)  # the first run is waiting on its proposer
    with pytest.raises(ThreadBusyError):
        second_graph.invoke(QUESTION, thread("t"))
    first.join()
    assert len(log.by("A")) == 2  # one per layer, of the first run only
    assert first_graph.get_state(thread("t")).values["structured_response"] == Verdict(city="Paris")
