"""The local runtime's bookkeeping, without starting a model server."""

import re
import threading
import time
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

from langgraph_moa.local.runtime import LocalRuntime, _port_was_taken
from langgraph_moa.run._accounting import finish_reason, ok_record, token_logprobs


class FakeServer:
    def __init__(self):
        self.terminated = False

    def terminate(self):
        self.terminated = True


def test_ctrl_c_kills_servers_even_while_the_runtime_lock_is_held():
    # The Ctrl-C handler runs in the main thread, which may hold the lock while it spawns a
    # server: waiting for the lock there would hang forever (a run once did not stop in 60 s).
    runtime = LocalRuntime(threads=1, slots=1)
    server = FakeServer()
    runtime._servers["m"] = server
    with runtime._lock:
        done = threading.Event()
        worker = threading.Thread(target=lambda: (runtime.kill_now(), done.set()), daemon=True)
        worker.start()
        assert done.wait(10.0), "kill_now waited for the runtime lock"
    assert server.terminated


def test_a_bind_failure_in_the_server_log_means_the_port_was_taken():
    log = "E srv  start: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 33045"
    assert _port_was_taken(log)
    assert not _port_was_taken("E srv  load_model: failed to load model")


def test_token_logprobs_give_each_record_its_mean_confidence():
    response = AIMessage(
        content="Paris",
        response_metadata={
            "logprobs": {
                "content": [{"token": "Par", "logprob": -0.5}, {"token": "is", "logprob": -0.1}]
            }
        },
    )
    assert token_logprobs(response) == [-0.5, -0.1]
    record = ok_record(
        role="proposer",
        layer=1,
        proposer=0,
        sample=0,
        configured_model="m",
        response=response,
        latency_s=0.1,
    )
    assert record["mean_logprob"] == -0.3 and record["logprob_tokens"] == 2
    bare = ok_record(
        role="proposer",
        layer=1,
        proposer=0,
        sample=0,
        configured_model="m",
        response=AIMessage(content="Paris"),
        latency_s=0.1,
    )
    assert bare["mean_logprob"] is None and bare["logprob_tokens"] == 0
    assert bare["finish_reason"] is None
    stopped = AIMessage(content="Par", response_metadata={"finish_reason": "length"})
    assert finish_reason(stopped) == "length"


def test_the_core_room_lets_one_model_in_at_a_time_with_all_its_calls():
    from langgraph_moa.local.runtime import CoreRoom

    room = CoreRoom(shared=False)
    room.enter("big")
    room.enter("big")  # a second call of the same model joins its batch at once
    entered = threading.Event()
    waiter = threading.Thread(target=lambda: (room.enter("small"), entered.set()), daemon=True)
    waiter.start()
    assert not entered.wait(0.2), "another model got in while the room was busy"
    room.leave()
    assert not entered.wait(0.2), "another model got in before the last call left"
    room.leave()
    assert entered.wait(10.0)
    room.leave()


async def test_an_async_call_cancelled_while_waiting_gives_its_place_back():
    import asyncio

    from langgraph_moa.local.runtime import CoreRoom

    room = CoreRoom(shared=False)
    room.enter("big")

    async def small_call():
        async with room.aheld("small"):
            await asyncio.sleep(0)

    task = asyncio.create_task(small_call())
    await asyncio.sleep(0.1)
    task.cancel()
    room.leave()
    await asyncio.sleep(0.3)  # the waiting thread gets in, then leaves at once
    async with room.aheld("big"):
        pass  # the room is free again: this would hang if the cancelled call kept its place
    assert room._inside == 0


