"""`moa serve` behind a prefix and across origins: every response a browser may read."""

import json
import re
from urllib.parse import urljoin

import pytest
from fastapi.testclient import TestClient

from langgraph_moa import MoAConfig
from langgraph_moa.serving import _guard
from langgraph_moa.serving._app import create_app
from langgraph_moa.serving._guard import ServeSecurity, served_under
from langgraph_moa.serving._server import stacked

USER = [{"role": "user", "content": "Explain X"}]
PAGE = "https://app.example"
ORIGIN = {"origin": PAGE}


@pytest.fixture
def system(fake):
    return MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2, name="m")


def _served(system, lines=None, **security):
    """`moa serve`'s whole stack under /moa, a page on `PAGE` allowed, and its log's lines."""
    security = ServeSecurity(allowed_origins=(PAGE,), **security)
    app = create_app({"m": system}, security=security)
    write = (lines if lines is not None else []).append
    stack = stacked(app, ["m"], security, write, "/moa")
    return TestClient(stack, base_url="http://localhost", raise_server_exceptions=False)


def _allowed(response):
    return response.headers.get("access-control-allow-origin") == PAGE


def _chat(client, path="/moa/v1/chat/completions", headers=None):
    body = json.dumps({"model": "m", "messages": USER})
    headers = {"content-type": "application/json", **ORIGIN, **(headers or {})}
    return client.post(path, content=body, headers=headers)


