"""The watched run's events, their stream, the history and the agreement shown on the page."""

import asyncio
import json
import random
import re
import sqlite3
import unicodedata

import pytest
from fastapi.testclient import TestClient
from langchain_core.messages import HumanMessage

from langgraph_moa import MoAConfig
from langgraph_moa.config._prices import run_cost
from langgraph_moa.graph._builder import create_moa_graph
from langgraph_moa.graph.streaming import AnswerStream, RunEvents
from langgraph_moa.serving._agreement import overlap
from langgraph_moa.serving._app import create_app
from langgraph_moa.serving._events import KEEPALIVE, answer_event, pump
from langgraph_moa.serving._history import (
    HISTORY_RUNS,
    Compactor,
    History,
    HistoryError,
    RunRecord,
    compact,
)
from tests.helpers import is_closed, leave_at_first_start, opened_connections, sqlite_format

USER = [{"role": "user", "content": "Explain X"}]
QUESTION = {"messages": [HumanMessage("Explain X")]}


async def _never():
    """A client that never leaves (`pump`'s ``disconnected``)."""
    await asyncio.Event().wait()


async def _endless():
    """A run that writes 100 kB pieces for ever, each as soon as it can."""
    while True:
        yield "x" * 100_000
        await asyncio.sleep(0)


@pytest.fixture
def system(fake):
    return MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2, name="m")


def key(event):
    return (event["role"], event["layer"], event["proposer"], event["sample"])


# --- RunEvents -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_watched_run_streams_every_calls_start_text_and_finish(system, mode):
    events = RunEvents(create_moa_graph(system), QUESTION)
    if mode == "sync":
        seen = list(events)
    else:

        async def collect():
            return [e async for e in events]

        seen = asyncio.run(collect())
    calls = {("proposer", 1, 0, 0): "A #1", ("proposer", 1, 1, 0): "B #1"}
    calls[("aggregator", 2, -1, 0)] = "AGG #1"
    for call, text in calls.items():
        kinds = [e["event"] for e in seen if "role" in e and key(e) == call]
        assert kinds[0] == "started" and kinds[-1] == "finished" and "token" in kinds
        written = "".join(e["text"] for e in seen if e["event"] == "token" and key(e) == call)
        assert written == text
        finished = next(e for e in seen if e["event"] == "finished" and key(e) == call)
        assert finished["completion_tokens"] == 2 and finished["prompt_tokens"] > 0
        assert finished["retries"] == 0 and finished["latency_s"] >= 0
    finals = [e for e in seen if e["event"] == "token" and e["final"]]
    assert {key(e) for e in finals} == {("aggregator", 2, -1, 0)}
    assert events.answer.text == "AGG #1"


def test_a_plain_run_does_not_stream_the_proposers(system):
    progress: list[dict] = []
    stream = AnswerStream(create_moa_graph(system), QUESTION, on_progress=progress.append)
    assert "".join(stream) == "AGG #1"
    assert {e["event"] for e in progress} == {"started", "finished"}  # no token events


def test_a_failed_call_says_why_in_one_line_with_its_retries(fake):
    def boom(n, messages):
        return ValueError("bad request\nsecond line")

    config = MoAConfig(
        proposers=[fake("A"), fake("B", fail=boom)], aggregator=fake("AGG"), layers=2
    )
    seen = list(RunEvents(create_moa_graph(config), QUESTION))
    failed = [e for e in seen if e["event"] == "failed"]
    assert len(failed) == 1 and key(failed[0]) == ("proposer", 1, 1, 0)
    assert failed[0]["error"].startswith("ValueError: bad request")
    assert failed[0]["status"] == "failed" and failed[0]["retries"] == 0


# --- history ---------------------------------------------------------------------------------


def test_compact_joins_each_calls_tokens_and_a_retry_starts_afresh():
    def tok(p, text):
        return {
            "event": "token",
            "role": "proposer",
            "layer": 1,
            "proposer": p,
            "sample": 0,
            "text": text,
        }

    start = {"event": "started", "role": "proposer", "layer": 1, "proposer": 0, "sample": 0}
    events = [start, tok(0, "a"), tok(1, "x"), tok(0, "b"), start, tok(0, "c"), tok(0, "d")]
    out = compact(events)
    texts = [(e["proposer"], e["text"]) for e in out if e["event"] == "token"]
    assert texts == [(0, "ab"), (1, "x"), (0, "cd")]
    assert [e["event"] for e in out].count("started") == 2


async def test_the_parts_of_a_chunk_wise_answer_stay_apart_when_joined():
    """The page starts a new thinking cut at each part of a chunk-wise answer (a reasoning
    aggregator thinks again in each): a token event joining two parts' text hid where the
    next part began, and the page showed its <think> block."""
    from langgraph_moa.serving._events import TokenJoiner

    start = {"event": "started", "role": "aggregator", "layer": 2, "proposer": -1, "sample": 0}

    def tok(part, text):
        return {**start, "event": "token", "text": text, "final": True, "part": part}

    tokens = [tok(1, "a"), tok(1, "b"), tok(2, "<think>"), tok(2, "c")]
    joined = [(e["part"], e["text"]) for e in compact([start, *tokens]) if e["event"] == "token"]
    assert joined == [(1, "ab"), (2, "<think>c")]
    joiner = TokenJoiner(seconds=60)
    sent = [t for token in tokens for t in joiner.add(token)] + joiner.flush()
    assert [(e["part"], e["text"]) for e in sse_events("".join(sent))] == joined


class _Counted(str):
    """A token's text that counts the concatenations it takes part in (a copy of the text)."""

    joins = 0

    def __add__(self, other):
        _Counted.joins += 1
        return _Counted(str(self) + str(other))

    def __radd__(self, other):
        _Counted.joins += 1
        return _Counted(str(other) + str(self))


@pytest.mark.parametrize("tokens", [10, 2000])
def test_the_live_log_copies_no_call_text_per_token(tokens):
    """A long answer's tokens are kept as parts, joined when the log is read: copying the
    call's whole text on every token made a run's log quadratic in its answer's length."""
    _Counted.joins = 0
    log = Compactor()
    start = {"event": "started", "role": "aggregator", "layer": 2, "proposer": -1, "sample": 0}
    log.add(start)
    for i in range(tokens):
        log.add({**start, "event": "token", "text": _Counted(f"w{i} ")})
    assert _Counted.joins == 0
    expected = "".join(f"w{i} " for i in range(tokens))
    assert [e.get("text") for e in log.events] == [None, expected]
    log.add({**start, "event": "token", "text": "end"})  # still open after it was read
    assert [e.get("text") for e in log.events] == [None, expected + "end"]
    assert _Counted.joins == 0


def test_history_keeps_runs_newest_first(tmp_path):
    history = History(tmp_path / "sub" / "h.sqlite3")
    history.save(RunRecord("one", "m", "first?", created=1.0, status="done", answer="1"))
    history.save(RunRecord("two", "m", "second?", created=2.0, status="failed"))
    assert [r["id"] for r in history.list()] == ["two", "one"]
    assert history.get("one").answer == "1" and history.get("nope") is None
    history.close()
    again = History(tmp_path / "sub" / "h.sqlite3")
    assert again.get("two").status == "failed"


def test_a_history_at_memory_is_sqlites_in_memory_database_and_writes_no_file(
    tmp_path, monkeypatch
):
    """``History(":memory:")`` created a file named ":memory:" in the working folder; it
    means SQLite's in-memory database, as `sqlite3.connect` reads it (a test, an embedding)."""
    monkeypatch.chdir(tmp_path)
    history = History(":memory:")
    history.save(RunRecord("one", "m", "first?", status="done", answer="1"))
    assert history.delete("one") and history.get("one") is None
    history.save(RunRecord("two", "m", "second?", status="done", answer="2"))
    assert [r["id"] for r in history.list()] == ["two"]
    history.close()
    assert list(tmp_path.iterdir()) == []
    assert [r["id"] for r in History(":memory:").list()] == []  # each one is its own


def test_history_keeps_at_most_its_cap_of_runs_dropping_the_oldest(tmp_path):
    # A server runs for weeks: every run of the page was kept for good, so the file grew
    # with every request. Now the newest `keep` runs are kept, a re-saved run is no new one.
    history = History(tmp_path / "h.sqlite3", keep=3)
    for i in range(10):
        history.save(RunRecord(f"r{i}", "m", "q?", created=float(i), status="running"))
        history.save(RunRecord(f"r{i}", "m", "q?", created=float(i), status="done"))
    assert [r["id"] for r in history.list(1000)] == ["r9", "r8", "r7"]
    assert history.get("r6") is None and history.get("r9").status == "done"
    history.close()
    assert [r["id"] for r in History(tmp_path / "h.sqlite3", keep=2).list()] == ["r9", "r8"]


