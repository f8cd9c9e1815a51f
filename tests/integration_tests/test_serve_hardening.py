"""`moa serve` hardening, second round: real HTTP on loopback against the fake backend.

Each test pins one finding of the adversarial review (issue 21) and failed on the code
before it: browsers and rebinding, the select-preset 500, spliced streams, the keyed
endpoint, token caps, upstream error text, the character count, slow clients.
"""

import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from langgraph_moa import MoAConfig
from langgraph_moa.config._limits import RequestLimits
from langgraph_moa.serving._app import create_app
from langgraph_moa.serving._guard import ServeSecurity, uvicorn_options
from langgraph_moa.testing import BackgroundServer, FaultProfile, FaultServer
from langgraph_moa.transport._net import free_port
from tests.helpers import fake_moa

USER = [{"role": "user", "content": "Explain X"}]
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def backend():
    with FaultServer(default=FaultProfile(latency_s=(0.0, 0.01), reply_words=8)) as server:
        yield server


def serve(systems, security=None, protocol=None, **kwargs):
    """Serve `systems` as `moa serve` does (its protocol, its guards) on a free port.

    `protocol` is uvicorn's protocol class the guard extends (the fastest one if None).
    """
    security = security or ServeSecurity()
    app = create_app(systems, security=security, **kwargs)
    return BackgroundServer(app, **uvicorn_options(security, protocol))


PROTOCOLS = {"httptools": HttpToolsProtocol, "h11": H11Protocol}


@pytest.fixture(scope="module")
def moa(backend):
    with serve({"fake-moa": fake_moa(backend.url)}) as server:
        yield server


def chat(server, body=None, **kwargs):
    body = body or {"model": "fake-moa", "messages": USER}
    if body["model"] == "fake-moa" and "fake-moa" not in server.app.state.models:
        body = {**body, "model": next(iter(server.app.state.models))}
    return httpx.post(f"{server.root}/v1/chat/completions", json=body, timeout=30, **kwargs)


