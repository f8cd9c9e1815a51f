"""Helpers shared by the unit and integration tests (tests import this, never each other)."""

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from langchain_core.messages import SystemMessage

QUESTION = {"messages": [("user", "Explain X")]}

IMAGE_QUESTION = {
    "messages": [
        (
            "user",
            [
                {"type": "text", "text": "Describe this image."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        )
    ]
}
"""A question a text-only model refuses: its image is a content part of its own."""


def sqlite_format(path) -> int:
    """The format mark (SQLite's ``user_version``) of the file at `path`."""
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def opened_connections(monkeypatch) -> list[sqlite3.Connection]:
    """The SQLite connections opened from now on (`sqlite3.connect`), in order."""
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def recorded(*args, **kwargs):
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(sqlite3, "connect", recorded)
    return opened


def is_closed(db: sqlite3.Connection) -> bool:
    """Whether `db` was closed (Python 3.13 warns of one garbage collection closes)."""
    try:
        db.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def references_in(call) -> list[str]:
    """The numbered references of the synthesis system message a call received."""
    system = call.messages[0]
    assert isinstance(system, SystemMessage)
    block = system.text.split("Responses from models:", 1)[1]
    if '<response id="' in block:  # the default, fenced format
        fence = r'<response id="\d+" tag="(\w+)">\n(.*?)\n</response tag="\1">'
        return [m.group(2) for m in re.finditer(fence, block, re.S)]
    return [m.group(1) for m in re.finditer(r"\n\d+\. (.*)", block)]


def serve_pids() -> set[int]:
    """PIDs of the llama.cpp server processes this package started from this interpreter.

    Machine-wide, so that a server orphaned by a dead parent is still seen; only those run
    by this interpreter (the `moa` subprocesses of the tests use it too): a server another
    checkout's test run started meanwhile failed this one's check.
    """
    ours = sys.executable.encode() + b"\0-m\0langgraph_moa.local._serve\0"
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(ours):
                pids.add(int(entry.name))
    return pids


def wait_until_up(url: str, proc, timeout: float, why=lambda: "") -> None:
    """Poll `url` until it answers 200; fail early if the server process exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, f"the server exited: {why()}"
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout:g}s"
        time.sleep(0.2)


@contextmanager
def langgraph_dev(folder: Path, log: Path, env: dict, *args: str) -> Iterator[str]:
    """Run `langgraph dev` on the `langgraph.json` in `folder`; yield its URL, then stop it.

    `args` are more options of `langgraph dev`; its output goes to `log`. Skips the test
    where the LangGraph CLI is not installed.
    """
    import pytest

    from langgraph_moa.transport._net import free_port

    langgraph = Path(sys.executable).with_name("langgraph")
    if not langgraph.exists():
        pytest.skip("langgraph-cli[inmem] is not installed")
    port = free_port()
    command = [str(langgraph), "dev", "--no-browser", "--no-reload", *args]
    env = {**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1", **env}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(f"{url}/ok", proc, 120, why=lambda: log.read_text()[-2000:])
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def fake_moa(url: str):
    """The served two-layer MoA of the serve tests: p1 and p2 propose, agg aggregates, on `url`."""
    from langgraph_moa import MoAConfig

    return MoAConfig(
        proposers=[f"p1@{url}", f"p2@{url}"], aggregator=f"agg@{url}", layers=2, name="fake-moa"
    )


def chat_completion(content: str, model: str = "m") -> dict:
    """Return an OpenAI chat completion answering `content`, as a stand-in server sends it."""
    message = {"role": "assistant", "content": content}
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }


def reply_json(handler, status: int, payload) -> None:
    """Answer a `http.server` request with `payload` as JSON."""
    body = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def watched_progress(config):
    """Run `config` on "hi" watching every call, as `moa run`'s live view does; return the
    view (`cli._live.Progress`) with the answer it streamed."""
    from langgraph_moa import create_moa_graph
    from langgraph_moa.cli._live import Progress
    from langgraph_moa.graph.streaming import AnswerStream

    progress = Progress(timeout_s=None)
    stream = AnswerStream(
        create_moa_graph(config),
        {"messages": [("user", "hi")]},
        on_progress=progress.event,
        watch=True,
    )
    progress.answer = "".join(stream)
    return progress


def load_agent_example():
    """Import examples/agent_tools.py as a module (examples are no package)."""
    import importlib.util

    path = Path(__file__).parents[1] / "examples" / "agent_tools.py"
    spec = importlib.util.spec_from_file_location("agent_tools", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def leave_at_first_start(source) -> None:
    """Read a page run's stream (`serving._ui._run`) as a client that leaves once a call has
    started: the reading task is cancelled there, as the server cancels it on a disconnect."""
    import asyncio

    started = asyncio.Event()

    async def consume() -> None:
        async for item in source:
            if "event: started" in str(item):
                started.set()

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return
    raise AssertionError("the run ended before its client left")


def _chat_scope(headers=()) -> dict:
    """Return the ASGI scope of a POST /v1/chat/completions from a loopback client."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def _stalled_exchange(
    route: str,
    body: bytes,
    gone: asyncio.Event | None = None,
    reads=1,
    resume: asyncio.Event | None = None,
):
    """Return an ASGI scope, receive, send and what was sent, of a client that stops reading.

    It takes its response's first `reads` writes of body, then nothing: the next one waits
    for ever, or until `resume` is set (it then reads all the rest). Its connection stays up until `gone` is set (the server closed it, as uvicorn
    does once the app returned without ending the response; never if None).
    """
    scope = {**_chat_scope(), "path": route, "raw_path": route.encode()}
    sent: list[dict] = []
    asked = False

    async def receive():
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": body, "more_body": False}
        await (gone or asyncio.Event()).wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) > reads + 1:
            await (resume or asyncio.Event()).wait()  # its socket's buffer is full: nobody reads

    return scope, receive, send, sent


async def _until(done, wait_s: float) -> bool:
    """Poll `done` for at most `wait_s` seconds; return whether it held."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not done() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return bool(done())


def exit_code(pid: int, wait_s: float = 10.0) -> int:
    """Wait for a forked child's exit code (`wait_s` at most); fail if it hangs.

    A child that hangs is killed and reaped: the test fails instead of waiting for ever.
    """
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child hung")


def fork_while_held(lock, child: Callable[[], bool]) -> int:
    """Fork while another thread holds `lock`; return the exit code of `child` run there.

    The child exits 0 if `child()` is true, 1 if false, 2 if it raised; one that waits for
    a lock no thread of its own will release fails the test (`exit_code`).
    """
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:  # as a parent thread in the middle of what the lock guards
            taken.set()
            done.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert taken.wait(30)
        pid = os.fork()
        if pid == 0:  # the child
            try:
                os._exit(0 if child() else 1)
            finally:
                os._exit(2)
    finally:
        done.set()
    holder.join(30)
    return exit_code(pid)