def test_a_run_saved_when_it_ends_is_kept_though_newer_runs_ended_before_it(tmp_path):
    # A run is saved when it ends, with the time it started. A long run that newer, shorter
    # runs overtook was the oldest by start when saved, so its own save deleted it at once:
    # the page got 'done' and then a 404 for the run it had just watched.
    history = History(tmp_path / "h.sqlite3", keep=2)
    history.save(RunRecord("short1", "m", "q?", created=2.0, status="done"))
    history.save(RunRecord("short2", "m", "q?", created=3.0, status="done"))
    history.save(RunRecord("long", "m", "q?", created=1.0, status="done"))
    assert history.get("long") is not None and history.get("long").status == "done"
    assert sorted(r["id"] for r in history.list()) == ["long", "short2"]


def test_history_has_a_finite_default_cap_and_refuses_a_cap_below_one(tmp_path):
    assert History(tmp_path / "h.sqlite3").keep == HISTORY_RUNS > 0
    with pytest.raises(HistoryError, match="at least 1"):
        History(tmp_path / "g.sqlite3", keep=0)


def test_an_unusable_history_path_is_one_sentence(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(HistoryError, match="set MOA_HISTORY"):
        History(tmp_path / "file" / "h.sqlite3")


def test_a_history_file_sqlite_refuses_is_closed_again(tmp_path, monkeypatch):
    # Left open, the connection was closed by garbage collection only (on Python 3.13,
    # "ResourceWarning: unclosed database"): the caller got an error, not a history to close.
    opened = opened_connections(monkeypatch)
    path = tmp_path / "h.sqlite3"
    path.write_bytes(b"not a database" * 300)
    with pytest.raises(HistoryError, match="set MOA_HISTORY"):
        History(path)
    assert len(opened) == 1 and is_closed(opened[0])


def test_a_history_carries_its_format_and_one_an_earlier_version_wrote_reads_as_it_is(tmp_path):
    """The history had no format mark, so a later version could not tell an old file from
    its own; unmarked is the format every earlier version wrote (version 1)."""
    old = tmp_path / "old.sqlite3"
    db = sqlite3.connect(old)  # the runs table as every earlier version wrote it, unmarked
    db.execute(
        "CREATE TABLE runs (id TEXT PRIMARY KEY, created REAL, model TEXT, question TEXT, "
        "status TEXT, answer TEXT, events TEXT)"
    )
    db.execute("INSERT INTO runs VALUES ('r', 1.0, 'm', 'q?', 'done', 'a', '[]')")
    db.commit()
    db.close()
    History(old).close()
    assert sqlite_format(old) == 1
    assert History(old).get("r").answer == "a"
    History(tmp_path / "new.sqlite3").close()
    assert sqlite_format(tmp_path / "new.sqlite3") == 1


@pytest.mark.parametrize("mark", [2, -1])
def test_a_history_of_another_format_is_refused_in_one_sentence_and_left_as_it_was(tmp_path, mark):
    # A negative mark (no version writes one) was taken as unmarked and overwritten with 1,
    # where a rows file of any format but 1 is refused.
    path = tmp_path / "h.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {mark}")
    db.close()
    with pytest.raises(HistoryError) as caught:
        History(path)
    message = str(caught.value)
    assert str(path) in message and f"format {mark}" in message and "\n" not in message
    assert sqlite_format(path) == mark


# --- agreement -------------------------------------------------------------------------------


def test_overlap_marks_the_answers_spans_shared_with_a_reference():
    answer = "The sky is blue because of Rayleigh scattering, said everyone."
    share, spans = overlap(answer, "Light: blue because of Rayleigh scattering in the air")
    assert [answer[a:b] for a, b in spans] == ["blue because of Rayleigh scattering"]
    assert share == pytest.approx(5 / 10)
    assert overlap(answer, "nothing in common here at all") == (0.0, [])


def test_overlap_matches_one_text_composed_and_decomposed():
    # Words were compared code point by code point and cut at combining marks: an answer
    # written decomposed (NFD, as macOS writes) shared nothing with a composed reference.
    reference = "Le café était très crémeux à Zürich."
    answer = unicodedata.normalize("NFD", reference)
    share, spans = overlap(answer, reference)
    assert share == 1.0
    assert [answer[a:b] for a, b in spans] == [answer[:-1]]  # the marks inside, the "." out


def test_overlap_finds_shared_runs_in_text_written_without_spaces():
    # Chinese and Japanese put no spaces between words: a sentence was one "word", so an
    # answer that reused most of a proposal's sentence was marked as sharing nothing.
    answer = "天空是蓝色的，因为瑞利散射。"  # noqa: RUF001 (CJK punctuation on purpose)
    share, spans = overlap(answer, "光：蓝色的，因为瑞利散射在空气中")  # noqa: RUF001
    assert [answer[a:b] for a, b in spans] == ["蓝色的", "因为瑞利散射"]
    assert share == pytest.approx(9 / 12)


@pytest.mark.timeout(60)
def test_a_long_answer_without_spaces_is_compared_in_linear_time(monkeypatch):
    # Each CJK character is a word (eab28ea): a 20,000-character answer is as many words,
    # and the answer was split into words again for every reference compared with it. The
    # split count below catches that, at any size (a million characters took 13 s of CPU and
    # ran past the timeout on a loaded machine).
    from langgraph_moa.serving import _agreement

    split: list[int] = []
    words = _agreement._words
    monkeypatch.setattr(_agreement, "_words", lambda text: split.append(len(text)) or words(text))
    han = [chr(c) for c in range(0x4E00, 0x4E00 + 20000)]
    answer = "".join(random.Random(0).choices(han, k=20_000))  # no 4 characters repeat
    references = [{**_record(i), "output": answer[: 5_000 * (i + 1)]} for i in range(2)]
    agreement = _agreement.synthesis_agreement(answer, references)
    assert [a["share"] for a in agreement] == [0.25, 0.5]
    assert [a["spans"] for a in agreement] == [[[0, 5_000 * (i + 1)]] for i in range(2)]
    assert sorted(split) == [5_000, 10_000, 20_000]  # the answer split once


def test_a_selections_groups_name_the_calls_that_agree(fake):
    replies = {"A": "It is 42", "B": "I get 41", "C": "Surely 42"}
    config = MoAConfig(
        variant="select",
        proposers=[fake(n, reply=lambda label, n, m: replies[label]) for n in "ABC"],
        selection={"method": "vote"},
    )
    graph = create_moa_graph(config)
    state = graph.invoke(QUESTION)
    event = answer_event(state)
    groups = event["selection"]["groups"]
    assert groups[0]["answer"] == "42" and groups[0]["calls"] == [
        ["proposer", 1, 0, 0],
        ["proposer", 1, 2, 0],
    ]
    assert "agreement" not in event and event["usage"]["calls"] == 3


def test_the_answer_prices_its_calls_and_counts_the_unpriced_ones(system):
    state = create_moa_graph(system).invoke(QUESTION)
    calls = state["messages"][-1].response_metadata["moa"]["calls"]
    a, agg = (next(c for c in calls if c["model"] == n) for n in ("A", "AGG"))
    # No table: nothing is priced, and the event says so rather than claiming $0.
    assert answer_event(state)["cost"] == {"dollars": 0.0, "unpriced_calls": 3, "calls": 3}
    # A partial table: the priced calls add up, the others are counted.
    cost = answer_event(state, {"A": (1.0, 2.0), "AGG": (3.0, 5.0)})["cost"]
    want = (a["prompt_tokens"] * 1 + a["completion_tokens"] * 2) / 1e6
    want += (agg["prompt_tokens"] * 3 + agg["completion_tokens"] * 5) / 1e6
    assert cost == {"dollars": pytest.approx(want), "unpriced_calls": 1, "calls": 3}
    # Local models cost nothing, with or without a table.
    local = [{"configured_model": "local:qwen2.5-coder-1.5b", "model": "q", "prompt_tokens": 9}]
    assert run_cost(local, None) == {"dollars": 0.0, "unpriced_calls": 0, "calls": 1}


# --- the HTTP routes -------------------------------------------------------------------------


