"""`moa serve` runs on uvloop and httptools when installed, and on uvicorn's defaults without."""

import gc
import importlib.util

import pytest
import uvicorn

from langgraph_moa.serving._server import GC_FREEZE_ENV, freeze_startup_heap, server_options


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


@pytest.fixture
def unfrozen():
    """Leave the collector as the test found it: nothing frozen."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_serve_freezes_the_startup_heap_before_serving(monkeypatch, tmp_path, unfrozen):
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving import _server

    seen = {}

    def run(app, **options):  # uvicorn.run: what the collector holds when serving starts
        seen["frozen"] = gc.get_freeze_count()
        seen["options"] = options

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setattr(_server, "_check_port", lambda host, port: None)
    config = MoAConfig(proposers=["p@http://127.0.0.1:9/v1"], aggregator="a@http://127.0.0.1:9/v1")
    _server.serve({"fake": config}, port=8123, history_path=tmp_path / "h.db", log=print)
    assert seen["frozen"] > 10_000  # the imports' objects: LangChain, LangGraph, pydantic...
    assert seen["options"]["port"] == 8123
    assert gc.get_freeze_count() == 0  # serve() returned: nothing is left frozen


def test_moa_gc_freeze_0_leaves_the_collector_alone(monkeypatch, unfrozen):
    monkeypatch.setenv(GC_FREEZE_ENV, "0")
    assert freeze_startup_heap() is False
    assert gc.get_freeze_count() == 0
    monkeypatch.delenv(GC_FREEZE_ENV)
    assert freeze_startup_heap() is True
    assert gc.get_freeze_count() > 0
    gc.collect()  # a collection after the freeze leaves the frozen objects frozen
    assert gc.get_freeze_count() > 0
