"""`langgraph dev` serving the graphs offline, driven by the official langgraph-sdk client."""

import time
from pathlib import Path

import pytest

from tests.helpers import langgraph_dev, serve_pids

pytestmark = [pytest.mark.local_models, pytest.mark.usefixtures("local_models_available")]

ROOT = Path(__file__).resolve().parents[2]
SMALL = {
    "variant": "single-proposer",
    "proposers": ["local:qwen2.5-coder-0.5b"],
    "aggregator": "local:qwen2.5-coder-0.5b",
    "samples": 2,
    "max_tokens": 32,
    "aggregator_max_tokens": 48,
}


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    log = tmp_path_factory.mktemp("lg") / "dev.log"
    before = serve_pids()
    with langgraph_dev(ROOT, log, {}) as url:
        yield url
    deadline = time.monotonic() + 15
    while serve_pids() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not serve_pids() - before, "llama.cpp servers outlived langgraph dev"


async def test_assistant_thread_streamed_run_and_second_turn(server_url):
    from langgraph_sdk import get_client

    client = get_client(url=server_url)
    graphs = {a["graph_id"] for a in await client.assistants.search()}
    assert {"moa", "self-moa", "self-moa-seq"} <= graphs
    assistant = await client.assistants.create(graph_id="moa", context=SMALL, name="small-moa")
    thread = await client.threads.create()

    tokens, final_values = [], None
    async for part in client.runs.stream(
        thread["thread_id"],
        assistant["assistant_id"],
        input={"messages": [{"role": "user", "content": "My name is Ada. Greet me."}]},
        stream_mode=["messages-tuple", "values"],
    ):
        if part.event == "messages":
            chunk, metadata = part.data
            if "moa:final" in (metadata.get("tags") or []) and chunk.get("content"):
                tokens.append(chunk["content"])
        elif part.event == "values":
            final_values = part.data
    assert len(tokens) > 3  # the answer arrived token by token
    answer = final_values["messages"][-1]
    assert answer["type"] == "ai" and answer["content"].strip()
    assert {c["model"] for c in final_values["calls"]} == {"qwen2.5-coder-0.5b"}

    second = await client.runs.wait(
        thread["thread_id"],
        assistant["assistant_id"],
        input={"messages": [{"role": "user", "content": "What is my name?"}]},
    )
    assert [m["type"] for m in second["messages"]] == ["human", "ai", "human", "ai"]
    # The second turn saw the first: every call of the run read the whole history.
    assert len(second["calls"]) == 3 and second["messages"][-1]["content"].strip()


async def test_a_context_past_the_limits_is_refused_before_any_call(server_url):
    from langgraph_sdk import get_client

    client = get_client(url=server_url)
    thread = await client.threads.create()
    huge = {
        "variant": "moa",
        "proposers": ["local:qwen2.5-coder-0.5b"] * 1000,
        "samples": 256,
        "layers": 16,
        "max_tokens": 10**9,
    }
    before = serve_pids()
    run = await client.runs.create(
        thread["thread_id"],
        "moa",
        input={"messages": [{"role": "user", "content": "hi"}]},
        context=huge,
    )
    await client.runs.join(thread["thread_id"], run["run_id"])
    finished = await client.runs.get(thread["thread_id"], run["run_id"])
    assert finished["status"] == "error"
    state = await client.threads.get_state(thread["thread_id"])
    assert not state["values"].get("calls")  # nothing was called
    assert serve_pids() - before == set()  # no model server was even started


async def test_a_context_naming_an_endpoint_url_calls_no_host_the_operator_did_not_set(
    server_url,
):
    """A client's run context chose the endpoint: the server posted the conversation to a
    host of the client's choosing (here a loopback listener standing in for an internal one).
    The run is refused with the reason, and nothing connects."""
    import socket
    import threading

    from langgraph_sdk import get_client

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    connected = []

    def hang_up() -> None:  # each connection fails at once, so a call cannot wait it out
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connected.append(1)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    client = get_client(url=server_url)
    thread = await client.threads.create()
    try:
        run = await client.runs.create(
            thread["thread_id"],
            "moa",
            input={"messages": [{"role": "user", "content": "hi"}]},
            context={**SMALL, "proposers": [f"m@http://127.0.0.1:{port}/v1"]},
        )
        await client.runs.join(thread["thread_id"], run["run_id"])
        finished = await client.runs.get(thread["thread_id"], run["run_id"])
    finally:
        listener.close()
    assert finished["status"] == "error"
    assert connected == []
    state = await client.threads.get_state(thread["thread_id"])
    assert not state["values"].get("calls")
