"""`moa serve`'s request ID: one key for the client, the access log, the error and the trace."""

import json
import re

import pytest
from fastapi.testclient import TestClient

from langgraph_moa import MoAConfig
from langgraph_moa.serving._access import AccessLog
from langgraph_moa.serving._app import create_app
from tests.unit_tests.test_serve import _failing_system

USER = [{"role": "user", "content": "Explain X"}]
JSON = {"content-type": "application/json"}
GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def system(fake):
    return MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2, name="m")


def logged(app):
    """Return a loopback test client of `app` behind the access log, and the log's lines."""
    lines: list[str] = []
    return TestClient(AccessLog(app, ["m"], lines.append), base_url="http://localhost"), lines


def chat(client, body, headers=None):
    payload = json.dumps(body)
    return client.post("/v1/chat/completions", content=payload, headers={**JSON, **(headers or {})})


def test_a_clients_request_id_comes_back_and_is_in_the_access_log(system):
    client, lines = logged(create_app({"m": system}))
    response = chat(client, {"model": "m", "messages": USER}, {"X-Request-ID": "abc-123_x.y"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "abc-123_x.y"
    assert "request abc-123_x.y" in lines[0], lines


@pytest.mark.parametrize(
    "sent",
    [
        "a" * 129,  # unbounded
        "id\x1b[2Jx",  # a terminal escape
        "id forged 200",  # spaces: a forged field of the line
        "",
        "-leading-dash",
        "caf\u00e9",  # not ASCII
    ],
)
def test_an_unsafe_request_id_is_replaced_never_echoed(system, sent):
    client, lines = logged(create_app({"m": system}))
    raw = [(b"content-type", b"application/json"), (b"x-request-id", sent.encode())]
    response = client.post(
        "/v1/chat/completions",
        content=json.dumps({"model": "m", "messages": USER}),
        headers=raw,
    )
    returned = response.headers["x-request-id"]
    assert GENERATED.fullmatch(returned), returned
    assert f"request {returned}" in lines[0]
    if sent:
        assert sent not in lines[0]


def test_every_request_gets_its_own_id_when_the_client_sends_none(system):
    client, _ = logged(create_app({"m": system}))
    ids = {chat(client, {"model": "m", "messages": USER}).headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(GENERATED.fullmatch(i) for i in ids)


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        ("POST", "/v1/chat/completions", {"model": "nope", "messages": USER}, {}, 404),
        ("POST", "/v1/chat/completions", {"model": "m"}, {}, 400),
        ("GET", "/v1/nowhere", None, {}, 404),
        ("POST", "/v1/chat/completions", {}, {"host": "evil.example"}, 421),  # BrowserGuard
        ("POST", "/v1/chat/completions", {}, {"content-type": "text/plain"}, 415),
    ],
)
def test_every_error_carries_the_request_id_in_its_header_and_body(
    system, method, path, body, headers, status
):
    """An error is what a client reports; it must name the request the operator looks up."""
    client, lines = logged(create_app({"m": system}))
    response = client.request(
        method,
        path,
        content=None if body is None else json.dumps(body),
        headers={**JSON, "X-Request-ID": "req-7", **headers},
    )
    assert response.status_code == status, response.text
    assert response.headers["x-request-id"] == "req-7"
    assert response.json()["error"]["request_id"] == "req-7"
    assert len(lines) == 1 and "request req-7" in lines[0], lines


def test_the_key_refusal_carries_the_request_id(system):
    client, _ = logged(create_app({"m": system}, api_key="sekrit-key"))
    response = chat(client, {"model": "m", "messages": USER}, {"X-Request-ID": "req-8"})
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "req-8"
    assert response.json()["error"]["request_id"] == "req-8"


def test_a_stream_and_its_in_band_error_carry_the_request_id(fake):
    client, lines = logged(create_app({"m": _failing_system(fake, delay=0.5)}, keepalive_s=0.05))
    body = {"model": "m", "messages": USER, "stream": True}
    response = chat(client, body, {"X-Request-ID": "req-9"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-9"
    events = [e for e in response.text.split("\n\n") if e]
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert error["request_id"] == "req-9"
    assert "request req-9" in lines[0]


def test_the_openai_sdk_reads_the_request_id_and_the_error_body(system):
    """The SDK reads ``x-request-id`` into ``exc.request_id``; an extra body field is kept."""
    import openai

    transport_client, _ = logged(create_app({"m": system}))
    sdk = openai.OpenAI(
        api_key="none",
        base_url="http://localhost/v1",
        http_client=transport_client,
        max_retries=0,
    )
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(
            model="nope", messages=USER, extra_headers={"X-Request-ID": "sdk-1"}
        )
    assert caught.value.request_id == "sdk-1"
    assert caught.value.code == "model_not_found"
    answer = sdk.chat.completions.create(
        model="m", messages=USER, extra_headers={"X-Request-ID": "sdk-2"}
    )
    assert answer._request_id == "sdk-2"


def test_the_request_id_is_in_the_runs_trace_metadata(system):
    """A LangSmith trace is found by the ID the client and the log hold."""
    from langgraph_moa.config._limits import RequestLimits
    from langgraph_moa.serving._policy import ModelPolicy, _Preparer
    from langgraph_moa.serving._request_id import SCOPE_KEY

    prepare = _Preparer({"m": system}, ModelPolicy.for_systems({"m": system}), RequestLimits())
    raw = json.dumps({"model": "m", "messages": USER, "metadata": {"request_id": "spoof"}})
    job = prepare(raw.encode(), {SCOPE_KEY: "req-10"})
    assert job.config()["metadata"]["request_id"] == "req-10"
    assert job.config()["metadata"]["request_metadata"] == {"request_id": "spoof"}


@pytest.mark.parametrize("stream", [False, True])
def test_one_failed_proposer_is_in_the_log_line_and_the_answer(fake, stream):
    """An answer written without one proposal is not silent: the operator's line counts and
    names the failed call, and the client reads it in ``moa.calls`` (the answer stays a 200)."""
    down = fake("B", fail=lambda n, m: RuntimeError("upstream down"))
    config = MoAConfig(
        proposers=[fake("A"), down], aggregator=fake("AGG"), layers=2, retry={"max_attempts": 1}
    )
    client, lines = logged(create_app({"m": config}))
    response = chat(client, {"model": "m", "messages": USER, "stream": stream})
    assert response.status_code == 200
    if stream:
        chunks = [json.loads(e.removeprefix("data: ")) for e in response.text.split("\n\n")[:-2]]
        moa = next(c["moa"] for c in chunks if "moa" in c)
    else:
        moa = response.json()["moa"]
    assert [c["status"] for c in moa["calls"]].count("failed") == 1, moa["calls"]
    assert "3 calls, 1 failed (B)" in lines[0], lines  # which one: the operator's next question


def test_a_servers_own_crash_still_names_the_request(system, monkeypatch):
    """A bug's 500 was Starlette's bare "Internal Server Error", with no ID: the one
    answer an operator most needs to look up. It is an OpenAI error naming the request."""
    from langgraph_moa.serving import _app

    def crash(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(_app, "_completion", crash)
    lines: list[str] = []
    app = AccessLog(create_app({"m": system}), ["m"], lines.append)
    client = TestClient(app, base_url="http://localhost", raise_server_exceptions=False)
    response = chat(client, {"model": "m", "messages": USER}, {"X-Request-ID": "req-11"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "req-11"
    error = response.json()["error"]
    assert error["request_id"] == "req-11" and error["type"] == "server_error"
    assert "a bug" not in error["message"]  # the operator's log says what broke
    assert "error: RuntimeError: a bug" in lines[0] and "request req-11" in lines[0], lines


def test_an_allowed_origins_page_may_send_and_read_the_request_id(system):
    """A browser drops a header the preflight did not allow, and hides one not exposed."""
    from langgraph_moa.serving._guard import ServeSecurity

    security = ServeSecurity(allowed_origins=("https://app.example",))
    client, _ = logged(create_app({"m": system}, security=security))
    origin = {"origin": "https://app.example"}
    preflight = client.options(
        "/v1/chat/completions",
        headers={
            **origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-request-id",
        },
    )
    assert preflight.status_code == 200, preflight.text
    response = chat(client, {"model": "m", "messages": USER}, {**origin, "X-Request-ID": "web-1"})
    assert response.headers["x-request-id"] == "web-1"
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()


def test_the_run_streams_error_event_carries_the_request_id(fake):
    client, lines = logged(create_app({"m": _failing_system(fake)}, history=None))
    body = json.dumps({"model": "m", "messages": USER})
    response = client.post("/v1/moa/runs", content=body, headers={**JSON, "X-Request-ID": "ui-1"})
    data = [line for line in response.text.splitlines() if line.startswith("data: ")]
    events = [json.loads(line.removeprefix("data: ")) for line in data]
    error = next(e for e in events if isinstance(e, dict) and e.get("event") == "error")
    assert error["request_id"] == "ui-1" == response.headers["x-request-id"]
    assert "request ui-1" in lines[0]


@pytest.mark.parametrize("stream", [False, True])
def test_the_completion_id_leads_to_the_request_when_the_client_sent_none(system, stream):
    """Most OpenAI clients send no X-Request-ID and report the answer's ``chatcmpl-`` id:
    it carries the server's request ID. A client's own ID is not in it: a client may send
    one ID for several requests (retries), and each answer's id stays unique."""
    client, lines = logged(create_app({"m": system}))
    body = {"model": "m", "messages": USER, "stream": stream}

    def answer_id(response):
        if stream:
            return json.loads(response.text.split("\n\n")[0].removeprefix("data: "))["id"]
        return response.json()["id"]

    response = chat(client, body)
    request_id = response.headers["x-request-id"]
    assert answer_id(response) == f"chatcmpl-{request_id}"
    assert f"request {request_id}" in lines[-1]
    ours = [answer_id(chat(client, body, {"X-Request-ID": "mine"})) for _ in range(2)]
    assert len(set(ours)) == 2 and not any("mine" in i for i in ours), ours


def test_a_run_kept_in_the_history_names_its_request(system, tmp_path):
    """A run the page reopens from the history leads to its log line and its trace: its
    ``run`` event holds the request ID, a run that went well as much as a failed one."""
    from langgraph_moa.serving._history import History

    client, lines = logged(create_app({"m": system}, history=History(tmp_path / "runs.db")))
    body = json.dumps({"model": "m", "messages": USER})
    response = client.post("/v1/moa/runs", content=body, headers={**JSON, "X-Request-ID": "ui-2"})
    first = json.loads(response.text.split("\n\n")[0].split("data: ", 1)[1])
    assert first["event"] == "run" and first["request_id"] == "ui-2"
    kept = client.get(f"/v1/moa/runs/{response.headers['x-moa-run']}").json()
    assert kept["status"] == "done"
    assert kept["events"][0]["request_id"] == "ui-2"
    assert "request ui-2" in lines[0]


def test_of_several_request_ids_the_first_safe_one_is_taken():
    # Only the first X-Request-ID was read: an unsafe first one (a client's) made the server
    # invent an ID although a later one (a proxy's, say) was safe, so no log matched it.
    from langgraph_moa.serving._request_id import chosen

    sent = [(b"X-Request-ID", b"bad id!"), (b"accept", b"*/*"), (b"x-request-id", b"proxy-7")]
    assert chosen(sent) == "proxy-7"
    assert chosen([(b"x-request-id", b"first"), (b"x-request-id", b"second")]) == "first"
    assert chosen([(b"x-request-id", b"no good"), (b"x-request-id", b"")]) is None