def sse_events(text: str) -> list[dict]:
    return [
        json.loads(line[len("data: ") :])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def test_a_run_streams_its_events_and_is_kept(system, tmp_path):
    client = TestClient(
        create_app({"m": system}, history=History(tmp_path / "h.sqlite3")),
        base_url="http://localhost",
    )
    response = client.post("/v1/moa/runs", json={"model": "m", "messages": USER})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[0]["event"] == "run" and events[0]["question"] == "Explain X"
    assert [e["event"] for e in events[-2:]] == ["answer", "done"]
    answer = events[-2]
    assert answer["text"] == "AGG #1" and answer["usage"]["calls"] == 3
    assert answer["cost"] == {"dollars": 0.0, "unpriced_calls": 3, "calls": 3}
    assert {tuple(a["call"]) for a in answer["agreement"]} == {
        ("proposer", 1, 0, 0),
        ("proposer", 1, 1, 0),
    }
    assert "event: token\ndata: " in response.text
    runs = client.get("/v1/moa/runs").json()["data"]
    assert [r["id"] for r in runs] == [events[0]["run_id"]] and runs[0]["status"] == "done"
    kept = client.get(f"/v1/moa/runs/{runs[0]['id']}").json()
    assert [e["event"] for e in kept["events"]][-1] == "answer"
    missing = client.get("/v1/moa/runs/nope")
    assert missing.status_code == 404 and "No run" in missing.json()["error"]["message"]


def test_a_run_that_fails_on_a_bug_stops_its_calls_with_one_sentence(system, tmp_path, monkeypatch):
    # A bug met while the run's failure was reported (outside the run's own handler) stopped
    # its calls with "the run failed on a server error.", where the run's handler says the
    # crash's sentence: the same failure read two ways in the history.
    from langgraph_moa.serving import _ui
    from langgraph_moa.serving._errors import CRASHED

    class Breaking:
        def __init__(self, *args, **kwargs):
            pass

        async def __aiter__(self):
            yield {"event": "started", "role": "proposer", "layer": 1, "index": 0, "sample": 0}
            raise RuntimeError("a bug in the run")

    def failing_report(exc):
        raise RuntimeError("a bug in its report")

    monkeypatch.setattr(_ui, "RunEvents", Breaking)
    monkeypatch.setattr(_ui, "_run_failed", failing_report)
    client = TestClient(
        create_app({"m": system}, history=History(tmp_path / "h.sqlite3")),
        base_url="http://localhost",
        raise_server_exceptions=False,
    )
    client.post("/v1/moa/runs", json={"model": "m", "messages": USER})
    (run,) = client.get("/v1/moa/runs").json()["data"]
    kept = client.get(f"/v1/moa/runs/{run['id']}").json()["events"]
    stopped = [e["error"] for e in kept if e["event"] == "failed"]
    assert stopped == [f"Stopped: {CRASHED}"], kept


def test_a_run_the_history_cannot_save_still_ends_and_says_it_was_not_kept(
    system, tmp_path, caplog
):
    # Saving a run that ended raised the SQLite error (the disk full, the file locked by
    # another server past its wait) out of the stream: no 'done', a traceback in the log,
    # and the page said the stream ended before its run did. The run now ends as it ran,
    # its 'done' says it was not kept, and the log says why in one line.
    history = History(tmp_path / "h.sqlite3")
    with sqlite3.connect(history.path) as db:
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON runs "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    client = TestClient(create_app({"m": system}, history=history), base_url="http://localhost")
    with caplog.at_level("WARNING"):
        response = client.post("/v1/moa/runs", json={"model": "m", "messages": USER})
    events = sse_events(response.text)
    assert [e["event"] for e in events[-2:]] == ["answer", "done"]
    assert events[-2]["text"] == "AGG #1"
    run_id = events[0]["run_id"]
    assert events[-1] == {"event": "done", "run_id": run_id, "status": "done", "kept": False}
    assert f"Cannot keep run {run_id} in the history" in caplog.text
    assert "disk is full" in caplog.text and "Traceback" not in caplog.text
    assert client.get("/v1/moa/runs").json()["data"] == []


def _history_broken_by(system, tmp_path, sql: str) -> tuple[History, TestClient]:
    """A history holding run 'r1', then `sql` run on its file; and an app serving it."""
    history = History(tmp_path / "h.sqlite3")
    history.save(RunRecord("r1", "m", "q?", created=1.0, status="done"))
    with sqlite3.connect(history.path) as db:
        db.execute(sql)
    app = create_app({"m": system}, history=history)
    return history, TestClient(app, base_url="http://localhost", raise_server_exceptions=False)


def test_a_history_that_cannot_be_read_is_one_sentence_naming_no_path(system, tmp_path, caplog):
    # A read of the history that SQLite refused (the file locked past its wait, its table
    # gone, the disk failing) escaped the routes: a bare "Internal Server Error" to the
    # page and a traceback in the server's log. It is now a 503 in the error shape, one
    # sentence without the file's path; the log says why in one line.
    history, client = _history_broken_by(system, tmp_path, "DROP TABLE runs")
    with caplog.at_level("WARNING"):
        answers = [client.get("/v1/moa/runs"), client.get("/v1/moa/runs/r1")]
    for answer in answers:
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert error["type"] == "server_error" and error["code"] == "history_unavailable"
        assert "history" in error["message"] and str(tmp_path) not in answer.text
    assert f"Cannot read the run history at {history.path}" in caplog.text
    assert "no such table" in caplog.text and "Traceback" not in caplog.text


def test_a_stored_run_whose_events_cannot_be_read_is_one_sentence(system, tmp_path, caplog):
    # A row whose events are not JSON (the file written by hand, cut by a failing disk)
    # raised the decoder's error out of GET /v1/moa/runs/{id}: a bare 500 and a traceback.
    _, client = _history_broken_by(
        system, tmp_path, "UPDATE runs SET events = '[{\"event\": ' WHERE id = 'r1'"
    )
    with caplog.at_level("WARNING"):
        answer = client.get("/v1/moa/runs/r1")
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "history_unavailable"
    assert str(tmp_path) not in answer.text
    assert "Cannot read run r1 of the run history" in caplog.text and "Traceback" not in caplog.text
    assert [r["id"] for r in client.get("/v1/moa/runs").json()["data"]] == ["r1"]  # still listed


def test_a_server_with_prices_shows_each_runs_cost(system):
    prices = {"A": (1.0, 1.0), "B": (1.0, 1.0), "AGG": (1.0, 1.0)}
    client = TestClient(create_app({"m": system}, prices=prices), base_url="http://localhost")
    events = sse_events(client.post("/v1/moa/runs", json={"model": "m", "messages": USER}).text)
    answer = events[-2]
    tokens = answer["usage"]["prompt_tokens"] + answer["usage"]["completion_tokens"]
    assert answer["cost"]["unpriced_calls"] == 0
    assert answer["cost"]["dollars"] == pytest.approx(tokens / 1e6)


def test_a_failed_run_ends_with_an_error_event(fake, tmp_path):
    def boom(n, messages):
        return ValueError("down")

    config = MoAConfig(proposers=[fake("A", fail=boom)], aggregator=fake("AGG"), layers=2)
    client = TestClient(
        create_app({"m": config}, history=History(tmp_path / "h.sqlite3")),
        base_url="http://localhost",
    )
    events = sse_events(client.post("/v1/moa/runs", json={"model": "m", "messages": USER}).text)
    assert events[-2]["event"] == "error" and events[-2]["status"] == 502
    assert events[-2]["reason"] is None  # no code: the page says the models failed
    assert events[-1] == {"event": "done", "run_id": events[0]["run_id"], "status": "failed"}
    assert client.get("/v1/moa/runs").json()["data"][0]["status"] == "failed"


def test_a_run_too_long_for_its_models_ends_with_an_error_event_that_says_so(fake):
    # The page told "conversation too long" from "every proposer failed" by the sentence
    # alone: its error event had no code. It has the chat route's now, as `reason`.
    from tests.unit_tests.test_failures import context_overflow

    config = MoAConfig(
        proposers=[fake("A", fail=lambda n, m: context_overflow())],
        aggregator=fake("AGG"),
        layers=2,
    )
    client = TestClient(create_app({"m": config}, history=None), base_url="http://localhost")
    events = sse_events(client.post("/v1/moa/runs", json={"model": "m", "messages": USER}).text)
    error = events[-2]
    assert (error["event"], error["status"]) == ("error", 400)
    assert error["reason"] == "context_length_exceeded"


def test_the_page_loads_without_the_key_but_its_data_needs_it(system):
    client = TestClient(create_app({"m": system}, api_key="sekret"), base_url="http://localhost")
    page = client.get("/ui")
    assert (
        page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    )
    assert client.get("/ui/static/app.js").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"] == "ui"
    for method, path in [
        ("get", "/v1/moa/runs"),
        ("get", "/v1/moa/runs/x"),
        ("post", "/v1/moa/runs"),
    ]:
        assert getattr(client, method)(path).status_code == 401
    assert client.post("/ui").status_code == 401  # only GETs of the shell are open
    authed = {"Authorization": "Bearer sekret"}
    assert client.get("/v1/moa/runs", headers=authed).json()["history"] is False


def _behind_a_prefix(app, prefix):
    """An ASGI proxy as nginx's ``location /moa/ { proxy_pass http://moa/; }``: it forwards
    only paths under `prefix`, with the prefix taken off; any other path never reaches `app`."""

    async def proxy(scope, receive, send):
        if scope["type"] == "http" and not scope["path"].startswith(prefix + "/"):
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b"not proxied"})
            return
        if scope["type"] == "http":
            scope = {**scope, "path": scope["path"][len(prefix) :], "raw_path": None}
        await app(scope, receive, send)

    return proxy


def test_the_page_works_behind_a_proxy_that_serves_it_under_a_path_prefix(system):
    # Behind `location /moa/` the page loaded from /moa/ui, but its stylesheet, its script,
    # every API call it made and the redirect from /moa/ went to /ui/static/..., /v1/... and
    # /ui, outside the prefix: the proxy did not send them to moa serve, and the page was dead.
    client = TestClient(
        _behind_a_prefix(create_app({"m": system}), "/moa"), base_url="http://localhost"
    )
    _the_page_and_its_calls_reach_the_server(client)


