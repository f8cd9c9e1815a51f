"""What a later layer sees when a part of an earlier one failed (docs/failure-semantics.md)."""

import json

import pytest

from langgraph_moa import AllProposersFailedError, MoAConfig, RetrySettings, create_moa_graph
from tests.helpers import QUESTION, references_in

FAST_RETRY = RetrySettings(max_attempts=1)


def _fails_in_layer(layer: int):
    """A proposer's `fail`: its call of `layer` (its `layer`-th call) raises."""
    return lambda n, msgs: ValueError("model exploded") if n == layer else None


def _passed_over_config(fake, **extra):
    """Three layers, whose second fails whole: the answer had fewer layers than configured."""
    return MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(2))],
        aggregator=fake("AGG"),
        layers=3,
        retry=FAST_RETRY,
        **extra,
    )


BODY = {"model": "m", "messages": [{"role": "user", "content": "Explain X"}]}


def _served(fake):
    """`moa serve`'s app serving `_passed_over_config` as model 'm'."""
    from fastapi.testclient import TestClient

    from langgraph_moa.serving._app import create_app

    app = create_app({"m": _passed_over_config(fake, name="m")})
    return TestClient(app, base_url="http://localhost")


def _run_events(fake) -> list[dict]:
    """The events of one run of `_served` on /v1/moa/runs."""
    text = _served(fake).post("/v1/moa/runs", json=BODY).text
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def test_a_failed_last_proposer_layer_is_aggregated_from_the_layer_before_it(fake, log):
    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(2)), fake("B", fail=_fails_in_layer(2))],
        aggregator=fake("AGG"),
        layers=3,
        retry=FAST_RETRY,
    )
    out = create_moa_graph(config).invoke(QUESTION)
    [agg] = log.by("AGG")
    assert references_in(agg) == ["A #1", "B #1"]  # layer 1's proposals, the last that answered
    moa = out["messages"][-1].response_metadata["moa"]
    assert out["messages"][-1].content == "AGG #1"
    assert moa["failed_layers"] == [{"layer": 2, "references_from": 1}]
    assert [(c["layer"], c["status"]) for c in moa["calls"]] == [
        (1, "ok"),
        (1, "ok"),
        (2, "failed"),
        (2, "failed"),
        (3, "ok"),
    ]


def test_a_failed_middle_layer_passes_the_layer_before_it_to_the_next(fake, log):
    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(2)), fake("B", fail=_fails_in_layer(2))],
        aggregator=fake("AGG"),
        layers=4,
        retry=FAST_RETRY,
    )
    out = create_moa_graph(config).invoke(QUESTION)
    third = log.by("A")[2]
    assert references_in(third) == ["A #1", "B #1"]
    assert references_in(log.by("AGG")[0]) == ["A #3", "B #3"]
    moa = out["messages"][-1].response_metadata["moa"]
    assert moa["failed_layers"] == [{"layer": 2, "references_from": 1}]


def test_an_answer_with_no_failed_layer_has_no_failed_layers(fake):
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=3)
    out = create_moa_graph(config).invoke(QUESTION)
    assert "failed_layers" not in out["messages"][-1].response_metadata["moa"]


def test_with_raise_a_failed_later_layer_ends_the_run_and_keeps_the_earlier_proposals(fake, log):
    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(2)), fake("B", fail=_fails_in_layer(2))],
        aggregator=fake("AGG"),
        layers=3,
        retry=FAST_RETRY,
        on_aggregator_failure="raise",
    )
    with pytest.raises(AllProposersFailedError, match="layer 2") as err:
        create_moa_graph(config).invoke(QUESTION)
    assert [c["output"] for c in err.value.calls if c["status"] == "ok"] == ["A #1", "B #1"]
    assert log.by("AGG") == []


def test_a_failed_first_layer_still_ends_the_run(fake, log):
    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(1)), fake("B", fail=_fails_in_layer(1))],
        aggregator=fake("AGG"),
        layers=3,
        retry=FAST_RETRY,
    )
    with pytest.raises(AllProposersFailedError, match="layer 1"):
        create_moa_graph(config).invoke(QUESTION)
    assert log.by("AGG") == []


