"""Chunk-wise aggregation over real HTTP: proposers stream, the answer is written in parts."""

import asyncio
from typing import Any

from langgraph_moa import MoAConfig, create_moa_graph, final_answer_only
from langgraph_moa.testing import FaultProfile, FaultServer

QUESTION = {"messages": [("user", "q")]}


def _config(url: str, **aggregation) -> MoAConfig:
    return MoAConfig(
        proposers=[f"a@{url}", f"b@{url}"],
        aggregator=f"agg@{url}",
        layers=3,
        aggregation={"start": "chunks", "chunk_tokens": 4, **aggregation},
    )


def _server() -> FaultServer:
    streamed = FaultProfile(reply_words=12, token_s=0.01, honor_max_tokens=True)
    return FaultServer(default=streamed)


async def test_the_answer_is_written_in_parts_as_the_last_layer_streams():
    with _server() as server:
        graph = create_moa_graph(_config(server.url))
        tokens, result = [], {}
        async for mode, chunk in graph.astream(QUESTION, stream_mode=["messages", "values"]):
            if mode == "messages" and final_answer_only(chunk[1]):
                tokens.append(chunk[0].content)
            elif mode == "values":
                result = chunk
        requests = dict(server.requests)
    answer = result["messages"][-1]
    meta = answer.response_metadata["moa"]
    parts = meta["chunkwise"]["parts"]
    # 12-word proposals in 4-word chunks: parts at 4 and 8 words, then the complete ones.
    assert len(parts) >= 2
    assert any(not s["complete"] for s in parts[0]["saw"])  # the first part saw partial text
    assert all(s["complete"] for s in parts[-1]["saw"])
    assert [s["words"] for s in parts[0]["saw"]] <= [s["words"] for s in parts[-1]["saw"]]
    # One aggregator request per part; the answer streamed is the answer returned.
    assert requests["agg"] == len(parts)
    assert "".join(tokens) == answer.content and answer.content.startswith("agg answer")
    calls = result["calls"]
    assert [(c["role"], c["layer"], c["status"]) for c in calls] == [
        ("proposer", 1, "ok"),
        ("proposer", 1, "ok"),
        ("proposer", 2, "ok"),
        ("proposer", 2, "ok"),
        ("aggregator", 3, "ok"),
    ]
    assert calls[2]["output"].startswith("a answer") and calls[2]["completion_tokens"] > 0


def test_sync_runs_write_in_parts_too():
    # A sync run makes the chunk-wise layer on the call loop, and tells its progress from there.
    with _server() as server:
        graph = create_moa_graph(_config(server.url))
        events, result = [], {}
        for mode, chunk in graph.stream(QUESTION, stream_mode=["custom", "values"]):
            if mode == "custom":
                events.append((chunk["event"], chunk["role"], chunk["layer"]))
            else:
                result = chunk
    assert len(result["messages"][-1].response_metadata["moa"]["chunkwise"]["parts"]) >= 2
    assert ("finished", "proposer", 2) in events and ("started", "aggregator", 3) in events


async def test_a_failed_proposer_is_recorded_and_the_others_are_aggregated():
    profiles = {"b": FaultProfile(error_rate=1.0, errors=["500"])}
    with FaultServer(profiles, default=FaultProfile(reply_words=12, token_s=0.01)) as server:
        config = MoAConfig(
            proposers=[f"a@{server.url}", f"b@{server.url}"],
            aggregator=f"agg@{server.url}",
            layers=2,
            aggregation={"start": "chunks", "chunk_tokens": 4},
        )
        result = await create_moa_graph(config).ainvoke(QUESTION)
    status = [(c["configured_model"].split("@")[0], c["status"]) for c in result["calls"]]
    assert status == [("a", "ok"), ("b", "failed"), ("agg", "ok")]
    assert result["messages"][-1].content.startswith("agg answer")


def test_moa_serve_streams_a_chunk_wise_answer_from_its_first_part():
    import openai

    from langgraph_moa.serving._app import create_app
    from langgraph_moa.testing import BackgroundServer

    with _server() as backend:
        app = create_app({"chunked": _config(backend.url)})
        with BackgroundServer(app) as server:
            client = openai.OpenAI(base_url=f"{server.root}/v1", api_key="-", max_retries=0)
            stream = client.chat.completions.create(
                model="chunked", messages=[{"role": "user", "content": "q"}], stream=True
            )
            pieces = [c.choices[0].delta.content for c in stream if c.choices]
            whole = client.chat.completions.create(
                model="chunked", messages=[{"role": "user", "content": "q"}]
            )
    text = "".join(p for p in pieces if p)
    assert text.startswith("agg answer") and len(pieces) > 2
    parts = whole.model_extra["moa"]["chunkwise"]["parts"]
    assert len(parts) >= 2 and whole.choices[0].message.content.startswith("agg answer")


