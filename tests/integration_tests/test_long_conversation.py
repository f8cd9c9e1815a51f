"""A long conversation: what each front end says once it outgrows a model's context.

The backend is `ScriptedServer` with `n_ctx`: past that many words of prompt a model answers
with llama.cpp's own 400 body (``exceed_context_size_error``), as a local model does when the
conversation outgrows its slot. Every request it got is kept, so a test also sees what each
call was sent, and that nothing was tried twice.
"""

import json
from itertools import pairwise

import pytest
from fastapi.testclient import TestClient
from langchain_core.messages import HumanMessage

from langgraph_moa import MoAChatModel, MoAConfig
from langgraph_moa.serving._app import create_app
from langgraph_moa.testing import ScriptedServer

LONG = "word " * 200
"""A message past the proposers' context of 100 words."""


@pytest.fixture(scope="module")
def backend():
    with ScriptedServer(n_ctx={"p1": 100, "p2": 100}) as server:
        yield server


def moa(url: str) -> MoAConfig:
    return MoAConfig(
        proposers=[f"p1@{url}", f"p2@{url}"], aggregator=f"agg@{url}", layers=2, name="m"
    )


@pytest.mark.parametrize("stream", [False, True])
def test_serve_tells_a_client_its_conversation_is_too_long_as_openai_does(backend, stream):
    # A 502 upstream_error is retried by the OpenAI SDK (twice, by default): the same run,
    # refused again. OpenAI answers a prompt past the window with a 400 whose code a
    # client can act on (drop the oldest turns), and a sentence that says so.
    client = TestClient(create_app({"m": moa(backend.url)}), base_url="http://localhost")
    before = len(backend.requests)
    body = {"model": "m", "messages": [{"role": "user", "content": LONG}], "stream": stream}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "context_length_exceeded")
    message = error["message"]
    assert "\n" not in message and message.endswith(".") and ". " not in message, message
    for fix in ("too long", "context", "fewer or shorter messages"):
        assert fix in message, message
    # A client's max_tokens caps the aggregator's answer only: the proposers that overflowed
    # here would refuse the same input with any.
    assert "max_tokens" not in message, message
    assert sorted(b["model"] for b in backend.requests[before:]) == ["p1", "p2"]  # once each


def test_chat_says_how_to_go_on_once_the_conversation_outgrew_a_context(
    backend, monkeypatch, tmp_path
):
    from typer.testing import CliRunner

    from langgraph_moa.cli import _app as cli
    from langgraph_moa.cli import _chat

    monkeypatch.setattr(_chat, "build_config", lambda *a, **k: moa(backend.url))
    saved = tmp_path / "chat.json"
    turns = f"hello\n{LONG}\n/save {saved}\n/reset\nagain\n/exit\n"
    result = CliRunner().invoke(cli.app, ["chat"], input=turns)
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "/save FILE keeps it, then /reset starts a new one" in said, said
    # Each failed call is listed on one clipped line: its fix comes before the provider's
    # words, or the clipping cuts it off.
    assert said.count("or choose a model with a longer context. The provider said") == 2
    kept = json.loads(saved.read_text(encoding="utf-8"))
    assert [m["role"] for m in kept] == ["human", "ai"]  # the failed turn is not in it
    assert "agg answers: again" in said  # after /reset the chat goes on


def test_every_call_of_a_long_chat_gets_the_history_once_and_this_turns_references_only():
    # The spec: the history is the user's messages and the answers; a later layer and the
    # aggregator get this turn's references in their system message. Earlier turns'
    # references are never sent again, so a call's prompt grows by one turn a turn.
    with ScriptedServer() as server:
        model = MoAChatModel(config=moa(server.url))
        history: list = []
        sizes: dict[str, list[int]] = {"p1": [], "agg": []}
        for t in range(20):
            history.append(HumanMessage(f"question {t} " + "word " * 10))
            start = len(server.requests)
            history.append(model.invoke(history))
            calls = {b["model"]: b["messages"] for b in server.requests[start:]}
            assert sorted(calls) == ["agg", "p1", "p2"]
            for name in ("p1", "p2"):
                assert [m["role"] for m in calls[name]] == ["user", "assistant"] * t + ["user"]
            system, *rest = calls["agg"]
            assert system["role"] == "system" and rest == calls["p1"]
            assert f"p1 answers: question {t} " in system["content"]
            assert f"question {t - 1} " not in system["content"]
            for name in sizes:
                sizes[name].append(sum(len(m["content"]) for m in calls[name]))
    for grown in sizes.values():
        steps = {b - a for a, b in pairwise(grown[10:])}
        assert len(steps) == 1, grown  # as many characters a turn once all numbers are 2 digits


