"""The HTTP clients the package builds: the SDK's aiohttp transport, closed with their loop."""

import asyncio
import gc
import http.server
import json
import logging
import re
import subprocess
import sys
import textwrap
import threading
import time
from typing import ClassVar

import openai
import pytest

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.errors import MoAConfigError
from langgraph_moa.providers._models import ModelCache
from langgraph_moa.testing import FaultProfile, FaultServer
from langgraph_moa.transport._http import own_async_client
from tests.helpers import chat_completion, reply_json


@pytest.fixture(scope="module")
def backend():
    with FaultServer(default=FaultProfile(latency_s=(0.001, 0.002))) as server:
        yield server


def _session(model):
    """The aiohttp session under a model's client (opened on its first request)."""
    return model.http_async_client._transport.client


def test_models_of_every_run_use_the_aiohttp_client_and_close_it_when_their_loop_ends(
    backend, caplog
):
    cache = ModelCache()
    sessions = []

    async def one_run(i):
        model = cache.get(f"m@{backend.url}", {"temperature": 0.1})
        assert isinstance(model.http_async_client, openai.DefaultAioHttpClient)
        reply = await model.ainvoke(f"question {i}")
        sessions.append(_session(model))
        assert not sessions[-1].closed  # still open while its loop runs
        return reply.text

    with caplog.at_level(logging.ERROR):
        first = asyncio.run(one_run(1))
        second = asyncio.run(one_run(2))  # a second loop: a client of its own, not the first
        gc.collect()
    assert first.startswith("m answer") and second.startswith("m answer")
    assert sessions[0] is not sessions[1]
    assert all(s.closed for s in sessions)
    assert "Unclosed" not in caplog.text


def test_the_httpx_client_stays_selectable(backend, monkeypatch):
    monkeypatch.setenv("MOA_HTTP_TRANSPORT", "httpx")
    client = own_async_client()
    assert not isinstance(client, openai.DefaultAioHttpClient)
    assert isinstance(client, openai.DefaultAsyncHttpxClient)

    async def call():
        api = openai.AsyncOpenAI(base_url=backend.url, api_key="x", http_client=client)
        reply = await api.chat.completions.create(
            model="h", messages=[{"role": "user", "content": "q"}]
        )
        await api.close()
        return reply.choices[0].message.content

    assert asyncio.run(call()).startswith("h answer")


def test_a_bad_transport_name_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv("MOA_HTTP_TRANSPORT", "curl")
    with pytest.raises(MoAConfigError, match="'aiohttp' or 'httpx', got 'curl'"):
        own_async_client()


