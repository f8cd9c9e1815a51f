"""Kill a run mid-layer, resume it on the same thread: finished proposers are not called again."""

import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from langgraph_moa import MoAConfig, RetrySettings, create_moa_graph
from langgraph_moa.graph.durable import open_checkpointer
from langgraph_moa.testing import FaultProfile, FaultServer

WORKER = Path(__file__).with_name("durable_worker.py")
durable_worker = importlib.import_module("tests.integration_tests.durable_worker")


def _pg_bin() -> Path | None:
    for candidate in [
        shutil.which("initdb"),
        *sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
    ]:
        if candidate:
            return Path(candidate).parent
    return None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster on a free loopback port, started and removed here."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (.ci/run installs them)")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = Path(tempfile.mkdtemp(prefix="moa-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(data, "postgres")
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "moa"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_user,
            str(bindir / "pg_ctl"),
            "-D",
            str(data / "db"),
            "-l",
            str(data / "log"),
            "-w",
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://moa@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'moa.db'}"
    return request.getfixturevalue("postgres_url")


def wait_for_requests(server, worker, *models):
    """Wait until the worker has sent a request to each of `models` (the layer is running)."""
    deadline = time.monotonic() + 60
    while not all(server.requests[m] for m in models):
        assert worker.poll() is None, "the worker ended before it could be killed"
        assert time.monotonic() < deadline, "the worker never reached the proposer layer"
        time.sleep(0.05)


def wait_for_writes(store, thread, worker, answered=(), failed_attempts=0):
    """Wait until the worker's checkpoint holds what the resume must find, before the kill.

    A finished call's record reaches the store as a pending write some time after the call
    returns (LangGraph writes in the background), and a loaded machine or a slow disk can
    take more than any fixed sleep: `answered` are the models whose answers must be there,
    `failed_attempts` how many failed attempts (`run._ledger`) must be.
    """
    from langgraph_moa.run._ledger import ATTEMPT_CHANNEL

    deadline = time.monotonic() + 60
    while True:
        saver = open_checkpointer(store)
        try:
            found = saver.get_tuple({"configurable": {"thread_id": thread}})
        finally:
            saver.conn.close()
        writes = found.pending_writes if found else []
        done = {
            c["configured_model"].split("@")[0]
            for _, channel, value in writes
            if channel == "calls"
            for c in value
            if c["status"] == "ok"
        }
        attempts = sum(channel == ATTEMPT_CHANNEL for _, channel, _ in writes)
        if set(answered) <= done and attempts >= failed_attempts:
            return
        assert worker.poll() is None, "the worker ended before it could be killed"
        assert time.monotonic() < deadline, f"not written within 60 s: {done}, {attempts}"
        time.sleep(0.1)


def test_a_killed_run_resumes_without_repeating_finished_proposers(store):
    thread = f"t-{time.time_ns()}"
    profiles = {
        "fast1": FaultProfile(),
        "fast2": FaultProfile(),
        "slow": FaultProfile(latency_s=(60.0, 60.0)),
        "agg": FaultProfile(),
    }
    with FaultServer(profiles) as server:
        worker = subprocess.Popen([sys.executable, str(WORKER), server.url, store, thread])
        try:
            wait_for_requests(server, worker, "fast1", "fast2", "slow")
            wait_for_writes(store, thread, worker, answered=("fast1", "fast2"))
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        assert server.requests["agg"] == 0  # killed mid-layer

        server.profiles["slow"] = FaultProfile()  # the slow provider recovered
        config = MoAConfig(
            proposers=[f"fast1@{server.url}", f"fast2@{server.url}", f"slow@{server.url}"],
            aggregator=f"agg@{server.url}",
            layers=2,
            retry=RetrySettings(max_attempts=1),
        )
        saver = open_checkpointer(store)
        try:
            graph = create_moa_graph(config, checkpointer=saver)
            out = graph.invoke(None, {"configurable": {"thread_id": thread}})
        finally:
            saver.conn.close()
        assert dict(server.requests) == {"fast1": 1, "fast2": 1, "slow": 2, "agg": 1}
        assert out["messages"][-1].text.startswith("agg answer")
        assert [c["configured_model"].split("@")[0] for c in out["calls"]] == [
            "fast1",
            "fast2",
            "slow",
            "agg",
        ]


def test_a_resumed_layer_keeps_its_retry_history_and_its_deadline(store, monkeypatch):
    """Killed in one process, resumed in another: what happened before the kill still counts.

    Before the kill, `flaky` failed once with a 500 and waits out a 30 s backoff, `fast`
    answered, `slow` hangs. The test resumes after the layer's deadline (8 s from the
    layer's start) has passed: `flaky`'s record shows both attempts and the 500, and `slow`
    is let go at once because the deadline counts from the layer's recorded start and the
    quorum (2) counts `fast`'s answer from before the kill. A restarted deadline would
    keep the resumed run waiting for another 8 s: each resumed call's deadline is recorded.
    """
    from langgraph_moa.graph import _nodes

    dues: list[float] = []
    watch = _nodes._LayerWatch

    def recorded(**fields):
        dues.append(fields["due"])
        return watch(**fields)

    monkeypatch.setattr(_nodes, "_LayerWatch", recorded)
    thread = f"t-{time.time_ns()}"
    profiles = {
        "fast": FaultProfile(),
        "flaky": FaultProfile(error_rate=1.0, errors=["500"]),
        "slow": FaultProfile(latency_s=(60.0, 60.0)),
        "agg": FaultProfile(),
    }
    with FaultServer(profiles) as server:
        worker = subprocess.Popen(
            [sys.executable, str(WORKER), server.url, store, thread, "deadline"]
        )
        try:
            wait_for_requests(server, worker, "fast", "flaky", "slow")
            layer_seen = time.time()  # the layer fanned out a little before
            wait_for_writes(store, thread, worker, answered=("fast",), failed_attempts=1)
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        assert server.requests["flaky"] == 1 and server.requests["agg"] == 0

        server.profiles["flaky"] = FaultProfile()  # the provider recovered; slow did not
        time.sleep(max(0.0, layer_seen + durable_worker.DEADLINE_S + 0.5 - time.time()))
        saver = open_checkpointer(store)
        try:
            graph = create_moa_graph(
                durable_worker.config(server.url, "deadline"), checkpointer=saver
            )
            resumed, began = time.time(), time.monotonic()
            out = graph.invoke(None, {"configurable": {"thread_id": thread}})
            print(f"the resumed layer took {time.monotonic() - began:.1f}s")
        finally:
            saver.conn.close()
    calls = {c["configured_model"].split("@")[0]: c for c in out["calls"]}
    assert (calls["fast"]["status"], calls["fast"]["attempts"]) == ("ok", 1)
    assert server.requests["fast"] == 1  # answered before the kill: not asked again
    flaky = calls["flaky"]
    assert (flaky["status"], flaky["attempts"]) == ("ok", 2)
    assert len(flaky["retried_errors"]) == 1 and "500" in flaky["retried_errors"][0]
    assert server.requests["flaky"] == 2  # the provider saw two requests, as recorded
    assert calls["slow"]["status"] == "cancelled"
    assert "layer deadline passed" in calls["slow"]["error"]
    # The deadline of the layer's start before the kill, passed at the resume: not restarted.
    assert dues and max(dues) < resumed, (dues, resumed)
    assert out["messages"][-1].text.startswith("agg answer")


def test_unknown_store_is_a_clear_error():
    from langgraph_moa import MoAConfigError

    with pytest.raises(MoAConfigError, match="sqlite:///"):
        open_checkpointer("redis://localhost")
