"""`moa serve` through the official openai client: real HTTP on loopback, fast fake backend."""

import asyncio

import openai
import pytest

from langgraph_moa import MoAConfig
from langgraph_moa.serve import create_app
from langgraph_moa.testing import BackgroundServer, FaultProfile, FaultServer

KEY = "test-key"


@pytest.fixture(scope="module")
def backend():
    with FaultServer(default=FaultProfile(latency_s=(0.0, 0.02), reply_words=8)) as server:
        yield server


@pytest.fixture(scope="module")
def moa_url(backend):
    systems = {
        "fake-moa": MoAConfig(
            proposers=[f"p1@{backend.url}", f"p2@{backend.url}"],
            aggregator=f"agg@{backend.url}",
            layers=2,
            name="fake-moa",
        ),
        "fake-self-moa": MoAConfig(
            variant="self-moa",
            proposers=[{"model": f"p1@{backend.url}", "samples": 3}],
            name="fake-self-moa",
        ),
    }
    with BackgroundServer(create_app(systems, api_key=KEY, max_body_bytes=50_000)) as server:
        yield f"{server.root}/v1"


@pytest.fixture
def client(moa_url):
    return openai.OpenAI(base_url=moa_url, api_key=KEY, max_retries=0)


def test_models_lists_the_presets(client):
    assert sorted(m.id for m in client.models.list()) == ["fake-moa", "fake-self-moa"]


def test_completion_with_usage_of_every_call_and_provenance(client):
    reply = client.chat.completions.create(
        model="fake-moa", messages=[{"role": "user", "content": "Explain X"}]
    )
    assert reply.choices[0].message.content.startswith("agg answer")
    provenance = reply.model_extra["moa"]
    calls = provenance["calls"]
    assert [c["configured_model"].split("@")[0] for c in calls] == ["p1", "p2", "agg"]
    assert reply.usage.prompt_tokens == sum(c["prompt_tokens"] for c in calls) > 0
    assert reply.usage.completion_tokens == sum(c["completion_tokens"] for c in calls) == 24
    assert provenance["answered_by"] == "agg"


def test_streaming_sends_tokens_as_they_come_then_usage(client):
    stream = client.chat.completions.create(
        model="fake-moa",
        messages=[{"role": "user", "content": "Explain X"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    tokens = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(tokens) == 8  # one per word: real streaming
    assert "".join(tokens).startswith("agg answer")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 24
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finish) == 1 and finish[0].model_extra["moa"]["calls"]


def test_extra_body_overrides_per_request(client, backend):
    before = sum(backend.requests.values())
    client.chat.completions.create(
        model="fake-moa",
        messages=[{"role": "user", "content": "q"}],
        extra_body={"layers": 3},
        temperature=0.1,
        max_tokens=50,
    )
    assert sum(backend.requests.values()) - before == 5  # 2 proposer layers x 2 + aggregator


def test_self_moa_model(client):
    reply = client.chat.completions.create(
        model="fake-self-moa", messages=[{"role": "user", "content": "q"}]
    )
    assert reply.model_extra["moa"]["variant"] == "self-moa"
    assert len(reply.model_extra["moa"]["calls"]) == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"model": "nope"}, openai.NotFoundError, "Served models: fake-moa, fake-self-moa"),
        ({"messages": []}, openai.BadRequestError, "conversation is empty"),
        (
            {"messages": [{"role": "assistant", "content": "hi"}]},
            openai.BadRequestError,
            "must come from the user",
        ),
        ({"extra_body": {"layers": 1}}, openai.BadRequestError, "layers"),
        (
            {"extra_body": {"proposers": ["nonsense"]}},
            openai.BadRequestError,
            "Unknown model provider",
        ),
        (
            {"messages": [{"role": "user", "content": "x" * 60_000}]},
            openai.APIStatusError,
            "exceeds the limit",
        ),
    ],
)
def test_bad_requests_get_openai_style_errors(client, kwargs, error, message):
    args = {"model": "fake-moa", "messages": [{"role": "user", "content": "q"}], **kwargs}
    with pytest.raises(error) as err:
        client.chat.completions.create(**args)
    assert message in err.value.message


def test_wrong_or_missing_key_is_refused(moa_url):
    bad = openai.OpenAI(base_url=moa_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="API key"):
        bad.models.list()


async def test_concurrent_streaming_clients_each_get_their_own_answer(moa_url):
    client = openai.AsyncOpenAI(base_url=moa_url, api_key=KEY, max_retries=0)

    async def ask(i: int) -> str:
        stream = await client.chat.completions.create(
            model="fake-moa", messages=[{"role": "user", "content": f"question {i}"}], stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    answers = await asyncio.gather(*(ask(i) for i in range(20)))
    assert all(a.startswith("agg answer") for a in answers)
    assert len(set(answers)) == 20  # every client got its own run
