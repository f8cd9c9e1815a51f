"""docs/event-stream.md against the streams the server really sends, so neither drifts.

A client is written from the doc alone. `EVENTS` is the doc's events table made
machine-readable: each event's fields, their JSON types, and which may be left out. Each
row is checked against the doc (the table there names exactly these events, each row these
fields) and against streams captured from the app in-process, one per kind of run: every
event and field sent is in the table with its type, every field the table requires is sent,
and the order the doc promises holds.
"""

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from langchain_core.messages import HumanMessage

from langgraph_moa import MoAConfig, RetrySettings
from langgraph_moa.config._limits import Budget, RequestLimits
from langgraph_moa.config._schema import SelfMoASeqConfig
from langgraph_moa.graph._builder import create_moa_graph
from langgraph_moa.serving._app import create_app
from langgraph_moa.serving._history import History
from tests.helpers import leave_at_first_start

DOC = Path(__file__).parents[2] / "docs" / "event-stream.md"
USER = [{"role": "user", "content": "Explain X"}]
ONCE = RetrySettings(max_attempts=1)

NUMBER = (int, float)
NULL = type(None)
CALL = {"role": str, "layer": int, "proposer": int, "sample": int}
"""The four fields that name a call, in every call event."""

# event -> (fields always sent, fields sent only where they apply); a field's JSON types.
EVENTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "run": (
        {
            "run_id": str,
            "model": str,
            "question": str,
            "variant": str,
            "layers": int,
            "final_role": str,
            "proposers": list,
            "final_chain": list,
            "request_id": str,
        },
        {},
    ),
    "started": ({**CALL, "configured_model": str}, {}),
    "token": (
        {**CALL, "text": str, "final": bool, "part": int},
        {"finish_reason": str, "tool_calls": bool},
    ),
    "finished": (
        {
            **CALL,
            "configured_model": str,
            "model": str,
            "latency_s": NUMBER,
            "prompt_tokens": int,
            "completion_tokens": int,
            "cached": bool,
            "retries": int,
            "preview": str,
            "finish_reason": (str, NULL),
        },
        {},
    ),
    "failed": ({**CALL, "configured_model": str, "error": str, "status": str, "retries": int}, {}),
    "selected": (
        {"method": str, "winner": (int, NULL), "agreement": NUMBER, "reason": str, "tally": list},
        {"weights": list, "note": str, "quote": list},
    ),
    "budget_spent": ({"used": int, "limit": int}, {}),
    "answer": (
        {
            "text": str,
            "answered_by": (str, NULL),
            "fallback": (str, NULL),
            "fallback_reason": (str, NULL),
            "usage": dict,
            "cost": dict,
            "finish_reason": str,
        },
        {
            "failed_layers": list,
            "tool_calls": list,
            "logprobs": (dict, NULL),
            "selection": dict,
            "ranker": dict,
            "agreement": list,
        },
    ),
    "error": (
        {
            "message": str,
            "type": str,
            "param": (str, NULL),
            "status": int,
            "reason": (str, NULL),
            "request_id": str,
        },
        {},
    ),
    "done": ({"run_id": str, "status": str}, {"kept": bool}),
}
CALL_EVENTS = ("started", "token", "finished", "failed")
USAGE = {"calls", "failed", "cancelled", "prompt_tokens", "completion_tokens", "total_tokens"}
USAGE |= {"critical_path_s", "layers"}
COST = {"dollars", "unpriced_calls", "calls"}
PROGRESS = ("started", "token", "finished", "failed", "selected", "budget_spent")
"""The events the OpenAI stream's ``moa_progress`` extension sends as ``moa.progress``."""
PROVENANCE = ({"variant", "name", "layers", "answered_by", "calls", "usage", "fallback"},)
PROVENANCE += ({"early_start", "chunkwise", "failed_layers"},)
"""The keys of the OpenAI stream's ``moa`` field (always, where they apply)."""


