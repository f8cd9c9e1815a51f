"""`moa serve` runs on uvloop and httptools when installed, and on uvicorn's defaults without."""

import contextlib
import gc
import importlib.util

import pytest
import uvicorn

from langgraph_moa.serving._server import (
    GC_FREEZE_ENV,
    SERVING_YOUNG_THRESHOLD,
    server_options,
    tune_collector,
)
from tests.helpers import is_closed, opened_connections


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
def untuned():
    """Leave the collector as the test found it: nothing frozen, Python's thresholds."""
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield thresholds
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_serve_tunes_the_collector_while_serving_and_restores_it(monkeypatch, tmp_path, untuned):
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving import _server

    seen = {}

    def run(server, sockets=None):  # uvicorn's Server.run: the collector as serving starts
        seen["frozen"] = gc.get_freeze_count()
        seen["thresholds"] = gc.get_threshold()
        seen["port"] = server.config.port

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setattr(_server, "_check_port", lambda host, port: None)
    config = MoAConfig(proposers=["p@http://127.0.0.1:9/v1"], aggregator="a@http://127.0.0.1:9/v1")
    _server.serve({"fake": config}, port=8123, history_path=tmp_path / "h.db", log=print)
    assert seen["frozen"] > 10_000  # the imports' objects: LangChain, LangGraph, pydantic...
    assert seen["thresholds"] == (SERVING_YOUNG_THRESHOLD, *untuned[1:])
    assert seen["port"] == 8123
    assert gc.get_freeze_count() == 0  # serve() returned: nothing is left frozen
    assert gc.get_threshold() == untuned  # and the thresholds are the caller's again


def test_serve_restores_the_collector_when_uvicorn_fails(monkeypatch, tmp_path, untuned):
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving import _server

    def run(server, sockets=None):
        raise OSError("address in use")

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setattr(_server, "_check_port", lambda host, port: None)
    config = MoAConfig(proposers=["p@http://127.0.0.1:9/v1"], aggregator="a@http://127.0.0.1:9/v1")
    with pytest.raises(OSError):
        _server.serve({"fake": config}, port=8123, history_path=tmp_path / "h.db", log=print)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == untuned


@pytest.mark.parametrize("fails", [False, True], ids=["stopped", "uvicorn failed"])
def test_serve_closes_the_history_it_opened_when_it_ends(monkeypatch, tmp_path, untuned, fails):
    # The page's history stayed open after serve() returned or raised, closed only by
    # garbage collection whenever that came (on Python 3.13, "ResourceWarning: unclosed
    # database"): in a notebook, each serve() of a cell left one more connection behind.
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving import _server

    def run(server, sockets=None):
        if fails:
            raise OSError("address in use")

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setattr(_server, "_check_port", lambda host, port: None)
    opened = opened_connections(monkeypatch)
    config = MoAConfig(proposers=["p@http://127.0.0.1:9/v1"], aggregator="a@http://127.0.0.1:9/v1")
    with pytest.raises(OSError) if fails else contextlib.nullcontext():
        _server.serve({"fake": config}, port=8123, history_path=tmp_path / "h.db", log=print)
    assert len(opened) == 1 and is_closed(opened[0])


def test_moa_gc_freeze_0_leaves_the_collector_alone(monkeypatch, untuned):
    monkeypatch.setenv(GC_FREEZE_ENV, "0")
    tune_collector()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == untuned
    monkeypatch.delenv(GC_FREEZE_ENV)
    restore = tune_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == SERVING_YOUNG_THRESHOLD
    gc.collect()  # a collection after the freeze leaves the frozen objects frozen
    assert gc.get_freeze_count() > 0
    restore()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == untuned


def test_a_higher_young_threshold_of_the_host_is_kept(untuned):
    gc.set_threshold(50_000, *untuned[1:])
    restore = tune_collector()
    assert gc.get_threshold()[0] == 50_000  # never lowered
    restore()
    assert gc.get_threshold()[0] == 50_000


def test_automatic_collection_turned_off_by_the_host_stays_off(untuned):
    gc.set_threshold(0)
    restore = tune_collector()
    assert gc.get_threshold()[0] == 0
    restore()
    assert gc.get_threshold()[0] == 0


def _frozen(obj) -> bool:
    """Whether `obj` is in the permanent generation, which `gc.get_objects()` does not list.

    Counting frozen objects cannot tell: a frozen object that dies (another test's thread
    dropping its last reference, say) leaves the count, so it can fall with nothing unfrozen.
    """
    assert gc.is_tracked(obj)
    return not any(tracked is obj for tracked in gc.get_objects())


def test_objects_the_host_froze_stay_frozen_after_serving(untuned):
    frozen_by_host = [object()]
    gc.freeze()
    assert _frozen(frozen_by_host)
    restore = tune_collector()
    restore()
    assert _frozen(frozen_by_host)
    assert gc.get_threshold() == untuned


