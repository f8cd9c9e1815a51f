"""`create_app` mounted in an embedder's own app (``parent.mount("/moa", create_app(...))``).

Starlette hands a mounted app the whole path (``/moa/ui``) with the prefix in ``root_path``:
the app's guards, which read the path, must read it under the prefix as its routes do.
"""

import asyncio
import json

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from langgraph_moa import MoAConfig
from langgraph_moa.serving import create_app
from langgraph_moa.serving._guard import ServeSecurity
from tests.helpers import _until

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Explain X"}]})
KEY = {"authorization": "Bearer k"}
JSON = {"content-type": "application/json"}


@pytest.fixture
def system(fake):
    return MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2, name="m")


def mounted(app):
    """The embedder's app, with its own middleware, serving `app` under /moa."""
    parent = FastAPI()

    @parent.middleware("http")
    async def tag(request, call_next):
        response = await call_next(request)
        response.headers["x-parent"] = "1"
        return response

    parent.mount("/moa", app)
    return parent


def test_the_page_and_its_files_load_without_the_key_under_a_mount(system):
    """The page's shell asks for the key itself: under /moa it was refused 401, so a keyed
    app mounted by an embedder had no page at all."""
    client = TestClient(
        mounted(create_app({"m": system}, api_key="k")), base_url="http://localhost"
    )
    for path in ("/moa/ui", "/moa/ui/static/app.js", "/moa/ui/static/style.css"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["x-parent"] == "1"
    assert client.get("/moa/v1/models").status_code == 401  # the API still wants the key
    assert client.get("/moa/v1/models", headers=KEY).status_code == 200


def test_a_body_not_sent_as_json_is_refused_under_a_mount(system):
    """The 415 keeps a cross-site form (text/plain, no preflight) from starting a paid run;
    under /moa the path did not start with /v1/ and the run went ahead."""
    client = TestClient(mounted(create_app({"m": system})), base_url="http://localhost")
    response = client.post(
        "/moa/v1/chat/completions", content=BODY, headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_the_run_cap_counts_runs_under_a_mount(fake):
    """``max_runs`` bounds the runs in flight; under /moa none was counted, so none was
    ever refused."""
    slow = fake("A", delay=lambda n: 30 if n == 1 else 0)
    config = MoAConfig(proposers=[slow], aggregator=fake("AGG"), layers=2, name="m")
    app = create_app({"m": config}, security=ServeSecurity(max_runs=1))

    async def scenario():
        transport = httpx.ASGITransport(app=mounted(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
            first = asyncio.create_task(
                http.post("/moa/v1/chat/completions", content=BODY, headers=JSON)
            )
            try:
                counted = await _until(lambda: app.state.run_load.running == 1, 10)
                refused = await http.post("/moa/v1/chat/completions", content=BODY, headers=JSON)
            finally:
                first.cancel()
                slow.release()
            return counted, refused

    counted, refused = asyncio.run(scenario())
    assert counted
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "too_many_runs"


def test_a_chat_completion_and_its_stream_are_answered_under_a_mount(system):
    client = TestClient(mounted(create_app({"m": system})), base_url="http://localhost")
    answer = client.post("/moa/v1/chat/completions", content=BODY, headers=JSON)
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"]
    body = {**json.loads(BODY), "stream": True}
    stream = client.post("/moa/v1/chat/completions", content=json.dumps(body), headers=JSON)
    assert stream.status_code == 200
    assert stream.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MOA_HTTP_TRANSPORT", "bogus"),
        ("MOA_MAX_RESPONSE_BYTES", "lots"),
        ("LANGGRAPH_MOA_SHARE_CORES", "maybe"),
        ("LANGGRAPH_MOA_CACHE", "relative/cache"),
        ("LANGGRAPH_MOA_THREADS", "0"),
        ("LANGGRAPH_MOA_SLOTS", "many"),
        ("LANGGRAPH_MOA_CONTEXT", "lots"),
    ],
)
def test_a_bad_process_setting_is_refused_when_the_app_is_built(
    system, monkeypatch, variable, value
):
    """`moa serve` reads these before it starts; an embedder's `create_app` did not, and each
    request that reached one answered 400 ``invalid_request_error``, blaming its client for
    the server's setting."""
    from langgraph_moa.errors import MoAConfigError

    monkeypatch.setenv(variable, value)
    with pytest.raises(MoAConfigError, match=variable):
        create_app({"m": system})


def test_a_served_config_whose_key_is_missing_builds_and_its_requests_name_the_key(monkeypatch):
    """`moa serve` refuses to start without a served config's key; `create_app` builds (an
    embedder may set the key at its service's start, after the app is built), and a request
    while it is missing answers 500 naming the variable, the operator's fix, not the client's."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = MoAConfig(proposers=["openai:gpt-4o-mini"] * 2, aggregator="openai:gpt-4o")
    client = TestClient(mounted(create_app({"m": config})), base_url="http://localhost")
    response = client.post("/moa/v1/chat/completions", content=BODY, headers=JSON)
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "server_configuration_error"
    assert "OPENAI_API_KEY" in error["message"]