def test_chat_loads_a_saved_conversation_back_with_every_turn(backend, monkeypatch, tmp_path):
    # What /save wrote, /load reads: a conversation too long for a context goes on from the
    # saved file with its oldest turns removed, instead of from nothing.
    from typer.testing import CliRunner

    from langgraph_moa.cli import _app as cli
    from langgraph_moa.cli import _chat

    monkeypatch.setattr(_chat, "build_config", lambda *a, **k: moa(backend.url))
    saved, shortened = tmp_path / "chat.json", tmp_path / "short.json"
    CliRunner().invoke(cli.app, ["chat"], input=f"one\ntwo\n/save {saved}\n/exit\n")
    kept = json.loads(saved.read_text(encoding="utf-8"))
    assert [m["content"] for m in kept[::2]] == ["one", "two"]
    shortened.write_text(json.dumps(kept[2:]), encoding="utf-8")
    start = len(backend.requests)
    turns = f"/load {saved}\nthree\n/load {shortened}\nfour\n/load {tmp_path}/none.json\n"
    result = CliRunner().invoke(cli.app, ["chat"], input=turns)
    assert result.exit_code == 0, result.output
    heard = [
        [(m["role"], m["content"]) for m in b["messages"]]
        for b in backend.requests[start:]
        if b["model"] == "p1"
    ]
    roles = {"human": "user", "ai": "assistant"}
    assert heard == [
        [(roles[m["role"]], m["content"]) for m in kept] + [("user", "three")],
        [(roles[m["role"]], m["content"]) for m in kept[2:]] + [("user", "four")],
    ]
    said = " ".join(result.output.split())
    assert "loaded 4 messages" in said and "cannot read" in said


@pytest.mark.parametrize(
    ("first", "status"),
    [("gone", 502), ("p2", 400)],
    ids=["first-aggregator-down", "every-aggregator-too-small"],
)
def test_a_run_is_the_clients_to_shorten_only_when_every_failed_call_outgrew_a_context(
    backend, first, status
):
    # The last aggregator's window is too small. When the one before it is down (a 404),
    # the request may well be answered once it is back: a 502 the client may retry, not a
    # 400 telling it to drop turns that a working aggregator would have taken.
    down = backend.url.replace("/v1", "/gone/v1")
    cfg = MoAConfig(
        proposers=[f"p3@{backend.url}"],
        aggregator=f"p2@{backend.url}" if first == "p2" else f"agg@{down}",
        aggregator_fallbacks=[f"p1@{backend.url}"],
        on_aggregator_failure="raise",
        layers=2,
        name="m",
    )
    client = TestClient(create_app({"m": cfg}), base_url="http://localhost")
    body = {"model": "m", "messages": [{"role": "user", "content": LONG}]}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["code"] == "context_length_exceeded") == (status == 400), response.text
    if status == 400:  # the aggregators' windows hold their answers too: a smaller one helps
        assert "a smaller max_tokens" in error["message"], error


def test_a_stream_already_under_way_is_told_in_band_with_its_status_as_code(backend):
    # moa_progress opens the stream (status 200) before the proposers are refused: the
    # failure comes in-band, its code the status a request not yet answered would have had.
    client = TestClient(create_app({"m": moa(backend.url)}), base_url="http://localhost")
    messages = [{"role": "user", "content": LONG}]
    body = {"model": "m", "messages": messages, "stream": True, "moa_progress": True}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    errors = [
        json.loads(line.removeprefix("data: "))["error"]
        for line in response.text.splitlines()
        if line.startswith('data: {"error"')
    ]
    assert [(e["type"], e["code"]) for e in errors] == [("invalid_request_error", 400)]
    assert "fewer or shorter messages" in errors[0]["message"]