async def test_async_calls_waiting_for_the_room_leave_the_default_executor_free():
    """Each async call waiting for another model's room held a thread of the loop's default
    executor (`asyncio.to_thread`): a few waiting took them all, and every other
    ``run_in_executor`` work of the process (starting a server, building the answer event)
    queued behind them until the room emptied. Now they wait on threads of their own."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from langgraph_moa.local.runtime import CoreRoom

    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=2)
    loop.set_default_executor(pool)
    room = CoreRoom(shared=False)
    room.enter("big")

    async def small_call():
        async with room.aheld("small"):
            return room._model

    calls = [asyncio.create_task(small_call()) for _ in range(4)]
    while len(room._cond._waiters) < 2:  # the waits have begun (2: the pool's size on main)
        await asyncio.sleep(0.01)
    other = asyncio.ensure_future(asyncio.to_thread(lambda: "ran"))
    done, _ = await asyncio.wait({other}, timeout=30)  # a hang guard, not a timing
    room.leave()  # either way, let the waiting calls in
    assert other in done, "other work waited for the room's waiters to leave the executor"
    assert await asyncio.gather(*calls) == ["small"] * 4
    assert room._inside == 0


def test_shared_cores_let_every_model_in():
    from langgraph_moa.local.runtime import CoreRoom

    room = CoreRoom(shared=True)
    room.enter("big")
    room.enter("small")  # returns at once
    room.leave()
    room.leave()


def test_the_local_runtime_does_not_import_the_model_resolution_it_serves():
    # models.py builds local models through the runtime; the runtime importing models back
    # was an import cycle. Both share the HTTP client from a module of its own.
    import ast
    from pathlib import Path

    import langgraph_moa.local.runtime as runtime

    tree = ast.parse(Path(runtime.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "langgraph_moa.providers._models" not in imported


@pytest.mark.parametrize("name", ["LANGGRAPH_MOA_THREADS", "LANGGRAPH_MOA_SLOTS"])
@pytest.mark.parametrize("value", ["four", "2.5", "0", "-1", "1e3", "²"])
def test_a_bad_thread_or_slot_count_is_refused_naming_the_variable(monkeypatch, name, value):
    """int("four") raised a bare ValueError, and 0 or -1 reached llama.cpp."""
    from langgraph_moa.errors import MoAConfigError

    monkeypatch.setenv(name, value)
    with pytest.raises(
        MoAConfigError, match=f"^{name} must be a whole number (of at least|from) 1"
    ):
        LocalRuntime()


@pytest.mark.parametrize("value", ["257", "100000", str(2**40)])
def test_a_slot_count_past_what_a_server_can_hold_is_refused(monkeypatch, value):
    """Each slot holds a full context: 100,000 slots of 4096 tokens overflowed llama.cpp's
    32-bit context size, and far fewer exhaust the memory."""
    from langgraph_moa.errors import MoAConfigError

    monkeypatch.setenv("LANGGRAPH_MOA_SLOTS", value)
    with pytest.raises(
        MoAConfigError, match=r"^LANGGRAPH_MOA_SLOTS must be a whole number from 1 to 256"
    ):
        LocalRuntime()
    monkeypatch.setenv("LANGGRAPH_MOA_SLOTS", "256")
    assert LocalRuntime().slots == 256
    # The most slots, each of the largest context, still fit llama.cpp's 32-bit n_ctx.
    from langgraph_moa.local.catalog import MAX_CONTEXT
    from langgraph_moa.local.runtime import MAX_SLOTS

    assert MAX_SLOTS * MAX_CONTEXT <= 2**31 - 1


@pytest.mark.parametrize("value", ["513", "100000", str(2**40)])
def test_a_thread_count_past_what_llama_cpp_can_run_is_refused(monkeypatch, value):
    """Any count was taken (2**40 went to the server): ggml's CPU thread pool is built for
    at most 512 threads (GGML_MAX_N_THREADS), and threads past the cores only take turns."""
    from langgraph_moa.errors import MoAConfigError

    monkeypatch.setenv("LANGGRAPH_MOA_THREADS", value)
    with pytest.raises(
        MoAConfigError, match=r"^LANGGRAPH_MOA_THREADS must be a whole number from 1 to 512"
    ) as err:
        LocalRuntime()
    assert "\n" not in str(err.value)
    monkeypatch.setenv("LANGGRAPH_MOA_THREADS", "512")
    assert LocalRuntime().threads == 512


def test_the_default_thread_count_is_every_core_up_to_the_most_a_server_runs(monkeypatch):
    import langgraph_moa.local.runtime as runtime

    monkeypatch.delenv("LANGGRAPH_MOA_THREADS", raising=False)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 6)
    assert LocalRuntime().threads == 6
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2048)
    assert LocalRuntime().threads == 512


def test_thread_and_slot_counts_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("LANGGRAPH_MOA_THREADS", " 3 ")
    monkeypatch.setenv("LANGGRAPH_MOA_SLOTS", "2")
    runtime = LocalRuntime()
    assert (runtime.threads, runtime.slots) == (3, 2)
    monkeypatch.setenv("LANGGRAPH_MOA_SLOTS", "")
    assert LocalRuntime().slots == 4  # unset or empty: the default


# --- the server logs: deleted after a clean stop, kept (and named) after a failure ----------

ALIVE = "import sys, time; print('listening', flush=True); time.sleep(60)"
CRASHES = "import sys; print('E load_model: failed to load model', flush=True); sys.exit(3)"
PORT_TAKEN = "import sys; print('E srv start: couldn\\'t bind HTTP server socket'); sys.exit(1)"


@pytest.fixture
def stand_in(monkeypatch, tmp_path):
    """Run a script in place of the llama.cpp server process; logs go to `tmp_path`."""
    import subprocess
    import sys
    import tempfile

    import httpx

    from langgraph_moa.local import runtime

    monkeypatch.setattr(runtime, "model_path", lambda info: tmp_path / "model.gguf")
    monkeypatch.setattr(runtime, "_require_llama_server", lambda: None)  # not needed here
    monkeypatch.setattr(runtime, "available_memory", lambda: None)  # this machine's aside
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real = subprocess.Popen
    script = {"code": ALIVE}

    def popen(args, **kwargs):
        if args[:3] != [sys.executable, "-m", "langgraph_moa.local._serve"]:
            return real(args, **kwargs)  # another program (openai asks `uname -p`)
        return real([sys.executable, "-c", script["code"], args[-1]], **kwargs)

    monkeypatch.setattr(runtime.subprocess, "Popen", popen)
    ports = iter(range(40000, 40100))
    monkeypatch.setattr(runtime, "free_port", lambda: next(ports))

    def nobody_listens(url, **kwargs):
        raise httpx.ConnectError("connection refused")

    monkeypatch.setattr(runtime.httpx, "get", nobody_listens)  # unit tests open no socket
    started = []

    def start(code: str):
        script["code"] = code
        started.append(runtime.LocalServer(runtime.lookup("qwen2.5-coder-0.5b"), threads=1))
        return started[-1]

    start.script = script  # what a server the runtime spawns itself runs
    yield start
    for server in started:
        if server.alive():
            server.process.kill()
            server.process.wait()
        server._log.close()  # as stop() would: left to garbage collection, a ResourceWarning


def logs(folder) -> list:
    return sorted(folder.glob("moa-*.log"))


def test_a_server_stopped_by_this_process_leaves_no_log(stand_in, tmp_path):
    server = stand_in(ALIVE)
    assert logs(tmp_path) == [Path(server.log_path)]
    server.stop()
    assert logs(tmp_path) == []


@pytest.mark.parametrize(
    "failure",
    [OSError(24, "Too many open files"), FileNotFoundError(2, "No such file"), KeyboardInterrupt()],
)
def test_a_server_that_could_not_be_started_leaves_no_open_log(
    stand_in, tmp_path, monkeypatch, failure
):
    # The log was opened (and locked) before the server's Popen; when Popen raised (no file
    # descriptors left, the interpreter gone, Ctrl-C while waiting for the spawner) the open
    # handle stayed until garbage collection, and the empty log on disk until the next sweep.
    import tempfile

    from langgraph_moa.local import runtime

    opened = []
    real = tempfile.NamedTemporaryFile

    def recorded(*args, **kwargs):
        opened.append(real(*args, **kwargs))
        return opened[-1]

    def refuse(args, **kwargs):
        raise failure

    monkeypatch.setattr(runtime.tempfile, "NamedTemporaryFile", recorded)
    monkeypatch.setattr(runtime, "popen", refuse)
    with pytest.raises(type(failure)):
        stand_in(ALIVE)
    assert len(opened) == 1 and opened[0].closed
    assert logs(tmp_path) == []


@pytest.fixture
def spawned(stand_in, monkeypatch):
    """Every process the stand-in servers started; any still running is killed after."""
    import subprocess

    from langgraph_moa.local import runtime

    started = []
    real_popen = runtime.subprocess.Popen

    def recorded(args, **kwargs):
        started.append(real_popen(args, **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", recorded)
    yield started
    for process in started:
        process.kill()
        process.wait()


def test_ctrl_c_just_after_the_server_started_leaves_no_server_running(
    stand_in, spawned, monkeypatch
):
    """Ctrl-C between `popen` returning and `self.process` being set: the server it had
    started had no handle anywhere, and ran (a model loaded, GBs of memory) for as long as
    this process did; a REPL or a notebook goes on after Ctrl-C."""
    from langgraph_moa.local import runtime

    real_start = runtime.popen

    def interrupted(args, **kwargs):
        real_start(args, **kwargs)
        raise KeyboardInterrupt  # as if it arrived as the call returned

    monkeypatch.setattr(runtime, "popen", interrupted)
    with pytest.raises(KeyboardInterrupt):
        stand_in(ALIVE)
    assert len(spawned) == 1
    assert spawned[0].poll() is not None, "the interrupted start left its server running"


def test_ctrl_c_as_a_started_server_is_handed_to_the_runtime_leaves_no_server_running(
    spawned, monkeypatch
):
    """Ctrl-C as `LocalServer(...)` returned (or as its `_spawn` did), before the runtime
    stored it: the server had no handle, and `stop_all` (at exit too) never stopped it."""
    from langgraph_moa.local import runtime

    class Interrupted(runtime.LocalServer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            raise KeyboardInterrupt  # as if it arrived as the constructor returned

    monkeypatch.setattr(runtime, "LocalServer", Interrupted)
    local = LocalRuntime(threads=1, slots=1)
    with pytest.raises(KeyboardInterrupt):
        local.server("qwen2.5-coder-0.5b")
    local.stop_all()
    assert len(spawned) == 1
    assert spawned[0].poll() is not None, "the interrupted start left its server running"


def test_a_long_running_process_forgets_the_logs_of_servers_it_is_done_with(stand_in):
    # Every log this process ever locked stayed in the lock module's set of its own files:
    # a `moa serve` replacing servers for weeks grew it with each one.
    from langgraph_moa.local import _filelock

    stopped, failed = stand_in(ALIVE), stand_in(CRASHES)
    stopped.stop()
    failed.process.wait()
    failed.stop()  # exited by itself: its log is kept, and no longer this process's to hold
    assert stopped.log_path not in _filelock._OWN
    assert not {failed.log_path, failed._log.name} & _filelock._OWN


def test_stop_all_and_ctrl_c_leave_no_log(stand_in, tmp_path):
    runtime = LocalRuntime(threads=1, slots=1)
    runtime._servers = {"a": stand_in(ALIVE), "b": stand_in(ALIVE)}
    runtime.stop_all()
    assert logs(tmp_path) == []
    runtime._servers = {"c": stand_in(ALIVE)}
    runtime.kill_now()  # the Ctrl-C handler: the process exits right after, without clean-up
    assert logs(tmp_path) == []


def test_a_forked_childs_exit_leaves_the_parents_servers_and_logs_alone(stand_in, tmp_path):
    """A forked child (a gunicorn worker) inherits the runtime with the parent's `stop_all`
    registered at exit. There the parent's server is no child of its: `poll` read it as
    exited with 0, and its normal exit renamed the parent's live log to a failed one (and
    could trim the parent's older failed logs); the parent's `log_path` named no file."""
    import os

    from tests.helpers import exit_code

    parent = LocalRuntime(threads=1, slots=1)
    server = stand_in(ALIVE)
    parent._servers = {"qwen2.5-coder-0.5b": server}
    try:
        pid = os.fork()
        if pid == 0:  # the child: its exit runs what the parent registered (`atexit`)
            try:
                parent.stop_all()
                server.replaced()  # what another runtime's next call does with it there
            finally:
                os._exit(0)
        assert exit_code(pid) == 0
        assert logs(tmp_path) == [Path(server.log_path)] and server.alive()
    finally:
        parent.stop_all()
    assert logs(tmp_path) == []


def test_a_server_that_died_keeps_its_log_and_a_warning_names_it(stand_in, tmp_path, caplog):
    # The error named the log and repeated its last lines, and `moa serve` passed it to its
    # client: it names the model now, and the operator's warning the log and its lines.
    import logging

    from langgraph_moa.errors import LocalRuntimeError

    server = stand_in(CRASHES)
    with caplog.at_level(logging.WARNING, logger="langgraph_moa.local"):
        with pytest.raises(LocalRuntimeError) as info:
            server.wait_ready(timeout=10)
    [log] = logs(tmp_path)
    [warned] = [r.getMessage() for r in caplog.records]
    assert str(log) in warned and "failed to load model" in warned, warned
    assert "exited with code 3" in str(info.value) and "'qwen2.5-coder-0.5b'" in str(info.value)
    assert _leaks(str(info.value), server) == [] and "failed to load" not in str(info.value)
    server.stop()  # what the runtime does before it spawns a replacement
    assert logs(tmp_path) == [log] and "failed to load model" in log.read_text()


def test_a_server_that_never_answered_keeps_its_log(stand_in, tmp_path, caplog):
    import logging

    from langgraph_moa.errors import LocalRuntimeError

    server = stand_in(ALIVE)  # running, but nothing listens on its port
    with caplog.at_level(logging.WARNING, logger="langgraph_moa.local"):
        with pytest.raises(LocalRuntimeError) as info:
            server.wait_ready(timeout=0.3)
    [log] = logs(tmp_path)
    assert "listening" in log.read_text()
    [warned] = [r.getMessage() for r in caplog.records]
    assert str(log) in warned and f"port {server.port}" in warned and "listening" in warned
    assert "did not answer within 0.3s" in str(info.value), info.value
    assert _leaks(str(info.value), server) == [] and "listening" not in str(info.value)


def test_only_the_last_log_of_a_server_respawned_for_a_taken_port_is_kept(stand_in, tmp_path):
    from langgraph_moa.errors import LocalRuntimeError

    server = stand_in(PORT_TAKEN)  # every port "taken": three respawns, then the error
    with pytest.raises(LocalRuntimeError):
        server.wait_ready(timeout=10)
    assert logs(tmp_path) == [Path(server.log_path)]


def test_the_kept_logs_of_a_model_whose_server_fails_every_start_are_capped(
    stand_in, tmp_path, caplog
):
    # Each failed start kept its log: a model that failed at every start (a `moa serve`
    # retrying it request after request) filled the temp folder without bound. Only the
    # newest few failed logs of a model are kept; a running server's log is never touched.
    import logging

    from langgraph_moa.errors import LocalRuntimeError
    from langgraph_moa.local.runtime import KEPT_LOGS_PER_MODEL

    running = stand_in(ALIVE)
    failed = []
    with caplog.at_level(logging.WARNING, logger="langgraph_moa.local"):
        for _ in range(KEPT_LOGS_PER_MODEL + 3):
            server = stand_in(CRASHES)
            with pytest.raises(LocalRuntimeError):
                server.wait_ready(timeout=10)
            server.stop()
            failed.append(server)
    kept = [Path(s.log_path) for s in failed[-KEPT_LOGS_PER_MODEL:]]
    assert logs(tmp_path) == sorted([Path(running.log_path), *kept])
    assert running.alive() and "listening" in Path(running.log_path).read_text()
    warned = caplog.records[-1].getMessage()  # names where the kept log is now
    assert failed[-1].log_path in warned and f"last {KEPT_LOGS_PER_MODEL}" in warned, warned


def test_the_kept_logs_are_those_of_the_latest_failures_not_the_latest_writes(stand_in, tmp_path):
    # The kept logs were chosen by when each was last written: a server that died after an
    # hour of quiet (its log untouched for that hour) lost its log at the next failure,
    # while older failures' logs stayed, and "the last 3 failed logs" were not those.
    import os
    import time

    from langgraph_moa.errors import LocalRuntimeError
    from langgraph_moa.local.runtime import KEPT_LOGS_PER_MODEL

    def fail(quiet_s: float = 0.0) -> Path:
        server = stand_in(CRASHES)
        server.process.wait()
        if quiet_s:  # its last line was written long before it was found dead
            hour_ago = time.time() - quiet_s
            os.utime(server.log_path, (hour_ago, hour_ago))
        with pytest.raises(LocalRuntimeError):
            server.wait_ready(timeout=10)
        server.stop()
        return Path(server.log_path)

    failed = [fail() for _ in range(KEPT_LOGS_PER_MODEL - 1)]
    failed.append(fail(quiet_s=3600))
    failed.append(fail())
    assert logs(tmp_path) == sorted(failed[-KEPT_LOGS_PER_MODEL:])


DYING = "import time; print('GGML_ASSERT(n_tokens > 0) failed', flush=True); time.sleep(60)"


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
async def test_a_server_that_dies_mid_call_names_its_kept_log(stand_in, how, caplog):
    # A server that answered readiness and crashed during a call kept its log, but the
    # call's error was the client's "Connection error." naming no log: the user could not
    # find the server's last words, and the logs piled up unnamed. A warning names it (not
    # the error, which a `moa serve` client reads).
    import logging
    import signal
    import time

    import httpx

    from langgraph_moa._redact import describe_error
    from langgraph_moa.providers._retry import is_retryable

    server = stand_in(DYING)
    server._ready.set()  # it answered readiness

    def crash(request):  # the server dies while it works on the call (no socket opened)
        for _ in range(200):  # once it has written its last words
            if "GGML_ASSERT" in Path(server.log_path).read_text():
                break
            time.sleep(0.05)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    transport = httpx.MockTransport(crash)
    clients = {
        "http_client": httpx.Client(transport=transport),
        "http_async_client": httpx.AsyncClient(transport=transport),
    }
    local = LocalRuntime(threads=1, slots=1)
    local._servers["qwen2.5-coder-0.5b"] = server
    model = local.chat_model("qwen2.5-coder-0.5b", clients)
    caplog.set_level(logging.WARNING, logger="langgraph_moa.local")
    with pytest.raises(Exception) as info:
        if how == "invoke":
            model.invoke("hi")
        elif how == "ainvoke":
            await model.ainvoke("hi")
        elif how == "stream":
            list(model.stream("hi"))
        else:
            [chunk async for chunk in model.astream("hi")]
    log = server.log_path
    assert Path(log).exists() and "GGML_ASSERT" in Path(log).read_text()
    seen = describe_error(info.value)  # what the call record and the run's error say
    assert f"exited with code {-signal.SIGKILL}" in seen and _leaks(seen, server) == [], seen
    [warned] = [r.getMessage() for r in caplog.records]  # the operator's, the log named
    assert log in warned and "GGML_ASSERT" in warned and f"pid {server.pid}" in warned, warned
    assert is_retryable(info.value)  # the graph's retry starts a new server
    # The dead server's log stayed open until the runtime stopped it, or until garbage
    # collection (a ResourceWarning) for a server nobody asked for again; and Windows
    # refuses to rename an open file, so the log was never marked as a failure's there.
    assert server._log.closed


def exit_waits(server) -> list:
    """Record how long each wait for `server`'s process to exit may take (None: for ever)."""
    waits = []
    wait = server.process.wait

    def recorded(timeout=None):
        waits.append(timeout)
        return wait(timeout)

    server.process.wait = recorded
    return waits