def test_what_serving_froze_is_unfrozen_after_serving(untuned):
    alive_before_serving = [object()]
    restore = tune_collector()
    assert _frozen(alive_before_serving)
    restore()
    assert not _frozen(alive_before_serving)


def test_serve_leaves_uvicorns_loggers_as_it_found_them(monkeypatch, tmp_path):
    # serve() lowered "uvicorn.error" to INFO (for its drain line) and left it so: a program
    # (or a test) that served in-process then got uvicorn's info lines for good.
    import logging

    from langgraph_moa import MoAConfig
    from langgraph_moa.serving import _server

    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    before = {n: (logging.getLogger(n).level, list(logging.getLogger(n).filters)) for n in names}
    seen = {}
    monkeypatch.setattr(
        uvicorn.Server,
        "run",
        lambda server, sockets=None: seen.update(level=logging.getLogger("uvicorn.error").level),
    )
    monkeypatch.setattr(_server, "_check_port", lambda host, port: None)
    config = MoAConfig(proposers=["p@http://127.0.0.1:9/v1"], aggregator="a@http://127.0.0.1:9/v1")
    _server.serve({"fake": config}, port=8123, history_path=tmp_path / "h.db", log=print)
    assert seen["level"] == logging.INFO  # while serving: the drain line can be said
    after = {n: (logging.getLogger(n).level, list(logging.getLogger(n).filters)) for n in names}
    assert after == before


def test_serve_stacks_the_root_path_the_trusted_proxies_and_the_drain(monkeypatch, tmp_path):
    # What `moa serve` hands uvicorn: the prefix taken off, the forwarded client logged,
    # uvicorn's own proxy headers off, and its backstop just past the drain.
    from starlette.testclient import TestClient

    from langgraph_moa import MoAConfig
    from langgraph_moa.serving import _server
    from langgraph_moa.serving._guard import ServeSecurity

    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: seen.update(s=server))
    monkeypatch.setattr(_server, "_check_port", lambda host, port: None)
    monkeypatch.setenv(GC_FREEZE_ENV, "0")
    config = MoAConfig(proposers=["p@http://127.0.0.1:9/v1"], aggregator="a@http://127.0.0.1:9/v1")
    lines: list[str] = []
    _server.serve(
        {"fake": config},
        history_path=tmp_path / "h.db",
        log=lines.append,
        security=ServeSecurity(forwarded_allow_ips=("*",)),
        root_path="/moa",
        drain_timeout_s=3,
    )
    settings = seen["s"].config
    assert settings.timeout_graceful_shutdown == 5 and settings.proxy_headers is False
    client = TestClient(settings.app, base_url="http://127.0.0.1")
    answer = client.get("/moa/v1/models", headers={"x-forwarded-for": "203.0.113.9"})
    assert answer.json()["data"][0]["id"] == "fake"
    assert (
        lines[-1].startswith("GET /v1/models 200")
        and lines[-1].count(" · 203.0.113.9 · request ") == 1
    )


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("MOA_MAX_RESPONSE_BYTES", "32MB"),
        ("MOA_HTTP_TRANSPORT", "curl"),
        ("MOA_DIRECT_CALLS", "off"),
        ("MOA_SDK_TRANSFORM", "true"),
        ("LANGGRAPH_MOA_SHARE_CORES", "yes"),
        ("MOA_GC_FREEZE", "no"),
        ("LANGGRAPH_MOA_CACHE", "models"),  # read as a local model is first called
        ("LANGGRAPH_MOA_THREADS", "0"),  # read as the local models' runtime is made
        ("LANGGRAPH_MOA_SLOTS", "many"),
        ("LANGGRAPH_MOA_CONTEXT", "lots"),  # read as a local model's server starts
    ],
)
def test_serve_refuses_a_setting_that_fails_every_request_before_it_starts(
    monkeypatch, tmp_path, env, value
):
    # Read as each endpoint's client is built, or on each call, on a request: the server said
    # "Serving" and then failed every request ("All 2 proposer calls of layer 1 failed");
    # MOA_GC_FREEZE was read after "Serving"; a relative LANGGRAPH_MOA_CACHE, with the history
    # kept elsewhere, failed each request to a local model with a 400 blaming the client, and
    # so did a bad LANGGRAPH_MOA_THREADS, _SLOTS or _CONTEXT.
    from langgraph_moa import MoAConfig
    from langgraph_moa.errors import MoAConfigError
    from langgraph_moa.serving import _server

    monkeypatch.setenv(env, value)
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: None)
    monkeypatch.setattr(_server, "_check_port", lambda host, port: None)
    config = MoAConfig(proposers=["p@http://127.0.0.1:9/v1"], aggregator="a@http://127.0.0.1:9/v1")
    announced: list[str] = []
    with pytest.raises(MoAConfigError, match=f"^{env} must be"):
        _server.serve(
            {"fake": config},
            port=8123,
            history_path=tmp_path / "h.db",
            log=print,
            announce=announced.append,
        )
    assert announced == []
