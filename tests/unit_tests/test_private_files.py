"""What the package keeps of users' text: owner-only files, a history that can be off or pruned."""

import contextlib
import json
import stat

import pytest
from fastapi.testclient import TestClient
from langchain_core.messages import AIMessage, HumanMessage

from langgraph_moa import MoAConfig
from langgraph_moa.serving._app import create_app
from langgraph_moa.serving._history import History, RunRecord

USER = [{"role": "user", "content": "My name is Ada Lovelace"}]


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def lax_umask():
    """The usual umask (022), under which a file another account may read was the default."""
    import os

    before = os.umask(0o022)
    yield
    os.umask(before)


def test_the_history_and_its_write_ahead_log_are_readable_by_their_owner_alone(tmp_path):
    path = tmp_path / "h.sqlite3"
    history = History(path)
    history.save(RunRecord("r", "m", "My name is Ada Lovelace", answer="Hello Ada"))
    assert mode(path) == 0o600
    wal = tmp_path / "h.sqlite3-wal"
    assert wal.exists() and mode(wal) == 0o600
    history.close()


def test_a_history_kept_zero_runs_is_no_history_and_writes_no_file(tmp_path, caplog):
    """--history-runs 0 is the operator's choice to keep nothing: no file, and no warning
    that the history could not be opened."""
    from langgraph_moa.serving._server import _open_history

    with caplog.at_level("WARNING"):
        assert _open_history(tmp_path / "h.sqlite3", 0) is None
    assert list(tmp_path.iterdir()) == [] and caplog.text == ""


@pytest.fixture
def system(fake):
    return MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), name="m")


def test_a_run_is_deleted_from_the_history_with_the_key_and_then_is_gone(system, tmp_path):
    history = History(tmp_path / "h.sqlite3")
    client = TestClient(
        create_app({"m": system}, api_key="k", history=history), base_url="http://localhost"
    )
    key = {"Authorization": "Bearer k"}
    client.post("/v1/moa/runs", json={"model": "m", "messages": USER}, headers=key)
    (run,) = client.get("/v1/moa/runs", headers=key).json()["data"]
    assert client.delete(f"/v1/moa/runs/{run['id']}").status_code == 401
    assert client.get(f"/v1/moa/runs/{run['id']}", headers=key).status_code == 200
    gone = client.delete(f"/v1/moa/runs/{run['id']}", headers=key)
    assert gone.status_code == 200
    assert gone.json() == {"id": run["id"], "object": "moa.run.deleted", "deleted": True}
    assert client.get(f"/v1/moa/runs/{run['id']}", headers=key).status_code == 404
    assert client.get("/v1/moa/runs", headers=key).json()["data"] == []
    again = client.delete(f"/v1/moa/runs/{run['id']}", headers=key)
    assert again.status_code == 404 and again.json()["error"]["code"] == "run_not_found"
    # Deleted from the file, not only from the list: its text is nowhere in the table.
    import sqlite3

    rows = sqlite3.connect(tmp_path / "h.sqlite3").execute("SELECT * FROM runs").fetchall()
    assert rows == []


@contextlib.asynccontextmanager
async def _a_run_under_way(fake, history):
    """Yield a client of a page server with one run under way, its ID, and what ends it."""
    import asyncio

    import httpx

    from tests.helpers import _stalled_exchange

    held = fake("AGG", delay=lambda n: 60)  # until `release`
    slow = MoAConfig(proposers=[fake("A")], aggregator=held, name="m", layers=2)
    app = create_app({"m": slow}, history=history)
    gone = asyncio.Event()
    body = json.dumps({"model": "m", "messages": USER}).encode()
    scope, receive, send, sent = _stalled_exchange("/v1/moa/runs", body, gone, reads=10**6)
    served = asyncio.ensure_future(app(scope, receive, send))

    async def end() -> None:
        gone.set()  # its client leaves: the run ends, cancelled (and is saved)
        held.release()  # its abandoned call's thread ends too
        await asyncio.wait_for(served, 20)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        async with asyncio.timeout(20):
            while not any(b"event: started" in m.get("body", b"") for m in sent):
                await asyncio.sleep(0.01)  # the run is under way: its calls have started
        try:
            yield client, dict(sent[0]["headers"])[b"x-moa-run"].decode(), end
        finally:
            await end()