# --- browsers: Origin, Host, content type, docs ---------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        # The simple requests a page on another site sends without a preflight.
        (
            {"content-type": "text/plain", "origin": "https://evil.example"},
            403,
            "origin_not_allowed",
        ),
        (
            {"content-type": "application/x-www-form-urlencoded", "origin": "https://evil.example"},
            403,
            "origin_not_allowed",
        ),
        ({"content-type": "text/plain"}, 415, "unsupported_media_type"),
        ({"content-type": "multipart/form-data; boundary=x"}, 415, "unsupported_media_type"),
        ({"content-type": "application/json", "origin": "null"}, 403, "origin_not_allowed"),
        # A DNS-rebinding page: the browser sends the attacker's name as Host.
        ({"content-type": "application/json", "host": "evil.example"}, 421, "host_not_allowed"),
        ({"content-type": "application/json", "sec-fetch-site": "cross-site"}, 403, None),
    ],
)
def test_cross_site_and_rebinding_requests_are_refused_before_any_call(
    moa, backend, headers, status, code
):
    before = sum(backend.requests.values())
    body = json.dumps({"model": "fake-moa", "messages": USER})
    response = httpx.post(
        f"{moa.root}/v1/chat/completions", content=body, headers=headers, timeout=30
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert code is None or error["code"] == code
    assert "\n" not in error["message"]
    assert sum(backend.requests.values()) == before  # nothing was paid for


def test_same_origin_pages_and_plain_clients_are_served(moa):
    own = moa.root  # a page served by this server (issue 20's web page) posts from here
    assert chat(moa, headers={"origin": own}).status_code == 200
    assert chat(moa, headers={"host": "localhost"}).status_code == 200
    assert chat(moa).status_code == 200


def test_docs_are_off_unless_asked_for(moa, backend):
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert httpx.get(f"{moa.root}{path}").status_code == 404
    systems = {"m": MoAConfig(proposers=[f"p@{backend.url}"], aggregator=f"a@{backend.url}")}
    with serve(systems, ServeSecurity(docs=True)) as server:
        assert httpx.get(f"{server.root}/openapi.json").status_code == 200


def test_an_allowed_origin_gets_cors_and_others_do_not(backend):
    systems = {"m": MoAConfig(proposers=[f"p@{backend.url}"], aggregator=f"a@{backend.url}")}
    security = ServeSecurity(allowed_origins=("https://app.example",))
    with serve(systems, security) as server:
        url = f"{server.root}/v1/chat/completions"
        preflight = httpx.options(
            url,
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        body = {"model": "m", "messages": USER}
        ok = httpx.post(url, json=body, headers={"origin": "https://app.example"}, timeout=30)
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        other = httpx.post(url, json=body, headers={"origin": "https://evil.example"}, timeout=30)
        assert other.status_code == 403


# --- the moa serve command -------------------------------------------------------------------


def _moa(*args, env=None):
    return [sys.executable, "-m", "langgraph_moa", *args]


def _env(**extra):
    return {**os.environ, "PYTHONPATH": SRC, **extra}


def test_moa_serve_checks_host_and_docs_and_refuses_an_empty_key(tmp_path):
    empty = subprocess.run(
        _moa("serve", "-p", "moa-lite", "--api-key", "", "--host", "0.0.0.0"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert empty.returncode != 0
    assert "API key is empty" in empty.stderr and "Traceback" not in empty.stderr
    port = free_port()
    flags = ["--port", str(port), "--allowed-host", "moa.internal"]
    log = (tmp_path / "stderr.txt").open("w")
    server = subprocess.Popen(
        _moa("serve", "-p", "moa-lite", *flags),
        env=_env(TOGETHER_API_KEY="not-a-real-key"),  # checked before serving; never used
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        root = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moa serve did not start"
                assert server.poll() is None, "moa serve exited"
                time.sleep(0.2)
        assert httpx.get(f"{root}/v1/models").status_code == 200
        assert httpx.get(f"{root}/v1/models", headers={"host": "moa.internal:80"}).is_success
        assert httpx.get(f"{root}/v1/models", headers={"host": "evil.example"}).status_code == 421
        assert httpx.get(f"{root}/docs").status_code == 404
        assert httpx.get(f"{root}/openapi.json").status_code == 404
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    warned = " ".join((tmp_path / "stderr.txt").read_text().split())
    assert "moa-lite uses reference_format 'paper', which does not fence proposals" in warned


# --- a select preset with an aggregator ------------------------------------------------------


def test_an_aggregator_on_a_select_preset_is_a_400_and_the_connection_lives_on(backend):
    systems = {
        "vote": MoAConfig(
            variant="select",
            proposers=[{"model": f"p@{backend.url}", "samples": 3}],
            name="vote",
        )
    }
    with serve(systems, allow_models=[f"a@{backend.url}"]) as server, httpx.Client() as http:
        url = f"{server.root}/v1/chat/completions"
        for aggregator in (f"p@{backend.url}", f"a@{backend.url}"):
            body = {"model": "vote", "messages": USER, "aggregator": aggregator}
            response = http.post(url, json=body, timeout=30)
            assert response.status_code == 400, response.text
            message = response.json()["error"]["message"]
            assert "'select' variant" in message and "remove 'aggregator'" in message
        # The same keep-alive connection answers the next request.
        ok = http.post(url, json={"model": "vote", "messages": USER}, timeout=30)
        assert ok.status_code == 200
        # Leaving 'select' for a variant that aggregates is a whole config, and runs.
        body = {"model": "vote", "messages": USER, "variant": "self-moa", "aggregator": None}
        assert http.post(url, json=body, timeout=30).status_code == 200


# --- streams never splice two attempts -------------------------------------------------------


def _stream(server, model):
    """Stream one answer; return its text pieces and the error, if any.

    A run that fails before its first text answers with an error status and body; after
    it, the error comes in-band.
    """
    body = {"model": model, "messages": USER, "stream": True}
    pieces, error, done = [], None, False
    with httpx.stream(
        "POST", f"{server.root}/v1/chat/completions", json=body, timeout=60
    ) as response:
        if response.status_code != 200:
            response.read()
            assert response.status_code >= 400
            return "", response.json()["error"]
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            event = json.loads(line[6:])
            if "error" in event:
                error = event["error"]
            for choice in event.get("choices", []):
                pieces.append(choice["delta"].get("content") or "")
    assert done
    return "".join(pieces), error


@pytest.fixture(scope="module")
def cutting_backend():
    profiles = {
        "cut-always": FaultProfile(error_rate=1.0, errors=["cut"], reply_words=10),
        "cut-often": FaultProfile(error_rate=0.3, errors=["cut"], reply_words=10),
        "fail-before": FaultProfile(error_rate=0.4, errors=["500"], reply_words=10),
    }
    with FaultServer(profiles, default=FaultProfile(reply_words=6), seed=7) as server:
        yield server


@pytest.fixture(scope="module")
def cutting_moa(cutting_backend):
    url = cutting_backend.url
    fast = {"max_attempts": 3, "initial_interval": 0.0, "jitter": False}
    systems = {
        name: MoAConfig(
            proposers=[f"p1@{url}", f"p2@{url}"],
            aggregator=f"{name}@{url}",
            layers=2,
            retry=fast,
            name=name,
        )
        for name in ("cut-always", "cut-often", "fail-before")
    }
    with serve(systems) as server:
        yield server


def test_a_stream_cut_midway_ends_with_an_error_and_never_sends_a_second_attempt(cutting_moa):
    text, error = _stream(cutting_moa, "cut-always")
    # The first attempt's half went out; the retry's text never follows it.
    assert text.count("answer") == 1, text
    assert error is not None and "stream broke" in error["message"]
    assert "\n" not in error["message"]


def test_under_random_cuts_each_stream_is_one_whole_answer_or_an_error(cutting_moa):
    outcomes = {"whole": 0, "error": 0}
    for _ in range(20):
        text, error = _stream(cutting_moa, "cut-often")
        assert text.count("answer") <= 1, f"two attempts spliced: {text!r}"
        if error is None:
            assert len(text.split()) == 10, text  # a whole answer, nothing missing
            outcomes["whole"] += 1
        else:
            outcomes["error"] += 1
    assert outcomes["whole"] > 0 and outcomes["error"] > 0, outcomes


def test_a_failure_before_the_first_token_is_retried_invisibly(cutting_moa, cutting_backend):
    before = cutting_backend.injected_total(["fail-before"])
    for _ in range(8):
        text, error = _stream(cutting_moa, "fail-before")
        assert error is None and text.count("answer") == 1, text
        # The aggregator's whole answer, or (three failures in a row) a labelled fallback.
        assert len(text.split()) == 10 or text.startswith("p"), text
    assert cutting_backend.injected_total(["fail-before"]) > before  # retries did happen


# --- keyed endpoints and account headers -----------------------------------------------------


def test_a_client_naming_the_keyed_endpoint_never_breaks_it_for_others(backend, monkeypatch):
    from langgraph_moa.providers._models import OpenAIEndpoint

    monkeypatch.setenv("KEYED_TEST_KEY", "sekret-123")
    keyed = OpenAIEndpoint(base_url=backend.url, model="keyed", api_key_env="KEYED_TEST_KEY")
    systems = {"m": MoAConfig(proposers=[keyed], aggregator=f"agg@{backend.url}", name="m")}
    with serve(systems) as server:
        # First a client names the endpoint by its label, then others use the preset.
        body = {"model": "m", "messages": USER, "proposers": [keyed.label()]}
        assert chat(server, body).status_code == 200
        assert backend.last_headers["keyed"]["authorization"] == "Bearer sekret-123"
        for i in range(5):
            body = {"model": "m", "messages": USER, "temperature": 0.1 + i / 10}
            assert chat(server, body).status_code == 200
            assert chat(server, {"model": "m", "messages": USER}).status_code == 200
            assert backend.last_headers["keyed"]["authorization"] == "Bearer sekret-123"


def test_client_endpoints_never_get_the_servers_account_headers(backend, monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-SERVERSECRET")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_SERVERSECRET")
    systems = {"m": MoAConfig(proposers=[f"p@{backend.url}"], aggregator=f"a@{backend.url}")}
    with serve(systems, allow_client_endpoints=True) as server:
        chosen = {"base_url": backend.url, "model": "client-chosen"}
        body = {"model": "m", "messages": USER, "proposers": [chosen]}
        assert chat(server, body).status_code == 200
        sent = backend.last_headers["client-chosen"]
        assert "openai-organization" not in sent and "openai-project" not in sent
        assert "SERVERSECRET" not in json.dumps(sent)


# --- token caps, token budget, retries in the call limit, deadlines ---------------------------


def _answer_caps(backend, model):
    return [cap for cap in backend.max_tokens_seen.get(model, []) if cap is not None]


def test_client_token_requests_are_capped_by_the_flag_or_the_preset(backend):
    url = backend.url
    systems = {
        "m": MoAConfig(proposers=[f"p@{url}"], aggregator=f"cap-agg@{url}", name="m"),
        "big": MoAConfig(
            proposers=[f"p@{url}"], aggregator={"model": f"big-agg@{url}", "max_tokens": 8000}
        ),
    }
    with serve(systems) as server:
        for field, value in (("max_tokens", 10**9), ("max_completion_tokens", 2**64)):
            response = chat(server, {"model": "m", "messages": USER, field: value})
            assert response.status_code == 400, response.text
            assert "--max-answer-tokens" in response.json()["error"]["message"]
        assert _answer_caps(backend, "cap-agg") == []  # refused before any call
        assert chat(server, {"model": "m", "messages": USER, "max_tokens": 4096}).is_success
        assert _answer_caps(backend, "cap-agg") == [4096]
        # A preset whose own cap is higher raises the limit for itself.
        assert chat(server, {"model": "big", "messages": USER, "max_tokens": 8000}).is_success
        assert (
            chat(server, {"model": "big", "messages": USER, "max_tokens": 8001}).status_code == 400
        )
    small = {
        "m": MoAConfig(
            proposers=[{"model": f"p@{url}", "max_tokens": 50}],
            aggregator={"model": f"a@{url}", "max_tokens": 50},
        )
    }
    with serve(small, limits=RequestLimits(max_answer_tokens=100)) as server:
        assert chat(server, {"model": "m", "messages": USER, "max_tokens": 100}).is_success
        assert chat(server, {"model": "m", "messages": USER, "max_tokens": 101}).status_code == 400


def test_the_token_budget_flag_stops_a_run_before_the_next_call(backend):
    url = backend.url
    systems = {"m": MoAConfig(proposers=[f"p@{url}"], aggregator=f"budget-agg@{url}", name="m")}
    with serve(systems, limits=RequestLimits(max_run_tokens=5)) as server:
        response = chat(server)
    assert response.status_code == 200, response.text
    assert response.json()["moa"]["fallback"] == "budget"
    assert backend.requests["budget-agg"] == 0


def test_retries_count_in_the_call_limit(backend):
    url = backend.url
    systems = {
        "m": MoAConfig(
            proposers=[f"p1@{url}", f"p2@{url}"], aggregator=f"a@{url}", layers=2, name="m"
        )
    }
    # 3 calls x 3 attempts = 9 requests: served as is; 2 layers more = 7 calls = 21 requests.
    with serve(systems, limits=RequestLimits(max_calls=20)) as server:
        assert chat(server).status_code == 200
        response = chat(server, {"model": "m", "messages": USER, "layers": 4})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "21 model requests" in message and "--max-calls" in message


@pytest.fixture(scope="module")
def slow_backend():
    profiles = {
        "limited": FaultProfile(error_rate=1.0, errors=["429"], retry_after_s=60),
        "hung": FaultProfile(error_rate=1.0, errors=["hang"], hang_s=30),
    }
    with FaultServer(profiles, default=FaultProfile(reply_words=6)) as server:
        yield server


def test_retry_after_past_the_deadline_fails_the_call_at_once(slow_backend):
    url = slow_backend.url
    systems = {
        "m": MoAConfig(proposers=[f"limited@{url}", f"p@{url}"], aggregator=f"a@{url}", layers=2)
    }
    with serve(systems, limits=RequestLimits(request_timeout_s=10)) as server:
        # Waiting out Retry-After: 60 would take a minute; the client gives up at 20 s.
        reply = httpx.post(
            f"{server.root}/v1/chat/completions",
            json={"model": "m", "messages": USER},
            timeout=20,
        ).json()
    limited = [c for c in reply["moa"]["calls"] if c["configured_model"].startswith("limited")]
    assert limited[0]["status"] == "failed"
    assert "past this request's deadline" in limited[0]["error"]
    assert slow_backend.requests["limited"] == 1, limited  # not retried


def test_a_request_past_its_time_limit_is_a_504_or_an_in_band_error(slow_backend):
    url = slow_backend.url
    systems = {"m": MoAConfig(proposers=[f"hung@{url}"], aggregator=f"a@{url}")}
    with serve(systems, limits=RequestLimits(request_timeout_s=1)) as server:
        response = chat(server)
        assert response.status_code == 504
        assert "--request-timeout" in response.json()["error"]["message"]
        text, error = _stream(server, "m")
        assert text == "" and "--request-timeout" in error["message"]


# --- upstream error text ---------------------------------------------------------------------

SERVER_KEY = "server-secret-0123456789"
ORG = "org-SERVERORG123456"


@pytest.fixture(scope="module")
def echo_backend():
    profiles = {"echo": FaultProfile(error_rate=1.0, errors=["echo"])}
    with FaultServer(profiles, default=FaultProfile(reply_words=6)) as server:
        yield server


@pytest.fixture
def echo_moa(echo_backend, monkeypatch):
    from langgraph_moa.providers._models import OpenAIEndpoint

    monkeypatch.setenv("ECHO_UPSTREAM_CRED", SERVER_KEY)  # a name no pattern would guess
    monkeypatch.setenv("OPENAI_ORG_ID", ORG)
    url = echo_backend.url
    echo = OpenAIEndpoint(base_url=url, model="echo", api_key_env="ECHO_UPSTREAM_CRED")
    systems = {
        "all-fail": MoAConfig(proposers=[echo], aggregator=f"a@{url}", layers=2),
        "one-fails": MoAConfig(proposers=[echo, f"p@{url}"], aggregator=f"a@{url}", layers=2),
        "agg-fails": MoAConfig(proposers=[f"p@{url}"], aggregator=echo, layers=2),
    }
    with serve(systems) as server:
        yield server


def _leaks(text):
    return [s for s in (SERVER_KEY, ORG, "SERVERORG") if s in text]


def test_an_upstream_echoing_credentials_leaks_nothing_to_the_client(echo_moa, echo_backend):
    # The upstream did receive the key and repeats it in its error.
    same = {"x-request-id": "r-1"}  # the one field that would tell the two answers apart
    response = chat(echo_moa, {"model": "all-fail", "messages": USER}, headers=same)
    assert echo_backend.last_headers["echo"]["authorization"] == f"Bearer {SERVER_KEY}"
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert _leaks(response.text) == [] and "\n" not in message and len(message) < 400
    assert message.startswith("All 1 proposer calls of layer 1 failed")
    streamed = chat(echo_moa, {"model": "all-fail", "messages": USER, "stream": True}, headers=same)
    assert streamed.status_code == 502 and streamed.json() == response.json()  # before any text
    assert _leaks(streamed.text) == []
    for model in ("one-fails", "agg-fails"):  # a 200 with the failed call in moa.calls
        response = chat(echo_moa, {"model": model, "messages": USER})
        assert response.status_code == 200
        failed = [c for c in response.json()["moa"]["calls"] if c["status"] == "failed"]
        assert failed and all("[redacted]" in c["error"] for c in failed), [
            c["error"] for c in failed
        ]
        assert _leaks(response.text) == []


def test_the_python_api_sees_redacted_errors_too(echo_backend, monkeypatch):
    from langgraph_moa import AllProposersFailedError, create_moa_graph
    from langgraph_moa.providers._models import OpenAIEndpoint

    monkeypatch.setenv("ECHO_UPSTREAM_CRED", SERVER_KEY)
    echo = OpenAIEndpoint(base_url=echo_backend.url, model="echo", api_key_env="ECHO_UPSTREAM_CRED")
    graph = create_moa_graph(MoAConfig(proposers=[echo], aggregator=echo, layers=2))
    with pytest.raises(AllProposersFailedError) as raised:
        graph.invoke({"messages": [("user", "q")]})
    assert _leaks(str(raised.value)) == [] and _leaks(json.dumps(raised.value.calls)) == []
    cause = raised.value.calls[0]["error"]
    assert "authorization: [redacted]" in cause.lower() or "bearer [redacted]" in cause.lower()


# --- the character limit counts every character sent ----------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": "hi", "name": "n" * 1200},
        {"role": "user", "content": [{"type": "text", "text": "t" * 600}] * 2},
        {"role": "user", "content": [{"type": "text", "text": "t" * 400, "extra": "e" * 800}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c" * 1200, "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
    ],
)
def test_max_chars_counts_every_character_sent(backend, message):
    systems = {"m": MoAConfig(proposers=[f"chars@{backend.url}"], aggregator=f"a@{backend.url}")}
    before = backend.requests["chars"]
    with serve(systems, limits=RequestLimits(max_chars=1000)) as server:
        body = {"model": "m", "messages": [message, {"role": "user", "content": "go"}]}
        response = chat(server, body)
    assert response.status_code == 400, response.text
    assert "--max-chars" in response.json()["error"]["message"]
    assert backend.requests["chars"] == before


def test_content_parts_are_bounded_apart_from_characters(backend):
    # 29,000 one-letter parts are 145,000 characters, under the default --max-chars, yet
    # LangChain and the OpenAI SDK convert each part on every call, on the event loop:
    # such a body held the server for seconds. The parts limit refuses it before any call.
    systems = {"m": MoAConfig(proposers=[f"parts@{backend.url}"], aggregator=f"a@{backend.url}")}
    before = backend.requests["parts"]
    many = {"role": "user", "content": [{"type": "text", "text": "w"}] * 29_000}
    with serve(systems) as server:
        response = chat(server, {"model": "m", "messages": [many]})
        assert response.status_code == 400, response.text
        assert "29000 content parts" in response.json()["error"]["message"]
        assert "--max-parts" in response.json()["error"]["message"]
        assert backend.requests["parts"] == before  # refused before any call
        few = {"role": "user", "content": [{"type": "text", "text": "w"}] * 8}
        assert chat(server, {"model": "m", "messages": [few]}).status_code == 200
    assert backend.requests["parts"] > before


def test_a_text_part_whose_text_is_not_a_string_is_refused(moa):
    body = {
        "model": "fake-moa",
        "messages": [{"role": "user", "content": [{"type": "text", "text": ["a"] * 9}]}],
    }
    response = chat(moa, body)
    assert response.status_code == 400 and "string 'text'" in response.json()["error"]["message"]


# --- slow clients ----------------------------------------------------------------------------


def _closed_by_server(sock, wait_s=15):
    """Return what the server sent before closing the connection (None if it never closed)."""
    sock.settimeout(wait_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return None
    return received


@pytest.fixture(scope="module", params=list(PROTOCOLS))
def guarded(request):
    # A backend slower than the head deadline: a request being answered is never cut off.
    with FaultServer(default=FaultProfile(latency_s=(1.0, 1.0), reply_words=4)) as backend:
        systems = {"m": MoAConfig(proposers=[f"p@{backend.url}"], aggregator=f"a@{backend.url}")}
        security = ServeSecurity(
            header_timeout_s=0.5, body_timeout_s=0.5, max_connections_per_client=4
        )
        with serve(systems, security, PROTOCOLS[request.param]) as server:
            yield server


def test_the_head_deadline_spares_requests_being_answered_and_keep_alive(guarded):
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    with _connect(guarded) as sock:
        sock.settimeout(30)
        for _ in range(2):  # two answers of about 2 s each (2 layers) on one connection
            sock.sendall(request)
            reply = b""
            while b'"object":"chat.completion"' not in reply:
                chunk = sock.recv(65536)
                assert chunk, reply  # the server closed the connection mid-answer
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 200")
        # Then, idle past the deadline, the connection is closed.
        assert _closed_by_server(sock, wait_s=5) == b""


def _connect(server, source="127.0.0.1"):
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", server.port))
    return sock


def test_a_request_head_that_never_ends_is_cut_off(guarded):
    with _connect(guarded) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        assert _closed_by_server(sock) == b""
    # An idle connection that sends nothing at all goes the same way.
    with _connect(guarded) as sock:
        assert _closed_by_server(sock) == b""


def test_a_body_that_never_ends_gets_a_408(guarded):
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model"'
    )
    with _connect(guarded) as sock:
        sock.sendall(head)
        received = _closed_by_server(sock)
    assert received is not None and received.startswith(b"HTTP/1.1 408")
    assert b"body_timeout" in received


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_one_address_cannot_hold_every_connection(backend, protocol):
    systems = {"m": MoAConfig(proposers=[f"p@{backend.url}"], aggregator=f"a@{backend.url}")}
    # Heads may take 60 s here: a connection closed sooner was refused for the limit.
    security = ServeSecurity(header_timeout_s=60, max_connections_per_client=4)
    with serve(systems, security, PROTOCOLS[protocol]) as server:
        _flood(server)


def _flood(guarded):
    # 127.0.0.2 stands for a client flooding the server; 127.0.0.1 for everyone else.
    held = [_connect(guarded, "127.0.0.2") for _ in range(4)]
    try:
        for sock in held:  # each sends part of a head, resetting nothing
            sock.sendall(b"GET /v1/models HTTP/1.1\r\n")
        extra = _connect(guarded, "127.0.0.2")
        with extra:
            assert _closed_by_server(extra, wait_s=5) == b""  # closed at once, unserved
        assert httpx.get(f"{guarded.root}/v1/models").status_code == 200
        held.pop().close()  # once one of its connections ends, the address may open another
        time.sleep(0.2)
        held.append(_connect(guarded, "127.0.0.2"))
        held[-1].sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        held[-1].settimeout(10)
        assert held[-1].recv(12) == b"HTTP/1.1 200"
    finally:
        for sock in held:
            sock.close()


# --- what the operator sees: the load ---------------------------------------------------------


def test_health_counts_streams_in_flight_and_counts_out_every_client_that_left():
    """/health told an operator nothing of the load; it now says `in_flight`. A stream whose
    client reads one chunk and leaves is counted while it runs and out once it has stopped:
    after many such clients nothing is left counted (the runs were cancelled, not kept)."""
    from langgraph_moa.serving._access import AccessLog

    slow = FaultProfile(token_s=0.05, reply_words=400)  # a 20 s answer, never waited for
    # keepalive_s: the stream's status goes out at its first keep-alive, not after 20 s.
    with FaultServer(default=slow) as upstream:
        served = create_app({"fake-moa": fake_moa(upstream.url)}, keepalive_s=0.2)
        app = AccessLog(served, ["fake-moa"], lambda line: None)
        with BackgroundServer(app, **uvicorn_options(ServeSecurity())) as server:
            body = {"model": "fake-moa", "messages": USER, "stream": True}
            for _ in range(12):
                with httpx.Client(timeout=30) as client:
                    url = f"{server.root}/v1/chat/completions"
                    with client.stream("POST", url, json=body) as stream:
                        chunks = stream.iter_bytes()  # kept: a dropped iterator closes it
                        next(chunks)  # the answer has started (a keep-alive); then leave
                        health = httpx.get(f"{server.root}/health").json()
                        assert health["in_flight"] == 1
            deadline = time.monotonic() + 20  # the server notices each disconnect
            while httpx.get(f"{server.root}/health").json()["in_flight"] and (
                time.monotonic() < deadline
            ):
                time.sleep(0.05)
            assert httpx.get(f"{server.root}/health").json()["in_flight"] == 0


# --- behind a proxy: the forwarded client address --------------------------------------------


def _behind(security, lines):
    """Serve a tiny app as `moa serve` stacks it: the forwarded address, the log, the guard."""
    from langgraph_moa.serving._server import stacked

    systems = {
        "m": MoAConfig(proposers=["p@http://127.0.0.1:9/v1"], aggregator="a@http://127.0.0.1:9/v1")
    }
    app = create_app(systems, security=security)
    return BackgroundServer(
        stacked(app, ["m"], security, lines.append, ""), **uvicorn_options(security)
    )


def _until(done, wait_s=30):
    """Poll `done` until it holds, for at most `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while not done():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)


def _held_request(server, forwarded_for):
    """Open a request that stays in flight (its body never ends), as a proxy relays one."""
    sock = _connect(server)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
        b"Content-Type: application/json\r\nX-Forwarded-For: " + forwarded_for + b"\r\n\r\n{"
    )
    return sock


def test_the_log_names_the_client_and_trusts_a_forwarded_address_only_from_a_trusted_proxy():
    # The access log named no client; uvicorn's default trusted X-Forwarded-For from any
    # loopback client, so a local process could have written any address there.
    lines: list[str] = []
    with _behind(ServeSecurity(), lines) as server:
        httpx.get(f"{server.root}/v1/models", headers={"x-forwarded-for": "203.0.113.9"})
    assert lines[-1].count(" · 127.0.0.1 · request ") == 1 and "203.0.113.9" not in lines[-1], lines
    lines.clear()
    with _behind(ServeSecurity(forwarded_allow_ips=("127.0.0.1",)), lines) as server:
        httpx.get(f"{server.root}/v1/models", headers={"x-forwarded-for": "203.0.113.9"})
    assert lines[-1].count(" · 203.0.113.9 · request ") == 1, lines


def test_behind_a_trusted_proxy_the_connection_cap_counts_each_forwarded_client():
    # Behind a proxy every client had the proxy's address: the per-address cap counted
    # them all as one, and a few busy clients locked everyone else out. Connections from
    # the trusted proxy are no longer capped as one client; each forwarded client is.
    security = ServeSecurity(
        forwarded_allow_ips=("127.0.0.1",),
        max_connections_per_client=2,
        header_timeout_s=60,
        body_timeout_s=60,
    )
    lines: list[str] = []
    with _behind(security, lines) as server:
        held = [_held_request(server, b"203.0.113.9") for _ in range(2)]
        held += [_held_request(server, b"198.51.100.4") for _ in range(2)]  # 4 from the proxy
        try:
            _until(lambda: httpx.get(f"{server.root}/health").json()["in_flight"] == 4)
            with _held_request(server, b"203.0.113.9") as third:
                third.settimeout(10)
                refusal = third.recv(65536)
            assert refusal.startswith(b"HTTP/1.1 429")
            request_id = re.search(rb"(?i)\r\nx-request-id: ([0-9a-f]{32})\r\n", refusal)
            assert request_id, refusal  # the refusal names its request, as every answer does
            _until(lambda: any(" 429 · " in line for line in lines))
            refused = next(line for line in lines if " 429 " in line)
            assert refused.endswith(f" · 203.0.113.9 · request {request_id[1].decode()}"), refused
            other = httpx.get(f"{server.root}/v1/models", headers={"x-forwarded-for": "192.0.2.1"})
            assert other.status_code == 200
        finally:
            for sock in held:
                sock.close()


# --- clients that stop reading ---------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_stalled_readers_models_wait_for_it_on_both_event_loops(monkeypatch, loop):
    """A client that reads nothing holds its run's models back: an OpenAI-compatible
    backend writing 30,000 words at about 1,000 a second has its stream read no further
    than the relay's bound (a few hundred words here), on uvloop (which moa serve runs on)
    as on asyncio, and the run's deadline still ends the call waiting for the reader."""
    from langgraph_moa.serving import _events
    from tests.helpers import _stalled_exchange, _until

    taken = {"tokens": 0, "cancelled": 0}
    wait = _events.ReaderPace.on_llm_new_token

    async def counted(self, token, **kwargs):
        taken["tokens"] += 1
        try:
            await wait(self, token, **kwargs)
        except BaseException:
            taken["cancelled"] += 1
            raise

    monkeypatch.setattr(_events.ReaderPace, "on_llm_new_token", counted)
    monkeypatch.setattr(_events, "PENDING_CHARS", 50_000)  # some 250 chunks
    body = json.dumps({"model": "fake-moa", "messages": USER, "stream": True}).encode()
    profiles = {"agg": FaultProfile(reply_words=30_000, token_s=0.001)}

    async def stalled(url: str) -> None:
        app = create_app(
            {"fake-moa": fake_moa(url)},
            security=ServeSecurity(body_timeout_s=600),
            limits=RequestLimits(request_timeout_s=8),
        )
        gone = asyncio.Event()
        served = asyncio.ensure_future(
            app(*_stalled_exchange("/v1/chat/completions", body, gone)[:3])
        )
        try:  # until the deadline cancels the call waiting for the reader
            await _until(lambda: taken["cancelled"] or taken["tokens"] >= 30_000, 40)
        finally:
            gone.set()
            await asyncio.wait_for(served, 10)

    with FaultServer(profiles, default=FaultProfile(reply_words=4)) as upstream:
        if loop == "uvloop":
            pytest.importorskip("uvloop").run(stalled(upstream.url))
        else:
            asyncio.run(stalled(upstream.url))
    # Unbounded: every word the backend wrote in 8 s (thousands); bounded: about 250.
    assert taken["cancelled"] == 1 and taken["tokens"] <= 1_500, taken


PIPELINED = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
"""A request sent right behind another on its connection, before that one's answer."""


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
@pytest.mark.parametrize("then", ["", PIPELINED], ids=["alone", "pipelined"])
def test_a_stream_the_server_cuts_is_logged_as_cut_not_as_an_asgi_error(protocol, then, caplog):
    """A stream cut by the server (its client left a piece unread past --body-timeout) was
    logged as a plain 200, plus uvicorn's ERROR "ASGI callable returned without completing
    response", and its connection stayed open while the unsent bytes waited. The access
    line now says why it was cut, uvicorn logs no error, and the connection is closed.

    Pipelined: httptools reads the next request's head while the first is answered, and its
    protocol's current cycle is then that one: the close hook marked it, not the cut one,
    which logged the ERROR after all.
    """
    from langgraph_moa.serving._access import AccessLog
    from tests.fakes import FakeChat, WordStreamer

    answer = WordStreamer(label="A" * 200, words=20_000)  # 4 MB: past the sockets' buffers
    systems = {"m": MoAConfig(proposers=[FakeChat(label="P")], aggregator=answer, layers=2)}
    security = ServeSecurity(body_timeout_s=0.5)
    lines: list[str] = []
    app = AccessLog(create_app(systems, security=security), ["m"], lines.append)
    body = json.dumps({"model": "m", "messages": USER, "stream": True})
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}{then}"
    ).encode()
    with BackgroundServer(app, **uvicorn_options(security, PROTOCOLS[protocol])) as server:
        uvicorn_log = logging.getLogger("uvicorn.error")  # configured as the server started:
        uvicorn_log.addHandler(caplog.handler)  # it does not reach the root logger
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills soon
        with sock:
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(request)
            deadline = time.monotonic() + 60
            while not lines and time.monotonic() < deadline:  # reads nothing meanwhile
                time.sleep(0.05)
            received = _closed_by_server(sock, wait_s=30)  # the connection is closed
        uvicorn_log.removeHandler(caplog.handler)
    assert received is not None and received.startswith(b"HTTP/1.1 200")
    assert b"[DONE]" not in received and not received.endswith(b"0\r\n\r\n")  # cut short
    assert "without completing response" not in caplog.text
    assert len(lines) == 1 and " 200 · m · cut: a piece of the answer unread" in lines[0]