def test_a_call_refused_by_a_live_server_is_left_as_it_was(stand_in):
    # Only a dead server's failure is rewritten: a live one's answer (a 400) stays the
    # provider's own error, and no time is spent waiting for the process to exit.
    import httpx
    import openai

    server = stand_in(DYING)
    server._ready.set()
    waits = exit_waits(server)
    refuse = httpx.MockTransport(lambda request: httpx.Response(400, json={"error": "bad"}))
    local = LocalRuntime(threads=1, slots=1)
    local._servers["qwen2.5-coder-0.5b"] = server
    model = local.chat_model("qwen2.5-coder-0.5b", {"http_client": httpx.Client(transport=refuse)})
    with pytest.raises(openai.BadRequestError):
        model.invoke("hi")
    assert all(w == 0 for w in waits) and server.alive(), waits


def test_a_server_whose_parent_is_gone_deletes_its_log_as_it_exits(monkeypatch, tmp_path):
    from langgraph_moa.local import _serve

    log = tmp_path / "moa-x-1.log"
    log.write_text("serving")
    monkeypatch.setattr(_serve.os, "getppid", lambda: 1)

    def exit_now(code):
        raise SystemExit(code)

    monkeypatch.setattr(_serve.os, "_exit", exit_now)
    with pytest.raises(SystemExit):
        _serve._watch_parent(12345, str(log))
    assert not log.exists()