def _the_page_and_its_calls_reach_the_server(client, headers=None):
    """Follow /moa/ to the page, then its links and its API calls: each must reach moa serve."""
    from urllib.parse import urljoin

    root = client.get("/moa/", follow_redirects=False)
    page_url = urljoin("http://localhost/moa/", root.headers["location"])
    assert page_url == "http://localhost/moa/ui"
    page = client.get(page_url)
    assert page.status_code == 200

    links = [v for v in re.findall(r'(?:href|src)="([^"]+)"', page.text) if ":" not in v]
    script = next(link for link in links if link.endswith("app.js"))
    called = re.findall(r'api\("([^"]+)"', client.get(urljoin(page_url, script)).text)
    assert len(links) == 2 and "v1/models" in " ".join(called)
    for link in [*links, *called]:
        url = urljoin(page_url, link + "x" * link.endswith("/"))  # "v1/moa/runs/" + a run's id
        assert url.startswith("http://localhost/moa/"), link
        status = client.get(url, headers=headers).status_code
        assert status != 502, link  # it reached moa serve
        assert status != 404 or link.endswith("/"), (link, status)  # and a route of it


def _behind_a_prefix_kept(app, prefix):
    """An ASGI proxy as nginx's ``location /moa/ { proxy_pass http://moa/moa/; }``: it forwards
    only paths under `prefix`, as they are (the prefix kept)."""

    async def proxy(scope, receive, send):
        if scope["type"] == "http" and not scope["path"].startswith(prefix + "/"):
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b"not proxied"})
            return
        await app(scope, receive, send)

    return proxy


def test_with_a_root_path_the_page_works_behind_a_proxy_that_keeps_the_prefix(system):
    # Only a proxy that took the prefix off worked: one that passed /moa/ui on as it was got
    # a 404 for the page, the API and the redirects. --root-path /moa serves those paths.
    from langgraph_moa.serving._guard import served_under

    app = served_under(create_app({"m": system}, api_key="sekret"), "/moa")
    client = TestClient(_behind_a_prefix_kept(app, "/moa"), base_url="http://localhost")
    authed = {"Authorization": "Bearer sekret"}
    _the_page_and_its_calls_reach_the_server(client, authed)
    assert client.get("/moa/v1/models", headers=authed).json()["data"][0]["id"] == "m"
    assert client.get("/moa/v1/models").status_code == 401  # the key is still asked for
    # The guards see the route, not the prefix: a cross-site form post is still refused.
    form = {"content-type": "text/plain", **authed}
    assert client.post("/moa/v1/chat/completions", headers=form).status_code == 415
    slash = client.get("/moa/ui/", follow_redirects=False)
    assert slash.headers["location"] == "../ui"  # back to /moa/ui
    direct = TestClient(app, base_url="http://localhost")  # no proxy: no prefix
    assert direct.get("/ui").status_code == 200


def test_a_root_path_given_from_python_is_taken_as_the_cli_takes_it(system):
    # Only the CLI took the trailing slash off: serve(root_path="/moa/") matched /moa//...
    # alone, so /moa/ui was a 404; and a '%' never matches the decoded path it is compared to.
    from langgraph_moa.serving._guard import served_under

    app = served_under(create_app({"m": system}), "/moa/")
    assert TestClient(app, base_url="http://localhost").get("/moa/ui").status_code == 200
    with pytest.raises(ValueError, match="not a URL path"):
        served_under(app, "/m%20oa")


def test_a_root_path_of_slash_alone_is_no_prefix(system):
    # "/" says the app is at the root; it was refused as "not a URL path".
    from langgraph_moa.serving._guard import served_under

    app = create_app({"m": system})
    assert served_under(app, "/") is app
    with pytest.raises(ValueError, match="not a URL path"):
        served_under(app, "//")


def test_with_a_root_path_the_prefix_itself_is_sent_under_it(system):
    # A proxy that passes /moa on as it is (not every proxy redirects it to /moa/ itself)
    # got a 404: only paths under /moa/ were served. It is sent to /moa/ now, keeping its
    # query, by a relative Location (which stays right behind a proxy that adds a prefix).
    from langgraph_moa.serving._guard import served_under

    app = served_under(create_app({"m": system}), "/a/moa")
    client = TestClient(app, base_url="http://localhost")
    for method in ("GET", "HEAD"):
        moved = client.request(method, "/a/moa", params={"x": "1"}, follow_redirects=False)
        assert moved.status_code == 307, (method, moved.status_code)
        assert moved.headers["location"] == "./moa/?x=1"
    page = client.get("/a/moa")  # then on to the page
    assert (page.status_code, page.url.path) == (200, "/a/moa/ui")
    assert client.get("/a/moat", follow_redirects=False).status_code == 404  # not the prefix


def test_with_a_root_path_a_trailing_slash_redirect_stays_under_the_prefix(system):
    # Starlette's own redirect of a path with a trailing slash (/moa/v1/chat/completions/)
    # is absolute and built from the path it saw, the prefix already taken off: it sent the
    # client to http://host/v1/chat/completions, outside the prefix the proxy serves.
    from urllib.parse import urljoin

    from langgraph_moa.serving._guard import served_under

    app = served_under(create_app({"m": system}), "/moa")
    client = TestClient(_behind_a_prefix_kept(app, "/moa"), base_url="http://localhost")
    body = {"model": "m", "messages": USER}
    moved = client.post("/moa/v1/chat/completions/", json=body, follow_redirects=False)
    assert moved.status_code in (307, 308), moved.status_code
    target = urljoin("http://localhost/moa/v1/chat/completions/", moved.headers["location"])
    assert target == "http://localhost/moa/v1/chat/completions"
    assert client.post(target, json=body).status_code == 200
    # A path outside the prefix is redirected as before.
    direct = TestClient(app, base_url="http://localhost")
    plain = direct.post("/v1/chat/completions/", json=body, follow_redirects=False)
    assert plain.headers["location"] == "http://localhost/v1/chat/completions"


def test_the_page_at_ui_with_a_slash_comes_back_to_ui_under_the_prefix_too(system):
    # /ui/ redirected to an absolute http://host/ui: behind `location /moa/` the browser left
    # the prefix (the page was gone), and with a key /ui/ answered 401, though /ui is open.
    from urllib.parse import urljoin

    proxied = _behind_a_prefix(create_app({"m": system}, api_key="sekret"), "/moa")
    client = TestClient(proxied, base_url="http://localhost")
    slash = client.get("/moa/ui/", follow_redirects=False)
    assert slash.status_code in (301, 302, 307, 308), slash.status_code
    page_url = urljoin("http://localhost/moa/ui/", slash.headers["location"])
    assert page_url == "http://localhost/moa/ui"
    assert client.get(page_url).status_code == 200


def test_head_is_answered_wherever_get_is(system):
    # Uptime checkers send HEAD: HEAD /v1/models and HEAD /ui answered 405 while GET worked
    # (and with a key, HEAD /ui answered 401 though GET /ui is open).
    for api_key, authed in ((None, {}), ("sekret", {"Authorization": "Bearer sekret"})):
        client = TestClient(create_app({"m": system}, api_key=api_key), base_url="http://localhost")
        for path, headers in [
            ("/v1/models", authed),
            ("/v1/models/m", authed),
            ("/v1/moa/runs", authed),
            ("/ui", {}),
            ("/ui/static/app.js", {}),
        ]:
            got, head = client.get(path, headers=headers), client.head(path, headers=headers)
            assert (head.status_code, head.content) == (got.status_code, b""), path
            assert head.headers.get("content-length") == got.headers.get("content-length")
        assert client.head("/", follow_redirects=False).status_code == 307
        assert client.head("/v1/chat/completions", headers=authed).status_code == 405
        assert client.head("/v1/models").status_code == (401 if api_key else 200)


