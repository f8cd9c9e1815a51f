"""`moa serve` runs on uvloop and httptools when installed, and on uvicorn's defaults without."""

import importlib.util

import uvicorn

from langgraph_moa.serving._server import server_options


def test_serve_picks_uvloop_and_httptools_when_installed():
    assert server_options() == {"loop": "uvloop", "http": "httptools"}
    config = uvicorn.Config(lambda *a: None, **server_options())
    config.load()  # uvicorn accepts both names and finds the protocol class
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"


def test_serve_falls_back_to_asyncio_and_h11_without_them(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("uvloop", "httptools") else real(name, *a),
    )
    assert server_options() == {"loop": "asyncio", "http": "h11"}