@pytest.mark.parametrize(
    "name", ["LANGGRAPH_MOA_THREADS", "LANGGRAPH_MOA_SLOTS", "LANGGRAPH_MOA_CONTEXT"]
)
def test_a_count_of_thousands_of_digits_is_refused_naming_the_variable(monkeypatch, name):
    """int() refuses more than 4300 digits: a bare ValueError escaped, naming no variable."""
    from langgraph_moa.errors import MoAConfigError
    from langgraph_moa.local.catalog import context_size, lookup

    monkeypatch.setenv(name, "9" * 5000)
    with pytest.raises(MoAConfigError, match=f"^{name} must be a whole number") as err:
        LocalRuntime()
        context_size(lookup("qwen2.5-coder-1.5b"))
    assert len(str(err.value)) < 300


@pytest.mark.parametrize("fault", ["timeout", "garbled"])
def test_a_live_servers_timeout_is_raised_without_waiting_for_an_exit(stand_in, fault):
    # A call to a live server that timed out (its call timeout is the HTTP timeout), or
    # whose answer could not be read, waited a whole second for the server to exit before
    # its error was raised and the retry began: only a broken connection may be a death.
    import httpx
    import openai

    server = stand_in(DYING)
    server._ready.set()
    waits = exit_waits(server)

    def fail(request):
        if fault == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(200, content=b"<html>proxy error</html>")

    transport = httpx.MockTransport(fail)
    local = LocalRuntime(threads=1, slots=1)
    local._servers["qwen2.5-coder-0.5b"] = server
    model = local.chat_model(
        "qwen2.5-coder-0.5b", {"http_client": httpx.Client(transport=transport)}
    )
    with pytest.raises(Exception) as info:
        model.invoke("hi")
    assert all(w == 0 for w in waits), (waits, info.value)  # only a look
    assert server.alive()
    if fault == "timeout":  # still the provider's own error, which the graph retries
        assert isinstance(info.value, openai.APITimeoutError)
    assert "exited" not in str(info.value)


@pytest.mark.parametrize(
    ("death", "said"),
    [("exit", "exited with code 3"), ("kill", f"exited with code {-9} (killed by SIGKILL)")],
)
def test_a_server_that_died_between_calls_is_replaced_saying_so_once(
    stand_in, tmp_path, caplog, death, said
):
    # A server that died between calls (killed, out of memory) was replaced silently: its
    # log was kept, as a failed server's is, but nothing named it and it was never deleted.
    import logging
    import signal

    dead = stand_in(CRASHES if death == "exit" else ALIVE)
    if death == "kill":
        deadline = time.monotonic() + 20
        while "listening" not in Path(dead.log_path).read_text():  # it has said something
            assert time.monotonic() < deadline
            time.sleep(0.05)
        dead.process.send_signal(signal.SIGKILL)
    dead.process.wait()
    stand_in.script["code"] = ALIVE  # the replacement runs
    runtime = LocalRuntime(threads=1, slots=1)
    runtime._servers["qwen2.5-coder-0.5b"] = dead
    try:
        with caplog.at_level(logging.WARNING, logger="langgraph_moa.local"):
            replacement = runtime.server("qwen2.5-coder-0.5b")
            assert runtime.server("qwen2.5-coder-0.5b") is replacement  # said once
        assert replacement is not dead and replacement.alive()
        [record] = caplog.records
        said_here = record.getMessage()
        assert record.levelno == logging.WARNING
        assert "'qwen2.5-coder-0.5b'" in said_here and said in said_here, said_here
        assert dead.log_path in said_here and "a new one was started" in said_here
        assert Path(dead.log_path).exists()  # kept for the user, who now knows where
        # Its last lines, as a start failure's warning gives them: the user need not open
        # the file to learn why the server went.
        last = "failed to load model" if death == "exit" else "listening"
        assert said_here.splitlines()[-1].endswith(last), said_here
    finally:
        runtime.stop_all()


def test_a_dead_server_whose_replacement_cannot_start_is_named_once(
    stand_in, tmp_path, caplog, monkeypatch
):
    # The dead server stayed in the runtime when its replacement failed to start (the memory
    # check, a missing package): every later call warned again about the same dead server.
    import logging

    from langgraph_moa.errors import LocalModelError
    from langgraph_moa.local import runtime as runtime_module

    dead = stand_in(CRASHES)
    dead.process.wait()
    runtime = LocalRuntime(threads=1, slots=1)
    runtime._servers["qwen2.5-coder-0.5b"] = dead

    def no_room():
        raise LocalModelError("no room for its KV cache")

    monkeypatch.setattr(runtime_module, "_require_llama_server", no_room)
    try:
        with caplog.at_level(logging.WARNING, logger="langgraph_moa.local"):
            for _ in range(2):
                with pytest.raises(LocalModelError, match="no room"):
                    runtime.server("qwen2.5-coder-0.5b")
        assert [r.getMessage().count(dead.log_path) for r in caplog.records] == [1]
        assert runtime.running() == []
    finally:
        runtime.stop_all()


