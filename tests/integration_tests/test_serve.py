"""`moa serve` through the official openai client: real HTTP on loopback, fast fake backend."""

import asyncio
import json
import socket
import threading
import time

import httpx
import openai
import pytest

from langgraph_moa import MoAConfig
from langgraph_moa.serving._app import create_app
from langgraph_moa.testing import BackgroundServer, FaultProfile, FaultServer
from tests.helpers import fake_moa

KEY = "test-key"


@pytest.fixture(scope="module")
def backend():
    with FaultServer(default=FaultProfile(latency_s=(0.0, 0.02), reply_words=8)) as server:
        yield server


@pytest.fixture(scope="module")
def moa_url(backend):
    systems = {
        "fake-moa": fake_moa(backend.url),
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
        ({"model": "nope"}, openai.NotFoundError, "served models: fake-moa, fake-self-moa"),
        ({"messages": []}, openai.BadRequestError, "conversation is empty"),
        (
            {"messages": [{"role": "assistant", "content": "hi"}]},
            openai.BadRequestError,
            "must come from the user",
        ),
        ({"extra_body": {"layers": 1}}, openai.BadRequestError, "layers"),
        (
            {"extra_body": {"proposers": ["nonsense"]}},
            openai.PermissionDeniedError,
            "--allow-model",
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


# --- the server calls only what its operator allowed ---------------------------------------------


@pytest.fixture
def listener():
    """A loopback port that records every connection made to it (an 'internal' service)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.05)
    received: list[bytes] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    received.append(conn.recv(65536))
                except OSError:
                    received.append(b"")
                conn.sendall(b"HTTP/1.1 500 Internal\r\ncontent-length: 0\r\n\r\n")

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1], received
    stop.set()
    thread.join(timeout=5)
    sock.close()


def ssrf_overrides(port):
    internal = f"x@http://127.0.0.1:{port}/internal"
    return [
        {"proposers": [internal]},
        {"aggregator": internal},
        {"proposers": [{"base_url": f"http://127.0.0.1:{port}/v1", "model": "x"}]},
        {"aggregator": {"base_url": f"http://127.0.0.1:{port}/v1", "model": "x"}},
    ]


def test_client_endpoints_are_refused_and_the_internal_host_sees_nothing(client, listener):
    port, received = listener
    for override in ssrf_overrides(port):
        with pytest.raises(openai.PermissionDeniedError) as err:
            client.chat.completions.create(
                model="fake-moa", messages=[{"role": "user", "content": "q"}], extra_body=override
            )
        assert "--allow-client-endpoints" in err.value.message
    time.sleep(0.3)
    assert received == []  # not one connection, so no port scan either


def test_with_the_operators_opt_in_client_endpoints_are_called(backend, listener):
    port, received = listener
    systems = {"m": MoAConfig(proposers=[f"p1@{backend.url}"], aggregator=f"agg@{backend.url}")}
    app = create_app(systems, allow_client_endpoints=True)
    with BackgroundServer(app) as server:
        client = openai.OpenAI(base_url=f"{server.root}/v1", api_key="-", max_retries=0)
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "q"}],
            extra_body={"proposers": [f"p1@{backend.url}", f"x@http://127.0.0.1:{port}/v1"]},
        )
    assert len(received) >= 1 and received[0].startswith(b"POST /v1/chat/completions")


# --- a client that leaves stops paying -----------------------------------------------------------


@pytest.fixture(scope="module")
def slow_backend():
    # The client leaves once the proposer is called; the server must notice and cancel before
    # the proposer answers: 3 s leaves a loaded machine room to do that.
    profiles = {"slow": FaultProfile(latency_s=(3.0, 3.0)), "agg": FaultProfile()}
    with FaultServer(profiles) as server:
        yield server


@pytest.fixture(scope="module")
def slow_url(slow_backend):
    url = slow_backend.url
    systems = {"slow": MoAConfig(proposers=[f"slow@{url}"], aggregator=f"agg@{url}", layers=2)}
    with BackgroundServer(create_app(systems)) as server:
        yield f"{server.root}/v1/chat/completions"


def _post_then_leave_once(url: str, body: dict, arrived) -> None:
    """Send a chat request on a bare socket and close it once `arrived()` says so.

    The client leaves while the proposer is being called, whatever the machine's load: a
    client timing itself out (0.3 s) sometimes left before the server had made the call.
    """
    parts = httpx.URL(url)
    payload = json.dumps(body).encode()
    head = (
        f"POST {parts.raw_path.decode()} HTTP/1.1\r\nHost: {parts.host}:{parts.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    with socket.create_connection((parts.host, parts.port)) as sock:
        sock.sendall(head.encode() + payload)
        deadline = time.monotonic() + 30
        while not arrived():
            assert time.monotonic() < deadline, "the server never called the proposer"
            time.sleep(0.02)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_disconnects_never_pays_for_the_aggregator(slow_backend, slow_url, stream):
    before = dict(slow_backend.requests)
    body = {"model": "slow", "messages": [{"role": "user", "content": "q"}], "stream": stream}

    def proposer_called() -> bool:
        return slow_backend.requests["slow"] > before.get("slow", 0)

    _post_then_leave_once(slow_url, body, proposer_called)  # leaves during the proposer layer
    time.sleep(4.0)  # the proposer answers after 3 s; the aggregator would follow at once
    assert slow_backend.requests["slow"] - before.get("slow", 0) == 1
    assert slow_backend.requests["agg"] - before.get("agg", 0) == 0


def test_a_client_that_waits_gets_the_aggregators_answer(slow_backend, slow_url):
    before = slow_backend.requests["agg"]
    body = {"model": "slow", "messages": [{"role": "user", "content": "q"}]}
    response = httpx.post(slow_url, json=body, timeout=10)
    assert response.json()["choices"][0]["message"]["content"].startswith("agg answer")
    assert slow_backend.requests["agg"] - before == 1


def test_the_openai_client_reads_the_request_id_over_http(client):
    """Over a real socket, the ID the client sent comes back where the SDK looks for it."""
    answer = client.chat.completions.create(
        model="fake-moa",
        messages=[{"role": "user", "content": "q"}],
        extra_headers={"X-Request-ID": "it-1"},
    )
    assert answer._request_id == "it-1"
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "q"}])
    assert caught.value.request_id and caught.value.body["request_id"] == caught.value.request_id