async def test_a_proposer_silent_past_first_chunk_s_is_hung_up_on():
    profiles = {"hung": FaultProfile(latency_s=(60.0, 60.0))}
    with FaultServer(profiles, default=FaultProfile(reply_words=12, token_s=0.01)) as server:
        config = MoAConfig(
            proposers=[f"a@{server.url}", f"hung@{server.url}"],
            aggregator=f"agg@{server.url}",
            layers=2,
            aggregation={"start": "chunks", "chunk_tokens": 4, "first_chunk_s": 0.5},
        )
        # The bound only keeps a regression from hanging for the server's 60 s.
        result = await asyncio.wait_for(create_moa_graph(config).ainvoke(QUESTION), 30)
    status = [(c["configured_model"].split("@")[0], c["status"]) for c in result["calls"]]
    assert status == [("a", "ok"), ("hung", "cancelled"), ("agg", "ok")]


async def _last_part(continuation: str) -> tuple[Any, dict[str, Any]]:
    """Run a chunk-wise MoA; return its answer and the body of the aggregator's last request."""
    with _server() as server:
        config = MoAConfig(
            proposers=[f"a@{server.url}", f"b@{server.url}"],
            aggregator=f"agg@{server.url}",
            layers=2,
            aggregation={"start": "chunks", "chunk_tokens": 4, "continuation": continuation},
        )
        result = await create_moa_graph(config).ainvoke(QUESTION)
        body = server.last_body["agg"]
    answer = result["messages"][-1]
    assert answer.response_metadata["moa"]["chunkwise"]["continuation"] == continuation
    return answer, body


async def test_a_prefilled_part_continues_the_answer_as_the_aggregators_own_message():
    answer, body = await _last_part("prefill")
    # The last part's request ends with the answer so far as an assistant message, whose
    # continuation it streams (llama.cpp returns the prefill too with a whole answer).
    last = body["messages"][-1]
    assert last["role"] == "assistant" and last["content"]
    assert answer.content.startswith(last["content"]) and answer.content != last["content"]
    assert body["stream"] is True
    assert not any("answer_so_far" in str(m["content"]) for m in body["messages"])


async def test_an_instructed_part_is_shown_the_answer_so_far_between_markers():
    _, body = await _last_part("instruction")
    last = body["messages"][-1]
    assert last["role"] == "system" and "<answer_so_far>" in last["content"]
    assert all(m["role"] != "assistant" for m in body["messages"])


async def _capped(slow: FaultProfile, max_tokens: int, chunk_tokens: int) -> tuple[Any, ...]:
    """Run a chunk-wise MoA of a quick and a `slow` proposer under an aggregator cap.

    Returns the final answer, each model's call record and the caps the aggregator was sent.
    """
    quick = FaultProfile(reply_words=12, token_s=0.01, honor_max_tokens=True)
    with FaultServer({"slow": slow}, default=quick) as server:
        config = MoAConfig(
            proposers=[f"a@{server.url}", f"slow@{server.url}"],
            aggregator={"model": f"agg@{server.url}", "max_tokens": max_tokens},
            layers=2,
            aggregation={"start": "chunks", "chunk_tokens": chunk_tokens},
        )
        result = await create_moa_graph(config).ainvoke(QUESTION)
        caps = list(server.max_tokens_seen["agg"])
    calls = {c["configured_model"].split("@")[0]: c for c in result["calls"]}
    return result["messages"][-1], calls, caps


async def test_the_aggregators_max_tokens_bounds_the_whole_answer():
    slow = FaultProfile(reply_words=400, token_s=0.02, honor_max_tokens=True)
    answer, calls, caps = await _capped(slow, max_tokens=6, chunk_tokens=4)
    # Parts of 4 and then the 2 tokens left; no third part, and no wait for the slow
    # proposal's 400 words (8 s): it is cancelled and recorded as such.
    assert caps == [4, 2]
    assert calls["agg"]["completion_tokens"] == 6
    # Its max_tokens cut the 12-word answer, which says so (the server said "stop")
    assert calls["agg"]["finish_reason"] == answer.response_metadata["finish_reason"] == "length"
    assert calls["slow"]["status"] == "cancelled"
    assert "reached the aggregator's max_tokens (6)" in calls["slow"]["error"]
    assert calls["a"]["status"] == "ok"


async def test_an_answer_at_its_cap_ends_without_waiting_for_the_next_chunk():
    # The slow proposal writes a word a second, 3 in all: the only part starts at its 2nd
    # word and uses up max_tokens, so the answer ends there and the proposal is cancelled,
    # not awaited until its 3rd word completes it.
    answer, calls, caps = await _capped(
        FaultProfile(reply_words=3, token_s=1.0), max_tokens=2, chunk_tokens=2
    )
    assert caps == [2] and len(answer.response_metadata["moa"]["chunkwise"]["parts"]) == 1
    assert calls["slow"]["status"] == "cancelled"
    assert calls["agg"]["completion_tokens"] == 2