def test_without_the_llama_cpp_server_package_the_error_says_how_to_install_it(
    monkeypatch, tmp_path
):
    # Without xllamacpp the server process died on its import: the error was its traceback,
    # and its log stayed in the temp folder.
    import tempfile

    from langgraph_moa.errors import LocalModelError
    from langgraph_moa.local import runtime

    real = runtime.find_spec
    monkeypatch.setattr(
        runtime, "find_spec", lambda name: None if name == "xllamacpp" else real(name)
    )
    monkeypatch.setattr(runtime, "model_path", lambda info: tmp_path / "model.gguf")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    local = LocalRuntime(threads=1, slots=1)
    with pytest.raises(LocalModelError) as err:
        local.server("qwen2.5-coder-0.5b")
    message = str(err.value)
    assert "xllamacpp" in message and "pip install 'langgraph-moa[local]'" in message, message
    assert "Traceback" not in message and "\n" not in message
    assert not local.running() and logs(tmp_path) == []


def test_a_context_too_big_for_the_memory_is_refused_before_a_server_starts(
    stand_in, monkeypatch, tmp_path
):
    # --context-size 1048576 on 4 slots asked llama.cpp for 48 GiB of KV cache on a 24 GiB
    # machine: the server died, and the error's tail was its Python traceback ("Failed to
    # init server, please check the input params"), the cause out of sight. An allocation
    # the kernel grants but the machine cannot hold is worse: the OOM killer picks.
    from langgraph_moa.errors import LocalModelError
    from langgraph_moa.local import runtime

    monkeypatch.setattr(runtime, "available_memory", lambda: 24 * 2**30, raising=False)
    monkeypatch.setenv("LANGGRAPH_MOA_CONTEXT", "1048576")
    with pytest.raises(LocalModelError) as err:
        stand_in(ALIVE)
    message = str(err.value)
    assert "'qwen2.5-coder-0.5b'" in message and "4 slots of 1048576 tokens" in message
    assert "51.7 GB" in message and "25.8 GB" in message, message
    assert "--context-size" in message and "LANGGRAPH_MOA_SLOTS" in message
    assert "\n" not in message and logs(tmp_path) == []
    monkeypatch.delenv("LANGGRAPH_MOA_CONTEXT")  # the catalog's 4096 tokens fit
    assert stand_in(ALIVE).alive()


def test_a_server_llama_cpp_cannot_start_ends_in_one_line_not_a_traceback(
    monkeypatch, capsys, tmp_path
):
    # llama.cpp says why it failed (out of memory for the KV cache, a bad file) in its own
    # lines; the Python traceback after them filled the 12 lines the error shows, leaving
    # only "Failed to init server, please check the input params".
    import json
    import sys
    import types

    from langgraph_moa.local import _serve

    class CommonParams:
        def __getattr__(self, name):
            value = types.SimpleNamespace()
            setattr(self, name, value)
            return value

    def server(params):
        raise RuntimeError("Failed to init server, please check the input params.")

    fake = types.SimpleNamespace(CommonParams=CommonParams, Server=server)
    monkeypatch.setitem(sys.modules, "xllamacpp", fake)
    monkeypatch.setattr(
        _serve.threading, "Thread", lambda **kwargs: types.SimpleNamespace(start=lambda: None)
    )
    monkeypatch.setattr(_serve, "_killed_with_parent", lambda killed: None)  # not pytest's
    monkeypatch.setattr(_serve.os, "getppid", lambda: 1)
    settings = {"parent_pid": 1, "model_path": "m.gguf", "alias": "m", "slots": 1}
    settings |= {"ctx_per_slot": 256, "threads": 1, "port": 1, "chat_template": None}
    monkeypatch.setattr(sys, "argv", ["_serve", json.dumps(settings)])
    with pytest.raises(SystemExit) as exited:
        _serve.main()
    assert exited.value.code == 1
    said = capsys.readouterr()
    assert said.out.strip().splitlines() == [
        "llama.cpp could not start the server (Failed to init server, please check the input "
        "params.): its reason is in the lines above."
    ], said


