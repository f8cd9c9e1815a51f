"""What a LangGraph API client sees of a MoA run: stream modes, double-texting, cancel, edits.

`langgraph dev` serves a MoA whose models are a `FaultServer` on loopback (slow enough that
a run is still in its proposer layer when the client acts), driven by the official
langgraph-sdk client; the fault server counts every model call.
"""

import asyncio
import json
import time

import pytest

from langgraph_moa.testing.fault_server import FaultProfile, FaultServer
from tests.helpers import langgraph_dev

QUESTION = {"messages": [{"role": "user", "content": "Say hi."}]}
GRAPH = """
import os
from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.config import RequestLimits

url = os.environ["MOA_FAKE_URL"]
config = MoAConfig(proposers=[f"p1@{url}", f"p2@{url}"], aggregator=f"agg@{url}", layers=2)
graph = create_moa_graph(config, name="moa", limits=RequestLimits())
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(URL of `langgraph dev`, the fault server its graph calls)."""
    folder = tmp_path_factory.mktemp("lgapi")
    (folder / "graph.py").write_text(GRAPH)
    (folder / "langgraph.json").write_text(
        json.dumps({"dependencies": ["."], "graphs": {"moa": "./graph.py:graph"}})
    )
    proposer = FaultProfile(latency_s=(1.5, 1.5), reply_words=6, token_s=0.05)
    models = FaultServer(
        {"p1": proposer, "p2": proposer}, default=FaultProfile(reply_words=12, token_s=0.05)
    )
    # Several jobs per worker, as in production: a second run of a thread could start
    # while the first one is still being stopped.
    jobs = ("--n-jobs-per-worker", "4")
    with (
        models,
        langgraph_dev(folder, folder / "dev.log", {"MOA_FAKE_URL": models.url}, *jobs) as url,
    ):
        yield url, models


def _client(url):
    from langgraph_sdk import get_client

    return get_client(url=url)


async def _proposing(models, before: int) -> None:
    """Wait until the run started after `before` has asked its first proposer."""
    deadline = time.monotonic() + 60
    while models.requests["p1"] <= before:
        assert time.monotonic() < deadline, "the run never called its proposers"
        await asyncio.sleep(0.05)


async def test_messages_modes_stream_only_the_answer_and_custom_shows_every_proposer(served):
    url, _ = served
    client = _client(url)
    thread = await client.threads.create()
    tokens, custom, streamed_by, ended, final = [], [], set(), set(), None
    async for part in client.runs.stream(
        thread["thread_id"],
        "moa",
        input=QUESTION,
        stream_mode=["messages-tuple", "custom", "events", "values"],
        stream_subgraphs=True,
    ):
        event = part.event.split("|")[0]
        if event == "messages":
            chunk, metadata = part.data
            assert "moa:final" in metadata["tags"] and metadata["langgraph_node"] == "aggregate"
            tokens.append(chunk["content"])
        elif event == "custom":
            custom.append((part.data["event"], part.data["role"], part.data["proposer"]))
        elif event == "events" and part.data["event"] == "on_chat_model_stream":
            streamed_by.add(part.data["name"].split(" / ")[1])
        elif event == "events" and part.data["event"] == "on_chat_model_end":
            ended.add(part.data["name"].split(" / ")[1])
        elif event == "values":
            final = part.data
    assert "".join(tokens) == final["messages"][-1]["content"]
    for role, index in [("proposer", 0), ("proposer", 1), ("aggregator", -1)]:
        assert ("started", role, index) in custom and ("finished", role, index) in custom
    assert streamed_by == {"aggregator"}  # proposers write no tokens to any stream...
    assert ended == {"proposer 1", "proposer 2", "aggregator"}  # ...but their whole text


@pytest.mark.parametrize("strategy", ["reject", "interrupt", "rollback", "enqueue"])
async def test_double_texting_does_what_langgraph_documents(served, strategy):
    from langgraph_sdk.errors import ConflictError, NotFoundError

    url, models = served
    client = _client(url)
    thread = (await client.threads.create())["thread_id"]
    first = await client.runs.create(thread, "moa", input=QUESTION)
    await _proposing(models, models.requests["p1"])
    second_input = {"messages": [{"role": "user", "content": "Second question."}]}
    if strategy == "reject":
        with pytest.raises(ConflictError):
            await client.runs.create(thread, "moa", input=second_input, multitask_strategy="reject")
        await asyncio.wait_for(client.runs.join(thread, first["run_id"]), 120)
        assert (await client.runs.get(thread, first["run_id"]))["status"] == "success"
        return
    second = await client.runs.create(
        thread, "moa", input=second_input, multitask_strategy=strategy
    )
    await asyncio.wait_for(client.runs.join(thread, second["run_id"]), 120)
    assert (await client.runs.get(thread, second["run_id"]))["status"] == "success"
    state = await client.threads.get_state(thread)
    said = [(m["type"], m["content"]) for m in state["values"]["messages"] if m["type"] == "human"]
    if strategy == "rollback":
        with pytest.raises(NotFoundError):
            await client.runs.get(thread, first["run_id"])
        assert said == [("human", "Second question.")]
    else:
        status = (await client.runs.get(thread, first["run_id"]))["status"]
        assert status == {"interrupt": "interrupted", "enqueue": "success"}[strategy]
        assert said == [("human", "Say hi."), ("human", "Second question.")]
    assert state["values"]["messages"][-1]["type"] == "ai"


@pytest.mark.parametrize("wait", [True, False])
async def test_a_cancelled_run_calls_no_later_model_and_the_thread_runs_again(served, wait):
    url, models = served
    client = _client(url)
    thread = (await client.threads.create())["thread_id"]
    aggregated = models.requests["agg"]
    run = await client.runs.create(thread, "moa", input=QUESTION)
    await _proposing(models, models.requests["p1"])
    await client.runs.cancel(thread, run["run_id"], wait=wait)
    await asyncio.wait_for(client.runs.join(thread, run["run_id"]), 60)
    assert (await client.runs.get(thread, run["run_id"]))["status"] == "interrupted"
    assert models.requests["agg"] == aggregated  # the aggregator was never asked
    # The thread is free: resuming it runs the cancelled layer again and answers.
    out = await asyncio.wait_for(client.runs.wait(thread, "moa", input=None), 120)
    assert [m["type"] for m in out["messages"]] == ["human", "ai"]
    assert models.requests["agg"] == aggregated + 1


async def test_a_proposal_edited_before_the_aggregator_reaches_it(served):
    url, models = served
    client = _client(url)
    thread = (await client.threads.create())["thread_id"]
    await asyncio.wait_for(
        client.runs.wait(thread, "moa", input=QUESTION, interrupt_before=["aggregate"]), 120
    )
    state = await client.threads.get_state(thread)
    assert state["next"] == ["aggregate"]
    references = state["values"]["references"]
    references[0] = "An edited proposal: zebras."
    await client.threads.update_state(thread, {"references": references})
    out = await asyncio.wait_for(client.runs.wait(thread, "moa", input=None), 120)
    assert out["messages"][-1]["type"] == "ai"
    assert "An edited proposal: zebras." in json.dumps(models.last_body["agg"]["messages"])