def _doc_rows() -> dict[str, str]:
    """Return the doc's events table: event name -> its fields cell."""
    section = DOC.read_text().split("## Events", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 3 and (name := re.fullmatch(r"`(\w+)`", cells[0])):
            rows[name[1]] = cells[2]
    return rows


def _named(field: str, text: str) -> bool:
    return f"`{field}`" in text or re.search(rf"[`{{\[(, ]{field}[,}})\]`]", text) is not None


def test_the_docs_events_table_names_exactly_the_events_and_fields_of_the_contract():
    rows = _doc_rows()
    assert list(rows) == list(EVENTS)
    for event, (always, sometimes) in EVENTS.items():
        own = [f for f in (*always, *sometimes) if not (event in CALL_EVENTS and f in CALL)]
        missing = [f for f in own if not _named(f, rows[event])]
        assert not missing, f"docs/event-stream.md's `{event}` row does not name {missing}"
    for field in CALL:
        assert f"`{field}`" in DOC.read_text().split("| event |", 1)[0].split("## Events", 1)[1]
    extension = DOC.read_text().split("## The OpenAI-compatible stream's extension", 1)[1]
    for event in PROGRESS:
        assert f"`{event}`" in extension.split("\n## ", 1)[0]
    for field in set.union(*PROVENANCE):
        assert f"`{field}`" in extension.split("\n## ", 1)[0], field


# --- capturing streams -----------------------------------------------------------------------


def _events(text: str) -> list[dict[str, Any]]:
    """Return the page stream's events, checking that each names itself as its SSE does."""
    out = []
    for block in text.split("\n\n"):
        if not block.strip() or block.startswith(":"):
            continue
        head, data = block.split("\n", 1)
        assert head.startswith("event: ") and data.startswith("data: "), block
        event = json.loads(data[len("data: ") :])
        assert event["event"] == head[len("event: ") :]
        out.append(event)
    return out


def _check_fields(event: dict[str, Any]) -> None:
    always, sometimes = EVENTS[event["event"]]
    fields = {k: v for k, v in event.items() if k != "event"}
    assert set(always) <= set(fields), (event["event"], set(always) - set(fields))
    extra = set(fields) - set(always) - set(sometimes)
    assert not extra, f"`{event['event']}` sends undocumented {extra}"
    for name, value in fields.items():
        assert isinstance(value, {**always, **sometimes}[name]), (event["event"], name, value)


def _key(event: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(event[f] for f in CALL)


def _check_stream(events: list[dict[str, Any]], live: bool = True) -> None:
    """Check one run's events against the table and the order the doc promises."""
    for event in events:
        _check_fields(event)
    names = [e["event"] for e in events]
    assert names[0] == "run" and names.count("run") == 1
    if live:
        assert names[-1] == "done" and names.count("done") == 1
        assert names[-2] in ("answer", "error")
    ended: set[tuple[Any, ...]] = set()
    running: set[tuple[Any, ...]] = set()
    for event in events:
        if event["event"] == "started":
            running.add(_key(event))
        elif event["event"] == "token":
            assert _key(event) in running, "a call's text before its start"
        elif event["event"] in ("finished", "failed"):
            assert _key(event) in running, "a call ended that never started"
            running.discard(_key(event))
            ended.add(_key(event))
            assert event["event"] != "failed" or event["status"] in ("failed", "cancelled")
        elif event["event"] in ("answer", "error"):
            assert not running, f"calls still running at the run's end: {running}"
    answer = next((e for e in events if e["event"] == "answer"), None)
    if answer is not None:
        assert set(answer["usage"]) == USAGE and set(answer["cost"]) == COST
        assert sum(k in answer for k in ("selection", "ranker", "agreement")) == 1
        final = "".join(e["text"] for e in events if e["event"] == "token" and e["final"])
        assert final in ("", answer["text"])  # a pick or fallback arrives whole
        assert all(e["proposer"] == -1 for e in events if e["event"] == "token" and e["final"])
    if live:
        degraded = answer is not None and (answer["fallback"] or "failed_layers" in answer)
        status = "failed" if answer is None else "degraded" if degraded else "done"
        assert events[-1]["status"] == status


def _post(config, body=None, history=None, **app_kwargs) -> tuple[TestClient, list[dict]]:
    app = create_app({"m": config}, history=history, **app_kwargs)
    client = TestClient(app, base_url="http://localhost")
    response = client.post("/v1/moa/runs", json={"model": "m", "messages": USER, **(body or {})})
    assert response.status_code == 200, response.text
    return client, _events(response.text)


def _boom(n, messages):
    return ValueError("down")


def _tool_call(label, n, messages, kwargs):
    return [{"name": "f", "args": {"x": 1}, "id": f"c{n}"}]


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}
RUNS: dict[str, Any] = {
    "moa": lambda fake: (
        MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=3),
        {"logprobs": True},
    ),
    "degraded": lambda fake: (
        MoAConfig(proposers=[fake("A"), fake("B", fail=_boom)], aggregator=fake("AGG"), retry=ONCE),
        {},
    ),
    "fallback-aggregator": lambda fake: (
        MoAConfig(
            proposers=[fake("A"), fake("B")],
            aggregator=fake("AGG", fail=_boom),
            aggregator_fallbacks=[fake("AGG2")],
            retry=ONCE,
        ),
        {},
    ),
    "best-proposal": lambda fake: (
        MoAConfig(proposers=[fake("A")], aggregator=fake("AGG", fail=_boom), retry=ONCE),
        {},
    ),
    "layer-passed-over": lambda fake: (
        MoAConfig(
            proposers=[fake("A", fail=lambda n, m: ValueError("x") if n == 2 else None)],
            aggregator=fake("AGG"),
            layers=3,
            retry=ONCE,
        ),
        {},
    ),
    "budget": lambda fake: (
        MoAConfig(
            proposers=[fake("A"), fake("B")],
            aggregator=fake("AGG"),
            layers=3,
            budget=Budget(max_tokens=5),
        ),
        {},
    ),
    "self-moa": lambda fake: (
        MoAConfig(variant="self-moa", proposers=[{"model": fake("M"), "samples": 3}]),
        {},
    ),
    "self-moa-seq": lambda fake: (
        MoAConfig(
            variant="self-moa-seq",
            proposers=[{"model": fake("M"), "samples": 6}],
            seq=SelfMoASeqConfig(window_size=4),
        ),
        {},
    ),
    "select": lambda fake: (
        MoAConfig(
            variant="select",
            proposers=[fake("A", reply=lambda *a: "It is 4"), fake("B", reply=lambda *a: "4")],
            selection={"method": "consensus"},
        ),
        {},
    ),
    "ranker": lambda fake: (
        MoAConfig(
            variant="ranker",
            proposers=[fake("A"), fake("B")],
            aggregator=fake("R", reply=lambda *a: "Response 2"),
        ),
        {},
    ),
    "tool-calls": lambda fake: (
        MoAConfig(proposers=[fake("A")], aggregator=fake("AGG", tool_calls=_tool_call)),
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
    ),
    "structured": lambda fake: (
        MoAConfig(proposers=[fake("A")], aggregator=fake("AGG", reply=lambda *a: '{"a": 1}')),
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": SCHEMA},
            }
        },
    ),
    "failed": lambda fake: (
        MoAConfig(proposers=[fake("A", fail=_boom)], aggregator=fake("AGG"), retry=ONCE),
        {},
    ),
}
"""Each kind of run: its config (from the `fake` fixture) and the request's extra fields."""


