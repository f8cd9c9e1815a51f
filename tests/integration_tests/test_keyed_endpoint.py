"""An endpoint whose key is in its URL's query string (``?key=...``) is called with it.

A loopback stand-in notes every request's path and query: the SDK joins ``chat/completions``
onto the base URL's path, so the query must travel as a query, not as part of the path.
"""

import asyncio
import http.server
import json
import threading
from typing import ClassVar

import pytest

from langgraph_moa.providers._models import ModelCache, build_model
from tests.helpers import chat_completion, reply_json

SECRET = "AIzaSyK3yInTh3Qu3ry"
OTHER = "AIzaSyAn0th3rK3y00"
REFUSED = "AIzaSyR3fu53dK3y00"
BROKEN = "AIzaSyBr0k3nStr3am0"
"""A key the stand-in accepts (200, a stream) and then repeats bare in a mid-stream error."""


class _KeyedStub(http.server.BaseHTTPRequestHandler):
    """Answers a chat completion when the query's key is not REFUSED; 401 with it echoed."""

    asked: ClassVar[list[str]] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        _KeyedStub.asked.append(self.path)
        if BROKEN in self.path:
            self._broken_stream()
            return
        refused = REFUSED in self.path
        error = {"error": {"message": f"API key not valid ({self.path}); key {REFUSED}"}}
        reply_json(
            self, 401 if refused else 200, error if refused else chat_completion("keyed answer")
        )

    def _broken_stream(self):
        """A 200 event stream: one token, then an error event naming the key alone."""
        token = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        token["choices"] = [{"index": 0, "delta": {"content": "half"}, "finish_reason": None}]
        error = {"error": {"message": f"quota exceeded for key {BROKEN}", "code": 429}}
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in (token, error)).encode()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def keyed():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeyedStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_keyed_endpoint_is_called_at_its_path_with_its_key(keyed, monkeypatch, transport):
    """Two endpoints differing only in their key: each call carries its own, whole."""
    monkeypatch.setenv("MOA_HTTP_TRANSPORT", transport)
    _KeyedStub.asked.clear()
    cache = ModelCache()
    first, second = f"m@{keyed}?alt=json&key={SECRET}", f"m@{keyed}?alt=json&key={OTHER}"
    assert cache.get(first, {}).invoke("hi").content == "keyed answer"
    assert asyncio.run(cache.get(second, {}).ainvoke("hi")).content == "keyed answer"
    assert build_model(first, {}).invoke("hi").content == "keyed answer"
    assert _KeyedStub.asked == [
        f"/v1/chat/completions?alt=json&key={SECRET}",
        f"/v1/chat/completions?alt=json&key={OTHER}",
        f"/v1/chat/completions?alt=json&key={SECRET}",
    ]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_moa_run_of_a_refused_keyed_endpoint_says_so_without_the_key(
    keyed, monkeypatch, capsys, caplog, transport
):
    """The server's 401 echoes the URL and the key alone; neither reaches the terminal
    (nor a debug log)."""
    import logging

    from langgraph_moa.cli import _app as cli

    monkeypatch.setenv("MOA_HTTP_TRANSPORT", transport)
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)  # keep pytest's Ctrl-C
    spec = f"m@{keyed}?alt=json&key={REFUSED}"
    argv = ["moa", "run", "--no-stream", "--proposers", spec, "--aggregator", spec, "hi"]
    monkeypatch.setattr(cli.sys, "argv", argv)
    with pytest.raises(SystemExit) as exited, caplog.at_level(logging.DEBUG):
        cli.main()
    out, err = capsys.readouterr()
    assert REFUSED not in caplog.text
    assert exited.value.code not in (0, None)
    assert REFUSED not in out + err
    assert "401" in out + err or "API key not valid" in out + err, out + err


def test_moa_serve_answers_a_refused_keyed_endpoint_without_the_key(keyed, tmp_path):
    from fastapi.testclient import TestClient

    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._access import AccessLog
    from langgraph_moa.serving._app import create_app

    spec = f"m@{keyed}?alt=json&key={REFUSED}"
    lines: list[str] = []
    config = MoAConfig(name="m", proposers=[spec], aggregator=spec)
    app = AccessLog(create_app({"m": config}), ["m"], lines.append)
    client = TestClient(app, base_url="http://localhost")
    user = [{"role": "user", "content": "hi"}]
    answer = client.post("/v1/chat/completions", json={"model": "m", "messages": user})
    streamed = client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": user, "stream": True, "moa_progress": True},
    )
    page = client.post("/v1/moa/runs", json={"model": "m", "messages": user})
    assert answer.status_code >= 400 or "error" in answer.text
    for shown in (answer.text, streamed.text, page.text, "\n".join(lines)):
        assert REFUSED not in shown
    assert "API key not valid" in answer.text + streamed.text + page.text


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_keyed_endpoints_mid_stream_error_that_echoes_the_key_bare_is_redacted(
    keyed, monkeypatch, transport
):
    """The transport removed the request's ?key=... from a non-200 error body, but an
    upstream that answers 200 and then sends an error event in its stream naming the key
    alone had it in the call's failed event, the run's error and the log line."""
    from fastapi.testclient import TestClient

    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._access import AccessLog
    from langgraph_moa.serving._app import create_app

    monkeypatch.setenv("MOA_HTTP_TRANSPORT", transport)
    spec = f"m@{keyed}?alt=json&key={BROKEN}"
    lines: list[str] = []
    config = MoAConfig(name="m", proposers=[spec], aggregator=spec)
    app = AccessLog(create_app({"m": config}), ["m"], lines.append)
    client = TestClient(app, base_url="http://localhost")
    user = [{"role": "user", "content": "hi"}]
    page = client.post("/v1/moa/runs", json={"model": "m", "messages": user})
    streamed = client.post(
        "/v1/chat/completions", json={"model": "m", "messages": user, "stream": True}
    )
    assert "quota exceeded for key [redacted]" in page.text  # the failed call says why
    for shown in (page.text, streamed.text, "\n".join(lines)):
        assert BROKEN not in shown
