"""What a later layer sees when a part of an earlier one failed (docs/failure-semantics.md)."""

import json

import pytest

from langgraph_moa import AllProposersFailedError, MoAConfig, RetrySettings, create_moa_graph
from tests.helpers import QUESTION, references_in

FAST_RETRY = RetrySettings(max_attempts=1)


def _fails_in_layer(layer: int):
    """A proposer's `fail`: its call of `layer` (its `layer`-th call) raises."""
    return lambda n, msgs: ValueError("model exploded") if n == layer else None


def test_a_failed_last_proposer_layer_is_aggregated_from_the_layer_before_it(fake, log):
    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(2)), fake("B", fail=_fails_in_layer(2))],
        aggregator=fake("AGG"),
        layers=3,
        retry=FAST_RETRY,
    )
    out = create_moa_graph(config).invoke(QUESTION)
    [agg] = log.by("AGG")
    assert references_in(agg) == ["A #1", "B #1"]  # layer 1's proposals, the last that answered
    moa = out["messages"][-1].response_metadata["moa"]
    assert out["messages"][-1].content == "AGG #1"
    assert moa["failed_layers"] == [{"layer": 2, "references_from": 1}]
    assert [(c["layer"], c["status"]) for c in moa["calls"]] == [
        (1, "ok"),
        (1, "ok"),
        (2, "failed"),
        (2, "failed"),
        (3, "ok"),
    ]


def test_a_failed_middle_layer_passes_the_layer_before_it_to_the_next(fake, log):
    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(2)), fake("B", fail=_fails_in_layer(2))],
        aggregator=fake("AGG"),
        layers=4,
        retry=FAST_RETRY,
    )
    out = create_moa_graph(config).invoke(QUESTION)
    third = log.by("A")[2]
    assert references_in(third) == ["A #1", "B #1"]
    assert references_in(log.by("AGG")[0]) == ["A #3", "B #3"]
    moa = out["messages"][-1].response_metadata["moa"]
    assert moa["failed_layers"] == [{"layer": 2, "references_from": 1}]


def test_an_answer_with_no_failed_layer_has_no_failed_layers(fake):
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=3)
    out = create_moa_graph(config).invoke(QUESTION)
    assert "failed_layers" not in out["messages"][-1].response_metadata["moa"]


def test_with_raise_a_failed_later_layer_ends_the_run_and_keeps_the_earlier_proposals(fake, log):
    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(2)), fake("B", fail=_fails_in_layer(2))],
        aggregator=fake("AGG"),
        layers=3,
        retry=FAST_RETRY,
        on_aggregator_failure="raise",
    )
    with pytest.raises(AllProposersFailedError, match="layer 2") as err:
        create_moa_graph(config).invoke(QUESTION)
    assert [c["output"] for c in err.value.calls if c["status"] == "ok"] == ["A #1", "B #1"]
    assert log.by("AGG") == []


def test_a_failed_first_layer_still_ends_the_run(fake, log):
    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(1)), fake("B", fail=_fails_in_layer(1))],
        aggregator=fake("AGG"),
        layers=3,
        retry=FAST_RETRY,
    )
    with pytest.raises(AllProposersFailedError, match="layer 1"):
        create_moa_graph(config).invoke(QUESTION)
    assert log.by("AGG") == []


def test_moa_run_warns_that_a_layer_was_passed_over(fake, capsys):
    from langgraph_moa.cli._run import report_degraded

    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(2))],
        aggregator=fake("AGG"),
        layers=3,
        retry=FAST_RETRY,
    )
    answer = create_moa_graph(config).invoke(QUESTION)["messages"][-1]
    assert report_degraded(answer) is True
    err = " ".join(capsys.readouterr().err.split())
    assert "every proposal of layer 2 failed" in err
    assert "read the proposals of layer 1 instead" in err


@pytest.mark.parametrize("stream", [False, True])
def test_moa_serve_says_which_layer_was_passed_over(fake, stream):
    from fastapi.testclient import TestClient

    from langgraph_moa.serving._app import create_app

    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(2))],
        aggregator=fake("AGG"),
        layers=3,
        retry=FAST_RETRY,
        name="m",
    )
    client = TestClient(create_app({"m": config}), base_url="http://localhost")
    body = {"model": "m", "messages": [{"role": "user", "content": "Explain X"}]}
    reply = client.post("/v1/chat/completions", json={**body, "stream": stream})
    assert reply.status_code == 200, reply.text
    if stream:
        events = [line[6:] for line in reply.text.splitlines() if line.startswith("data: {")]
        moa = next(e for e in map(json.loads, events) if "moa" in e)["moa"]
    else:
        moa = reply.json()["moa"]
    assert moa["failed_layers"] == [{"layer": 2, "references_from": 1}]


def test_the_run_event_stream_answer_says_which_layer_was_passed_over(fake):
    from fastapi.testclient import TestClient

    from langgraph_moa.serving._app import create_app

    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(2))],
        aggregator=fake("AGG"),
        layers=3,
        retry=FAST_RETRY,
        name="m",
    )
    client = TestClient(create_app({"m": config}), base_url="http://localhost")
    body = {"model": "m", "messages": [{"role": "user", "content": "Explain X"}]}
    text = client.post("/v1/moa/runs", json=body).text
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    [answer] = [e for e in events if e.get("event") == "answer"]
    assert answer["failed_layers"] == [{"layer": 2, "references_from": 1}]


async def test_chunkwise_a_failed_middle_layer_passes_the_layer_before_it_on(fake, log):
    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(2)), fake("B", fail=_fails_in_layer(2))],
        aggregator=fake("AGG"),
        layers=4,
        aggregation={"start": "chunks", "chunk_tokens": 2},
        retry=FAST_RETRY,
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    assert references_in(log.by("A")[2]) == ["A #1", "B #1"]
    moa = out["messages"][-1].response_metadata["moa"]
    assert moa["failed_layers"] == [{"layer": 2, "references_from": 1}]