@pytest.mark.parametrize("kind", list(RUNS))
def test_every_kind_of_run_streams_the_documented_events_and_replays_them(fake, kind, tmp_path):
    config, body = RUNS[kind](fake)
    client, events = _post(config, body, History(tmp_path / "h.sqlite3"))
    _check_stream(events)
    sent = {e["event"] for e in events}
    expected = {
        "select": {"selected"},
        "budget": {"budget_spent"},
        "failed": {"error", "failed"},
        "degraded": {"failed"},
    }.get(kind, set())
    assert expected <= sent
    # The history's replay: the same events, each call's tokens joined, without 'done'.
    kept = client.get(f"/v1/moa/runs/{events[0]['run_id']}").json()
    assert set(kept) == {"id", "model", "question", "created", "status", "answer", "events"}
    assert kept["status"] == events[-1]["status"]
    _check_stream(kept["events"], live=False)
    untokened = [e for e in events[:-1] if e["event"] != "token"]
    assert [e for e in kept["events"] if e["event"] != "token"] == untokened
    listed = client.get("/v1/moa/runs").json()
    assert set(listed) == {"object", "data", "history"} and listed["history"] is True
    assert set(listed["data"][0]) == {"id", "model", "question", "created", "status", "answer"}


def test_a_run_past_its_deadline_streams_the_documented_events(fake):
    slow = fake("A", delay=lambda n: 3.0)
    config = MoAConfig(proposers=[slow, fake("B")], aggregator=fake("AGG"))
    _, events = _post(config, limits=RequestLimits(request_timeout_s=1))
    _check_stream(events)
    assert events[-2]["status"] == 504 and events[-3]["status"] == "cancelled"