def test_every_response_to_an_allowed_origin_carries_its_cors_headers(system, monkeypatch):
    """/health, the crash's 500, the forwarded-client cap's 429 and the prefix's redirect were
    answered around the CORS middleware: the browser hid their status from an allowed page,
    which read a network error instead of "busy", "crashed" or "too many requests"."""
    from langgraph_moa.serving import _app

    client = _served(system)
    health = client.get("/moa/health", headers=ORIGIN)
    assert health.status_code == 200 and _allowed(health), health.headers
    moved = client.get("/moa", headers=ORIGIN, follow_redirects=False)
    assert moved.status_code == 307 and _allowed(moved), moved.headers
    answer = _chat(client)
    assert answer.status_code == 200 and _allowed(answer)
    assert answer.headers["vary"] == "Origin"  # added once, not once per layer
    exposed = answer.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed and "x-moa-degraded" in exposed

    def crash(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(_app, "_completion", crash)
    crashed = _chat(client)
    assert crashed.status_code == 500 and _allowed(crashed), crashed.headers
    bare = TestClient(  # the app alone, as a Python caller serves it
        create_app({"m": system}, security=ServeSecurity(allowed_origins=(PAGE,))),
        base_url="http://localhost",
        raise_server_exceptions=False,
    )
    crashed = _chat(bare, "/v1/chat/completions")
    assert crashed.status_code == 500 and _allowed(crashed), crashed.headers


def test_the_forwarded_client_caps_429_carries_the_cors_headers(system, monkeypatch):
    capped = _guard._ForwardedClients.__init__

    def no_room(self, app, security):
        capped(self, app, security)
        self.limit = 0  # every forwarded client is over its cap

    monkeypatch.setattr(_guard._ForwardedClients, "__init__", no_room)
    client = _served(system, forwarded_allow_ips=("*",))
    refused = _chat(client, headers={"x-forwarded-for": "203.0.113.7"})
    assert refused.status_code == 429 and _allowed(refused), refused.headers


def test_an_origin_not_allowed_gets_no_cors_headers_anywhere(system):
    client = _served(system)
    other = {"origin": "https://evil.example"}
    for response in (
        client.get("/moa/health", headers=other),
        client.get("/moa", headers=other, follow_redirects=False),
    ):
        assert "access-control-allow-origin" not in response.headers, response.headers


def test_the_redirect_of_the_bare_prefix_writes_its_log_line(system):
    """``/moa`` -> ``./moa/`` was answered outside the access log: the one request of a
    proxy's misrouted clients the operator could not see."""
    lines: list[str] = []
    client = _served(system, lines)
    moved = client.get("/moa", follow_redirects=False)
    assert moved.status_code == 307
    assert len(lines) == 1, lines
    assert lines[0].startswith("GET /moa 307 · "), lines
    assert lines[0].endswith(f"request {moved.headers['x-request-id']}"), lines


@pytest.mark.parametrize(
    ("docs", "find"), [("docs", r"url: '([^']+)'"), ("redoc", r'spec-url="([^"]+)"')]
)
def test_the_docs_page_loads_its_schema_under_the_prefix(system, docs, find):
    """``--docs`` behind ``--root-path /moa``: the page at /moa/docs loaded /openapi.json from
    the root, which the proxy does not send to the server, and showed an error."""
    client = _served(system, docs=True)
    page_url = f"http://localhost/moa/{docs}"
    page = client.get(page_url)
    assert page.status_code == 200
    schema_url = urljoin(page_url, re.search(find, page.text).group(1))
    assert schema_url == "http://localhost/moa/openapi.json"
    assert client.get(schema_url).json()["info"]["title"] == "langgraph-moa"
    direct = TestClient(
        served_under(create_app({"m": system}, security=ServeSecurity(docs=True)), "/moa"),
        base_url="http://localhost",
    )
    root_page = direct.get(f"/{docs}")  # no prefix: the schema at the root
    assert urljoin(f"http://localhost/{docs}", re.search(find, root_page.text).group(1)) == (
        "http://localhost/openapi.json"
    )


def test_the_docs_pages_try_it_out_calls_the_api_under_the_prefix(system):
    """The schema named no server, which OpenAPI reads as ``/``: Swagger UI's "Try it out" on
    /moa/docs sent /v1/chat/completions to the host's root, outside the proxy's prefix. Its
    server is now relative to the schema's own URL, as the pages' link to it is."""
    client = _served(system, docs=True)
    for schema_url, api in [
        ("http://localhost/moa/openapi.json", "http://localhost/moa/v1/chat/completions"),
        ("http://localhost/openapi.json", "http://localhost/v1/chat/completions"),
    ]:
        schema = client.get(schema_url).json()
        assert "/v1/chat/completions" in schema["paths"]
        servers = schema.get("servers") or [{"url": "/"}]  # OpenAPI's default
        base = urljoin(schema_url, servers[0]["url"]).rstrip("/")
        assert base + "/v1/chat/completions" == api, servers


def test_an_allowed_origin_written_as_an_address_bar_shows_it_gets_its_cors_headers(system):
    """``--allowed-origin https://App.example/`` (a trailing slash, capitals): the origin
    check let the page in, lowercased and without the slash, but the CORS layers compared the
    flag as written, so the preflight was a 400 and every answer hid from the page."""
    security = ServeSecurity(allowed_origins=("https://App.example/",))
    app = create_app({"m": system}, security=security)
    stack = stacked(app, ["m"], security, lambda line: None, "/moa")
    client = TestClient(stack, base_url="http://localhost")
    preflight = client.options(
        "/moa/v1/chat/completions",
        headers={**ORIGIN, "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 200 and _allowed(preflight), preflight.text
    answer = _chat(client)
    assert answer.status_code == 200 and _allowed(answer), answer.headers
    health = client.get("/moa/health", headers=ORIGIN)
    assert _allowed(health), health.headers


@pytest.mark.parametrize("sent", ["https://app.example/", "HTTPS://App.Example"])
def test_an_origin_the_guard_lets_in_gets_its_cors_headers_everywhere(system, sent):
    """The origin check read the request's ``Origin`` lowercased and without a trailing slash,
    the CORS layers as sent: ``https://app.example/`` passed the check and got a 200 with no
    CORS headers (and its preflight a 400). Every layer now reads it one way."""
    client = _served(system)
    preflight = client.options(
        "/moa/v1/chat/completions",
        headers={"origin": sent, "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == sent
    answer = _chat(client, headers={"origin": sent})
    assert answer.status_code == 200
    assert answer.headers.get("access-control-allow-origin") == sent, answer.headers
    health = client.get("/moa/health", headers={"origin": sent})
    assert health.headers.get("access-control-allow-origin") == sent, health.headers


@pytest.mark.parametrize("name", ["origin", "host"])
def test_a_request_that_repeats_origin_or_host_is_refused_with_a_sentence(system, name):
    """With ``Origin: evil`` then ``Origin: page``, the browser guard read the last (allowed)
    and the CORS layers the first (not allowed): a 200 with no CORS headers, each layer judging
    a different origin. No browser sends either header twice (RFC 6454, RFC 9110), so such a
    request is refused before any layer can read one of the two."""
    client = _served(system)
    first = "https://evil.example" if name == "origin" else "evil.example"
    last = PAGE if name == "origin" else "localhost"
    body = json.dumps({"model": "m", "messages": USER})
    headers = [("content-type", "application/json"), (name, first), (name, last)]
    answer = client.post("/moa/v1/chat/completions", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "repeated_header"
    assert error["message"].startswith(f"The header {name.title()!r} was sent twice")
    assert not _allowed(answer)  # the first Origin is not allowed: no layer reads the last
    health = client.get("/moa/health", headers=[(name, first), (name, last)])
    assert "models" not in health.json()  # /health tells it what it tells any client


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"origin": "http://127.0.0.1:8000"}, 200),  # the server's own page
        ({"origin": "http://127.0.0.1:9999"}, 403),  # another local server's page
        ({"origin": "http://localhost:8000"}, 403),  # another name is another origin
        ({"sec-fetch-site": "cross-site"}, 403),  # a browser that sent no Origin
        ({"sec-fetch-site": "same-origin"}, 200),
    ],
)
def test_only_the_servers_own_origin_passes_the_browser_guard(headers, status):
    """A page is the server's own only at its exact scheme-less authority, port included."""
    guard = _guard.BrowserGuard(app=None, security=ServeSecurity())
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/health",
        "headers": [(b"host", b"127.0.0.1:8000")]
        + [(name.encode(), value.encode()) for name, value in headers.items()],
    }
    refusal = guard.refusal(scope)
    assert (refusal[0] if refusal else 200) == status


def test_no_page_of_another_origin_is_told_it_may_delete_a_run(system):
    """The run routes refuse every page but the server's own, an --allowed-origin's too
    (`_ui._check_origin`): the CORS layer granted such a page DELETE in its preflight,
    then the DELETE itself was a 403, for a route no other page can use."""
    client = _served(system)
    preflight = client.options(
        "/moa/v1/moa/runs/abc", headers={**ORIGIN, "access-control-request-method": "DELETE"}
    )
    assert "DELETE" not in preflight.headers.get("access-control-allow-methods", "")
    refused = client.delete("/moa/v1/moa/runs/abc", headers=ORIGIN)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "origin_not_allowed"
    other = client.options(
        "/moa/v1/moa/runs/abc",
        headers={"origin": "https://evil.example", "access-control-request-method": "DELETE"},
    )
    assert "access-control-allow-origin" not in other.headers
