"""Streaming: the final answer token by token, tagged; progress as custom events."""

from langgraph_moa import MoAConfig, create_moa_graph, final_answer_only
from tests.helpers import QUESTION

LONG = lambda label, n, msgs: f"{label} says one two three four five"  # noqa: E731


def graph_for(fake, **kw):
    return create_moa_graph(
        MoAConfig(
            proposers=[fake("A", reply=LONG), fake("B", reply=LONG)],
            aggregator=fake("AGG", reply=LONG),
            **kw,
        )
    )


def test_messages_stream_yields_only_the_aggregators_tokens_one_by_one(fake):
    chunks = list(graph_for(fake).stream(QUESTION, stream_mode="messages"))
    final = [(m, meta) for m, meta in chunks if final_answer_only(meta)]
    assert len(final) >= 6  # real token streaming, not one chunk at the end
    assert "".join(m.text for m, _ in final) == "AGG says one two three four five"
    assert all(meta["langgraph_node"] == "aggregate" for _, meta in final)
    # Proposer tokens are not mixed into the stream.
    assert not any("A says" in m.text or "B says" in m.text for m, _ in chunks)
    # And the answer is not emitted a second time as a whole message.
    assert sum(m.text == "AGG says one two three four five" for m, _ in chunks) == 0


async def test_async_messages_stream_and_progress_events(fake):
    graph = graph_for(fake, layers=3)
    events, tokens = [], []
    async for mode, chunk in graph.astream(QUESTION, stream_mode=["messages", "custom"]):
        if mode == "custom":
            events.append(chunk)
        elif final_answer_only(chunk[1]):
            tokens.append(chunk[0].text)
    assert "".join(tokens) == "AGG says one two three four five"
    started = [(e["role"], e["layer"], e["proposer"]) for e in events if e["event"] == "started"]
    finished = [e for e in events if e["event"] == "finished"]
    assert sorted(started) == [
        ("aggregator", 3, -1),
        ("proposer", 1, 0),
        ("proposer", 1, 1),
        ("proposer", 2, 0),
        ("proposer", 2, 1),
    ]
    assert len(finished) == 5 and all(e["latency_s"] >= 0 for e in finished)


def test_failed_proposer_is_reported_as_a_progress_event(fake):
    bad = fake("BAD", fail=lambda n, m: ValueError("boom"))
    config = MoAConfig(
        proposers=[fake("A"), bad], aggregator=fake("AGG"), retry={"max_attempts": 1}
    )
    events = [c for c in create_moa_graph(config).stream(QUESTION, stream_mode="custom")]
    failed = [e for e in events if e["event"] == "failed"]
    assert len(failed) == 2  # one per proposer layer
    assert all("boom" in e["error"] and e["configured_model"] == "BAD" for e in failed)