def _machine(root, available_kb, cgroup_line, files):
    """Lay out a /proc and /sys/fs/cgroup under `root` as a container shows them."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/meminfo").write_text(
        f"MemTotal:       {2 * available_kb} kB\nMemAvailable:   {available_kb} kB\n"
    )
    (root / "proc/self/cgroup").write_text(cgroup_line + "\n")
    for name, text in files.items():
        (root / "sys/fs/cgroup" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "sys/fs/cgroup" / name).write_text(text)
    return root


GIB = 2**30


@pytest.mark.parametrize(
    ("cgroup_line", "files"),
    [
        (  # cgroup v2: the limit and what the group holds, its file cache reclaimable
            "0::/box",
            {
                "box/memory.max": f"{2 * GIB}\n",
                "box/memory.current": f"{GIB + GIB // 2}\n",
                "box/memory.stat": f"anon 1\nactive_file {GIB // 4}\ninactive_file {GIB // 4}\n",
            },
        ),
        (  # a limit set on the parent group holds its children too
            "0::/pod/box",
            {
                "pod/memory.max": f"{2 * GIB}\n",
                "pod/memory.current": f"{GIB + GIB // 2}\n",
                "pod/memory.stat": f"active_file {GIB // 2}\ninactive_file 0\n",
                "pod/box/memory.max": "max\n",
                "pod/box/memory.current": f"{GIB}\n",
                "pod/box/memory.stat": "active_file 0\ninactive_file 0\n",
            },
        ),
        (  # cgroup v1, as older Docker and Kubernetes nodes still run it
            "4:memory:/docker/abc",
            {
                "memory/docker/abc/memory.limit_in_bytes": f"{2 * GIB}\n",
                "memory/docker/abc/memory.usage_in_bytes": f"{GIB + GIB // 2}\n",
                "memory/docker/abc/memory.stat": (
                    f"cache 1\ntotal_active_file {GIB // 2}\ntotal_inactive_file 0\n"
                ),
            },
        ),
    ],
)
def test_the_memory_available_is_the_containers_not_the_hosts(tmp_path, cgroup_line, files):
    # In a container /proc/meminfo shows the host's memory: a 2 GiB container on a 64 GiB
    # host passed the check with 20 GiB "available", and the server's KV cache woke the
    # container's out-of-memory killer instead of the one-sentence refusal.
    from langgraph_moa.local import runtime

    root = _machine(tmp_path, 20 * GIB // 1024, cgroup_line, files)
    assert runtime.available_memory(root) == GIB  # 2 GiB - 1.5 GiB held + 0.5 GiB of cache


def test_without_a_cgroup_limit_the_memory_available_is_the_machines(tmp_path):
    from langgraph_moa.local import runtime

    files = {"memory.max": "max\n", "memory.current": f"{GIB}\n", "memory.stat": ""}
    root = _machine(tmp_path, 3 * GIB // 1024, "0::/", files)
    assert runtime.available_memory(root) == 3 * GIB
    (root / "proc/meminfo").unlink()  # not Linux, or no /proc: unknown, not checked
    (root / "proc/self/cgroup").unlink()
    assert runtime.available_memory(root) is None


def test_the_model_weights_mapped_from_disk_do_not_count_against_the_memory(stand_in, monkeypatch):
    # llama.cpp maps the model file (its pages are the file's, dropped and read again
    # under pressure, and already counted as available while the file is cached): only
    # the KV cache must be held. A machine with room for 4 slots' KV cache (201 MB) but
    # not for it plus the 491 MB file was refused a server that runs.
    from langgraph_moa.local import runtime

    kv_cache = 4 * 4096 * runtime.lookup("qwen2.5-coder-0.5b").kv_bytes_per_token
    needed = kv_cache + runtime.SERVER_OVERHEAD_BYTES
    monkeypatch.setattr(runtime, "available_memory", lambda: needed + 50_000_000)
    assert stand_in(ALIVE).alive()


def test_the_servers_fixed_overhead_counts_against_the_memory(stand_in, monkeypatch):
    # Only the KV cache was counted, but a llama.cpp server holds about 197 MB more of its
    # own (compute buffers, the interpreter) at any slot count: a machine with room for
    # the KV cache and not for that passed the check and the server was killed loading.
    from langgraph_moa.errors import LocalModelError
    from langgraph_moa.local import runtime

    info = runtime.lookup("qwen2.5-coder-0.5b")
    kv_cache = 4 * 4096 * info.kv_bytes_per_token
    monkeypatch.setattr(runtime, "available_memory", lambda: kv_cache + 50_000_000)
    with pytest.raises(LocalModelError) as err:
        runtime.LocalServer(info, threads=1, slots=4)
    message = str(err.value)
    assert "'qwen2.5-coder-0.5b'" in message and "\n" not in message, message
    assert "KV cache and the server itself" in message, message
    assert 150_000_000 <= runtime.SERVER_OVERHEAD_BYTES <= 250_000_000


def test_swap_is_not_counted_as_memory_for_a_server(tmp_path):
    # A KV cache in swap is read at every token: a start that fits only with swap would
    # thrash, so the figure is MemAvailable, which leaves swap out.
    from langgraph_moa.local import runtime

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text(
        "MemTotal: 4000000 kB\nMemAvailable: 1000000 kB\nSwapFree: 8000000 kB\n"
    )
    assert runtime.available_memory(tmp_path) == 1000000 * 1024


HOLDS_120_MB = (
    "import sys, time; held = b'x' * 120_000_000; print('loaded', flush=True); time.sleep(60)"
)


def test_servers_started_together_are_checked_against_what_the_others_will_take(
    stand_in, monkeypatch, tmp_path
):
    # Each server was checked alone, against the memory free before the others started
    # loading: three models of one run each "fit" and together woke the OOM killer. Room
    # for the 1.5B model's server (KV cache and overhead) but not for it and what the 0.5B
    # one has still to take is refused; once the 0.5B server holds most of its memory (the
    # memory figure counts it then), the 1.5B server starts.
    from langgraph_moa.errors import LocalModelError
    from langgraph_moa.local import runtime

    def needs(name):  # at 1 slot of 4096 tokens, the server's own overhead included
        return 4096 * runtime.lookup(name).kv_bytes_per_token + runtime.SERVER_OVERHEAD_BYTES

    room = needs("qwen2.5-coder-1.5b") + needs("qwen2.5-coder-0.5b") - 60_000_000
    monkeypatch.setattr(runtime, "available_memory", lambda: room)
    local = LocalRuntime(threads=1, slots=1)
    try:
        stand_in.script["code"] = ALIVE  # spawned, its KV cache not allocated yet
        loading = local.server("qwen2.5-coder-0.5b")
        with pytest.raises(LocalModelError) as err:
            local.server("qwen2.5-coder-1.5b")
        message = str(err.value)
        assert "'qwen2.5-coder-1.5b'" in message and "starting" in message, message
        assert "\n" not in message
        loading.stop()
        stand_in.script["code"] = HOLDS_120_MB  # it has allocated its cache
        loaded = local.server("qwen2.5-coder-0.5b")
        deadline = time.monotonic() + 20
        while "loaded" not in Path(loaded.log_path).read_text():
            assert time.monotonic() < deadline and loaded.alive()
            time.sleep(0.05)
        assert local.server("qwen2.5-coder-1.5b").alive()
    finally:
        local.stop_all()


def test_a_server_started_on_a_call_says_so_and_when_it_is_ready(stand_in, caplog, monkeypatch):
    # `moa serve` started a local model's server on its first request without a word: the
    # request sat for about 7 s and the operator saw nothing. The runtime now says, at info,
    # when it starts one and when it answers (`moa serve` shows both on stderr).
    import logging

    import httpx

    from langgraph_moa.local import runtime as runtime_module

    stand_in.script["code"] = ALIVE
    runtime = LocalRuntime(threads=1, slots=1)
    try:
        with caplog.at_level(logging.INFO, logger="langgraph_moa.local"):
            server = runtime.server("qwen2.5-coder-0.5b")
            assert runtime.server("qwen2.5-coder-0.5b") is server  # said once
            monkeypatch.setattr(runtime_module.httpx, "get", lambda url, **k: httpx.Response(200))
            server.wait_ready()
            server.wait_ready()
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert len(said) == 2, said
        assert "starting local:qwen2.5-coder-0.5b" in said[0] and "waits" in said[0]
        assert said[1].startswith("local:qwen2.5-coder-0.5b is ready"), said
    finally:
        runtime.stop_all()


# --- what a `moa serve` client is told of a local model's death ------------------------------


def _leaks(text: str, server) -> list[str]:
    """The server's internals that `text` repeats: its log's path, pid, port, last words."""
    inside = {
        "log path": server.log_path,
        "temp folder": str(Path(server.log_path).parent),
        "pid": f"pid {server.pid}",
        "log excerpt": "GGML_ASSERT",
    }
    said = [what for what, fragment in inside.items() if fragment in text]
    return said + (["port"] if re.search(rf"\b{server.port}\b", text) else [])


def test_a_serve_client_is_not_told_the_dead_servers_pid_port_log_or_its_last_words(
    stand_in, fake, caplog, monkeypatch
):
    # A llama.cpp server that died during a call made the error name its pid, its port, the
    # temp log's path and the log's last 12 lines, and `moa serve` passed it all to the
    # client: the 502 body, `moa.calls[].error` of a fallback answer, the run stream's events.
    # A client now reads one sentence naming the model; the operator's warning has the rest.
    import json
    import logging
    import signal
    import time

    import httpx
    from fastapi.testclient import TestClient

    from langgraph_moa import MoAConfig
    from langgraph_moa.local import runtime as runtime_module
    from langgraph_moa.serving._app import create_app

    name = "qwen2.5-coder-0.5b"
    stand_in.script["code"] = DYING  # the replacement of layer 2 answers, then dies too
    monkeypatch.setattr(runtime_module.httpx, "get", lambda url, **k: httpx.Response(200))
    local = LocalRuntime(threads=1, slots=1)
    dead = []

    def crash(request):  # the server dies while it works on the call (no socket opened)
        server = local._servers[name]
        for _ in range(200):
            if "GGML_ASSERT" in Path(server.log_path).read_text():
                break
            time.sleep(0.05)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        dead.append(server)
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    transport = httpx.MockTransport(crash)
    clients = {
        "http_client": httpx.Client(transport=transport),
        "http_async_client": httpx.AsyncClient(transport=transport),
    }

    def system(*others):
        server = stand_in(DYING)  # a fresh server for each request, ready and about to die
        server._ready.set()
        local._servers[name] = server
        model = local.chat_model(name, clients)
        proposers = [model, *others]
        return MoAConfig(
            proposers=proposers,
            aggregator=fake("AGG"),
            retry={"max_attempts": 1},
            name="m",
        )

    def post(app, path="/v1/chat/completions", **extra):
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
        client = TestClient(app, base_url="http://localhost")
        headers = {"content-type": "application/json"}
        return client.post(path, content=json.dumps(body), headers=headers)

    said_to_clients = []
    try:
        with caplog.at_level(logging.WARNING, logger="langgraph_moa.local"):
            failed = post(create_app({"m": system()}))  # its only proposer died: a 502
            assert failed.status_code == 502, failed.text
            said_to_clients.append((failed.json()["error"]["message"], dead[-1]))
            fallback = post(create_app({"m": system(fake("B"))}))  # the other one answered
            assert fallback.status_code == 200, fallback.text
            errors = [c["error"] for c in fallback.json()["moa"]["calls"] if c.get("error")]
            assert len(errors) == 2  # layer 1's server died, and its replacement in layer 2
            said_to_clients += [(error, server) for error in errors for server in dead[-2:]]
            streamed = post(create_app({"m": system(fake("B"))}), stream=True)
            assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
            said_to_clients.append((streamed.text, dead[-1]))
            runs = post(create_app({"m": system(fake("B"))}), "/v1/moa/runs")
            assert runs.status_code == 200 and "event: answer" in runs.text, runs.text
            said_to_clients.append((runs.text, dead[-1]))
        for text, server in said_to_clients:
            assert _leaks(text, server) == [], text
            assert f"local model '{name}' exited with code -9" in text, text  # said, though
        # The 502's summary of the call's error is cut at 200 characters: the end is kept.
        assert "the operator's log says why, and a retry starts a new one." in failed.text
        # The operator still reads everything, once per death: the log's path and last words.
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        for server in dead:
            [said] = [w for w in warned if server.log_path in w]
            assert "GGML_ASSERT" in said and f"pid {server.pid}" in said, said
    finally:
        local.stop_all()


def test_a_replacement_refused_during_a_call_tells_the_client_one_sentence(
    stand_in, caplog, monkeypatch
):
    # A server that died was replaced at the next call, and the memory check refused the
    # replacement: the call's error (a `moa serve` client's `moa.calls[].error`) gave the
    # machine's free memory and the operator's flags and variables. The client now reads that
    # the model cannot start a server here; the operator's warning has the figures and fix.
    import logging

    import httpx

    from langgraph_moa._redact import describe_error
    from langgraph_moa.errors import LocalModelError
    from langgraph_moa.local import runtime as runtime_module

    dead = stand_in(CRASHES)
    dead.process.wait()
    local = LocalRuntime(threads=1, slots=1)
    local._servers["qwen2.5-coder-0.5b"] = dead
    transport = httpx.MockTransport(lambda request: httpx.Response(500))
    model = local.chat_model(
        "qwen2.5-coder-0.5b", {"http_client": httpx.Client(transport=transport)}
    )
    # chat_model replaced the dead server with one that crashes too: the call must find it
    # dead (and replace it), not still starting, where waiting for it reports its death.
    local._servers["qwen2.5-coder-0.5b"].process.wait()
    monkeypatch.setattr(runtime_module, "available_memory", lambda: 1000)
    try:
        with caplog.at_level(logging.WARNING, logger="langgraph_moa.local"):
            with pytest.raises(LocalModelError) as info:
                model.invoke("hi")
        seen = describe_error(info.value)
        assert "'qwen2.5-coder-0.5b'" in seen and "operator's log says why" in seen, seen
        assert "GB" not in seen and "LANGGRAPH_MOA" not in seen and "--context" not in seen
        warned = " ".join(r.getMessage() for r in caplog.records)
        assert "GB of memory" in warned and "LANGGRAPH_MOA_SLOTS" in warned, warned
    finally:
        local.stop_all()


def test_two_failures_kept_at_once_never_trim_each_others_log(stand_in, tmp_path, monkeypatch):
    # Keeping a failed log (rename, then date it now) and trimming the model's old ones
    # took no lock: another process trimming between the rename and the dating saw the
    # just-kept log with its last write's time (an hour ago), took it for the oldest and
    # deleted it, while the warning named it. Keeping and trimming now take turns.
    import os
    import threading
    import time

    from langgraph_moa.local.runtime import KEPT_LOGS_PER_MODEL

    first, second = stand_in(CRASHES), stand_in(CRASHES)
    for server in (first, second):
        server.process.wait()
    hour_ago = time.time() - 3600
    os.utime(first.log_path, (hour_ago, hour_ago))  # it last wrote an hour ago
    minute_ago = time.time() - 60
    for n in range(KEPT_LOGS_PER_MODEL - 1):  # earlier failures, kept a minute ago
        old = tmp_path / f"moa-qwen2.5-coder-0.5b-failed-old{n}.log"
        old.write_text("old")
        os.utime(old, (minute_ago, minute_ago))
    second_done = threading.Event()
    real_utime = os.utime
    first_kept = "failed-" + Path(first.log_path).name.removeprefix("moa-qwen2.5-coder-0.5b-")

    def slow_utime(path, *args, **kwargs):
        if str(path).endswith(first_kept):
            second_done.wait(1.0)  # the other keeper runs now, if nothing holds it
        return real_utime(path, *args, **kwargs)

    monkeypatch.setattr(os, "utime", slow_utime)
    racer = threading.Thread(target=first.stop)
    racer.start()
    time.sleep(0.2)  # the first is between its rename and its dating
    second.stop()
    second_done.set()
    racer.join()
    assert Path(first.log_path).exists() and Path(second.log_path).exists(), logs(tmp_path)
    assert len([p for p in logs(tmp_path) if "-failed-" in p.name]) == KEPT_LOGS_PER_MODEL


def test_a_log_folder_that_refuses_locks_still_keeps_the_failed_log(
    stand_in, tmp_path, monkeypatch, caplog
):
    # flock fails on some file systems (an NFS mount without its lock daemon: ENOLCK): the
    # OSError ran out of the failure's warning, so the operator was told neither what
    # happened nor where the log is, and the caller got an OSError instead of its error.
    # Without a lock the log is kept and trimmed as before the lock existed.
    import errno
    import logging

    from langgraph_moa.errors import LocalRuntimeError
    from langgraph_moa.local import _filelock

    def no_locks(*_):
        raise OSError(errno.ENOLCK, "No locks available")

    if _filelock.fcntl is None:
        pytest.skip("no OS lock without fcntl")
    monkeypatch.setattr(_filelock.fcntl, "flock", no_locks)
    server = stand_in(CRASHES)
    with caplog.at_level(logging.WARNING, logger="langgraph_moa.local"):
        with pytest.raises(LocalRuntimeError):
            server.wait_ready(timeout=10)
    [log] = logs(tmp_path)
    assert "-failed-" in log.name and str(log) == server.log_path
    [warned] = [r.getMessage() for r in caplog.records]
    assert str(log) in warned, warned


@pytest.mark.timeout(60)
def test_a_stuck_keeper_leaves_the_old_logs_untrimmed_and_keeps_this_one(
    stand_in, tmp_path, monkeypatch, caplog
):
    # Another process holding the model's log lock and stuck (stopped with Ctrl-Z) made
    # every later failure wait for it forever, its warning unsaid. The wait is bounded: the
    # log is kept and named, and the old ones are left for a later trim.
    import logging

    from langgraph_moa.local import _filelock, runtime
    from langgraph_moa.local.runtime import KEPT_LOGS_PER_MODEL

    if _filelock.fcntl is None:  # Windows: imported here, the test errored rather than skipped
        pytest.skip("no OS lock without fcntl")
    fcntl = _filelock.fcntl
    monkeypatch.setattr(runtime, "KEEPER_WAIT_S", 0.0)
    for n in range(KEPT_LOGS_PER_MODEL):
        (tmp_path / f"moa-qwen2.5-coder-0.5b-failed-old{n}.log").write_text("old")
    server = stand_in(CRASHES)
    server.process.wait()
    with (tmp_path / "moa-qwen2.5-coder-0.5b-logs.lock").open("a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # the stuck process's
        with caplog.at_level(logging.DEBUG, logger="langgraph_moa.local"):
            server.stop()
    kept = [p for p in logs(tmp_path) if "-failed-" in p.name]
    assert len(kept) == KEPT_LOGS_PER_MODEL + 1, kept  # none trimmed
    assert "-failed-" in Path(server.log_path).name and Path(server.log_path).exists()
    assert any("not trimmed" in r.getMessage() for r in caplog.records), caplog.records


def _serve_in_a_child(code: str):
    """Run `code` in a fresh interpreter (prctl and os._exit must not touch pytest)."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_server_whose_parent_went_before_prctl_deletes_its_log(tmp_path):
    """The check after prctl (parent already gone) exited at once, leaving the log behind."""
    import json

    log = tmp_path / "moa-x-1.log"
    log.write_text("starting")
    settings = json.dumps({"parent_pid": 999999999, "log_path": str(log)})
    code = (
        "import sys; from langgraph_moa.local import _serve; "
        f"sys.argv = ['_serve', {settings!r}]; _serve.main()"
    )
    ended = _serve_in_a_child(code)
    assert ended.returncode == 0, ended.stderr
    assert not log.exists()