def test_runs_refuse_other_sites_and_non_json_bodies_and_follow_the_policy(system):
    client = TestClient(create_app({"m": system}), base_url="http://localhost")
    body = {"model": "m", "messages": USER}
    other = client.post("/v1/moa/runs", json=body, headers={"Origin": "http://evil.example"})
    assert other.status_code == 403 and other.json()["error"]["code"] == "origin_not_allowed"
    same = client.post("/v1/moa/runs", json=body, headers={"Origin": "http://localhost"})
    assert same.status_code == 200
    form = client.post(
        "/v1/moa/runs", content=json.dumps(body), headers={"Content-Type": "text/plain"}
    )
    assert form.status_code == 415
    denied = client.post("/v1/moa/runs", json={**body, "proposers": ["gpt-4o"]})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_not_allowed"
    unknown = client.post("/v1/moa/runs", json={**body, "model": "nope"})
    assert unknown.status_code == 404 and "served models: m" in unknown.json()["error"]["message"]
    small = TestClient(create_app({"m": system}, max_body_bytes=100), base_url="http://localhost")
    big = small.post(
        "/v1/moa/runs", json={**body, "messages": [{"role": "user", "content": "x" * 200}]}
    )
    assert big.status_code == 413
    bad = client.post("/v1/moa/runs", json={**body, "layers": "3"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "layers"


def test_openai_stream_carries_progress_only_when_asked(system):
    client = TestClient(create_app({"m": system}), base_url="http://localhost")
    body = {"model": "m", "messages": USER, "stream": True}
    plain = client.post("/v1/chat/completions", json=body).text
    assert "event:" not in plain
    watched = client.post("/v1/chat/completions", json={**body, "moa_progress": True}).text
    progress = [
        json.loads(block.split("data: ", 1)[1])
        for block in watched.split("\n\n")
        if block.startswith("event: moa.progress")
    ]
    assert {p["event"] for p in progress} >= {"started", "token", "finished"}
    assert all(not p.get("final") for p in progress if p["event"] == "token")
    chunks = [e for e in sse_events(watched) if "choices" in e]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "AGG #2"  # the second run of this graph's fake aggregator
    refused = client.post(
        "/v1/chat/completions", json={**body, "stream": False, "moa_progress": True}
    )
    assert refused.status_code == 400 and "moa_progress" in refused.json()["error"]["message"]


def test_a_quiet_stream_sends_keep_alive_comments():
    async def slow():
        await asyncio.sleep(0.2)
        yield "data: late\n\n"

    async def collect():
        return [item async for item in pump(slow(), _never, keepalive_s=0.05)]

    items = asyncio.run(collect())
    assert items[-1] == "data: late\n\n"
    assert items[:-1] and set(items[:-1]) == {KEEPALIVE}


def test_a_slow_reader_holds_the_run_back_instead_of_queueing_its_whole_output():
    """The pump queued whatever the run wrote, however slowly its client read: a client
    reading a byte at a time held the run's whole output (every call's tokens) in memory.
    Past `PENDING_CHARS` unsent the run waits for the reader; every item still arrives."""
    from langgraph_moa.serving._events import PENDING_CHARS

    item = "x" * 100_000
    produced = 0

    async def fast():
        nonlocal produced
        for _ in range(200):  # 20 MB, far past the bound
            produced += len(item)
            yield item

    async def read_slowly():
        nonlocal produced
        read, ahead = 0, 0
        async for part in pump(fast(), _never, keepalive_s=None):
            ahead = max(ahead, produced - read)  # written by the run, not yet sent
            await asyncio.sleep(0.005)  # the socket's buffer is full: the send waits
            read += len(part)
        return read, ahead

    read, ahead = asyncio.run(read_slowly())
    assert read == 200 * len(item)  # nothing lost
    assert ahead <= 2 * PENDING_CHARS + len(item), ahead


def test_a_run_held_back_by_a_slow_reader_still_ends_at_its_deadline():
    """Waiting for the reader must not take the run past its deadline, nor hang the stream:
    the deadline's error arrives as it does for a run that is slow on its own."""
    from langgraph_moa.errors import RequestTimeoutError
    from langgraph_moa.serving._requests import _timed

    async def read_slowly():
        async for _ in pump(_timed(_endless(), 0.3), _never, keepalive_s=0.05):
            await asyncio.sleep(0.05)

    async def main():
        with pytest.raises(RequestTimeoutError):
            await asyncio.wait_for(read_slowly(), timeout=10)

    asyncio.run(main())


def test_a_page_run_held_back_by_a_slow_reader_ends_at_its_deadline_not_as_a_client_left():
    """The page's run (`_ui._run`) relays `_timed` from inside its own generator: the
    deadline, thrown into it where it waited for the reader, landed at its own ``yield``,
    outside the deadline's frame. It was kept as cancelled by its client, and the stream,
    its producer gone without an end, sent keep-alives for ever. The deadline now meets the
    run inside it, as for a run that is slow on its own: the page's error event, then the end."""
    from langgraph_moa.errors import MoAError
    from langgraph_moa.serving._requests import _timed

    seen: list[str] = []

    async def page_run():  # the shape of `_ui._run`
        try:
            try:
                async for item in _timed(_endless(), 0.3):
                    yield item
            except MoAError as exc:
                seen.append(type(exc).__name__)
                yield "error"
            yield "done"
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def read_slowly():
        tail = ""
        async for part in pump(page_run(), _never, keepalive_s=0.05):
            tail = (tail + part)[-20:]
            await asyncio.sleep(0.05)
        return tail

    tail = asyncio.run(asyncio.wait_for(read_slowly(), timeout=10))
    assert seen == ["RequestTimeoutError"]
    assert tail.endswith("xerrordone"), tail


def test_a_run_held_back_by_a_slow_reader_is_told_when_its_client_leaves():
    """A client that left while its run waited for it to read: the pump's producer was
    cancelled outside the source, which was left at its ``yield`` for the garbage collector
    to close, later and in another context (its deadline's reset then failed): the page's run
    never heard that its client had left, and was kept without its calls stopped. The source
    now meets the client's leaving where it waits, as a run not held back does."""
    from langgraph_moa.serving._requests import _timed

    seen: list[str] = []
    leave = asyncio.Event()

    async def page_run():  # the shape of `_ui._run`
        try:
            async for item in _timed(_endless(), 60):
                yield item
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        except GeneratorExit:
            seen.append("closed later")
            raise

    async def read_slowly():
        stream = pump(page_run(), leave.wait, keepalive_s=None)
        try:
            async for _ in stream:
                await asyncio.sleep(0.05)
                leave.set()  # the run is held back by now: it wrote far more than was read
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.1)  # the producer's cancellation runs
        return list(seen)

    assert asyncio.run(read_slowly()) == ["cancelled"]


def test_serve_goes_on_without_a_history_it_cannot_open(tmp_path, caplog):
    from langgraph_moa.serving._server import _open_history

    (tmp_path / "file").write_text("")
    with caplog.at_level("WARNING"):
        assert _open_history(tmp_path / "file" / "h.sqlite3") is None
    assert "Serving without a history" in caplog.text
    assert _open_history(tmp_path / "ok.sqlite3") is not None


@pytest.mark.parametrize("variant", ["moa", "self-moa", "self-moa-seq", "ranker", "select"])
def test_every_variant_runs_watched_and_every_started_call_ends(fake, variant):
    from langgraph_moa.config._schema import SelfMoASeqConfig

    shapes = {
        "moa": {"proposers": [fake("A"), fake("B")], "aggregator": fake("X"), "layers": 3},
        "self-moa": {"proposers": [{"model": fake("M"), "samples": 3}]},
        "self-moa-seq": {
            "proposers": [{"model": fake("M"), "samples": 6}],
            "seq": SelfMoASeqConfig(window_size=4),
        },
        "ranker": {
            "proposers": [fake("A"), fake("B")],
            "aggregator": fake("R", reply=lambda label, n, m: "Response 2"),
        },
        "select": {"proposers": [fake("A"), fake("B")], "selection": {"method": "consensus"}},
    }
    config = MoAConfig(variant=variant, **shapes[variant])
    events = RunEvents(create_moa_graph(config), QUESTION)
    seen = list(events)
    started = {key(e) for e in seen if e["event"] == "started"}
    ended = {key(e) for e in seen if e["event"] in ("finished", "failed")}
    assert started and started == ended
    assert all(key(e) in started for e in seen if e["event"] == "token")
    answer = answer_event(events.final)
    assert answer["text"] == events.answer.text and answer["usage"]["calls"] == len(started)
    assert ("selection" in answer) == (variant == "select")
    assert ("agreement" in answer) == (variant not in ("select", "ranker"))
    if variant == "ranker":
        assert answer["ranker"] == {
            "choice": 2,
            "reply": "Response 2",
            "call": ["proposer", 1, 1, 0],
        }


def test_a_served_config_file_is_named_after_it_and_a_missing_one_is_one_sentence(tmp_path):
    from langgraph_moa.errors import MoAConfigError
    from langgraph_moa.serving._server import load_system

    path = tmp_path / "my-moa.yaml"
    path.write_text("variant: moa\nlayers: 2\nproposers: [openai:a]\naggregator: openai:b\n")
    name, config = load_system(str(path))
    assert name == "my-moa" and config.layers == 2
    assert load_system("local-moa")[0] == "local-moa"
    with pytest.raises(MoAConfigError, match=r"does not exist: check the path\.$"):
        load_system(str(tmp_path / "nope.yaml"))


def test_a_served_config_file_with_a_capital_suffix_is_named_after_it(tmp_path):
    # "moa serve -p my-moa.JSON" served the system as "my-moa.JSON": the suffix that tells a
    # file from a preset was compared as written, while the file is read in any case.
    from langgraph_moa.serving._server import load_system

    path = tmp_path / "my-moa.JSON"
    path.write_text('{"proposers": ["openai:a"], "aggregator": "openai:b"}')
    assert load_system(str(path))[0] == "my-moa"


def test_a_degraded_answer_says_so_in_the_stream_and_the_history(fake, tmp_path):
    def boom(n, messages):
        return ValueError("aggregator down")

    config = MoAConfig(
        proposers=[fake("A"), fake("B")], aggregator=fake("AGG", fail=boom), layers=2
    )
    client = TestClient(
        create_app({"m": config}, history=History(tmp_path / "h.sqlite3")),
        base_url="http://localhost",
    )
    events = sse_events(client.post("/v1/moa/runs", json={"model": "m", "messages": USER}).text)
    answer, done = events[-2], events[-1]
    assert answer["fallback"] == "best_proposal" and "aggregator down" in answer["fallback_reason"]
    assert answer["text"] in ("A #1", "B #1") and done["status"] == "degraded"
    assert client.get("/v1/moa/runs").json()["data"][0]["status"] == "degraded"


# --- the run stream honours the chat route's bounds and options ---------------------------


def test_a_run_past_the_request_timeout_ends_with_its_504_error_event(fake, log, tmp_path):
    from langgraph_moa.config._limits import RequestLimits

    slow = fake("A", delay=lambda n: 3.0)
    config = MoAConfig(proposers=[slow], aggregator=fake("AGG"), layers=2, name="m")
    app = create_app(
        {"m": config},
        limits=RequestLimits(request_timeout_s=1),
        history=History(tmp_path / "h.sqlite3"),
    )
    client = TestClient(app, base_url="http://localhost")
    events = sse_events(client.post("/v1/moa/runs", json={"model": "m", "messages": USER}).text)
    error = events[-2]
    assert error["event"] == "error" and error["status"] == 504, error
    assert error["type"] == "timeout_error" and "\n" not in error["message"]
    assert events[-1]["status"] == "failed"
    assert client.get("/v1/moa/runs").json()["data"][0]["status"] == "failed"
    assert not log.by("AGG")  # no aggregator after the deadline


def test_the_run_streams_error_is_the_chat_routes_one_redacted_sentence(fake):
    secret = "Authorization: Bearer sk-abcdefghijklmnopqrstuvwxyz012345"
    failing = {"fail": lambda n, messages: ValueError(f"down\n{secret}")}
    proposers = [fake(label, **failing) for label in "AB"]
    config = MoAConfig(proposers=proposers, aggregator=fake("AGG"), retry={"max_attempts": 1})
    client = TestClient(create_app({"m": config}), base_url="http://localhost")
    body = {"model": "m", "messages": USER}
    text = client.post("/v1/moa/runs", json=body).text
    error = next(e for e in sse_events(text) if e["event"] == "error")
    chat = client.post("/v1/chat/completions", json=body).json()["error"]
    assert error["message"] == chat["message"]
    assert "\n" not in error["message"] and error["message"].endswith(".")
    assert "sk-abcdefghijklmnopqrstuvwxyz" not in text


def test_the_run_stream_sends_the_requests_call_options_and_trace_metadata(fake, log, monkeypatch):
    from langgraph_moa.serving import _ui

    seen = []

    class Spy(_ui.RunEvents):
        def __init__(self, graph, run_input, config=None, **kwargs):
            seen.append(config)
            super().__init__(graph, run_input, config, **kwargs)

    monkeypatch.setattr(_ui, "RunEvents", Spy)
    agg = fake("AGG", logprob=lambda n: -0.5)
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=agg, layers=2, name="m")
    client = TestClient(create_app({"m": config}), base_url="http://localhost")
    tools = [{"type": "function", "function": {"name": "f"}}]
    body = {
        "model": "m",
        "messages": USER,
        "tools": tools,
        "tool_choice": "auto",
        "stop": ["zz"],
        "seed": 3,
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "user": "u-1",
        "metadata": {"team": "a"},
    }
    response = client.post("/v1/moa/runs", json=body)
    assert response.status_code == 200, response.text
    assert len(log.calls) == 3 and all(c.kwargs.get("tools") for c in log.calls)
    # Each proposal of a layer gets its own seed (the request's plus its position).
    assert {c.label: c.kwargs.get("seed") for c in log.calls} == {"A": 3, "B": 4, "AGG": 3}
    final = log.by("AGG")[0].kwargs
    assert final["stop"] == ["zz"] and final["response_format"] == {"type": "json_object"}
    assert final["logprobs"] is True
    answer = next(e for e in sse_events(response.text) if e["event"] == "answer")
    assert answer["finish_reason"] == "stop"
    assert [t["logprob"] for t in answer["logprobs"]["content"]] == [-0.5, -0.5]
    # The trace is found by the request's ID, the one its response and log line carry.
    assert seen[0]["metadata"] == {
        "user": "u-1",
        "request_metadata": {"team": "a"},
        "request_id": response.headers["x-request-id"],
    }