def test_sessions_on_the_call_loop_are_closed_at_exit(backend):
    """Sync runs with a layer deadline call on the package's call loop, which never ends by
    itself: at exit its sessions are closed (in a child process: it shuts the loop down)."""
    script = textwrap.dedent(
        f"""
        import asyncio
        from langgraph_moa import MoAConfig, create_moa_graph
        from langgraph_moa.providers._models import ModelCache
        from langgraph_moa.transport._call_loop import _shut_down_at_exit, call_loop

        config = MoAConfig(
            proposers=["a@{backend.url}", "b@{backend.url}"],
            aggregator="agg@{backend.url}",
            layers=2,
            layer_deadline_s=5,
        )
        answer = create_moa_graph(config).invoke({{"messages": [("user", "q")]}})
        model = ModelCache().get("c@{backend.url}", {{}})
        asyncio.run_coroutine_threadsafe(model.ainvoke("q"), call_loop()).result(10)
        session = model.http_async_client._transport.client
        before = session.closed
        _shut_down_at_exit()
        print(answer["messages"][-1].content[:10], before, session.closed)
        """
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["agg", "answer", "False", "True"]
    assert "Unclosed" not in done.stderr, done.stderr


def test_graphs_run_sync_with_a_layer_deadline_are_not_kept_after_their_runs(backend):
    """The calls of such runs go through the call loop, which lives as long as the process.
    Every callback a connection kept there held a copy of the run's context, whose config
    held the graph: each rebuilt graph (a notebook cell run again) stayed alive, with its
    models and open clients. The first run, which started the loop, was kept by the loop's
    own wake-up callback (in a child process: the loop starts there). Chunk-wise runs, which
    run their last layer and aggregator on the call loop, were kept the same way."""
    script = textwrap.dedent(
        f"""
        import gc, weakref
        from langgraph_moa import MoAConfig, create_moa_graph

        for extra in (
            {{"layer_deadline_s": 30}},
            {{"aggregation": {{"start": "chunks", "chunk_tokens": 4}}}},
        ):
            graphs = []
            for _ in range(4):
                config = MoAConfig(
                    proposers=["a@{backend.url}", "b@{backend.url}"],
                    aggregator="agg@{backend.url}",
                    layers=2,
                    **extra,
                )
                graph = create_moa_graph(config)
                graph.invoke({{"messages": [("user", "q")]}})
                graphs.append(weakref.ref(graph))
                del graph, config
            gc.collect()
            print(sum(ref() is not None for ref in graphs))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0"]


def test_a_forked_child_exiting_leaves_the_parents_call_loop_working(backend):
    """A forked child (a gunicorn or multiprocessing worker) that exits normally tore down
    the call loop objects it inherited: their connections unregistered themselves from the
    epoll instance the child shares with its parent, so the parent's next sync run with a
    layer deadline waited forever for answers its loop no longer heard."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from langgraph_moa import MoAConfig, create_moa_graph

        config = MoAConfig(
            proposers=["a@{backend.url}", "b@{backend.url}"],
            aggregator="agg@{backend.url}",
            layer_deadline_s=5,
        )
        graph = create_moa_graph(config)
        ask = lambda: graph.invoke({{"messages": [("user", "q")]}})["messages"][-1].content
        print(ask()[:3], flush=True)
        child = os.fork()
        if child == 0:
            sys.exit(0)  # a normal interpreter exit, as a worker process ends
        os.waitpid(child, 0)
        print(ask()[:3], flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["agg", "agg"]
    assert "Unclosed" not in done.stderr, done.stderr  # the parent's sessions, not the child's


async def test_a_dropped_connection_is_retried_like_any_connection_error(backend):
    """aiohttp's errors reach the graph as the SDK's own: retried, then recorded."""
    with FaultServer(
        {"flaky": FaultProfile(error_rate=1.0, errors=["truncated"])},
        default=FaultProfile(),
    ) as flaky:
        config = MoAConfig(
            proposers=[f"flaky@{flaky.url}", f"ok@{backend.url}"],
            aggregator=f"agg@{backend.url}",
            layers=2,
            retry={"max_attempts": 2, "initial_interval": 0.0, "jitter": False},
        )
        result = await create_moa_graph(config).ainvoke({"messages": [("user", "q")]})
    failed = [c for c in result["calls"] if c["status"] != "ok"]
    assert [c["configured_model"] for c in failed] == [f"flaky@{flaky.url}"]
    assert flaky.requests["flaky"] == 2  # retried once


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_a_refused_connection_is_reported_as_one_not_as_a_timeout(
    backend, monkeypatch, transport
):
    from langgraph_moa.transport._net import free_port

    monkeypatch.setenv("MOA_HTTP_TRANSPORT", transport)
    dead = f"dead@http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    config = MoAConfig(
        proposers=[dead, f"ok@{backend.url}"],
        aggregator=f"agg@{backend.url}",
        layers=2,
        retry={"max_attempts": 1},
    )
    result = await create_moa_graph(config).ainvoke({"messages": [("user", "q")]})
    [failed] = [c for c in result["calls"] if c["status"] != "ok"]
    assert failed["configured_model"] == dead
    assert failed["error"].startswith("OpenAIConnectionError: Connection error (")
    assert "did not answer" not in failed["error"]


def test_a_call_nobody_listens_to_answers_as_langchains_ainvoke_does(monkeypatch):
    """The direct call (`run._direct`) against LangChain's usual path, on langchain-openai over
    HTTP: the same answer, metadata and call records, and a handler still sees every call."""
    from langchain_core.callbacks import BaseCallbackHandler

    from langgraph_moa.run._direct import DIRECT_CALLS_ENV

    class Starts(BaseCallbackHandler):
        def __init__(self) -> None:
            self.names: list[str] = []

        def on_chat_model_start(self, serialized, messages, *, name=None, **kwargs):
            self.names.append(name)

    def one_run(direct: str, config=None) -> dict:
        monkeypatch.setenv(DIRECT_CALLS_ENV, direct)
        with FaultServer(default=FaultProfile(latency_s=(0.001, 0.002))) as server:
            specs = [f"{name}@{server.url}" for name in ("p1", "p2", "agg")]
            moa = MoAConfig(proposers=specs[:2], aggregator=specs[2], layers=2)
            out = asyncio.run(
                create_moa_graph(moa).ainvoke({"messages": [("user", "Why?")]}, config)
            )
            answer = out["messages"][-1]
            seen = {
                "answer": answer.model_dump(exclude={"id"}),
                "id": answer.id.split("-")[0],
                "calls": out["calls"],
            }
            # Only the server's port and the latencies may differ between the two runs.
            text = json.dumps(seen, sort_keys=True).replace(server.url, "URL")
        return json.loads(re.sub(r'"latency_s": [0-9.e-]+', '"latency_s": 0', text))

    direct, usual = one_run("1"), one_run("0")
    assert direct == usual
    assert direct["answer"]["response_metadata"]["model_name"] == "agg"
    assert direct["answer"]["usage_metadata"]["output_tokens"] > 0
    assert direct["id"] == "lc_run"
    assert [c["status"] for c in direct["calls"]] == ["ok"] * 3
    starts = Starts()
    one_run("1", {"callbacks": [starts]})
    assert sorted(name.split("@")[0] for name in starts.names) == [
        "layer 1 / proposer 1 / p1",
        "layer 1 / proposer 2 / p2",
        "layer 2 / aggregator / agg",
    ]


@pytest.fixture
def dead_proxy(monkeypatch):
    """Proxy variables pointing at a port nobody listens on, with no NO_PROXY."""
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


class _ModelsEndpoint(http.server.BaseHTTPRequestHandler):
    """Stands in for a llama.cpp server that has loaded its model: 200 on /v1/models."""

    def do_GET(self):
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_the_readiness_check_of_a_local_server_ignores_proxy_variables(dead_proxy, tmp_path):
    """With HTTP_PROXY set the check asked the proxy for 127.0.0.1 and never saw it ready."""
    from langgraph_moa.local.catalog import CATALOG
    from langgraph_moa.local.runtime import LocalServer

    httpd = http.server.HTTPServer(("127.0.0.1", 0), _ModelsEndpoint)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    server = LocalServer.__new__(LocalServer)  # the llama.cpp process stood in for
    server.info = CATALOG["smollm2-135m"]
    server._ready, server._lock = threading.Event(), threading.Lock()
    server._spawned = time.monotonic()
    server.port = httpd.server_port
    server.url = f"http://127.0.0.1:{server.port}/v1"
    server._log = open(tmp_path / "server.log", "wb")  # closed below
    server.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        server.wait_ready(timeout=3)
        assert server._ready.is_set()
    finally:
        server.process.kill()
        server.process.wait()
        server._log.close()
        httpd.shutdown()


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_loopback_endpoint_is_never_sent_to_a_proxy(backend, dead_proxy, monkeypatch, transport):
    """Sync and async calls, through the model cache or a model built alone, reach 127.0.0.1."""
    from langgraph_moa.providers._models import build_model

    monkeypatch.setenv("MOA_HTTP_TRANSPORT", transport)
    spec = f"m@{backend.url}"
    for model in (ModelCache().get(spec, {}), build_model(spec, {})):
        assert model.invoke("hi").content
        assert asyncio.run(model.ainvoke("hi")).content


class _ProxyStub(http.server.BaseHTTPRequestHandler):
    """A forward proxy that answers every chat completion itself and notes what it was asked."""

    asked: ClassVar[list[str]] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        _ProxyStub.asked.append(self.path)
        reply_json(self, 200, chat_completion("via proxy"))

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_remote_endpoint_keeps_going_through_the_proxy(monkeypatch, transport):
    """Sync calls, and async ones on httpx, ignored HTTP_PROXY: our transport was passed in."""
    from langgraph_moa.providers._models import build_model

    proxy = http.server.HTTPServer(("127.0.0.1", 0), _ProxyStub)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.server_port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("MOA_HTTP_TRANSPORT", transport)
    _ProxyStub.asked.clear()
    try:
        model = ModelCache().get("m@http://remote.invalid/v1", {})
        assert model.invoke("hi").content == "via proxy"
        assert asyncio.run(model.ainvoke("hi")).content == "via proxy"
        assert build_model("m@http://remote.invalid/v1", {}).invoke("hi").content == "via proxy"
    finally:
        proxy.shutdown()
    assert _ProxyStub.asked == ["http://remote.invalid/v1/chat/completions"] * 3