async def test_a_run_still_in_flight_is_not_deleted_but_refused_with_409(fake, tmp_path):
    """DELETE of a run still going answered 404 ("no run") and the run was saved when it
    ended: a user who asked to erase it found it in the history afterwards. It is refused
    now (409, in one sentence), and once the run has ended it is deleted as any other."""
    import asyncio

    async with _a_run_under_way(fake, History(tmp_path / "h.sqlite3")) as (client, run_id, end):
        refused = await client.delete(f"/v1/moa/runs/{run_id}")
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "run_in_progress" and "still" in error["message"]
        await end()
        async with asyncio.timeout(20):
            while not (await client.get("/v1/moa/runs")).json()["data"]:
                await asyncio.sleep(0.01)
        assert (await client.delete(f"/v1/moa/runs/{run_id}")).status_code == 200
        assert (await client.get("/v1/moa/runs")).json()["data"] == []


async def test_a_run_in_flight_on_a_server_without_a_history_is_not_told_to_wait(fake):
    """With no history (--history-runs 0) a DELETE of a run still going was refused with
    409, "wait for its end, then delete it", and the DELETE after its end answered 404:
    nothing is kept to delete. It is 404 at once, as for any run of such a server."""
    async with _a_run_under_way(fake, None) as (client, run_id, _end):
        answer = await client.delete(f"/v1/moa/runs/{run_id}")
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "run_not_found"


def test_a_server_without_a_history_answers_a_delete_with_404(system):
    client = TestClient(create_app({"m": system}, history=None), base_url="http://localhost")
    assert client.delete("/v1/moa/runs/abc").status_code == 404


def test_a_delete_the_history_file_refuses_says_it_cannot_be_changed(system, tmp_path, caplog):
    """A failed DELETE answered "The run history cannot be read now", which a user who only
    asked to erase a run (and can still list it) could not make sense of."""
    import sqlite3

    history = History(tmp_path / "h.sqlite3")
    history.save(RunRecord("r1", "m", "My name is Ada Lovelace", created=1.0, status="done"))
    with sqlite3.connect(history.path) as db:
        db.execute("DROP TABLE runs")
    client = TestClient(
        create_app({"m": system}, history=history),
        base_url="http://localhost",
        raise_server_exceptions=False,
    )
    with caplog.at_level("WARNING"):
        answer = client.delete("/v1/moa/runs/r1")
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "history_unavailable" and str(tmp_path) not in answer.text
    assert error["message"] == "The run history cannot be changed now; the operator's log says why."
    assert "Cannot delete run r1 from the history" in caplog.text


@pytest.mark.parametrize("command", ["serve", "ui"])
def test_a_server_that_traces_to_langsmith_says_so_as_it_starts(monkeypatch, capsys, command):
    """LANGSMITH_TRACING sends every request's messages and every answer to LangSmith: users'
    text leaves the machine. The server said nothing of it."""
    from langgraph_moa import cli
    from langgraph_moa.cli import _langsmith, _ui
    from langgraph_moa.serving import _server

    monkeypatch.setattr(_server, "serve", lambda presets, **kw: kw["announce"]("Serving"))
    monkeypatch.setattr(_ui, "_check_port_free", lambda port: None)
    monkeypatch.setattr(_langsmith, "reachable", lambda url, probe_s=1.0: True)
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)
    monkeypatch.setenv("LANGSMITH_ENDPOINT", "https://traces.example")
    monkeypatch.delenv("LANGCHAIN_TRACING_V2", raising=False)
    args = ["moa", command, *(["--no-open"] * (command == "ui"))]
    for tracing, said in (("true", True), ("false", False)):
        monkeypatch.setenv("LANGSMITH_TRACING", tracing)
        monkeypatch.setattr(cli.sys, "argv", args)
        try:
            cli.main()
        except SystemExit as exited:
            assert exited.code in (0, None)
        err = " ".join(capsys.readouterr().err.split())
        assert "Serving" in err or "The page is at" in err, err
        line = (
            "LangSmith tracing is on: every question and answer is sent to https://traces.example"
        )
        assert (line in err) is said, err


def test_a_saved_chat_is_readable_by_its_owner_alone(tmp_path):
    from langgraph_moa.cli._chat import save

    path = tmp_path / "chat.json"
    save([HumanMessage("My name is Ada Lovelace"), AIMessage("Hello Ada")], str(path))
    assert json.loads(path.read_text())[0]["content"] == "My name is Ada Lovelace"
    assert mode(path) == 0o600