def test_the_run_streams_answer_carries_the_answers_tool_calls(fake):
    def call_f(label, n, messages, kwargs):
        return [{"name": "f", "args": {"x": 1}, "id": f"c{n}"}]

    config = MoAConfig(
        proposers=[fake("A"), fake("B")], aggregator=fake("AGG", tool_calls=call_f), layers=2
    )
    client = TestClient(create_app({"m": config}), base_url="http://localhost")
    tools = [{"type": "function", "function": {"name": "f"}}]
    text = client.post("/v1/moa/runs", json={"model": "m", "messages": USER, "tools": tools}).text
    answer = next(e for e in sse_events(text) if e["event"] == "answer")
    assert answer["finish_reason"] == "tool_calls"
    assert answer["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"x": 1}'}


def test_the_run_stream_refuses_stream_false_in_one_sentence(system):
    client = TestClient(create_app({"m": system}), base_url="http://localhost")
    body = {"model": "m", "messages": USER, "stream": False}
    refused = client.post("/v1/moa/runs", json=body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "stream" and "/v1/chat/completions" in error["message"]
    assert client.post("/v1/moa/runs", json={**body, "stream": True}).status_code == 200


def test_run_events_and_the_history_are_strict_json(fake, tmp_path):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    agg = fake("AGG", logprob=lambda n: float("-inf"))
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=agg, layers=2, name="m")
    app = create_app({"m": config}, history=History(tmp_path / "h.sqlite3"))
    client = TestClient(app, base_url="http://localhost")
    body = {"model": "m", "messages": USER, "logprobs": True}
    text = client.post("/v1/moa/runs", json=body).text
    events = [
        json.loads(line[len("data: ") :], parse_constant=refuse)
        for line in text.splitlines()
        if line.startswith("data: ")
    ]
    answer = next(e for e in events if e["event"] == "answer")
    assert [t["logprob"] for t in answer["logprobs"]["content"]] == [None, None]
    kept = client.get(f"/v1/moa/runs/{events[0]['run_id']}").text
    json.loads(kept, parse_constant=refuse)


# --- a run cut short still ends every call it started ----------------------------------------


def test_a_run_stopped_at_its_deadline_ends_every_call_it_started(fake, tmp_path):
    """A call still running at the deadline gets its 'failed' (cancelled) event: no card of
    the page, live or reopened from the history, is left saying 'running'."""
    from langgraph_moa.config._limits import RequestLimits

    slow = fake("A", delay=lambda n: 3.0)
    config = MoAConfig(proposers=[slow, fake("B")], aggregator=fake("AGG"), layers=2, name="m")
    history = History(tmp_path / "h.sqlite3")
    app = create_app({"m": config}, limits=RequestLimits(request_timeout_s=1), history=history)
    client = TestClient(app, base_url="http://localhost")
    events = sse_events(client.post("/v1/moa/runs", json={"model": "m", "messages": USER}).text)
    started = {key(e) for e in events if e["event"] == "started"}
    ended = {key(e): e for e in events if e["event"] in ("finished", "failed")}
    assert started == set(ended) == {("proposer", 1, 0, 0), ("proposer", 1, 1, 0)}
    stopped = ended[("proposer", 1, 0, 0)]
    assert stopped["status"] == "cancelled" and "limit of 1 s" in stopped["error"]
    assert [e["event"] for e in events[-2:]] == ["error", "done"]
    assert events.index(stopped) < len(events) - 2  # before the run's error
    kept = history.get(events[0]["run_id"]).events
    assert {key(e) for e in kept if e["event"] in ("finished", "failed")} == started


def test_a_run_whose_client_left_keeps_every_call_ended_in_the_history(fake, tmp_path):
    """The client left mid-call: the history's events close that call as cancelled, so the
    run reopened on the page shows it stopped, not still running."""
    from langgraph_moa.config.context import MoAContext
    from langgraph_moa.serving._policy import _Job
    from langgraph_moa.serving._ui import _run

    slow = fake("A", delay=lambda n: 30.0)
    config = MoAConfig(proposers=[slow], aggregator=fake("AGG"), layers=2, name="m")
    history = History(tmp_path / "h.sqlite3")
    job = _Job("m", [HumanMessage("Explain X")], MoAContext(), None, False)
    asyncio.run(
        leave_at_first_start(_run(create_moa_graph(config), job, "r1", config, history, {}))
    )
    run = history.get("r1")
    assert run is not None and run.status == "cancelled"
    failed = [e for e in run.events if e["event"] == "failed"]
    assert [key(e) for e in failed] == [("proposer", 1, 0, 0)]
    assert failed[0]["status"] == "cancelled" and "client" in failed[0]["error"]


def test_a_run_whose_client_left_while_its_answer_event_was_built_keeps_its_answer(
    fake, tmp_path, monkeypatch
):
    """The answer event is built in a worker thread (626d225): a client leaving meanwhile
    cancelled the run after its graph had answered, and the history kept it without the
    answer every call had been paid for, where before the answer was always kept."""
    import threading

    from langgraph_moa.config.context import MoAContext
    from langgraph_moa.serving import _ui
    from langgraph_moa.serving._policy import _Job

    building, release = threading.Event(), threading.Event()
    built = _ui.answer_event

    def slow_answer_event(*args, **kwargs):
        building.set()
        release.wait(10)
        return built(*args, **kwargs)

    monkeypatch.setattr(_ui, "answer_event", slow_answer_event)
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), name="m")
    history = History(tmp_path / "h.sqlite3")
    job = _Job("m", [HumanMessage("Explain X")], MoAContext(), None, False)

    async def leave_while_built() -> None:
        async def consume() -> None:
            async for _ in _ui._run(create_moa_graph(config), job, "r1", config, history, {}):
                pass

        task = asyncio.ensure_future(consume())
        await asyncio.to_thread(building.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()

    asyncio.run(leave_while_built())
    run = history.get("r1")
    assert run is not None and run.status == "cancelled"
    assert run.answer.startswith("AGG")


def test_a_run_kept_by_an_earlier_version_is_served_without_the_machines_details(system, tmp_path):
    """Runs saved before call errors stopped naming a dead local server's pid, port, temp log
    path and last lines were served again as saved. Their error texts now pass through the
    same machine redaction on the way out; the model's own text is left as written."""
    old = (
        "LocalRuntimeError: The llama.cpp server for 'qwen' (pid 4242, port 39187) exited with "
        "code -9 (killed by SIGKILL) during the call. Its log (/tmp/moa-llama-x1.log): "
        "ggml: out of memory reading /home/op/.cache/langgraph-moa/qwen.gguf"
    )
    timed_out = (
        "LocalRuntimeError: The llama.cpp server for 'qwen' did not answer within 30s on port "
        "40111. Its log (/tmp/moa-llama-x2.log): loading"
    )
    events = [
        {"event": "failed", "role": "proposer", "layer": 0, "proposer": 0, "error": old},
        {"event": "failed", "role": "proposer", "layer": 0, "proposer": 1, "error": timed_out},
        {"event": "answer", "text": "see /tmp/notes (model text)", "fallback_reason": old},
        {"event": "error", "message": old, "status": 502},
    ]
    history = History(tmp_path / "h.sqlite3")
    history.save(RunRecord("old", "m", "q?", status="failed", events=events))
    client = TestClient(create_app({"m": system}, history=history), base_url="http://localhost")
    served = client.get("/v1/moa/runs/old").json()["events"]
    shown = json.dumps(served)
    for detail in ("4242", "39187", "40111", "/tmp/moa", "/home/op", "ggml", "loading"):
        assert detail not in shown, detail
    assert served[0]["error"] == (
        "LocalRuntimeError: The llama.cpp server for 'qwen' exited with code -9 (killed by "
        "SIGKILL) during the call. The operator's log says why."
    )
    assert "did not answer within 30s. The operator's log says why." in served[1]["error"]
    assert served[2]["text"] == "see /tmp/notes (model text)"  # a model's words, untouched
    assert served[3]["message"] == served[0]["error"]


def test_a_served_runs_selection_keeps_the_answer_it_quotes(system, tmp_path):
    """A selection's ``reason`` quotes the proposals' answer (``'/usr/bin/env' has 2 of 3
    votes``): it is a model's words, not an error, yet was served from the history with the
    answer replaced by ``[path]``."""
    reason = "'/usr/bin/env' has 2 of 3 votes from 2 of 3 proposals"
    events = [
        {"event": "selected", "method": "vote", "winner": 0, "reason": reason, "tally": []},
        {"event": "answer", "text": "/usr/bin/env", "selection": {"reason": reason}},
    ]
    history = History(tmp_path / "h.sqlite3")
    history.save(RunRecord("r", "m", "q?", status="done", events=events))
    client = TestClient(create_app({"m": system}, history=history), base_url="http://localhost")
    served = client.get("/v1/moa/runs/r").json()["events"]
    assert served[0]["reason"] == reason
    assert served[1]["selection"]["reason"] == reason


def test_a_runs_tokens_are_sent_in_few_events_with_the_same_text_in_order(fake, monkeypatch):
    """A run's event stream sent one event per token: a 200 kB answer made 15 MB of events.
    Each call's tokens are now joined into one event per size or short interval, flushed
    before any other event, so a client reads the same text, in the same order, from far
    fewer events and bytes."""
    from langgraph_moa.serving import _events

    monkeypatch.setattr(_events, "JOIN_S", 60.0)  # joined by size and by events: a count
    long = " ".join(f"w{i}" for i in range(4_000))  # 4,000 tokens, ~24 kB

    def answer(label, n, messages):
        return long

    proposers = [fake("A", reply=answer), fake("B", reply=answer)]
    config = MoAConfig(proposers=proposers, aggregator=fake("AGG", reply=answer), name="m")
    client = TestClient(create_app({"m": config}), base_url="http://localhost")
    response = client.post("/v1/moa/runs", json={"model": "m", "messages": USER})
    events = sse_events(response.text)
    tokens = [e for e in events if e["event"] == "token"]
    # One event per token was 20,000 events and ~3.3 MB; now a few per call.
    assert len(tokens) <= 60, len(tokens)
    assert len(response.text) < 2 * 5 * len(long), len(response.text)
    texts: dict = {}
    state: dict = {}
    for event in events:  # every call's tokens come between its start and its end
        if event["event"] in ("started", "finished", "failed", "token"):
            call = key(event)
            if event["event"] == "token":
                assert state.get(call) == "started", event
                texts[call] = texts.get(call, "") + event["text"]
            else:
                state[call] = event["event"]
    assert list(texts.values()) == [long] * len(texts) and len(texts) == 5  # 2 layers
    assert events[-2]["text"] == long and events[-1]["event"] == "done"


async def test_a_held_token_goes_out_while_its_run_is_silent():
    """Joined tokens wait at most JOIN_S: a call that writes a few words and then thinks
    for a minute shows them now, not at its next token or at the keep-alive."""
    from langgraph_moa.serving._events import TokenJoiner

    async def run():
        for word in ("slow", " words"):
            yield {"event": "token", "role": "proposer", "layer": 1, "proposer": 0,
                   "sample": 0, "text": word, "final": False}  # fmt: skip
        await asyncio.Event().wait()  # silent for ever

    stream = pump(run(), _never, keepalive_s=60, joiner=TokenJoiner(seconds=0.05))
    async with asyncio.timeout(5):
        first = await anext(stream)
    await stream.aclose()
    assert [e["text"] for e in sse_events(first)] == ["slow words"]


async def test_held_tokens_go_out_before_a_sources_error():
    """A source that fails (a server error in the run) ended the stream with its error, and
    the tokens the joiner held (up to 0.1 s, 4,096 characters per call) were lost; sent
    one per token they had gone out before it. They now go out, then the error."""
    from langgraph_moa.serving._events import TokenJoiner

    async def run():
        for word in ("kept", " words"):
            yield {"event": "token", "role": "proposer", "layer": 1, "proposer": 0,
                   "sample": 0, "text": word, "final": False}  # fmt: skip
        raise RuntimeError("a bug in the run")

    stream = pump(run(), _never, keepalive_s=60, joiner=TokenJoiner(seconds=60))
    seen = []
    with pytest.raises(RuntimeError, match="a bug"):
        async with asyncio.timeout(5):
            async for text in stream:
                seen.append(text)
    assert [e["text"] for e in sse_events("".join(seen))] == ["kept words"]


async def test_a_token_after_a_full_join_waits_its_own_interval():
    """Once a call's held text reached JOIN_CHARS and went out, the joiner kept the sent
    token's arrival time: the next token was due at once, and went out alone. It now
    waits its own interval, as the first one did."""
    from langgraph_moa.serving._events import TokenJoiner

    def token(text):
        return {"event": "token", "role": "proposer", "layer": 1, "proposer": 0,
                "sample": 0, "text": text, "final": False}  # fmt: skip

    joiner = TokenJoiner(seconds=1.0, chars=4)
    assert len(joiner.add(token("abcd"))) == 1  # full: out at once
    await asyncio.sleep(0.5)
    assert joiner.add(token("e")) == []
    assert joiner.due_in() > 0.8


def _record(proposer: int) -> dict:
    return {"role": "proposer", "layer": 1, "proposer": proposer, "sample": 0}


def test_the_redirect_from_the_prefix_itself_names_its_request(system):
    # `served_under` answered the bare prefix's redirect outside the request-ID layer, so the
    # one response README says every response carries was without its X-Request-ID.
    from langgraph_moa.serving._guard import ServeSecurity
    from langgraph_moa.serving._server import stacked

    app = stacked(create_app({"m": system}), ["m"], ServeSecurity(), lambda line: None, "/moa")
    client = TestClient(app, base_url="http://localhost")
    moved = client.get("/moa", follow_redirects=False)
    assert moved.status_code == 307 and len(moved.headers["x-request-id"]) == 32
    kept = client.get("/moa/v1/models", headers={"x-request-id": "mine-1"})
    assert kept.headers.get_list("x-request-id") == ["mine-1"]


def test_a_run_that_fails_on_a_bug_ends_in_an_error_and_is_kept_as_failed(
    system, tmp_path, monkeypatch, caplog
):
    # A run's own TimeoutError (no package error) is a bug since it is not taken for the
    # request's: the page's run stream was cut there with no 'error' and no 'done'. It now
    # ends as a failed run does, with the crash's sentence, kept; the log has the traceback.
    import langgraph_moa.serving._ui as ui
    from langgraph_moa.serving._errors import CRASHED

    class Breaking(RunEvents):
        async def __aiter__(self):
            yield {"event": "layer", "layer": 1}
            raise TimeoutError("a wait of its own")

    monkeypatch.setattr(ui, "RunEvents", Breaking)
    client = TestClient(
        create_app({"m": system}, history=History(tmp_path / "h.sqlite3")),
        base_url="http://localhost",
    )
    response = client.post("/v1/moa/runs", json={"model": "m", "messages": USER})
    events = sse_events(response.text)
    error, done = events[-2:]
    assert error["event"] == "error" and error["message"] == CRASHED and error["status"] == 500
    assert done == {"event": "done", "run_id": events[0]["run_id"], "status": "failed"}
    assert "a wait of its own" not in response.text
    assert "a wait of its own" in caplog.text and error["request_id"] in caplog.text
    assert client.get("/v1/moa/runs").json()["data"][0]["status"] == "failed"


def test_an_images_question_is_kept_as_a_short_mark_never_its_data(system, tmp_path):
    """A question that was only an image was kept as "" (a blank row on the page); its
    base64 data must not reach the history or the page either."""
    import base64

    data = base64.b64encode(bytes(range(256)) * 120).decode()  # 30,720 bytes
    parts = [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "What is it?"},
    ]
    client = TestClient(
        create_app({"m": system}, history=History(tmp_path / "h.sqlite3")),
        base_url="http://localhost",
    )
    body = {"model": "m", "messages": [{"role": "user", "content": parts}]}
    events = sse_events(client.post("/v1/moa/runs", json=body).text)
    question = "[image: 31 kB png] [image: https://example.com/cat.jpg] What is it?"
    assert events[0]["question"] == question
    assert client.get("/v1/moa/runs").json()["data"][0]["question"] == question
    assert data[:100].encode() not in (tmp_path / "h.sqlite3").read_bytes()


