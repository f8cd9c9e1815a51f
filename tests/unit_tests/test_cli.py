"""The `moa` command's error paths: one clear line, an exit code, no stack trace."""

import pytest
from rich.console import Console

from langgraph_moa.cli import _app as cli
from langgraph_moa.cli._app import build_config
from langgraph_moa.errors import MoAConfigError, MoAError


def run_main(monkeypatch, capsys, *args):
    """Run `moa` in this process (the subprocess versions are in the integration tests)."""
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)  # keep pytest's Ctrl-C
    monkeypatch.setattr(cli.sys, "argv", ["moa", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    return exited.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "hi", "--preset", "nope"], 1, "error: Unknown preset 'nope'"),
        (["run", "   "], 1, "error: The question is empty"),
        (["run", "hi", "--samples", "10000"], 1, "samples: Input should be less than or equal"),
        (["run", "hi", "--layerz", "2"], 2, "No such option"),
    ],
)
def test_user_errors_end_in_one_line_and_an_exit_code(monkeypatch, capsys, args, code, message):
    status, err = run_main(monkeypatch, capsys, *args)
    assert status == code and message in err.replace("\n", " ")
    assert "Traceback" not in err and "unexpected" not in err


def test_serve_passes_its_policy_and_limits_and_warns_without_a_key(monkeypatch):
    from typer.testing import CliRunner

    from langgraph_moa.cli import _app as cli
    from langgraph_moa.serving import _app as serve

    seen = {}
    monkeypatch.setattr(serve, "serve", lambda presets, **kwargs: seen.update(kwargs))
    monkeypatch.delenv("MOA_API_KEY", raising=False)
    args = ["serve", "--host", "0.0.0.0", "--allow-model", "openai:gpt-4o", "--allow-model", "x"]
    args += ["--allow-client-endpoints", "--max-calls", "9", "--max-chars", "50"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert "without an API key" in result.output
    assert seen["allow_models"] == ["openai:gpt-4o", "x"] and seen["allow_client_endpoints"]
    assert (seen["limits"].max_calls, seen["limits"].max_chars) == (9, 50)
    assert seen["limits"].max_layers == 4  # the default where no flag is given
    quiet = CliRunner().invoke(cli.app, ["serve", "--api-key", "k", "--host", "0.0.0.0"])
    assert "without an API key" not in quiet.output
    loopback = CliRunner().invoke(cli.app, ["serve"])
    assert "without an API key" not in loopback.output and seen["allow_models"] == ()
    assert CliRunner().invoke(cli.app, ["serve", "--max-calls", "0"]).exit_code == 2


def test_overrides_apply_on_top_of_the_preset():
    cfg = build_config(
        "moa-lite", None, layers=3, proposers="openai:a,openai:b", aggregator="openai:c"
    )
    assert cfg.layers == 3 and [p.model for p in cfg.proposers] == ["openai:a", "openai:b"]
    assert cfg.final.model == "openai:c" and cfg.proposers[0].max_tokens == 2048
    assert build_config(None, None).name == "local-confidence"
    # Overrides that describe a layered MoA start from the layered local preset.
    assert build_config(None, None, aggregator="openai:c").name == "local-moa (customized)"
    assert build_config(None, None, layers=3).variant == "moa"


def test_preset_and_config_together_is_refused(tmp_path):
    with pytest.raises(MoAError, match="either --preset or --config"):
        build_config("moa-lite", tmp_path / "x.yaml")
    with pytest.raises(MoAConfigError):
        build_config(None, None, variant="bogus")


def test_chat_carries_the_history_into_every_turn(monkeypatch, fake, log):
    from typer.testing import CliRunner

    from langgraph_moa.cli import _app as cli
    from langgraph_moa.config._schema import MoAConfig

    def count_turns(label, n, messages):
        return f"{label} heard {sum(m.type == 'human' for m in messages)} user turns"

    config = MoAConfig(
        proposers=[fake("A", reply=count_turns)],
        aggregator=fake("AGG", reply=count_turns),
        layers=2,
    )
    monkeypatch.setattr(cli, "build_config", lambda *a, **k: config)
    result = CliRunner().invoke(cli.app, ["chat"], input="first\nsecond\n\n")
    assert result.exit_code == 0, result.output
    assert "AGG heard 1 user turns" in result.output
    assert "AGG heard 2 user turns" in result.output
    second_turn = log.by("AGG")[1].messages
    assert [m.text for m in second_turn if m.type in ("human", "ai")] == [
        "first",
        "AGG heard 1 user turns",
        "second",
    ]


def test_overridden_preset_is_reported_as_customized():
    assert build_config("moa-lite", None, layers=3).name == "moa-lite (customized)"
    assert build_config("moa-lite", None).name == "moa-lite"


def test_the_live_view_takes_every_event_a_selection_run_streams(fake):
    from langgraph_moa import MoAConfig, create_moa_graph
    from langgraph_moa.cli._app import Progress, _selection_line
    from langgraph_moa.graph.streaming import AnswerStream

    config = MoAConfig(
        variant="select",
        proposers=[{"model": fake("M", reply=lambda label, n, messages: "42"), "samples": 3}],
    )
    progress = Progress()
    stream = AnswerStream(
        create_moa_graph(config), {"messages": [("user", "6 x 7?")]}, on_progress=progress.event
    )
    progress.answer = "".join(stream)
    assert progress.answer == "42" and len(progress.rows) == 3
    assert any(note.startswith("picked by vote: '42' has 3 of 3 votes") for note in progress.notes)
    progress.event({"type": "moa", "event": "budget_spent", "used": 900, "limit": 800})
    assert progress.notes[-1] == "token budget spent: 900 of 800"
    assert _selection_line(stream.final).startswith("picked by vote")
    rendered = Console(record=True, width=120)
    rendered.print(progress)
    assert "picked by vote" in rendered.export_text()


def test_the_live_view_shows_each_calls_tokens_rate_and_a_preview(fake):
    from langgraph_moa import MoAConfig, create_moa_graph
    from langgraph_moa.cli._app import Progress
    from langgraph_moa.graph.streaming import AnswerStream

    config = MoAConfig(
        proposers=[fake("A", reply=lambda label, n, m: "alpha writes a long line\nof text")],
        aggregator=fake("AGG"),
        layers=2,
    )
    progress = Progress()
    stream = AnswerStream(
        create_moa_graph(config),
        {"messages": [("user", "hi")]},
        on_progress=progress.event,
        watch=True,
    )
    progress.answer = "".join(stream)
    assert progress.answer == "AGG #1"
    proposer = progress.rows[("proposer", 1, 0, 0)]
    assert proposer.tail == "alpha writes a long line\nof text" and proposer.tokens == 7
    rendered = Console(record=True, width=160)
    rendered.print(progress)
    text = rendered.export_text()
    assert "7 tok" in text and "/s" in text
    assert "alpha writes a long line of text" in text  # one line


def test_ui_serves_on_loopback_with_its_history_and_opens_the_page(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from langgraph_moa.serving import _app as serve

    seen, opened = {}, []
    monkeypatch.setattr(serve, "serve", lambda presets, **kw: seen.update(kw, presets=presets))
    monkeypatch.setattr(cli, "_open_when_up", lambda url, port: opened.append((url, port)))
    monkeypatch.setattr(cli, "_check_port_free", lambda port: None)
    monkeypatch.delenv("MOA_HISTORY", raising=False)
    args = ["ui", "-p", "local-moa", "--port", "8123", "--history", str(tmp_path / "h.db")]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert seen["presets"] == ["local-moa"] and seen["host"] == "127.0.0.1"
    assert seen["port"] == 8123 and str(seen["history_path"]) == str(tmp_path / "h.db")
    assert opened == [("http://127.0.0.1:8123/ui", 8123)]
    assert "http://127.0.0.1:8123/ui" in result.output
    opened.clear()
    result = CliRunner().invoke(cli.app, ["ui", "--no-open"])
    assert result.exit_code == 0 and opened == []
    assert seen["presets"] == ["local-confidence", "local-moa", "local-self-moa"]