@pytest.mark.parametrize(
    "setup",
    [
        "sys.modules['ctypes'] = None",  # a Python built without ctypes
        "sys.platform = 'win32'; import ctypes; ctypes.CDLL = "
        "lambda *a, **k: (_ for _ in ()).throw(TypeError('no None on Windows'))",
    ],
)
def test_asking_for_death_with_the_parent_is_a_no_op_where_it_cannot_be(setup):
    """A missing ctypes crashed the server on import; Windows' CDLL(None) raised TypeError."""
    code = (
        f"import sys; {setup}\n"
        "from langgraph_moa.local import _serve\n"
        "_serve._killed_with_parent(True); _serve._killed_with_parent(False); print('ok')"
    )
    ended = _serve_in_a_child(code)
    assert ended.stdout.strip() == "ok", ended.stderr


def test_the_log_of_a_server_killed_with_its_parent_during_the_load_is_swept(stand_in, tmp_path):
    """SIGKILLed with its parent during the load, a server left its log in the temp folder.

    Its watchdog never ran, nor did the parent's clean-up: nothing deleted it. A log is
    locked by its server's (and parent's) open file while either lives, so the next start
    deletes the unlocked ones; a live server's log and the kept failed logs stay.
    """
    import os

    alive = stand_in(ALIVE)
    orphan = tmp_path / "moa-qwen2.5-coder-1.5b-k1ll3d01.log"
    orphan.write_text("loading the model")
    failed = tmp_path / "moa-qwen2.5-coder-0.5b-failed-abcd1234.log"
    failed.write_text("kept")
    for log in (orphan, failed, Path(alive.log_path)):
        os.utime(log, (1, 1))  # quiet for long: a server loading its model writes nothing
    started = stand_in(ALIVE)
    assert logs(tmp_path) == sorted([Path(alive.log_path), Path(started.log_path), failed])