def test_moa_run_warns_that_a_layer_was_passed_over(fake, capsys):
    from langgraph_moa.cli._run import report_degraded

    config = _passed_over_config(fake)
    answer = create_moa_graph(config).invoke(QUESTION)["messages"][-1]
    assert report_degraded(answer) is True
    err = " ".join(capsys.readouterr().err.split())
    assert "every proposal of layer 2 failed" in err
    assert "read the proposals of layer 1 instead" in err


@pytest.mark.parametrize("stream", [False, True])
def test_moa_serve_says_which_layer_was_passed_over(fake, stream):
    reply = _served(fake).post("/v1/chat/completions", json={**BODY, "stream": stream})
    assert reply.status_code == 200, reply.text
    if stream:
        events = [line[6:] for line in reply.text.splitlines() if line.startswith("data: {")]
        moa = next(e for e in map(json.loads, events) if "moa" in e)["moa"]
    else:
        moa = reply.json()["moa"]
    assert moa["failed_layers"] == [{"layer": 2, "references_from": 1}]


def test_the_run_event_stream_answer_says_which_layer_was_passed_over(fake):
    [answer] = [e for e in _run_events(fake) if e.get("event") == "answer"]
    assert answer["failed_layers"] == [{"layer": 2, "references_from": 1}]


async def test_chunkwise_a_failed_middle_layer_passes_the_layer_before_it_on(fake, log):
    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(2)), fake("B", fail=_fails_in_layer(2))],
        aggregator=fake("AGG"),
        layers=4,
        aggregation={"start": "chunks", "chunk_tokens": 2},
        retry=FAST_RETRY,
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    assert references_in(log.by("A")[2]) == ["A #1", "B #1"]
    moa = out["messages"][-1].response_metadata["moa"]
    assert moa["failed_layers"] == [{"layer": 2, "references_from": 1}]


def test_moa_run_exits_3_without_strict_when_a_layer_was_passed_over(monkeypatch, capsys, fake):
    # The configured mixture did not run: a script reading the exit code took it for a
    # clean answer, as it would not a fallback's.
    from langgraph_moa.cli import _app as cli
    from langgraph_moa.cli import _run
    from langgraph_moa.cli._run import DEGRADED_EXIT

    monkeypatch.setattr(_run, "build_config", lambda *a, **k: _passed_over_config(fake))
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)
    monkeypatch.setattr(cli.sys, "argv", ["moa", "run", "hi"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == DEGRADED_EXIT == 3
    assert "every proposal of layer 2 failed" in " ".join(capsys.readouterr().err.split())


def test_moa_chat_exits_3_when_a_layer_was_passed_over_and_counts_it(monkeypatch, fake):
    from typer.testing import CliRunner

    from langgraph_moa.cli import _app as cli
    from langgraph_moa.cli import _chat

    monkeypatch.setattr(_chat, "build_config", lambda *a, **k: _passed_over_config(fake))
    result = CliRunner().invoke(cli.app, ["chat"], input="one\n")
    assert result.exit_code == 3, result.output
    closing = " ".join(result.output.split())
    assert "1 degraded answer(s) (a fallback, or a layer passed over)" in closing


def test_moa_eval_counts_answers_with_a_layer_passed_over_and_exits_3(
    monkeypatch, capsys, tmp_path, fake
):
    from langgraph_moa.cli import _app as cli
    from langgraph_moa.eval import runner

    config = _passed_over_config(fake, name="po")
    monkeypatch.setattr(
        runner, "resolve_system", lambda spec, cache: runner._system(spec, config, cache)
    )
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)
    argv = ["moa", "eval", "-s", "po", "--limit", "1", "--no-plots", "--out", str(tmp_path)]
    monkeypatch.setattr(cli.sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    err = " ".join(capsys.readouterr().err.split())
    assert exited.value.code == 3, err
    assert "some answers had a layer passed over (po 1 of 1)" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["po"]["failed_layers"] == 1
    row = json.loads((tmp_path / "results" / "po.jsonl").read_text().splitlines()[0])
    assert row["failed_layers"] == [{"layer": 2, "references_from": 1}]
    report = " ".join((tmp_path / "report.md").read_text().split())
    assert "1 of 1 answers had a layer passed over" in report


def test_the_run_event_stream_marks_a_run_with_a_layer_passed_over_degraded(fake):
    # The live page and the history read the `done` status: only fallbacks were marked.
    [done] = [e for e in _run_events(fake) if e.get("event") == "done"]
    assert done["status"] == "degraded"


def test_self_moa_seq_a_failed_window_is_said_as_a_window_not_as_proposals_read(fake, capsys):
    # Self-MoA-Seq skips a window whose samples all failed: the running synthesis goes on.
    # The warning said the next step "read the proposals of layer 1 instead", which it
    # does not (it reads the synthesis and its own samples).
    from langgraph_moa.cli._run import is_degraded, report_degraded

    config = MoAConfig(
        variant="self-moa-seq",
        # Calls 1-3: window 1's samples, 4 its aggregation; 5-6 window 2's samples.
        proposers=[
            {
                "model": fake("M", fail=lambda n, m: ValueError("x") if n in (5, 6) else None),
                "samples": 7,
            }
        ],
        seq={"window_size": 3},
        retry=FAST_RETRY,
    )
    answer = create_moa_graph(config).invoke(QUESTION)["messages"][-1]
    assert answer.response_metadata["moa"]["failed_layers"] == [{"layer": 2, "references_from": 1}]
    assert report_degraded(answer) is True and is_degraded(answer)
    err = " ".join(capsys.readouterr().err.split())
    assert "every sample of window 2 failed; the running synthesis went on without them" in err
    assert "read the proposals" not in err


async def test_chunkwise_a_failed_last_layer_says_why_it_is_not_passed_over(fake, log):
    # The same config without chunk-wise aggregation answers from layer 1; with it the run
    # ended in "the aggregator was not called", not saying why, nor what to change.
    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(2)), fake("B", fail=_fails_in_layer(2))],
        aggregator=fake("AGG"),
        layers=3,
        aggregation={"start": "chunks", "chunk_tokens": 2},
        retry=FAST_RETRY,
    )
    with pytest.raises(AllProposersFailedError) as raised:
        await create_moa_graph(config).ainvoke(QUESTION)
    text = " ".join(str(raised.value).split())
    assert "streams layer 2 into the answer, so it cannot be passed over" in text
    assert "aggregation.start: all" in text
    assert [(c["layer"], c["status"]) for c in raised.value.calls][:2] == [(1, "ok"), (1, "ok")]