def test_a_call_cache_is_readable_by_its_owner_alone(tmp_path):
    from langgraph_moa.run.cache import SQLiteCallCache

    cache = SQLiteCallCache(tmp_path / "calls.db")
    cache.put("k", AIMessage("Hello Ada"))
    cache.close()
    assert mode(tmp_path / "calls.db") == 0o600


def test_an_evaluations_new_output_folder_is_its_owners_alone(system, tmp_path):
    """Its rows, results, exports and call cache hold every question and answer."""
    from langgraph_moa.eval.runner import Evaluation

    out = tmp_path / "runs" / "out"
    evaluation = Evaluation([system], [], out, plots=False, exports=False)
    evaluation.cache.close()
    assert mode(out) == 0o700 and mode(out / "results") == 0o700
    assert mode(out / "calls.db") == 0o600
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)  # the operator's own folder keeps the mode it was given
    Evaluation([system], [], shared, plots=False, exports=False).cache.close()
    assert mode(shared) == 0o755


def test_a_deleted_run_leaves_no_trace_of_its_text_in_the_files(tmp_path):
    """A row deleted from SQLite stays in its free pages, and in the write-ahead log, until
    they are reused: the question was still in the file after the user asked for it gone."""
    path = tmp_path / "h.sqlite3"
    history = History(path)
    history.save(RunRecord("r", "m", "My name is Ada Lovelace", answer="Hello Ada Lovelace"))
    history.save(RunRecord("s", "m", "Another question", answer="Another answer"))
    assert history.delete("r") and not history.delete("r")
    files = [path, tmp_path / "h.sqlite3-wal"]
    assert not any(b"Lovelace" in f.read_bytes() for f in files if f.exists())
    assert [r["id"] for r in history.list()] == ["s"]
    history.close()


def test_an_api_clients_chat_completion_is_not_kept_in_the_history(system, tmp_path):
    """docs/security.md's table: only runs started on the run event stream are kept."""
    history = History(tmp_path / "h.sqlite3")
    client = TestClient(create_app({"m": system}, history=history), base_url="http://localhost")
    answer = client.post("/v1/chat/completions", json={"model": "m", "messages": USER})
    assert answer.status_code == 200
    assert history.list() == []
    client.post("/v1/moa/runs", json={"model": "m", "messages": USER})
    assert [r["question"] for r in history.list()] == ["My name is Ada Lovelace"]