def test_a_live_servers_log_is_not_swept_where_locks_are_per_process(
    stand_in, tmp_path, monkeypatch
):
    """On NFS, Linux emulates flock with per-process locks: asking for the lock of a log this
    process held was granted, so a second start swept its own first server's live log (its
    failure then said "its log could not be read"). A process's own logs are never asked."""
    import os
    import types

    from langgraph_moa.local import _filelock

    if _filelock.fcntl is None:
        pytest.skip("no OS lock without fcntl")
    granted = types.SimpleNamespace(
        LOCK_EX=_filelock.fcntl.LOCK_EX,
        LOCK_NB=_filelock.fcntl.LOCK_NB,
        flock=lambda handle, how: None,  # within one process, every lock is granted
    )
    monkeypatch.setattr(_filelock, "fcntl", granted)
    alive = stand_in(ALIVE)
    os.utime(alive.log_path, (1, 1))  # quiet for long: serving writes nothing
    started = stand_in(ALIVE)
    assert logs(tmp_path) == sorted([Path(alive.log_path), Path(started.log_path)])


def test_a_wait_cancelled_in_a_loop_that_then_closes_still_gives_its_place_back():
    """A call cancelled while waiting gave its place back from a callback of its event loop;
    the wait now runs on the room's own threads, which the loop does not wait for when it
    closes (as it waited for its default executor's), so a loop closed before the room
    opened (``asyncio.run`` ending on a timeout) never ran the callback: the waiting thread
    got in and the room stayed held by that model for good. Now the thread gives it back."""
    import asyncio
    import contextlib

    from langgraph_moa.local.runtime import CoreRoom

    room = CoreRoom(shared=False)
    room.enter("big")

    async def cancelled_wait():
        async def small_call():
            async with room.aheld("small"):
                pass

        task = asyncio.create_task(small_call())
        while not room._cond._waiters:  # the wait has begun
            await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(cancelled_wait())  # the loop is closed from here on
    room.leave()
    big = threading.Thread(target=room.enter, args=("big",), daemon=True)
    big.start()
    big.join(timeout=30)  # a hang guard, not a timing
    assert not big.is_alive(), "the cancelled call's thread kept the room"
    room.leave()
    assert room._inside == 0


def test_a_schema_probe_builds_no_http_client(monkeypatch):
    # The schema check of a local aggregator (before any model is built) made a ChatOpenAI
    # whose validation built an OpenAI and an AsyncOpenAI client on LangChain's default
    # HTTP clients, at every run, for a model that is never called.
    import openai
    from langchain_openai.chat_models import base
    from pydantic import BaseModel

    from langgraph_moa.errors import MoAInputError
    from langgraph_moa.local.runtime import schema_probe
    from langgraph_moa.run._inputs import check_aggregator_schema

    built: list[str] = []

    def counted(cls: type) -> type:
        class Counted(cls):  # type: ignore[misc, valid-type]
            def __init__(self, *args: object, **kwargs: object) -> None:
                built.append(cls.__name__)
                super().__init__(*args, **kwargs)

        return Counted

    monkeypatch.setattr(openai, "OpenAI", counted(openai.OpenAI))
    monkeypatch.setattr(openai, "AsyncOpenAI", counted(openai.AsyncOpenAI))
    for name in ("_get_default_httpx_client", "_get_default_async_httpx_client"):
        original = getattr(base, name)
        monkeypatch.setattr(
            base, name, lambda *a, _o=original, _n=name, **k: built.append(_n) or _o(*a, **k)
        )

    class Answer(BaseModel):
        text: str

    probe = schema_probe("tiny", {"temperature": 0.2, "timeout": 30.0})
    check_aggregator_schema(probe, "local:tiny", Answer, "json_schema", {})  # takes it
    with pytest.raises(MoAInputError, match="cannot answer"):  # still says no where it must
        check_aggregator_schema(probe, "local:tiny", {"type": "object"}, "json_schema", {})
    assert built == []


def test_a_failed_log_that_could_not_be_renamed_is_not_swept_as_an_orphan(
    stand_in, tmp_path, monkeypatch
):
    """A failed server's log whose rename failed kept its ordinary name, and `_keep` let go
    of it: an hour later this process's next start swept it as a dead server's log while
    the warning still named it. It stays this process's, as a kept log."""
    import os

    from langgraph_moa.errors import LocalRuntimeError
    from langgraph_moa.local import runtime

    def refused(src, dst):
        raise PermissionError(13, "Permission denied")

    server = stand_in(CRASHES)
    with monkeypatch.context() as patch:
        patch.setattr(runtime.os, "replace", refused)
        with pytest.raises(LocalRuntimeError):
            server.wait_ready(timeout=10)
        server.stop()
    kept = Path(server.log_path)
    assert "-failed-" not in kept.name and kept.exists()
    os.utime(kept, (1, 1))  # past the orphans' age
    stand_in(ALIVE)  # a start sweeps the orphans
    assert kept in logs(tmp_path)
