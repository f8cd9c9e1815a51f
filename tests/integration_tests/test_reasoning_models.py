"""Reasoning models in the mixture: their thinking is neither a reference nor the answer.

The backend is `ScriptedServer` with `thinking`: ``inline`` models write ``<think>THOUGHT
</think>`` before their answer (Qwen3 or DeepSeek-R1 on llama.cpp without
``--reasoning-format``), ``field`` models send it apart in ``reasoning_content`` (llama.cpp
``--reasoning-format deepseek``, vLLM), ``unclosed`` ones are cut by ``max_tokens`` while
thinking. THOUGHT holds a wrong number ("12"): it must reach no later call, no answer and
no score, and stay in the call records.
"""

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from langgraph_moa import MoAChatModel, MoAConfig
from langgraph_moa.serving._app import create_app
from langgraph_moa.testing import ScriptedServer
from langgraph_moa.testing.scripted_server import THOUGHT

THINKING = {"p1": "inline", "p2": "field", "agg": "inline", "cut": "unclosed"}


@pytest.fixture(scope="module")
def backend():
    with ScriptedServer(thinking=THINKING) as server:
        yield server


def moa(url: str, *proposers: str, **extra: object) -> MoAConfig:
    return MoAConfig(
        proposers=[f"{p}@{url}" for p in proposers or ("p1", "p2")],
        aggregator=f"agg@{url}",
        layers=2,
        name="m",
        **extra,
    )


def _sent_since(backend: ScriptedServer, start: int) -> str:
    return json.dumps(backend.requests[start:])


def _no_thinking(text: str) -> None:
    assert "think>" not in text and "Maybe the answer is 12" not in text, text


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_reaches_no_reference_and_no_answer_of_the_chat_model(backend, stream):
    model = MoAChatModel(config=moa(backend.url))
    start = len(backend.requests)
    if stream:
        pieces = [c.text for c in model.stream("What is 7 times 2?")]
        answer = "".join(pieces)
    else:
        answer = model.invoke("What is 7 times 2?").text
    assert answer.startswith("agg answers:"), answer
    _no_thinking(answer)
    later = [
        b
        for b in backend.requests[start:]
        if b["model"] == "agg" or b["messages"][0]["role"] == "system"
    ]
    assert later, "no call read references"
    for body in later:
        _no_thinking(json.dumps(body["messages"]))
        assert "p1 answers: What is 7 times 2?" in json.dumps(body["messages"])


def test_the_call_records_keep_each_inline_thought(backend):
    answer = MoAChatModel(config=moa(backend.url)).invoke("Why?")
    calls = answer.response_metadata["moa"]["calls"]
    kept = {c["configured_model"].split("@")[0]: c.get("thinking") for c in calls}
    assert kept["p1"] == THOUGHT and kept["agg"] == THOUGHT
    assert all("think>" not in c["output"] for c in calls)


def test_a_proposer_cut_while_thinking_fails_with_the_fix_and_is_no_reference(backend):
    start = len(backend.requests)
    answer = MoAChatModel(config=moa(backend.url, "p1", "cut")).invoke("Why?")
    failed = [c for c in answer.response_metadata["moa"]["calls"] if c["status"] == "failed"]
    assert {c["configured_model"].split("@")[0] for c in failed} == {"cut"}
    assert "cut off while thinking" in failed[0]["error"], failed[0]["error"]
    assert "max_tokens" in failed[0]["error"]
    _no_thinking(_sent_since(backend, start))
    _no_thinking(answer.text)


@pytest.mark.parametrize(("stream", "progress"), [(False, False), (True, False), (True, True)])
def test_serve_answers_without_thinking(backend, stream, progress):
    client = TestClient(create_app({"m": moa(backend.url)}), base_url="http://localhost")
    body = {"model": "m", "messages": [{"role": "user", "content": "Why?"}], "stream": stream}
    if progress:
        body["moa_progress"] = True
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    if not stream:
        answer = response.json()["choices"][0]["message"]["content"]
    else:
        answer = ""
        for line in response.text.splitlines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices") or []:
                    answer += (choice.get("delta") or {}).get("content") or ""
    assert answer == "agg answers: Why?", answer


def test_moa_run_prints_no_thinking(backend):
    from langgraph_moa.cli import _app as cli

    url = backend.url
    args = ["run", "--proposers", f"p1@{url},p2@{url}", "--aggregator", f"agg@{url}"]
    result = CliRunner().invoke(cli.app, [*args, "--layers", "2", "Why?"])
    assert result.exit_code == 0, result.output
    assert "agg answers: Why?" in result.output
    _no_thinking(result.output)


@pytest.mark.parametrize("stream", [False, True])
def test_chunk_wise_aggregation_reads_and_writes_no_thinking(backend, stream):
    chunks = {"start": "chunks", "chunk_tokens": 2}
    model = MoAChatModel(config=moa(backend.url, aggregation=chunks))
    start = len(backend.requests)
    if stream:
        answer = "".join(c.text for c in model.stream("Why?"))
    else:
        answer = model.invoke("Why?").text
    _no_thinking(answer)
    assert "agg answers: Why?" in answer
    for body in backend.requests[start:]:
        if body["model"] == "agg":
            _no_thinking(json.dumps(body["messages"]))


@pytest.mark.parametrize(
    ("proposer", "param", "fix"),
    [
        ({}, "temperature", "temperature: null"),
        ({"temperature": None}, "max_tokens", "max_tokens: null"),
    ],
)
def test_a_parameter_a_reasoning_model_refuses_is_named_with_its_fix_and_not_retried(
    proposer, param, fix
):
    with ScriptedServer(thinking={"o3": "openai"}) as server:
        o3 = {"model": f"o3@{server.url}", **proposer}
        proposers = [o3, f"p1@{server.url}"]
        config = MoAConfig(proposers=proposers, aggregator=f"agg@{server.url}")
        answer = MoAChatModel(config=config).invoke("Why?")
        sent = len(server.bodies("o3"))
    failed = [c for c in answer.response_metadata["moa"]["calls"] if c["status"] == "failed"]
    assert sent == len(failed) == 2 and {c["attempts"] for c in failed} == {1}  # no retry
    error = failed[0]["error"]
    assert error.startswith("UnsupportedParameterError: o3@"), error
    assert f"'{param}'" in error and fix in error, error
    assert "\n" not in error


def test_a_reasoning_model_answers_once_its_config_leaves_both_parameters_out():
    with ScriptedServer(thinking={"o3": "openai"}) as server:
        o3 = {"model": f"o3@{server.url}", "temperature": None, "max_tokens": None}
        config = MoAConfig(proposers=[o3], aggregator=f"agg@{server.url}")
        answer = MoAChatModel(config=config).invoke("Why?")
    assert all(c["status"] == "ok" for c in answer.response_metadata["moa"]["calls"])


def test_chunk_wise_calls_keep_the_thought_and_name_the_fix_of_a_cut_one(backend):
    # The last layer's proposals stream into the parts: each is a streamed call, not a whole.
    chunks = {"start": "chunks", "chunk_tokens": 2}
    config = moa(backend.url, "p1", "cut", aggregation=chunks)
    calls = MoAChatModel(config=config).invoke("Why?").response_metadata["moa"]["calls"]
    aggregator = next(c for c in calls if c["role"] == "aggregator")
    assert aggregator["thinking"].startswith(THOUGHT), aggregator
    streamed = [c for c in calls if c["layer"] == aggregator["layer"] - 1]
    cut = next(c for c in streamed if c["configured_model"].startswith("cut@"))
    assert "cut off while thinking" in cut["error"] and "max_tokens" in cut["error"], cut