def test_an_image_urls_credentials_never_reach_the_history_or_the_page(system, tmp_path):
    """A presigned or keyed image URL was kept as written: its signature, its key and its
    user's password stood in every ``run`` event and history row."""
    secrets = ["AKIAIOSFODNN7EXAMPLE", "SIGNATURE0123abc", "supersecret123", "hunter2pass"]
    urls = [
        "https://bucket.s3.amazonaws.com/a/b/cat.png?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE"
        "%2F2026&X-Amz-Signature=SIGNATURE0123abc",
        "https://api.example.com/img?key=supersecret123",
        "https://user:hunter2pass@host.example:8443/dog.png#frag",
    ]
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    client = TestClient(
        create_app({"m": system}, history=History(tmp_path / "h.sqlite3")),
        base_url="http://localhost",
    )
    body = {"model": "m", "messages": [{"role": "user", "content": parts}]}
    events = sse_events(client.post("/v1/moa/runs", json=body).text)
    question = (
        "[image: https://bucket.s3.amazonaws.com/\u2026/cat.png] "
        "[image: https://api.example.com/\u2026/] [image: https://host.example:8443/dog.png]"
    )
    assert events[0]["question"] == question
    assert client.get("/v1/moa/runs").json()["data"][0]["question"] == question
    stored = (tmp_path / "h.sqlite3").read_bytes()
    assert not [s for s in secrets if s.encode() in stored]