async def test_chunkwise_a_failed_last_layer_under_raise_does_not_say_it_is_a_chunkwise_limit(
    fake, log
):
    # With on_aggregator_failure: raise the layered path raises too: the sentence that
    # chunk-wise alone cannot pass the layer over would mislead.
    config = MoAConfig(
        proposers=[fake("A", fail=_fails_in_layer(2)), fake("B", fail=_fails_in_layer(2))],
        aggregator=fake("AGG"),
        layers=3,
        aggregation={"start": "chunks", "chunk_tokens": 2},
        on_aggregator_failure="raise",
        retry=FAST_RETRY,
    )
    with pytest.raises(AllProposersFailedError) as raised:
        await create_moa_graph(config).ainvoke(QUESTION)
    assert "cannot be passed over" not in str(raised.value)


def test_moa_run_json_names_the_layer_passed_over(monkeypatch, capsys, fake):
    # --json carried the fallback but not failed_layers: a script reading the record could
    # not tell why the run exited 3.
    from langgraph_moa.cli import _app as cli
    from langgraph_moa.cli import _run

    monkeypatch.setattr(_run, "build_config", lambda *a, **k: _passed_over_config(fake))
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)
    monkeypatch.setattr(cli.sys, "argv", ["moa", "run", "hi", "--json"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 3
    out = json.loads(capsys.readouterr().out)
    assert out["failed_layers"] == [{"layer": 2, "references_from": 1}]


@pytest.mark.parametrize(
    ("path", "stream"),
    [("/v1/chat/completions", False), ("/v1/chat/completions", True), ("/v1/moa/runs", True)],
)
def test_moa_serves_access_log_says_a_layer_was_passed_over(fake, path, stream):
    # The log line said "fallback: ..." for a fallback, but nothing for a layer passed over.
    from fastapi.testclient import TestClient

    from langgraph_moa.serving._access import AccessLog
    from langgraph_moa.serving._app import create_app

    lines: list[str] = []
    app = create_app({"m": _passed_over_config(fake, name="m")}, history=None)
    client = TestClient(AccessLog(app, ["m"], lines.append), base_url="http://localhost")
    client.post(path, json={**BODY, "stream": stream}).read()
    [line] = lines
    assert "passed over: layer 2" in line, line
