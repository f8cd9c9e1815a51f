"""The run event stream over real HTTP on loopback: keep-alive in a slow layer, a client that
leaves cancels the run (nothing paid for after), and the history says so."""

import json
import time

import httpx

from langgraph_moa import MoAConfig
from langgraph_moa.serving._app import create_app
from langgraph_moa.serving._history import History
from langgraph_moa.testing import BackgroundServer
from langgraph_moa.testing.fault_server import FaultProfile, FaultServer

BODY = {"model": "m", "messages": [{"role": "user", "content": "Explain X"}]}


def test_a_slow_layer_sends_keep_alives_then_every_event(tmp_path):
    profiles = {"slow": FaultProfile(latency_s=(1.0, 1.0)), "agg": FaultProfile()}
    with FaultServer(profiles) as backend:
        config = MoAConfig(
            proposers=[f"slow@{backend.url}"], aggregator=f"agg@{backend.url}", layers=2
        )
        app = create_app({"m": config}, history=History(tmp_path / "h.db"), keepalive_s=0.2)
        with BackgroundServer(app) as server:
            with httpx.stream("POST", f"{server.root}/v1/moa/runs", json=BODY, timeout=30) as r:
                lines = list(r.iter_lines())
    comments = [line for line in lines if line.startswith(":")]
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert comments and all(c == ": keep-alive" for c in comments)
    first_event = lines.index(next(line for line in lines if line.startswith("event: started")))
    finished = lines.index(next(line for line in lines if line.startswith("event: finished")))
    assert any(line.startswith(":") for line in lines[first_event:finished])
    assert [e["event"] for e in events][-2:] == ["answer", "done"]


def test_a_client_that_leaves_cancels_the_run_and_the_history_keeps_it(tmp_path):
    profiles = {"p": FaultProfile(token_s=0.05, reply_words=200), "agg": FaultProfile()}
    with FaultServer(profiles) as backend:
        config = MoAConfig(
            proposers=[f"p@{backend.url}"], aggregator=f"agg@{backend.url}", layers=2
        )
        history = History(tmp_path / "h.db")
        with BackgroundServer(create_app({"m": config}, history=history)) as server:
            with httpx.stream("POST", f"{server.root}/v1/moa/runs", json=BODY, timeout=30) as r:
                for line in r.iter_lines():
                    if line.startswith("event: token"):
                        break  # leave mid-way through the proposer's answer
            deadline = time.monotonic() + 10
            while not history.list() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # time enough for an aggregator call, were one to be made
        assert backend.requests["agg"] == 0
    runs = history.list()
    assert [r["status"] for r in runs] == ["cancelled"]
    tokens = [e for e in history.get(runs[0]["id"]).events if e["event"] == "token"]
    assert tokens and "p answer 1 w0".startswith(tokens[0]["text"])  # what it saw, kept


def test_moa_ui_opens_the_page_once_the_port_answers(monkeypatch):
    import webbrowser

    from fastapi import FastAPI

    from langgraph_moa.cli._ui import _open_when_up

    opened = []
    monkeypatch.setattr(webbrowser, "open", opened.append)
    with BackgroundServer(FastAPI()) as server:
        _open_when_up(f"{server.root}/ui", server.port)
        deadline = time.monotonic() + 10
        while not opened and time.monotonic() < deadline:
            time.sleep(0.05)
    assert opened == [f"{server.root}/ui"]


def test_moa_ui_on_a_taken_port_says_so_in_one_line(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "MOA_HISTORY": str(tmp_path / "h.db")}
        env["PYTHONPATH"] = os.pathsep.join([str(Path.cwd() / "src"), env.get("PYTHONPATH", "")])
        result = subprocess.run(
            [sys.executable, "-m", "langgraph_moa", "ui", "--no-open", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    error = result.stderr.strip()
    assert error.count("\n") == 0 and f"Port {port}" in error and "--port" in error
