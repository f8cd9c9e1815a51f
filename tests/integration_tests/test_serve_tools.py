"""`moa serve` passes tools, response formats, stop, seed and logprobs through (openai SDK).

The backend is `ScriptedServer`: a rule-following OpenAI-compatible server on loopback that
records every request, so each test checks both what the client got back and what every
inner call was sent.
"""

import json

import httpx
import openai
import pytest
from pydantic import BaseModel

from langgraph_moa import MoAConfig
from langgraph_moa.serving._app import create_app
from langgraph_moa.testing import BackgroundServer
from langgraph_moa.testing.scripted_server import ScriptedServer
from tests.helpers import fake_moa

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
QUESTION = [{"role": "user", "content": "What is 12 + 30? Use the add tool."}]


@pytest.fixture(scope="module")
def backend():
    with ScriptedServer() as server:
        yield server


@pytest.fixture(scope="module")
def moa_url(backend):
    systems = {
        "fake-moa": fake_moa(backend.url),
        "fake-select": MoAConfig(
            variant="select",
            proposers=[f"s1@{backend.url}", f"s2@{backend.url}", f"s3@{backend.url}"],
            selection={"method": "vote"},
            name="fake-select",
        ),
    }
    with BackgroundServer(create_app(systems)) as server:
        yield f"{server.root}/v1"


@pytest.fixture
def client(moa_url):
    return openai.OpenAI(base_url=moa_url, api_key="none", max_retries=0)


@pytest.mark.parametrize("model", ["fake-moa", "fake-select"])
def test_tools_round_trip(client, backend, model):
    reply = client.chat.completions.create(
        model=model, messages=QUESTION, tools=[ADD], tool_choice="auto"
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "add" and json.loads(call.function.arguments) == {"a": 12, "b": 30}
    assert call.id
    inner = backend.requests[-3:]  # the last run's calls all had the tool
    assert all(b["tools"][0]["function"]["name"] == "add" for b in inner)
    # The agent's next turn: the tool's result, then a text answer.
    follow_up = [
        *QUESTION,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "42"},
    ]
    done = client.chat.completions.create(model=model, messages=follow_up, tools=[ADD])
    assert done.choices[0].finish_reason == "stop"
    assert "42" in done.choices[0].message.content


def test_tools_stream_as_tool_call_deltas(client):
    stream = client.chat.completions.create(
        model="fake-moa", messages=QUESTION, tools=[ADD], tool_choice="required", stream=True
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for part in delta.tool_calls or []:
            entry = calls.setdefault(part.index, {"name": "", "arguments": "", "id": None})
            entry["id"] = part.id or entry["id"]
            entry["name"] += part.function.name or ""
            entry["arguments"] += part.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["name"] == "add" and json.loads(calls[0]["arguments"]) == {"a": 12, "b": 30}
    assert calls[0]["id"]


class Sum(BaseModel):
    total: int
    explanation: str


def test_response_format_json_schema_round_trips_through_parse(client, backend):
    reply = client.chat.completions.parse(
        model="fake-moa",
        messages=[{"role": "user", "content": "What is 12 + 30?"}],
        response_format=Sum,
    )
    assert isinstance(reply.choices[0].message.parsed, Sum)
    agg = backend.bodies("agg")[-1]
    assert agg["response_format"]["type"] == "json_schema"
    assert "response_format" not in backend.bodies("p1")[-1]  # proposers answer freely


def test_response_format_json_object_and_text(client):
    reply = client.chat.completions.create(
        model="fake-moa",
        messages=[{"role": "user", "content": "Reply in JSON with a 'total' key."}],
        response_format={"type": "json_object"},
    )
    assert set(json.loads(reply.choices[0].message.content)) == {"total"}
    text = client.chat.completions.create(
        model="fake-moa", messages=QUESTION, response_format={"type": "text"}
    )
    assert text.choices[0].message.content.startswith("agg answers")


def test_select_sends_the_response_format_to_every_proposer(client, backend):
    reply = client.chat.completions.create(
        model="fake-select",
        messages=[{"role": "user", "content": "Reply in JSON with a 'total' key."}],
        response_format={"type": "json_object"},
    )
    assert set(json.loads(reply.choices[0].message.content)) == {"total"}
    assert all(backend.bodies(s)[-1]["response_format"] for s in ("s1", "s2", "s3"))


def test_stop_seed_and_logprobs_pass_through(client, backend):
    reply = client.chat.completions.create(
        model="fake-moa",
        messages=[{"role": "user", "content": "say one two three"}],
        stop=["three"],
        seed=7,
        logprobs=True,
    )
    assert "three" not in reply.choices[0].message.content
    agg, p1 = backend.bodies("agg")[-1], backend.bodies("p1")[-1]
    assert agg["stop"] == ["three"] and agg["seed"] == 7 and agg["logprobs"] is True
    assert p1["seed"] == 7 and "stop" not in p1 and "logprobs" not in p1
    assert backend.bodies("p2")[-1]["seed"] == 8  # each proposal its own seed
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content[0].logprob == -0.25


def test_finish_reason_length_comes_from_the_final_call(client):
    reply = client.chat.completions.create(
        model="fake-moa",
        messages=[{"role": "user", "content": "a long question with many words here"}],
        max_tokens=2,
    )
    assert reply.choices[0].finish_reason == "length"
    stream = client.chat.completions.create(
        model="fake-moa",
        messages=[{"role": "user", "content": "a long question with many words here"}],
        max_tokens=2,
        stream=True,
    )
    assert [c.choices[0].finish_reason for c in stream if c.choices][-1] == "length"


def test_model_retrieval_and_unknown_routes_in_openai_error_shape(client, moa_url):
    assert client.models.retrieve("fake-moa").id == "fake-moa"
    with pytest.raises(openai.NotFoundError, match="served models: fake-moa, fake-select"):
        client.models.retrieve("nope")
    response = httpx.get(moa_url.removesuffix("/v1") + "/v2/whatever")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found" and "POST /v1/chat/completions" in error["message"]
    wrong_method = httpx.delete(f"{moa_url}/models")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["message"]