def test_a_run_stopped_by_the_servers_drain_streams_the_documented_events(fake):
    config = MoAConfig(proposers=[fake("A", delay=lambda n: 3.0), fake("B")], aggregator=fake("X"))
    app = create_app({"m": config})
    with TestClient(app, base_url="http://localhost") as client:

        async def drain() -> None:
            app.state.drain.end_in(0.5)

        client.portal.call(drain)
        text = client.post("/v1/moa/runs", json={"model": "m", "messages": USER}).text
    events = _events(text)
    _check_stream(events)
    error = events[-2]
    assert (error["status"], error["type"]) == (503, "server_error")
    assert events[-3]["event"] == "failed" and events[-3]["status"] == "cancelled"


def test_a_run_whose_client_left_is_replayed_with_the_documented_events(fake, tmp_path):
    from langgraph_moa.config.context import MoAContext
    from langgraph_moa.serving import _request_id
    from langgraph_moa.serving._policy import _Job
    from langgraph_moa.serving._ui import _run

    config = MoAConfig(proposers=[fake("A", delay=lambda n: 30.0)], aggregator=fake("X"), name="m")
    history = History(tmp_path / "h.sqlite3")
    job = _Job("m", [HumanMessage("Explain X")], MoAContext(), None, False)

    async def leave() -> None:
        _request_id._current.set("r-1")  # as the app's middleware sets it for each request
        await leave_at_first_start(_run(create_moa_graph(config), job, "r1", config, history, {}))

    asyncio.run(leave())
    run = history.get("r1")
    assert run is not None and run.status == "cancelled"
    _check_stream(run.events, live=False)
    assert [e["event"] for e in run.events] == ["run", "started", "failed"]


def test_the_openai_streams_progress_extension_sends_the_documented_events(fake):
    config, _ = RUNS["select"](fake)
    moa, _ = RUNS["budget"](fake)
    client = TestClient(create_app({"s": config, "m": moa}), base_url="http://localhost")
    for model in ("s", "m"):
        body = {"model": model, "messages": USER, "stream": True, "moa_progress": True}
        text = client.post("/v1/chat/completions", json=body).text
        blocks = [b for b in text.split("\n\n") if b.strip()]
        assert blocks[-1] == "data: [DONE]"
        progress = []
        chunks = []
        for block in blocks[:-1]:
            if block.startswith("event: moa.progress\ndata: "):
                progress.append(json.loads(block.split("data: ", 1)[1]))
            else:
                assert block.startswith("data: {"), block
                chunks.append(json.loads(block[len("data: ") :]))
        assert {e["event"] for e in progress} <= set(PROGRESS)
        for event in progress:
            _check_fields(event)
            assert event["event"] != "token" or not event["final"]
        provenance = [c["moa"] for c in chunks if "moa" in c]
        assert len(provenance) == 1 and chunks[-1]["choices"][0]["finish_reason"] == "stop"
        always, sometimes = PROVENANCE
        assert always <= set(provenance[0]) <= always | sometimes
    assert {e["event"] for e in progress} >= {"budget_spent", "started", "finished"}


def test_the_progress_extension_ends_every_call_it_started_before_a_deadlines_error(fake):
    """The doc's `failed` promise (every `started` call ends) holds for `moa_progress` too:
    a call in flight at the deadline gets its `failed` (cancelled) before the error chunk."""
    config = MoAConfig(proposers=[fake("A", delay=lambda n: 3.0), fake("B")], aggregator=fake("X"))
    app = create_app({"m": config}, limits=RequestLimits(request_timeout_s=1))
    client = TestClient(app, base_url="http://localhost")
    body = {"model": "m", "messages": USER, "stream": True, "moa_progress": True}
    blocks = [b for b in client.post("/v1/chat/completions", json=body).text.split("\n\n") if b]
    progress = [
        json.loads(b.split("data: ", 1)[1]) for b in blocks if b.startswith("event: moa.progress")
    ]
    for event in progress:
        _check_fields(event)
    started = {_key(e) for e in progress if e["event"] == "started"}
    ended = {_key(e): e for e in progress if e["event"] in ("finished", "failed")}
    assert started == set(ended) == {("proposer", 1, 0, 0), ("proposer", 1, 1, 0)}
    stopped = ended[("proposer", 1, 0, 0)]
    assert stopped["status"] == "cancelled" and "limit of 1 s" in stopped["error"]
    error = json.loads(blocks[-2][len("data: ") :])["error"]
    assert (
        error["code"] == 504
        and blocks.index(next(b for b in blocks if '"status": "cancelled"' in b)) < len(blocks) - 2
    )