@pytest.mark.parametrize(
    ("part", "mark"),
    [
        (
            {"type": "image_url", "image_url": {"url": "https://host/a/cat.png;jsessionid=S3CR3T"}},
            "[image: https://host/\u2026/cat.png]",
        ),
        (
            {"type": "image_url", "image_url": {"url": "https://host/sk-abcdefghijklmnopqrstuvwx"}},
            "[image: https://host/\u2026/]",
        ),
        ({"type": "file", "file": {"file_id": "file-abc\n]x<b>"}}, "[file: file-abcxb]"),
    ],
)
def test_a_marks_url_or_file_id_keeps_no_secret_and_no_markup(part, mark):
    """The mark kept the URL's whole last segment: a ``;jsessionid=`` after the file name, or
    a token that is the segment itself (``/sk-...``), stood in every ``run`` event and history
    row; and a file id was clipped but kept its newlines and brackets."""
    from langgraph_moa.serving._ui import _mark

    assert _mark(part) == mark


@pytest.mark.parametrize(
    ("part", "mark"),
    [
        # OpenAI's file part: its data (a data URL or bare base64) and its uploaded file's id
        (
            {"type": "file", "file": {"file_data": "data:application/pdf;base64," + "A" * 4000}},
            "[file: 3 kB pdf]",
        ),
        (
            {"type": "file", "file": {"file_data": "A" * 4000, "filename": "a.pdf"}},
            "[file: 3 kB pdf]",
        ),
        ({"type": "file", "file": {"file_id": "file-abc123"}}, "[file: file-abc123]"),
        # The URL as a bare string, which LangChain takes; a data URL's scheme in any case
        ({"type": "image_url", "image_url": "https://example.com/cat.png"}, None),
        ({"type": "image_url", "image_url": {"url": "DATA:image/png;base64," + "A" * 4000}}, None),
        # A URL that cannot be split (an unclosed IPv6 host) is marked, not a crashed run
        ({"type": "image_url", "image_url": {"url": "http://[oops/x.png?key=k"}}, "[image: a URL]"),
    ],
)
def test_each_kind_of_part_is_marked_by_its_size_or_where_it_is(part, mark):
    """OpenAI's ``file_data`` and ``file_id`` were marked ``[file: 0 kB]``, a bare URL string
    ``[image: 0 kB]``, and an upper-case ``DATA:`` URL was kept as data."""
    from langgraph_moa.serving._ui import _mark

    expected = {
        "https://example.com/cat.png": "[image: https://example.com/cat.png]",
        "DATA:image/png;base64," + "A" * 4000: "[image: 3 kB png]",
    }
    url = part.get("image_url")
    assert _mark(part) == (mark or expected[url if isinstance(url, str) else url["url"]])


@pytest.mark.parametrize(
    ("part", "mark"),
    [
        # No data, URL nor id: no size can be known, so none is said
        ({"type": "video"}, "[video]"),
        ({"type": "input_audio", "input_audio": {"format": "wav"}}, "[audio]"),
        # A client's type is shown bounded, in letters, digits and ``-_.`` only
        ({"type": "a]\n<b>" + "c" * 300, "data": "A" * 4000}, "[ab" + "c" * 17 + "\u2026: 3 kB]"),
        # A data URL that is no base64 holds its bytes as written, percent-encoded
        (
            {"type": "file", "file": {"file_data": "data:text/plain," + "a" * 4000}},
            "[file: 4 kB plain]",
        ),
        ({"type": "file", "file": {"file_data": "data:," + "%41" * 3000}}, "[file: 3 kB]"),
        (
            {"type": "file", "file": {"file_data": "data:text/csv;charset=utf-8," + "a" * 4000}},
            "[file: 4 kB csv]",
        ),
    ],
)
def test_a_part_is_marked_by_the_size_it_has_and_a_type_it_cannot_abuse(part, mark):
    """A part with no data was marked ``[video: 0 kB]``, a size never known; a client's type
    was shown whole, any length and any characters, in every history row and ``run`` event;
    and a data URL's text (``data:,hello``) was sized as base64, three quarters of its size."""
    from langgraph_moa.serving._ui import _mark

    assert _mark(part) == mark


@pytest.mark.parametrize("seed", range(4))
def test_the_ranker_event_names_the_proposal_returned_with_shuffled_references(fake, seed):
    # The ranker's choice numbers the references as shuffled; the answer event read it
    # against the proposals in call order, so the page could mark another card as the pick.
    config = MoAConfig(
        variant="ranker",
        proposers=[fake("A"), fake("B"), fake("C")],
        aggregator=fake("R", reply=lambda label, n, m: "Response 1"),
        reference_order="shuffled",
        shuffle_seed=seed,
    )
    events = RunEvents(create_moa_graph(config), QUESTION)
    list(events)
    picked = answer_event(events.final)["ranker"]["call"]
    returned = [c for c in events.final["calls"] if c["output"] == events.answer.text]
    assert [["proposer", c["layer"], c["proposer"], c["sample"]] for c in returned] == [picked]