@pytest.mark.parametrize("json_lines", [False, True])
def test_an_upstream_error_that_quotes_the_users_input_logs_no_quote(json_lines):
    """A validation error of an OpenAI-compatible server (pydantic's, as vLLM's 400) quotes
    the input it refused; its sentence went into the access log with the user's text."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from langgraph_moa.serving._access import AccessLog

    said = (
        "Model 'a' failed: 400 1 validation error for ChatCompletionRequest messages.0.content "
        "Input should be a valid string [type=string_type, input_value='My name is Ada "
        "Lovelace, born 1815', input_type=str]; also {'type': 'missing', 'msg': 'Field "
        "required', 'input': {'role': 'user', 'content': 'Ada Lovelace again'}}"
    )

    async def fail(request):
        return JSONResponse({"error": {"message": said, "code": "upstream_error"}}, 502)

    lines: list[str] = []
    app = Starlette(routes=[Route("/v1/chat/completions", fail, methods=["POST"])])
    client = TestClient(AccessLog(app, ["m"], lines.append, json_lines=json_lines))
    client.post("/v1/chat/completions", json={"model": "m", "messages": USER})
    (line,) = lines
    assert "Lovelace" not in line, line
    assert "validation error for ChatCompletionRequest" in line  # what failed stays
    assert "input_type=str" in line and "Field required" in line


def test_a_validation_error_quoted_within_a_quoted_error_logs_no_input():
    """An upstream's body printed by the openai SDK is a Python repr: a message holding both
    quote characters (the user's text had a ``"``) is single-quoted with its inner quotes
    escaped, ``\\'input\\': \\'...\\'``, and that input went into the access log whole."""
    from langgraph_moa.serving._access import without_quoted_input

    inner = {"type": "string_type", "msg": "Input should be a valid string"}
    inner["input"] = 'Ada Lovelace said "hi" and it\'s \\ done'
    body = {"object": "error", "message": f"1 validation error:\n  {inner}\n", "code": 400}
    text = without_quoted_input(f"BadRequestError: Error code: 400 - {body}")
    assert "Lovelace" not in text and "done" not in text, text
    assert "Input should be a valid string" in text and "'code': 400" in text, text
    detail = {"detail": [{"msg": "Field required", "input": {"content": 'Ada "x" \\'}}]}
    nested = without_quoted_input(json.dumps({"message": json.dumps(detail), "code": 422}))
    assert "Ada" not in nested and "Field required" in nested and '"code": 422' in nested
    plain = without_quoted_input(str({"input": "it's a \\", "type": "missing"}))
    assert plain == "{'input': [input], 'type': 'missing'}", plain


@pytest.mark.parametrize(
    ("env", "traced"),
    [
        ({"LANGSMITH_TRACING_V2": "true"}, True),
        ({"LANGCHAIN_TRACING": "true"}, True),
        ({"LANGCHAIN_TRACING_V2": "false", "LANGSMITH_TRACING": "true"}, False),
        ({"LANGSMITH_TRACING": "True"}, False),
        ({"LANGSMITH_TRACING": " ", "LANGCHAIN_TRACING_V2": "true"}, True),
    ],
)
def test_tracing_is_told_on_as_the_langsmith_sdk_reads_its_variables(monkeypatch, env, traced):
    """The SDK reads LANGSMITH_TRACING_V2, LANGCHAIN_TRACING_V2, LANGSMITH_TRACING and
    LANGCHAIN_TRACING, the first one set deciding; two of them traced with no warning."""
    from langsmith.utils import get_env_var, tracing_is_enabled

    from langgraph_moa.cli import _langsmith

    for name in ("LANGSMITH_TRACING_V2", "LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("LANGCHAIN_TRACING", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_env_var.cache_clear()
    assert bool(tracing_is_enabled()) is traced  # the SDK's own rule, as installed
    assert _langsmith.tracing() is traced
    # An endpoint that cannot be reached turns tracing off as the SDK reads it, too.
    monkeypatch.setattr(_langsmith, "reachable", lambda url, probe_s=1.0: False)
    _langsmith.check_langsmith()
    get_env_var.cache_clear()
    assert not tracing_is_enabled() and not _langsmith.tracing()
    get_env_var.cache_clear()


def test_an_evaluations_files_in_an_existing_folder_are_its_owners_alone(system, tmp_path):
    """An --out that exists keeps its mode, but the report (its disagreement examples) and
    the exports written into it hold questions and answers: they were created 0644."""
    from langgraph_moa.eval.datasets import EvalItem
    from langgraph_moa.eval.runner import Evaluation

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    items = [EvalItem(id="1", turns=["My name is Ada Lovelace"])]
    evaluation = Evaluation([system], items, shared, plots=False)
    import asyncio

    asyncio.run(evaluation.run())
    written = [p for p in shared.rglob("*") if p.is_file()]
    assert any(p.name == "report.md" for p in written), written
    assert any("exports" in p.parts for p in written), written
    wide = {str(p.relative_to(shared)): oct(mode(p)) for p in written if mode(p) & 0o077}
    assert wide == {}, wide
    folders = [p for p in shared.rglob("*") if p.is_dir()]
    assert all(mode(p) == 0o700 for p in folders), {str(p): oct(mode(p)) for p in folders}
    from langgraph_moa.eval.runner import _RowStore

    rows = _RowStore(shared / "results" / "race.rows.jsonl", "digest")
    rows.add({"id": "1", "answer": "Hello Ada"})  # a system a cache cannot replay
    assert mode(rows.path) == 0o600


def test_a_stale_temp_file_does_not_give_the_rows_file_its_mode(tmp_path):
    """The rows file was written to ``rows.jsonl.new`` and renamed: a ``.new`` left by a run
    that stopped (or made 0644 by hand) kept its mode, and the rows file became 0644."""
    from langgraph_moa.eval.runner import _RowStore

    path = tmp_path / "race.rows.jsonl"
    stale = tmp_path / "race.rows.jsonl.new"
    stale.write_text("half a file\n")
    stale.chmod(0o644)
    rows = _RowStore(path, "digest")
    rows.add({"id": "1", "answer": "Hello Ada"})
    assert mode(path) == 0o600
    assert [json.loads(x).get("id") for x in path.read_text().splitlines()] == [None, "1"]


def test_a_run_deleted_while_another_connection_reads_the_file_is_erased_later(tmp_path, caplog):
    """A reader of the file (another server on it, the sqlite3 shell) keeps the write-ahead
    log from being emptied: the deleted question stayed in it, the DELETE said nothing, and
    no later write emptied it."""
    import sqlite3

    path = tmp_path / "h.sqlite3"
    history = History(path)
    history.save(RunRecord("r", "m", "My name is Ada Lovelace", answer="Hello Ada Lovelace"))
    history.save(RunRecord("s", "m", "Another question", answer="Another answer"))
    reader = sqlite3.connect(path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM runs").fetchall()  # a read that holds the log
    with caplog.at_level("WARNING"):
        assert history.delete("r")
    assert "still holds a deleted run's text" in caplog.text  # the operator is told
    reader.rollback()
    reader.close()
    history.save(RunRecord("t", "m", "A third question", answer="A third answer"))
    files = [path, tmp_path / "h.sqlite3-wal"]
    assert not any(b"Lovelace" in f.read_bytes() for f in files if f.exists())
    assert [r["id"] for r in history.list()] == ["t", "s"]
    history.close()


def test_the_readmes_serve_section_names_the_history_flags_and_links_what_is_kept():
    """README's `moa serve` section named neither --history-runs (0 keeps no history) nor
    docs/security.md's table of what the server keeps: an operator read of them in `moa ui`'s."""
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    serve = readme.split("### As an OpenAI-compatible endpoint (`moa serve`)")[1]
    serve = " ".join(serve.split("### On LangGraph server")[0].split())
    for said in ("--history-runs 0", "--metrics", "--log-format json", "--preload"):
        assert said in serve, said
    assert "(docs/security.md#what-is-kept-where)" in serve
    assert "## What is kept, where" in (
        Path(__file__).parents[2] / "docs" / "security.md"
    ).read_text(encoding="utf-8")


async def test_a_delete_as_the_run_id_goes_out_is_refused_with_409_not_404(fake, tmp_path):
    """The page's run was put among the runs in flight only once its stream began, after its
    X-MoA-Run header had gone out: a DELETE sent as that header arrived got 404 ("no run"),
    and the run was saved when it ended. It is in flight before its ID goes out: 409."""
    import asyncio

    import httpx

    from tests.helpers import _stalled_exchange

    app = create_app(
        {"m": MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), name="m")},
        history=History(tmp_path / "h.sqlite3"),
    )
    gone = asyncio.Event()
    body = json.dumps({"model": "m", "messages": USER}).encode()
    scope, receive, stalled_send, _ = _stalled_exchange("/v1/moa/runs", body, gone, reads=10**6)
    answers = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:

        async def send(message):
            if message["type"] == "http.response.start":  # the ID is out, the stream not yet
                run_id = dict(message["headers"])[b"x-moa-run"].decode()
                answers.append(await client.delete(f"/v1/moa/runs/{run_id}"))
                gone.set()  # then the client leaves: the run ends there
            await stalled_send(message)

        await asyncio.wait_for(app(scope, receive, send), 20)
    (answer,) = answers
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "run_in_progress"


async def test_a_run_whose_stream_never_began_is_not_left_in_flight(fake, tmp_path):
    """A run is in flight from before its ID goes out; one whose stream never began (the
    send of its header failed: its client had gone) runs none of its code, and must not stay
    refused with 409 for ever: a DELETE of it is answered as for any run not kept, 404. Once
    its response has ended, not when the garbage collector takes its generator (a cycle, as
    its failed send's traceback holds it, waits for a full collection; none with gc off)."""
    import asyncio
    import gc

    import httpx

    from tests.helpers import _stalled_exchange

    app = create_app(
        {"m": MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), name="m")},
        history=History(tmp_path / "h.sqlite3"),
    )
    body = json.dumps({"model": "m", "messages": USER}).encode()
    scope, receive, _, _ = _stalled_exchange("/v1/moa/runs", body)
    scope["asgi"] = {"version": "3.0", "spec_version": "2.4"}  # a failed send raises
    ids = []

    async def send(message):
        ids.append(dict(message["headers"])[b"x-moa-run"].decode())
        raise OSError("the client is gone")

    gc.disable()  # the failed send's traceback holds the stream in a cycle: no collection
    try:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(app(scope, receive, send), 20)
        (run_id,) = ids
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            answer = await client.delete(f"/v1/moa/runs/{run_id}")
    finally:
        gc.enable()
    assert answer.status_code == 404, answer.text
