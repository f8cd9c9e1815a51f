"""The `moa` command's error paths: one clear line, an exit code, no stack trace."""

import json
import sys

import pytest
from rich.console import Console

from langgraph_moa import MoAConfig
from langgraph_moa.cli import _app as cli
from langgraph_moa.cli._config import build_config, describe, local_models
from langgraph_moa.cli._usage import OptionConflictError
from langgraph_moa.errors import MoAConfigError, MoAError
from tests.helpers import is_closed, opened_connections


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
        (["run", "hi", "--samples", "10000"], 2, "'--samples': 10000 is out of range"),
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
    from langgraph_moa.serving import _server as serve

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


def test_serve_passes_its_drain_timeout_and_refuses_a_bad_one(monkeypatch):
    from typer.testing import CliRunner

    from langgraph_moa.serving import _server as serve

    seen = {}
    monkeypatch.setattr(serve, "serve", lambda presets, **kwargs: seen.update(kwargs))
    assert CliRunner().invoke(cli.app, ["serve"]).exit_code == 0
    assert seen["drain_timeout_s"] == 8.0  # within docker stop's 10 s
    assert CliRunner().invoke(cli.app, ["serve", "--drain-timeout", "25"]).exit_code == 0
    assert seen["drain_timeout_s"] == 25.0
    bad = CliRunner().invoke(cli.app, ["serve", "--drain-timeout", "-1"])
    assert bad.exit_code == 2 and "--drain-timeout" in bad.output
    assert "--drain-timeout" in CliRunner().invoke(cli.app, ["serve", "--help"]).output


def test_serve_passes_its_shutdown_delay_and_refuses_a_bad_one(monkeypatch):
    from typer.testing import CliRunner

    from langgraph_moa.serving import _server as serve

    seen = {}
    monkeypatch.setattr(serve, "serve", lambda presets, **kwargs: seen.update(kwargs))
    assert CliRunner().invoke(cli.app, ["serve"]).exit_code == 0
    assert seen["shutdown_delay_s"] == 0.0  # a SIGTERM stops at once, as it did
    assert CliRunner().invoke(cli.app, ["serve", "--shutdown-delay", "5"]).exit_code == 0
    assert seen["shutdown_delay_s"] == 5.0
    bad = CliRunner().invoke(cli.app, ["serve", "--shutdown-delay", "-1"])
    assert bad.exit_code == 2 and "--shutdown-delay" in bad.output


@pytest.mark.parametrize("flag", ["--drain-timeout", "--shutdown-delay"])
def test_serve_refuses_a_wait_longer_than_a_day(monkeypatch, capsys, flag):
    # inf was refused, but 1e300 s was taken: the same wait for ever.
    from langgraph_moa.serving import _server as serve

    monkeypatch.setattr(serve, "serve", lambda presets, **kwargs: pytest.fail("served"))
    status, err = run_main(monkeypatch, capsys, "serve", flag, "1e300")
    said = " ".join(err.split())
    assert status == 2 and f"'{flag}': 1e300 is out of range: give a number from 0 to 86400" in said


def test_serve_trusts_only_the_proxies_it_is_given(monkeypatch):
    from typer.testing import CliRunner

    from langgraph_moa.serving import _server as serve

    seen = {}
    monkeypatch.setattr(serve, "serve", lambda presets, **kwargs: seen.update(kwargs))
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    assert CliRunner().invoke(cli.app, ["serve"]).exit_code == 0
    assert seen["security"].forwarded_allow_ips == ()  # not even loopback
    args = ["serve", "--forwarded-allow-ips", "10.0.0.0/8, 127.0.0.1"]
    assert CliRunner().invoke(cli.app, args).exit_code == 0
    assert seen["security"].forwarded_allow_ips == ("10.0.0.0/8", "127.0.0.1")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")  # uvicorn's variable is honoured
    assert CliRunner().invoke(cli.app, ["serve"]).exit_code == 0
    assert seen["security"].forwarded_allow_ips == ("*",)
    bad = CliRunner().invoke(cli.app, ["serve", "--forwarded-allow-ips", "proxy.local"])
    said = " ".join(bad.output.replace("\u2502", " ").split())  # the box's lines joined
    assert bad.exit_code == 2 and "'proxy.local' is not an IP address" in said, bad.output
    assert "separated by commas" in said, bad.output
    assert "--forwarded-allow-ips" in CliRunner().invoke(cli.app, ["serve", "--help"]).output


def test_serve_refuses_a_star_among_other_trusted_proxies():
    # uvicorn trusts every peer only for a lone '*': in "10.0.0.5,*" it was taken for a host
    # name that never matches, so the operator who meant "any proxy" trusted only 10.0.0.5.
    from typer.testing import CliRunner

    from langgraph_moa.serving._guard import ServeSecurity

    bad = CliRunner().invoke(cli.app, ["serve", "--forwarded-allow-ips", "10.0.0.5,*"])
    said = " ".join(bad.output.replace("\u2502", " ").split())
    assert bad.exit_code == 2 and "'*' trusts every peer" in said, bad.output
    with pytest.raises(ValueError, match="alone"):
        ServeSecurity(forwarded_allow_ips=("10.0.0.5", "*"))


def test_serve_refuses_a_trusted_network_with_host_bits_set():
    # uvicorn parses each entry strictly: "10.0.0.5/8" was stored as a literal that no peer
    # ever equals, so the proxy the operator named was silently untrusted.
    from typer.testing import CliRunner

    from langgraph_moa.serving._guard import ServeSecurity

    bad = CliRunner().invoke(cli.app, ["serve", "--forwarded-allow-ips", "10.0.0.5/8"])
    said = " ".join(bad.output.replace("\u2502", " ").split())
    assert bad.exit_code == 2 and "10.0.0.0/8" in said, bad.output
    assert said.count("give") == 1, said  # its own advice, not the list's after it too
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/8"):
        ServeSecurity(forwarded_allow_ips=("10.0.0.5/8",))


@pytest.mark.parametrize(
    ("given", "prefix"),
    [(None, ""), ("/", ""), ("/moa", "/moa"), ("/moa/", "/moa"), ("/a/b-c", "/a/b-c")],
)
def test_serve_passes_its_root_path(monkeypatch, given, prefix):
    from typer.testing import CliRunner

    from langgraph_moa.serving import _server as serve

    seen = {}
    monkeypatch.setattr(serve, "serve", lambda presets, **kwargs: seen.update(kwargs))
    args = ["serve", *(["--root-path", given] if given else [])]
    assert CliRunner().invoke(cli.app, args).exit_code == 0
    assert seen["root_path"] == prefix


@pytest.mark.parametrize("given", ["moa", "/moa?x=1", "/m oa", "//evil.example", "/m%20oa"])
def test_serve_refuses_a_root_path_that_is_not_a_path(given):
    from typer.testing import CliRunner

    bad = CliRunner().invoke(cli.app, ["serve", "--root-path", given])
    said = " ".join(bad.output.replace("\u2502", " ").split())  # the box's lines joined
    assert bad.exit_code == 2 and "is not a URL path such as /moa" in said, bad.output
    assert "--root-path" in CliRunner().invoke(cli.app, ["serve", "--help"]).output


def test_serve_reads_its_price_table_first_and_refuses_a_bad_one(monkeypatch, capsys, tmp_path):
    from typer.testing import CliRunner

    from langgraph_moa.serving import _server as serve

    seen = {}
    monkeypatch.setattr(serve, "serve", lambda presets, **kwargs: seen.update(kwargs))
    table = tmp_path / "prices.yaml"
    table.write_text("gpt-4o: {prompt: 2.5, completion: 10}\n")
    result = CliRunner().invoke(cli.app, ["serve", "--prices", str(table)])
    assert result.exit_code == 0 and seen["prices"] == {"gpt-4o": (2.5, 10.0)}
    table.write_text("gpt-4o: {prompt: cheap, completion: 10}\n")
    seen.clear()
    status, err = run_main(monkeypatch, capsys, "serve", "--prices", str(table))
    assert status == 1 and "prices of 'gpt-4o' must be numbers" in err.replace("\n", " ")
    assert "Traceback" not in err and not seen  # refused before any server started


def test_overrides_apply_on_top_of_the_preset():
    cfg = build_config(
        "moa-lite", None, layers=3, proposers="openai:a,openai:b", aggregator="openai:c"
    )
    assert cfg.layers == 3 and [p.model for p in cfg.proposers] == ["openai:a", "openai:b"]
    assert cfg.final.model == "openai:c" and cfg.proposers[0].max_tokens == 2048
    assert build_config(None, None).name == "local-confidence"


def test_named_models_start_from_a_neutral_base_stated_in_full():
    cfg = build_config(None, None, proposers="openai:a,openai:b")
    # No preset's aggregator or token caps left over: the named models and the schema's
    # defaults, all of it in the header.
    assert cfg.name == "custom" and cfg.variant == "moa"
    assert [p.model for p in cfg.proposers] == ["openai:a", "openai:b"]
    assert cfg.final.model == "openai:a" and cfg.proposers[0].max_tokens == 512
    header = describe(cfg)
    assert header.startswith("custom: moa, 3 layers · proposers openai:a (max 512 tokens, T 0.7)")
    assert "aggregator openai:a (max 2048 tokens" in header
    cfg = build_config(None, None, aggregator="openai:c", max_tokens=64, temperature=0.2)
    assert cfg.final.model == "openai:c" and cfg.final.max_tokens == 64
    assert cfg.proposers[0].model == "local:qwen2.5-coder-1.5b"
    assert (cfg.proposers[0].max_tokens, cfg.proposers[0].temperature) == (64, 0.2)
    assert build_config(None, None, layers=3).variant == "moa"
    seq = build_config(None, None, variant="self-moa", samples=4)
    assert seq.proposers[0].samples == 4 and local_models(seq) == ["qwen2.5-coder-1.5b"]
    select = build_config(None, None, method="consensus", timeout=9)
    assert select.variant == "select" and select.selection.method == "consensus"
    assert select.call_timeout_s == 9 and "select by consensus over 3 answers" in describe(select)


@pytest.mark.parametrize("variant", ["self-moa", "self-moa-seq", "single-proposer", "moa"])
def test_max_tokens_caps_the_derived_aggregator_too(variant):
    # `moa run --variant self-moa --max-tokens 32` capped the samples at 32 but left the
    # aggregator it derives from them at the schema's 2048, which the README's "--max-tokens
    # caps every call" and the header contradicted.
    cfg = build_config(None, None, variant=variant, samples=2, max_tokens=32, temperature=0.3)
    assert cfg.final.max_tokens == 32 and "(max 2048 tokens" not in describe(cfg)
    assert cfg.proposers[0].max_tokens == 32 and cfg.proposers[0].temperature == 0.3
    unset = build_config(None, None, variant=variant, samples=2)
    assert unset.final.max_tokens == 2048  # no flag: the schema's aggregator room is kept


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variant": "select", "aggregator": "openai:x"}, "--aggregator has no effect"),
        ({"preset": "local-confidence", "aggregator": "openai:x"}, "--aggregator has no effect"),
        ({"preset": "local-moa", "method": "vote"}, "add --variant select or drop --method"),
        ({"method": "best"}, "is not a selection method"),
        ({"variant": "self-moa", "proposers": "openai:a,openai:b"}, "samples one model"),
        ({"variant": "select", "layers": 3}, "--layers 3 does not apply"),
    ],
)
def test_conflicting_flags_are_refused_in_one_sentence(kwargs, message):
    preset = kwargs.pop("preset", None)
    with pytest.raises(MoAConfigError, match=message) as refused:
        build_config(preset, None, **kwargs)
    assert str(refused.value).count(". ") == 0 and str(refused.value).endswith(".")


def test_unused_models_are_never_prepared():
    # local-moa's 0.5B is not in a select run built from its models, nor an aggregator.
    cfg = build_config(None, None, variant="select", proposers="local:qwen2.5-coder-1.5b")
    assert local_models(cfg) == ["qwen2.5-coder-1.5b"]
    assert local_models(build_config("local-moa", None)) == [
        "qwen2.5-coder-1.5b",
        "qwen2.5-coder-0.5b",
    ]


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
    from langgraph_moa.cli import _chat

    monkeypatch.setattr(_chat, "build_config", lambda *a, **k: config)
    result = CliRunner().invoke(cli.app, ["chat"], input="first\n\nsecond\n/exit\nnever\n")
    assert result.exit_code == 0, result.output
    assert "AGG heard 1 user turns" in result.output
    assert "AGG heard 2 user turns" in result.output
    assert len(log.by("AGG")) == 2  # the empty line did not end it; /exit did
    second_turn = log.by("AGG")[1].messages
    assert [m.text for m in second_turn if m.type in ("human", "ai")] == [
        "first",
        "AGG heard 1 user turns",
        "second",
    ]


def test_overridden_preset_is_reported_as_customized():
    assert build_config("moa-lite", None, layers=3).name == "moa-lite (customized)"
    assert build_config("moa-lite", None).name == "moa-lite"
    assert build_config("local-confidence", None, method="vote").name == (
        "local-confidence (customized)"
    )


def test_the_live_view_shows_tokens_rate_and_a_preview_of_each_call(fake):
    from langgraph_moa import MoAConfig, create_moa_graph
    from langgraph_moa.cli._live import Progress
    from langgraph_moa.cli._run import selection_line
    from langgraph_moa.graph.streaming import AnswerStream

    config = MoAConfig(
        variant="select",
        proposers=[{"model": fake("M", reply=lambda label, n, messages: "42"), "samples": 3}],
    )
    progress = Progress(timeout_s=None)
    stream = AnswerStream(
        create_moa_graph(config), {"messages": [("user", "6 x 7?")]}, on_progress=progress.event
    )
    progress.answer = "".join(stream)
    assert progress.answer == "42" and len(progress.rows) == 3
    assert all(row.tokens is not None and row.detail == "42" for row in progress.rows.values())
    assert any(note.startswith("picked by vote: '42' has 3 of 3 votes") for note in progress.notes)
    progress.event({"type": "moa", "event": "budget_spent", "used": 900, "limit": 800})
    assert progress.notes[-1] == "token budget spent: 900 of 800"
    assert selection_line(stream.answer).startswith("picked by vote")
    rendered = Console(record=True, width=160)
    rendered.print(progress)
    text = rendered.export_text()
    assert "picked by vote" in text and " tok" in text and "tok/s" in text


# The live view's event for a local model's call as it starts (the slow-call notes read it).
LOCAL_CALL_STARTED = {
    "event": "started",
    "role": "proposer",
    "layer": 1,
    "proposer": 0,
    "sample": 0,
    "configured_model": "local:qwen2.5-coder-1.5b",
}


def test_a_long_local_call_is_explained(monkeypatch):
    from langgraph_moa.cli import _live

    progress = _live.Progress(timeout_s=300)
    progress.event(LOCAL_CALL_STARTED)
    assert progress.slow_note() is None
    row = next(iter(progress.rows.values()))
    row.started -= 75
    monkeypatch.setattr(_live.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    monkeypatch.setattr(_live.os, "cpu_count", lambda: 2)
    note = progress.slow_note()
    assert note.startswith("a local call has run 75s: the machine is busy (load average 9.0")
    assert note.endswith("each call may take 300s (--timeout)")


@pytest.mark.parametrize("width", [80, 100])
def test_the_live_view_keeps_each_calls_label_on_one_line(monkeypatch, width):
    # On an 80- or 100-column terminal the table wrapped its label column, so every call took
    # two lines and the model was cut to "local:qwen2.5-coder-…" on the second: the user
    # could not read which model a row was. Too narrow for the table, a call is one line.
    from langgraph_moa.cli import _live
    from langgraph_moa.cli._output import out

    monkeypatch.setattr(out.err, "width", width)
    progress = _live.Progress(timeout_s=300)
    for sample in range(2):
        progress.event({**LOCAL_CALL_STARTED, "proposer": 1, "sample": sample})
        progress.event(
            {**LOCAL_CALL_STARTED, "proposer": 1, "sample": sample, "event": "finished"}
            | {"latency_s": 6.9, "completion_tokens": 30, "preview": "One, two, three " * 9}
        )
    rendered = Console(record=True, width=width)
    rendered.print(progress)
    lines = rendered.export_text().splitlines()
    label = "L1 proposer 2 #2 · local:qwen2.5-coder-1.5b"
    assert any(line.startswith(label) and "done" in line for line in lines), lines
    assert not any(line.strip().startswith("local:") for line in lines), lines


def test_a_call_cut_by_max_tokens_says_so_in_its_row():
    # A proposal that max_tokens ended read as plainly done, its preview ("Step one: 6 times")
    # as a whole answer; its row now says it was cut off.
    from langgraph_moa.cli import _live

    progress = _live.Progress()
    for proposer, reason in enumerate(["length", "stop"]):
        call = {**LOCAL_CALL_STARTED, "proposer": proposer}
        progress.event(call)
        progress.event(
            {**call, "event": "finished", "latency_s": 1.0, "completion_tokens": 4}
            | {"preview": "Step one: 6 times", "finish_reason": reason}
        )
    cut, finished = progress.rows.values()
    assert cut.detail.startswith("(cut off at max_tokens) Step one")
    assert finished.detail.startswith("Step one")


def test_a_label_in_wide_characters_is_measured_in_columns_not_characters():
    # A model named in CJK (two columns a character) was measured by its length in
    # characters: at 100 columns the table was drawn though it did not fit, its token rate
    # read "12 tok, 12.0 tok…" and the text preview was squeezed out of every row.
    from rich.cells import cell_len

    from langgraph_moa.cli import _live

    progress = _live.Progress()
    for proposer in range(2):
        call = {**LOCAL_CALL_STARTED, "proposer": proposer, "configured_model": "通义千问" * 6}
        progress.event(call)
        progress.event(
            {**call, "event": "finished", "latency_s": 1.0, "completion_tokens": 12}
            | {"preview": "这是一个很长的中文回答" * 10}
        )
    rendered = Console(record=True, width=100)
    rendered.print(progress)
    lines = rendered.export_text().splitlines()
    assert all(cell_len(line) <= 100 - _live.ECHO_COLUMNS for line in lines), lines
    assert not any("tok…" in line for line in lines), lines
    assert sum("12.0 tok/s" in line for line in lines) == 2, lines
    assert sum("这是一个很长的中文回答" in line for line in lines) >= 2, lines


@pytest.mark.parametrize("width", [160, 40])  # a table, or a line per call
def test_the_live_view_redrawn_while_a_call_starts_neither_fails_nor_freezes(width):
    # Rich redraws the view in a thread of its own while the run's events add rows in
    # another: a call that started while a frame was drawn ended that thread with
    # "dictionary changed size during iteration", and the view froze from then on.
    import threading

    from langgraph_moa.cli import _live

    drawer, reached, go, failed = None, threading.Event(), threading.Event(), []

    class DrawnSlowly(_live._Row):
        def __getattribute__(self, name):
            if name == "detail" and threading.current_thread() is drawer and not reached.is_set():
                reached.set()
                assert go.wait(30)
            return super().__getattribute__(name)

    progress = _live.Progress()
    progress.rows["drawn"] = DrawnSlowly("L1 proposer 1 \u00b7 A")

    def draw():
        try:
            Console(record=True, width=width).print(progress)
        except Exception as exc:
            failed.append(exc)

    drawer = threading.Thread(target=draw)
    drawer.start()
    assert reached.wait(30)
    progress.event(LOCAL_CALL_STARTED)
    go.set()
    drawer.join(30)
    assert failed == []
    rendered = Console(record=True, width=width)
    rendered.print(progress)
    assert "qwen2.5-coder" in rendered.export_text()


def test_the_question_comes_from_the_argument_stdin_or_a_file(tmp_path, monkeypatch):
    import io

    from langgraph_moa.cli._run import read_question
    from langgraph_moa.errors import MoAInputError

    assert read_question("hi", None) == "hi"
    question = tmp_path / "q.txt"
    question.write_text("from a file\n", encoding="utf-8")
    assert read_question(None, question) == "from a file\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"from stdin")))
    assert read_question("-", None) == "from stdin"
    question.write_bytes(b"caf\xe9")
    with pytest.raises(MoAInputError, match="is not UTF-8 text"):
        read_question(None, question)
    with pytest.raises(OptionConflictError, match="either as an argument or with --file"):
        read_question("hi", question)
    with pytest.raises(MoAInputError, match="moa run -"):
        read_question(None, None)
    with pytest.raises(MoAInputError, match="is a directory: give the path of a text file"):
        read_question(None, tmp_path)
    with pytest.raises(MoAInputError, match="does not exist: check the path"):
        read_question(None, tmp_path / "nope.txt")


def test_serve_without_the_serve_extra_names_the_extra(monkeypatch):
    import sys

    from langgraph_moa.errors import MissingExtraError
    from langgraph_moa.serving._server import serve

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    announced = []
    with pytest.raises(MissingExtraError) as missing:
        serve(["local-moa"], announce=announced.append)
    assert str(missing.value) == (
        "moa serve needs the 'serve' extra (uvicorn is not installed): "
        "install langgraph-moa[serve]."
    )
    assert announced == []


@pytest.mark.parametrize("command", ["serve", "ui"])
def test_serve_and_ui_without_the_serve_extra_name_the_extra(monkeypatch, capsys, command):
    # From a wheel installed without [serve], `moa ui` said "unexpected error:
    # ModuleNotFoundError: No module named 'uvicorn'" where `moa serve` names the extra.
    from langgraph_moa.cli import _ui

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name == "uvicorn":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    imported = [m for m in sys.modules if m.split(".")[0] == "uvicorn"]
    imported += ["langgraph_moa.serving._server", "langgraph_moa.serving._guard"]
    for name in imported:
        monkeypatch.delitem(sys.modules, name, raising=False)  # imported afresh, without it
    monkeypatch.setattr(sys, "meta_path", [NotInstalled(), *sys.meta_path])
    monkeypatch.setattr(_ui, "_check_port_free", lambda port: None)
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)  # keep pytest's Ctrl-C
    monkeypatch.setattr(cli.sys, "argv", ["moa", command, *(["--no-open"] * (command == "ui"))])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert err == (
        f"error: moa {command} needs the 'serve' extra (uvicorn is not installed): "
        "install langgraph-moa[serve]."
    ), err


def test_serve_checks_keys_and_local_models_before_announcing(monkeypatch):
    from langgraph_moa.serving._server import serve

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("TOGETHER_API_KEY", "set")
    announced = []
    with pytest.raises(MoAConfigError, match="Preset 'moa-gpt4o' needs OPENAI_API_KEY, which is"):
        serve(["local-moa", "moa-gpt4o"], announce=announced.append)
    assert announced == []


def test_the_access_log_reads_calls_tokens_fallback_and_errors():
    from langgraph_moa.serving._access import _response_facts

    body = {
        "moa": {
            "calls": [{"status": "ok"}, {"status": "failed"}],
            "usage": {"total": {"total_tokens": 42}},
            "fallback": "best_proposal",
        }
    }
    import json

    assert _response_facts(json.dumps(body).encode()) == {
        "calls": 2,
        "failed": 1,
        "tokens": 42,
        "fallback": "best_proposal",
    }
    stream = 'data: {"choices": []}\n\ndata: {"error": {"message": "boom"}}\n\ndata: [DONE]\n\n'
    assert _response_facts(stream.encode()) == {"error": "boom"}


def test_context_size_reaches_the_local_servers_and_the_reference_trimming(monkeypatch):
    from langgraph_moa.cli._run import set_context_size
    from langgraph_moa.config._schema import ProposerConfig
    from langgraph_moa.local.catalog import context_size, lookup

    # set_context_size writes os.environ itself: set the variable through monkeypatch first,
    # so that it is restored after the test (delenv of an unset variable records nothing).
    monkeypatch.setenv("LANGGRAPH_MOA_CONTEXT", "")
    monkeypatch.delenv("LANGGRAPH_MOA_CONTEXT")
    assert context_size(lookup("qwen2.5-coder-1.5b")) == 4096
    set_context_size(8192)
    assert context_size(lookup("qwen2.5-coder-1.5b")) == 8192
    role = ProposerConfig(model="local:qwen2.5-coder-1.5b")
    assert role.known_context_window() == 8192


@pytest.mark.parametrize(
    ("agg_fails", "a_fails", "code", "closing"),
    [
        ((), (), 0, None),  # every turn answered by its aggregator
        (
            (2,),
            (),
            3,
            "0 failed turn(s) and 1 degraded answer(s) (a fallback, or a layer passed "
            "over), so it exits with 3",
        ),
        (
            (2,),
            (1,),
            1,
            "1 failed turn(s) and 1 degraded answer(s) (a fallback, or a layer passed "
            "over), so it exits with 1",
        ),
    ],
)
def test_a_chat_ends_with_an_exit_code_that_says_how_its_turns_went(
    monkeypatch, fake, agg_fails, a_fails, code, closing
):
    # A script piping turns into moa chat got 0 after failed turns and fallback answers:
    # the degraded session could pass for a clean one. The session still goes on.
    from typer.testing import CliRunner

    from langgraph_moa import RetrySettings
    from langgraph_moa.cli import _app as cli
    from langgraph_moa.cli import _chat
    from langgraph_moa.config._schema import MoAConfig

    def failing(calls):
        return lambda n, messages: RuntimeError("injected") if n in calls else None

    config = MoAConfig(
        proposers=[fake("A", fail=failing(a_fails))],
        aggregator=fake("AGG", fail=failing(agg_fails)),
        layers=2,
        retry=RetrySettings(max_attempts=1),
    )
    monkeypatch.setattr(_chat, "build_config", lambda *a, **k: config)
    result = CliRunner().invoke(cli.app, ["chat"], input="one\ntwo\nthree\n")
    assert result.exit_code == code, result.output
    assert "AGG #3" in result.output or "A #3" in result.output  # it went on to turn three
    if closing is None:
        assert "exits with" not in result.output
    else:
        assert f"this chat had {closing}" in result.output


def test_chat_reset_forgets_the_conversation(monkeypatch, fake, log):
    from typer.testing import CliRunner

    from langgraph_moa.cli import _chat
    from langgraph_moa.config._schema import MoAConfig

    def count_turns(label, n, messages):
        return f"{label} heard {sum(m.type == 'human' for m in messages)} user turns"

    config = MoAConfig(proposers=[fake("A", reply=count_turns)], aggregator=fake("AGG"), layers=2)
    monkeypatch.setattr(_chat, "build_config", lambda *a, **k: config)
    result = CliRunner().invoke(cli.app, ["chat"], input="one\n/reset\ntwo\n")
    assert result.exit_code == 0, result.output
    assert [m.text for m in log.by("A")[1].messages if m.type == "human"] == ["two"]


@pytest.mark.parametrize(
    ("data", "heard"),
    [
        # Nested too deep for the JSON parser: its RecursionError ended the whole chat,
        # and the conversation not yet saved with it.
        (b"[" * 100_000, ["one", "next"]),  # refused: the conversation is kept
        # The saved file edited (its oldest turns removed) in Windows Notepad, which starts
        # UTF-8 files with a byte order mark: refused as "not a JSON file /save wrote".
        ('\ufeff[{"role": "human", "content": "kept"}]'.encode(), ["kept", "next"]),
        (b'[{"role": "human", "content": "caf\xe9"}]', ["one", "next"]),  # not UTF-8: refused
        # A lone surrogate spelled as a JSON escape (another tool's file) is no text a
        # provider can send: loaded, it failed every later turn with UnicodeEncodeError.
        (b'[{"role": "human", "content": "caf\\udce9"}]', ["one", "next"]),
    ],
    ids=["nested-too-deep", "byte-order-mark", "latin-1", "lone-surrogate"],
)
def test_chat_load_of_an_odd_file_goes_on(monkeypatch, fake, log, tmp_path, data, heard):
    from typer.testing import CliRunner

    from langgraph_moa.cli import _chat
    from langgraph_moa.config._schema import MoAConfig

    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    monkeypatch.setattr(_chat, "build_config", lambda *a, **k: config)
    odd = tmp_path / "odd.json"
    odd.write_bytes(data)
    result = CliRunner().invoke(cli.app, ["chat"], input=f"one\n/load {odd}\nnext\n")
    assert result.exit_code == 0, result.output
    assert [m.text for m in log.by("A")[1].messages if m.type == "human"] == heard


def test_off_a_terminal_a_slow_local_call_is_one_log_line(monkeypatch):
    import threading

    from langgraph_moa.cli import _live

    progress = _live.Progress(timeout_s=300)
    progress.event(LOCAL_CALL_STARTED)
    next(iter(progress.rows.values())).started -= 90
    said: list[str] = []
    monkeypatch.setattr(_live.out, "plain", said.append)
    done = threading.Event()
    watcher = threading.Thread(target=_live._say_when_slow, args=(progress, done, 0.01))
    watcher.start()
    while not said:
        done.wait(0.01)
    done.wait(0.1)  # more ticks: still one line
    done.set()
    watcher.join()
    assert len(said) == 1 and said[0].startswith("a local call has run 90s")


def test_the_live_view_shows_each_calls_tokens_rate_and_a_preview(fake):
    from langgraph_moa import MoAConfig
    from tests.helpers import watched_progress

    config = MoAConfig(
        proposers=[fake("A", reply=lambda label, n, m: "alpha writes a long line\nof text")],
        aggregator=fake("AGG"),
        layers=2,
    )
    progress = watched_progress(config)
    assert progress.answer == "AGG #1"
    proposer = progress.rows[("proposer", 1, 0, 0)]
    assert proposer.tail == "alpha writes a long line\nof text" and proposer.streamed == 6
    assert proposer.tokens == 7  # the usage the finished call reported
    rendered = Console(record=True, width=160)
    rendered.print(progress)
    text = rendered.export_text()
    assert "7 tok" in text and "/s" in text
    assert "alpha writes a long line of text" in text  # one line


def test_ui_serves_on_loopback_with_its_history_and_opens_the_page(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from langgraph_moa.cli import _ui
    from langgraph_moa.serving import _server as serve

    seen, opened = {}, []

    def fake_serve(presets, **kw):  # checks pass: the real one announces, then serves
        seen.update(kw, presets=presets)
        kw["announce"]("Serving")

    monkeypatch.setattr(serve, "serve", fake_serve)
    monkeypatch.setattr(_ui, "_open_when_up", lambda url, port: opened.append((url, port)))
    monkeypatch.setattr(_ui, "_check_port_free", lambda port: None)
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


def test_serve_refuses_an_allow_model_without_its_key_in_one_line(monkeypatch, capsys, tmp_path):
    import uvicorn

    config = tmp_path / "e.yaml"
    config.write_text(
        "proposers: ['p@http://127.0.0.1:9/v1']\naggregator: a@http://127.0.0.1:9/v1\n"
    )
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("served"))
    args = ["serve", "--config", str(config), "--allow-model", "openai:gpt-4o"]
    status, err = run_main(monkeypatch, capsys, *args)
    assert status == 1 and "Traceback" not in err and "Serving" not in err
    assert "--allow-model 'openai:gpt-4o' needs OPENAI_API_KEY" in " ".join(err.split())


@pytest.mark.parametrize(
    "args",
    [["--limit", "-250"], ["--limit", "-1"], ["--limit", "0"], ["--concurrency", "0"]],
)
def test_eval_counts_below_one_are_refused_not_read_as_slices(monkeypatch, capsys, tmp_path, args):
    status, err = run_main(
        monkeypatch, capsys, "eval", "-s", "moa-lite", "--out", str(tmp_path), *args
    )
    assert status == 2 and f"Invalid value for '{args[0]}': {args[1]} is out of range" in err
    assert "of at least 1" in err and "Traceback" not in err
    assert not (tmp_path / "report.md").exists()


@pytest.mark.parametrize(
    ("system", "message"),
    [
        ("single:openai:", "error: Invalid system 'single:openai:': Model spec 'openai:' has no"),
        ("single:foo@ftp://x", "error: Invalid system 'single:foo@ftp://x': Unknown model"),
        ("single:", "error: System 'single:' names no model: write it as 'single:<model spec>'"),
    ],
)
def test_a_bad_single_system_is_one_error_line(monkeypatch, capsys, tmp_path, system, message):
    status, err = run_main(
        monkeypatch, capsys, "eval", "-q", "-s", system, "--limit", "1", "--out", str(tmp_path)
    )
    assert status == 1 and message in err
    assert err.count("\n") == 1 and "unexpected" not in err and "pydantic" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--proposers", "", "hi"], "'--proposers': '' names no model: give comma-sep"),
        (["run", "--proposers", " , ,", "hi"], "'--proposers': ' , ,' names no model"),
        (["run", "--proposers", "openai:a,,openai:b", "hi"], "'openai:a,,openai:b' has an empty"),
        (["run", "--proposers", "openai:a,", "hi"], "'--proposers': 'openai:a,' has an empty item"),
        (["run", "--aggregator", "", "hi"], "'--aggregator': '' names no model: give a model"),
        (["chat", "--proposers", ""], "'--proposers': '' names no model"),
        (["eval", "-s", "moa-lite", "--judge", " ", "--baseline", "x"], "'--judge': ' ' names no"),
        (
            ["run", "--variant", "nope", "hi"],
            "'--variant': 'nope' is not a variant: use one of moa,",
        ),
        (
            ["run", "--variant", "self-moe", "hi"],
            "'self-moe' is not a variant: did you mean 'self-moa'",
        ),
        (
            ["run", "--method", "best", "hi"],
            "'--method': 'best' is not a selection method: use one",
        ),
    ],
)
def test_an_empty_model_flag_is_refused_not_ignored(monkeypatch, capsys, tmp_path, args, message):
    # Ignored, these ran the default preset's local model, or the first proposer aggregated.
    # An invalid value of one option is a usage error (exit 2), as one out of range is; they
    # exited 1, the code of a failed run.
    from langgraph_moa.cli import _chat, _run

    for module in (_run, _chat):
        monkeypatch.setattr(module, "prepare", lambda names: pytest.fail(f"prepared {names}"))
    monkeypatch.chdir(tmp_path)
    status, err = run_main(monkeypatch, capsys, *args)
    shown = " ".join(err.split())
    assert status == 2 and message in shown and "Error: Invalid value for" in err, err
    assert "Traceback" not in err


def test_eval_with_a_failing_judge_writes_the_report_and_exits_non_zero(
    monkeypatch, capsys, tmp_path, fake
):
    from langgraph_moa.config._schema import MoAConfig
    from langgraph_moa.eval import runner

    systems = {
        name: MoAConfig(name=name, variant="select", proposers=[fake(name)])
        for name in ("sys-a", "sys-b")
    }
    monkeypatch.setattr(
        runner, "resolve_system", lambda spec, cache: runner._system(spec, systems[spec], cache)
    )

    def down(*args, **kwargs):
        raise RuntimeError("Error code: 500 - internal error")

    monkeypatch.setattr(runner, "judge_both_orders", down)
    status, err = run_main(
        monkeypatch,
        capsys,
        *("eval", "-s", "sys-a", "-s", "sys-b", "--baseline", "sys-a", "--limit", "2"),
        *("--judge", "judge@http://127.0.0.1:9/v1", "--no-plots", "--out", str(tmp_path)),
    )
    assert status == 1 and "unexpected" not in err
    assert (
        "error: The judge failed, so sys-b has no win rate: RuntimeError: Error code: 500 - "
        f"internal error. The report with the accuracy is in {tmp_path / 'report.md'}" in err
    )
    report = (tmp_path / "report.md").read_text()
    assert "**Judging failed** for **sys-b**" in report and "| sys-b | 0/2 |" in report
    assert json.loads((tmp_path / "summary.json").read_text())["sys-b"]["judge_error"]


def test_eval_records_the_command_that_reruns_it(monkeypatch, tmp_path, fake):
    from typer.testing import CliRunner

    from langgraph_moa.config._schema import MoAConfig
    from langgraph_moa.eval import runner

    config = MoAConfig(name="sys a", variant="select", proposers=[fake("sys a")])
    monkeypatch.setattr(
        runner, "resolve_system", lambda spec, cache: runner._system(spec, config, cache)
    )
    out_dir = tmp_path / "my out"
    args = ["eval", "-q", "-s", "sys a", "--limit", "2", "--concurrency", "3", "--no-plots"]
    result = CliRunner().invoke(cli.app, [*args, "--out", str(out_dir)])
    assert result.exit_code == 0, result.output
    record = json.loads((out_dir / "provenance.json").read_text())
    assert record["command"] == (
        f"moa eval --system 'sys a' --dataset verifiable --out '{out_dir}' --limit 2 "
        "--concurrency 3"
    )
    assert record["dataset"]["source"] == "verifiable" and record["dataset"]["items"] == 2
    assert record["command"] in (out_dir / "report.md").read_text()


def test_eval_closes_its_call_cache_when_it_ends(monkeypatch, tmp_path, fake):
    # Left open, the cache's connection was closed by garbage collection only, whenever that
    # came (on Python 3.13, "ResourceWarning: unclosed database" in whatever ran then).
    from typer.testing import CliRunner

    from langgraph_moa.config._schema import MoAConfig
    from langgraph_moa.eval import runner

    config = MoAConfig(name="s", variant="select", proposers=[fake("s")])
    monkeypatch.setattr(
        runner, "resolve_system", lambda _s, cache: runner._system(_s, config, cache)
    )
    opened = opened_connections(monkeypatch)
    args = ["eval", "-q", "-s", "s", "--limit", "1", "--no-plots", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert opened and all(is_closed(db) for db in opened)


def test_eval_seed_reaches_the_calls_and_the_command_that_reruns_it(monkeypatch, tmp_path, fake):
    """`moa eval` had no --seed: a sampled system's answers could not be drawn again."""
    from typer.testing import CliRunner

    from langgraph_moa.config._schema import MoAConfig
    from langgraph_moa.eval import runner

    config = MoAConfig(name="sys", variant="select", proposers=[fake("sys")])
    monkeypatch.setattr(
        runner, "resolve_system", lambda spec, cache: runner._system(spec, config, cache)
    )
    args = ["eval", "-q", "-s", "sys", "--limit", "1", "--no-plots", "--seed", "5"]
    result = CliRunner().invoke(cli.app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "provenance.json").read_text())
    assert record["seed"] == 5 and record["command"].endswith(" --seed 5")
    assert [c.kwargs.get("seed") for c in config.proposers[0].model.log.calls] == [5]


def test_eval_of_a_langsmith_dataset_records_it_as_langsmith_not_as_a_file_here(
    monkeypatch, tmp_path, fake
):
    """A LangSmith dataset called "gsm8k" (or named like a file in the working directory)
    was recorded as the packaged gsm8k file, with that file's SHA-256."""
    from typer.testing import CliRunner

    from langgraph_moa.cli import _eval
    from langgraph_moa.config._schema import MoAConfig
    from langgraph_moa.eval import runner
    from langgraph_moa.eval.datasets import load_dataset

    config = MoAConfig(name="sys a", variant="select", proposers=[fake("sys a")])
    monkeypatch.setattr(
        runner, "resolve_system", lambda spec, cache: runner._system(spec, config, cache)
    )
    items = load_dataset("verifiable")[:2]
    monkeypatch.setattr(_eval, "_langsmith_items", lambda name, limit: items)
    out_dir = tmp_path / "out"
    args = ["eval", "-q", "-s", "sys a", "--langsmith-dataset", "gsm8k", "--no-plots"]
    result = CliRunner().invoke(cli.app, [*args, "--out", str(out_dir)])
    assert result.exit_code == 0, result.output
    dataset = json.loads((out_dir / "provenance.json").read_text())["dataset"]
    assert dataset["source"] == "langsmith:gsm8k" and "sha256" not in dataset
    assert dataset["ids"] == [item.id for item in items]


@pytest.mark.parametrize("command", ["serve", "ui"])
def test_serve_and_ui_help_name_the_presets_they_serve_by_default(command):
    # Their --preset help said only "(repeatable)": what a bare `moa serve` or `moa ui`
    # serves was in the README alone.
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, [command, "--help"])
    shown = " ".join(result.output.replace("│", " ").split())  # the help's box, unwrapped
    assert result.exit_code == 0
    assert "local-confidence, local-moa, local-self-moa" in shown, shown


@pytest.mark.parametrize("command", [[], ["run"], ["chat"], ["eval"], ["serve"], ["models"]])
def test_help_shows_no_value_after_a_flag(command):
    # "--quiet -q <bool>" led a user to write "--quiet true", and "true" became the question.
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0 and "--help" in result.output
    assert "<bool>" not in result.output
    if command == ["run"]:  # options that take a value still name its type
        assert "--samples N [1<=x<=256]" in " ".join(result.output.split()), result.output


def test_all_proposers_failed_is_printed_one_failure_per_line(monkeypatch, capsys, fake):
    from langgraph_moa.cli import _run
    from langgraph_moa.config._schema import MoAConfig

    def down(n, messages):
        return RuntimeError("Error code: 500  -  internal")

    config = MoAConfig(
        proposers=[fake("A", fail=down), fake("B", fail=down)],
        aggregator=fake("AGG"),
        layers=2,
        retry={"max_attempts": 1},
    )
    monkeypatch.setattr(_run, "build_config", lambda *a, **k: config)
    status, err = run_main(monkeypatch, capsys, "run", "-q", "--no-stream", "hi")
    assert status == 1
    lines = err.splitlines()
    assert lines[0] == (
        "error: All 2 proposer calls of layer 1 failed, so the aggregator was not called:"
    )
    assert lines[1].startswith("  - proposer 1 sample 1 (")
    assert lines[1].endswith("RuntimeError: Error code: 500 - internal")
    assert lines[2].startswith("  - proposer 2 sample 1 (")
    assert lines[3].startswith("Fix the provider errors above")


class _TestInterrupt(Exception):
    """What Ctrl-C raises in these tests where the chat does not handle it itself."""


def _raise_test_interrupt(signum, frame):
    raise _TestInterrupt


def test_ctrl_c_during_a_chat_turn_cancels_that_turn_only(monkeypatch, fake, log):
    import os
    import signal
    import threading
    import time

    from typer.testing import CliRunner

    from langgraph_moa.cli import _chat
    from langgraph_moa.config._schema import MoAConfig

    started = threading.Event()

    def slow_first_call(n):
        if n == 1:
            started.set()
            return 30.0
        return 0.0

    config = MoAConfig(
        proposers=[fake("A", delay=slow_first_call)], aggregator=fake("AGG"), layers=2
    )
    monkeypatch.setattr(_chat, "build_config", lambda *a, **k: config)

    def press_ctrl_c():
        if started.wait(10):
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, _raise_test_interrupt)
    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    began = time.perf_counter()
    try:
        result = CliRunner().invoke(cli.app, ["chat"], input="slow one\nsecond\n/exit\n")
        assert signal.getsignal(signal.SIGINT) is _raise_test_interrupt  # given back
    finally:
        presser.join()
        signal.signal(signal.SIGINT, previous)
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - began < 10  # the 30-second call was cancelled, not awaited
    assert "turn cancelled (Ctrl-C); its question was not added" in result.output
    assert [m.text for m in log.by("AGG")[0].messages if m.type == "human"] == ["second"]


def test_chat_refuses_an_unknown_command_and_sends_a_double_slash_message(monkeypatch, fake, log):
    from typer.testing import CliRunner

    from langgraph_moa.cli import _chat
    from langgraph_moa.config._schema import MoAConfig

    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    monkeypatch.setattr(_chat, "build_config", lambda *a, **k: config)
    result = CliRunner().invoke(cli.app, ["chat"], input="/bogus x\n//etc/hosts?\n")
    assert result.exit_code == 0, result.output
    assert "error: unknown command /bogus; type /help" in result.output
    assert [m.text for c in log.by("A") for m in c.messages if m.type == "human"] == ["/etc/hosts?"]


def _terminal_reader(monkeypatch, typed):
    """A chat's line reader on a terminal whose input() is `typed`."""
    from langgraph_moa.cli._chat import LineReader

    monkeypatch.setattr("builtins.input", typed)
    reader = LineReader()
    reader.interactive = True
    return reader


@pytest.mark.parametrize("key", [EOFError, KeyboardInterrupt])
def test_ctrl_d_or_ctrl_c_at_the_prompt_ends_the_prompts_line(monkeypatch, capsys, key):
    def pressed(prompt):
        print(prompt, end="")
        raise key

    reader = _terminal_reader(monkeypatch, pressed)
    with pytest.raises(key):
        reader.message()
    assert capsys.readouterr().out == "you> \n"


def test_an_interrupt_mentions_local_servers_only_when_some_were_started(monkeypatch, capsys):
    from langgraph_moa.cli import _app
    from langgraph_moa.local.runtime import LocalRuntime

    monkeypatch.setattr(LocalRuntime, "_default", None)

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_app, "app", fail)
    status, err = run_main(monkeypatch, capsys, "run", "hi")
    assert status == 130, err
    assert err.strip() == "Interrupted." and "server" not in err
    runtime = LocalRuntime()
    monkeypatch.setattr(LocalRuntime, "_default", runtime)
    monkeypatch.setattr(runtime, "_servers", {"qwen": object()})
    status, err = run_main(monkeypatch, capsys, "run", "hi")
    assert err.strip() == "Interrupted. Stopping local model servers."


def test_ctrl_c_at_the_chat_prompt_says_interrupted_and_exits_130(monkeypatch, capsys):
    # Through typer, as a real Ctrl-C goes: typer would turn the KeyboardInterrupt into a
    # silent exit 130, with no word of what happened.
    class Interrupted:
        def isatty(self):
            return False

        def readline(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(sys, "stdin", Interrupted())
    status, err = run_main(monkeypatch, capsys, "chat", "--proposers", "a@http://127.0.0.1:9/v1")
    assert status == 130
    assert err.strip().splitlines()[-1] == "Interrupted."


def test_chat_runs_off_the_main_thread_where_no_signal_handler_can_be_set(fake, monkeypatch):
    import threading

    from typer.testing import CliRunner

    from langgraph_moa.cli import _chat
    from langgraph_moa.cli._app import app

    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    monkeypatch.setattr(_chat, "build_config", lambda *a, **k: config)
    result = {}

    def chat_in_a_thread():
        result["run"] = CliRunner().invoke(app, ["chat"], input="hello\n/exit\n")

    worker = threading.Thread(target=chat_in_a_thread)
    worker.start()
    worker.join(30)
    run = result["run"]
    assert run.exit_code == 0, (run.exception, run.output)
    assert "AGG" in run.output


def test_eval_with_fallback_answers_warns_and_exits_3_like_moa_run(monkeypatch, capsys, tmp_path):
    from langgraph_moa.cli._run import DEGRADED_EXIT
    from langgraph_moa.eval import runner
    from tests.fakes import FakeChat

    down = FakeChat(label="agg", fail=lambda n, m: RuntimeError("aggregator down"))
    config = MoAConfig(name="fb", proposers=[FakeChat(label="p")], aggregator=down)
    monkeypatch.setattr(
        runner, "resolve_system", lambda spec, cache: runner._system(spec, config, cache)
    )
    status, err = run_main(
        monkeypatch,
        capsys,
        "eval",
        "-s",
        "fb",
        "--limit",
        "2",
        "--no-plots",
        "--out",
        str(tmp_path),
    )
    assert status == DEGRADED_EXIT == 3
    assert "some answers were fallbacks" in err and "fb 2 of 2" in " ".join(err.split())
    assert "2 of 2 answers were fallbacks" in (tmp_path / "report.md").read_text()


def test_eval_with_no_judged_pair_exits_1_in_one_sentence(monkeypatch, capsys, tmp_path):
    from langgraph_moa.eval import runner
    from tests.fakes import FakeChat

    def system(name, bad):
        def fail(_n, messages):
            return ValueError("boom") if bad in messages[-1].text else None

        return MoAConfig(name=name, variant="select", proposers=[FakeChat(label=name, fail=fail)])

    data = tmp_path / "two.jsonl"
    data.write_text('{"instruction": "first?"}\n{"instruction": "second?"}\n')
    systems = {"sys-a": system("sys-a", "first"), "sys-b": system("sys-b", "second")}
    monkeypatch.setattr(
        runner, "resolve_system", lambda spec, cache: runner._system(spec, systems[spec], cache)
    )
    status, err = run_main(
        monkeypatch,
        capsys,
        *("eval", "-s", "sys-a", "-s", "sys-b", "--baseline", "sys-b", "--dataset", str(data)),
        *("--judge", "judge@http://127.0.0.1:9/v1", "--no-plots", "--out", str(tmp_path / "o")),
    )
    assert status == 1 and "unexpected" not in err and "Traceback" not in err
    assert "error: No pair could be judged for sys-a: every item had an error" in err
    assert (
        json.loads((tmp_path / "o" / "summary.json").read_text())["sys-a"]["win_rate"]["rate"]
        is None
    )


def test_eval_on_a_non_utf8_dataset_is_one_error_line(monkeypatch, capsys, tmp_path):
    data = tmp_path / "latin1.jsonl"
    data.write_bytes(b'{"instruction": "caf\xe9?"}\n')
    status, err = run_main(
        monkeypatch,
        capsys,
        *("eval", "-s", "single:openai:gpt-4o-mini", "--dataset", str(data)),
        *("--out", str(tmp_path / "o"), "--no-plots"),
    )
    assert status == 1 and "unexpected error" not in err
    assert "the file is not UTF-8" in err and "save it as UTF-8" in err


@pytest.mark.parametrize("where", ["report.md", "report.md/sub"])
def test_eval_out_that_is_a_file_is_one_error_line_before_any_call(
    monkeypatch, capsys, tmp_path, where
):
    (tmp_path / "report.md").write_text("x")
    status, err = run_main(
        monkeypatch,
        capsys,
        *("eval", "-s", "single:openai:gpt-4o-mini", "--limit", "1", "--no-plots"),
        *("--out", str(tmp_path / where)),
    )
    assert status == 1 and "unexpected error" not in err and err.count("\n") == 1
    assert f"'{tmp_path / 'report.md'}' is a file; give --out a folder" in err
    assert (tmp_path / "report.md").read_text() == "x"


def test_a_config_with_a_non_string_key_is_one_error_line(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "cfg.yaml"
    bad.write_text("1: 2\nproposers: [{model: 'openai:gpt-4o-mini'}]\n")
    status, err = run_main(monkeypatch, capsys, "run", "hi", "--config", str(bad))
    assert status == 1 and "unexpected error" not in err
    assert "has a top-level key that is not a name (1)" in " ".join(err.split())


@pytest.mark.parametrize(
    ("preset", "flags"),
    [
        (None, {"proposers": "openai:gpt-4o-mini", "variant": "self-moa"}),
        (None, {"proposers": "openai:gpt-4o-mini,openai:gpt-4o"}),
        ("moa-lite", {}),
    ],
)
def test_samples_zero_is_refused_not_replaced_by_the_default(preset, flags):
    # `samples or default` read 0 as "not given": self-moa ran 3 samples, asked for 0.
    with pytest.raises(MoAConfigError, match="samples: Input should be greater than or equal to 1"):
        build_config(preset, None, samples=0, **flags)


def test_samples_zero_on_the_command_line_is_one_error_line(monkeypatch, capsys):
    status, err = run_main(
        monkeypatch,
        capsys,
        *("run", "hi", "--proposers", "openai:gpt-4o-mini", "--variant", "self-moa"),
        *("--samples", "0"),
    )
    shown = " ".join(err.split())  # a usage error since --samples is checked as it is read
    assert status == 2 and "'--samples': 0 is out of range: give a whole number from 1" in shown


def _code_word_systems(monkeypatch, tmp_path, **names):
    """`-s NAME` resolves to a fake one-model system; returns the dataset and the model."""
    from langgraph_moa.eval import runner
    from tests.fakes import FakeChat

    model = FakeChat(label="p", reply=lambda *_: "The code word is alpha0.")
    configs = {
        spec: MoAConfig(name=name, variant="single-proposer", proposers=[model], aggregator=model)
        for spec, name in names.items()
    }
    monkeypatch.setattr(
        runner, "resolve_system", lambda spec, cache: runner._system(spec, configs[spec], cache)
    )
    data = tmp_path / "alpha.jsonl"
    data.write_text('{"instruction": "Say alpha0.", "expected": ["alpha0"]}\n')
    return str(data), model


def test_calibration_out_without_a_single_system_is_refused_before_any_call(
    monkeypatch, capsys, tmp_path
):
    data, model = _code_word_systems(monkeypatch, tmp_path, mix="mix")
    status, err = run_main(
        monkeypatch,
        capsys,
        *("eval", "-s", "mix", "--calibration-out", str(tmp_path / "cal.json")),
        *("--out", str(tmp_path / "o"), "--no-plots", "--dataset", data),
    )
    assert status == 1 and "No calibration can be written" in err and "-s single:" in err
    assert model.log.calls == [] and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("where", "message"),
    [("no/such/cal.json", "does not exist; create it"), ("", "is a folder: give the path")],
)
def test_calibration_out_that_cannot_be_written_is_refused_before_any_call(
    monkeypatch, capsys, tmp_path, where, message
):
    data, model = _code_word_systems(monkeypatch, tmp_path, **{"single:fake": "single:fake"})
    status, err = run_main(
        monkeypatch,
        capsys,
        *("eval", "-s", "single:fake", "--calibration-out", str(tmp_path / where)),
        *("--out", str(tmp_path / "o"), "--no-plots", "--dataset", data),
    )
    assert status == 1 and message in " ".join(err.split()) and "unexpected" not in err
    assert model.log.calls == []


def test_calibration_out_is_written_whole_and_a_write_error_is_one_line(
    monkeypatch, capsys, tmp_path
):
    from langgraph_moa.eval import runner

    data, _ = _code_word_systems(monkeypatch, tmp_path, **{"single:fake": "single:fake"})
    args = ("eval", "-s", "single:fake", "--out", str(tmp_path / "o"), "--no-plots")
    target = tmp_path / "cal.json"
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)
    monkeypatch.setattr(
        cli.sys, "argv", ["moa", *args, "--dataset", data, "--calibration-out", str(target)]
    )
    cli.main()  # no exit: every answer right, nothing degraded
    assert json.loads(target.read_text())["accuracy"] == {"fake": 1.0}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []

    real = runner.write_atomically

    def full(path, text):
        if path == target:
            raise OSError(28, "No space left on device")
        real(path, text)

    monkeypatch.setattr(runner, "write_atomically", full)
    status, err = run_main(
        monkeypatch, capsys, *args, "--dataset", data, "--calibration-out", str(target)
    )
    assert status == 1 and "unexpected" not in err
    assert "Cannot write" in err and "No space left on device" in err
    assert json.loads(target.read_text())["accuracy"] == {"fake": 1.0}  # the old file whole
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


class _LeftReader:
    """A stdout whose reader has gone (`moa eval ... | head -1`)."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        raise OSError("no file")


def test_a_reader_that_left_does_not_turn_a_degraded_eval_into_exit_0(
    monkeypatch, capsys, tmp_path
):
    from langgraph_moa.eval import runner
    from tests.fakes import FakeChat

    down = FakeChat(label="agg", fail=lambda n, m: RuntimeError("aggregator down"))
    config = MoAConfig(name="fb", proposers=[FakeChat(label="p")], aggregator=down)
    monkeypatch.setattr(
        runner, "resolve_system", lambda spec, cache: runner._system(spec, config, cache)
    )
    monkeypatch.setattr(sys, "stdout", _LeftReader())
    args = ("eval", "-s", "fb", "--limit", "1", "--no-plots", "--out", str(tmp_path))
    status, err = run_main(monkeypatch, capsys, *args)
    assert status == 3 and "some answers were fallbacks" in err  # the report's reader left


def test_an_unexpected_error_is_redacted(monkeypatch, capsys):
    key = "sk-proj-" + "x" * 40
    monkeypatch.setenv("OPENAI_API_KEY", key)

    def boom(*args, **kwargs):
        raise RuntimeError(f"request with Authorization: Bearer {key} failed")

    monkeypatch.setattr(cli, "app", boom)
    status, err = run_main(monkeypatch, capsys, "models")
    assert status == 1 and "unexpected error: RuntimeError" in err and key not in err


def test_eval_with_a_system_that_failed_on_some_items_warns_and_exits_3(
    monkeypatch, capsys, tmp_path
):
    from langgraph_moa.eval import runner
    from tests.fakes import FakeChat

    def fail(_n, messages):
        return ValueError("boom") if "second" in messages[-1].text else None

    config = MoAConfig(name="half", variant="select", proposers=[FakeChat(label="p", fail=fail)])
    monkeypatch.setattr(
        runner, "resolve_system", lambda spec, cache: runner._system(spec, config, cache)
    )
    data = tmp_path / "two.jsonl"
    data.write_text('{"instruction": "first?"}\n{"instruction": "second?"}\n')
    args = (
        "eval",
        "-s",
        "half",
        "--dataset",
        str(data),
        "--no-plots",
        "--out",
        str(tmp_path / "o"),
    )
    status, err = run_main(monkeypatch, capsys, *args)
    assert status == 3 and "unexpected" not in err
    assert "some items failed (half 1 of 2) and are not in the accuracy" in " ".join(err.split())


def test_eval_says_fallbacks_even_when_another_system_failed_everywhere(
    monkeypatch, capsys, tmp_path
):
    from langgraph_moa.eval import runner
    from tests.fakes import FakeChat

    down = FakeChat(label="agg", fail=lambda n, m: RuntimeError("aggregator down"))
    broken = FakeChat(label="q", fail=lambda n, m: ValueError("boom"))
    systems = {
        "fb": MoAConfig(name="fb", proposers=[FakeChat(label="p")], aggregator=down),
        "dead": MoAConfig(name="dead", variant="select", proposers=[broken]),
    }
    monkeypatch.setattr(
        runner, "resolve_system", lambda spec, cache: runner._system(spec, systems[spec], cache)
    )
    args = ("eval", "-s", "fb", "-s", "dead", "--limit", "1", "--no-plots")
    status, err = run_main(monkeypatch, capsys, *args, "--out", str(tmp_path))
    assert status == 1 and "dead failed on every item" in err
    assert "warning: some answers were fallbacks" in err  # not hidden by the failure


@pytest.mark.parametrize("how", ["retry", "fallback"])
async def test_a_chat_turn_whose_aggregator_broke_midway_keeps_the_next_attempts_answer(fake, how):
    # The aggregator streamed two words and failed; its retry (or the labelled fallback)
    # answered. The turn failed with StreamBrokenError, though the chat shows the streaming
    # text only in its live view and prints the answer once, whole, at the end.
    from langchain_core.messages import HumanMessage

    from langgraph_moa import RetrySettings, create_moa_graph
    from langgraph_moa.cli._live import arun_live
    from tests.fakes import WordStreamer

    attempts = 2 if how == "retry" else 1
    agg = WordStreamer(label="AGG", words=4, fail_at=2, fail_at_calls=1)
    retry = RetrySettings(max_attempts=attempts, initial_interval=0.0, jitter=False)
    config = MoAConfig(proposers=[fake("A")], aggregator=agg, layers=2, retry=retry)
    state = await arun_live(
        create_moa_graph(config), {"messages": [HumanMessage("q")]}, timeout_s=None
    )
    answer = state["messages"][-1]
    if how == "retry":
        assert answer.text == "AGG0 AGG1 AGG2 AGG3"
    else:
        assert answer.text == "A #1" and answer.response_metadata["moa"]["fallback"]


def test_a_local_runtime_warning_reaches_the_commands_stderr(monkeypatch, capsys):
    # The runtime says what no call raises (a dead server replaced, its kept log) through
    # logging; the command must show it as a warning, once, whatever command is running.
    import logging

    logger = logging.getLogger("langgraph_moa.local")
    monkeypatch.setattr(logger, "handlers", [])  # whatever main adds goes with the test

    def command(standalone_mode):
        logging.getLogger("langgraph_moa.local.runtime").warning("the server for %r died", "m")
        return 0

    monkeypatch.setattr(cli, "app", command)
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)
    monkeypatch.setattr(cli.sys, "argv", ["moa", "models"])
    cli.main()
    cli.main()  # a second command in the same process adds no second handler
    err = capsys.readouterr().err
    assert err.count("warning: the server for 'm' died") == 2, err
    assert err.count("died") == 2, err


def test_the_commands_warning_handler_goes_when_the_command_ends(monkeypatch, capsys):
    # main() left its handler on the runtime's logger: a program (or test) that ran a
    # command in-process and then used the library had the runtime's warnings printed by
    # the command's console, as "warning:" lines, instead of through its own logging.
    import logging

    logger = logging.getLogger("langgraph_moa.local")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(cli, "app", lambda standalone_mode: 0)
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)
    monkeypatch.setattr(cli.sys, "argv", ["moa", "models"])
    cli.main()
    assert logger.handlers == []

    def fails(standalone_mode):
        raise MoAConfigError("bad")

    monkeypatch.setattr(cli, "app", fails)
    with pytest.raises(SystemExit):
        cli.main()
    assert logger.handlers == []


def test_samples_on_a_greedy_preset_are_refused_with_the_flag_that_fixes_it(monkeypatch, capsys):
    # `moa run --samples 3` on the default preset (a greedy proposer) was refused in a config
    # file's words ("set its temperature above 0 ... or its samples to 1"): the command-line
    # user was not told the flag that fixes it.
    status, err = run_main(monkeypatch, capsys, "run", "hi", "--samples", "3")
    shown = " ".join(err.split())
    assert status == 2 and "pass --temperature 0.7" in shown and "--samples 1" in shown, shown
    assert "set its temperature" not in shown and "Traceback" not in shown
    status, err = run_main(monkeypatch, capsys, "run", "hi", "--samples", "3", "--temperature", "0")
    assert status == 2 and "pass --temperature 0.7" in " ".join(err.split())
    assert build_config(None, None, samples=3, temperature=0.7).proposers[0].samples == 3


def test_a_greedy_config_file_is_still_refused_in_the_files_words(monkeypatch, capsys, tmp_path):
    config = tmp_path / "greedy.yaml"
    config.write_text(
        "proposers: [{model: 'openai:gpt-4o-mini', samples: 3, temperature: 0}]\n"
        "aggregator: openai:gpt-4o-mini\n"
    )
    status, err = run_main(monkeypatch, capsys, "run", "hi", "--config", str(config))
    shown = " ".join(err.split())
    assert status == 1 and "set its temperature above 0" in shown and "--temperature" not in shown


@pytest.mark.parametrize(
    ("args", "flag", "value", "span"),
    [
        (["run", "hi", "--samples", "0"], "--samples", "0", "from 1 to 256"),
        (["run", "hi", "--samples", "1000"], "--samples", "1000", "from 1 to 256"),
        (["run", "hi", "--samples", "abc"], "--samples", "'abc'", "from 1 to 256"),
        (["run", "hi", "--layers", "1"], "--layers", "1", "from 2 to 16"),
        (["run", "hi", "--layers", "100"], "--layers", "100", "from 2 to 16"),
        (["run", "hi", "--max-tokens", "0"], "--max-tokens", "0", "from 1 to 2147483647"),
        (["run", "hi", "--max-tokens", "9999999999"], "--max-tokens", "9999999999", "to 2147"),
        (["run", "hi", "--temperature", "5"], "--temperature", "5", "from 0 to 2"),
        (["run", "hi", "--temperature", "nan"], "--temperature", "'nan'", "from 0 to 2"),
        (["run", "hi", "--timeout", "0"], "--timeout", "0", "above 0"),
        (["chat", "--context-size", "1"], "--context-size", "1", "from 256 to"),
        (["serve", "--port", "0"], "--port", "0", "from 1 to 65535"),
        (["serve", "--max-calls", "0"], "--max-calls", "0", "at least 1"),
        (["serve", "--max-layers", "1"], "--max-layers", "1", "at least 2"),
        (["serve", "--header-timeout", "0"], "--header-timeout", "0", "at least 0.1"),
        (["ui", "--port", "70000"], "--port", "70000", "from 1 to 65535"),
        (["eval", "-s", "moa-lite", "--limit", "0"], "--limit", "0", "at least 1"),
    ],
)
def test_an_option_out_of_range_is_a_usage_error_in_one_sentence(
    monkeypatch, capsys, args, flag, value, span
):
    # --samples and --layers out of range exited 1 in pydantic's words, after the config was
    # built; --max-tokens 0 exited 2, but in pydantic's words too, without the value given.
    status, err = run_main(monkeypatch, capsys, *args)
    shown = " ".join(err.split())
    assert status == 2, shown
    assert f"Invalid value for '{flag}': {value} " in shown and span in shown, shown
    assert "Input should" not in shown and "Traceback" not in shown


TYPE_NOISE = r"<(?:list\[|str|int|float|path|Path|bool|datetime)[^>]*>"


@pytest.mark.parametrize(
    "command", [[], ["run"], ["chat"], ["models"], ["eval"], ["serve"], ["ui"]]
)
def test_help_names_each_value_in_words_not_its_python_type(command):
    # `moa eval --help` showed "-s <list[str]>", `moa serve --help` "--config <list[Path]>":
    # Python's types, where the reader needs to know what to write.
    import re

    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert not re.findall(TYPE_NOISE, result.output), result.output
    if command == ["eval"]:
        assert "-s SYSTEM" in " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize("command", ["serve", "ui"])
def test_serve_says_on_stderr_when_a_local_model_starts(monkeypatch, capsys, command):
    # A local model's server started on the first request without a word (about 7 s): the
    # operator saw a request hang. The runtime's info lines now reach stderr while serving,
    # and the logger is left as it was afterwards.
    import logging

    from langgraph_moa.cli import _ui
    from langgraph_moa.serving import _server as serving

    local = logging.getLogger("langgraph_moa.local")
    level = local.level

    def serve(presets, **kwargs):
        logging.getLogger("langgraph_moa.local.runtime").info("starting local:m (0.1 GB)")
        logging.getLogger("langgraph_moa.local.runtime").debug("not for the operator")

    monkeypatch.setattr(serving, "serve", serve)
    monkeypatch.setattr(_ui, "_check_port_free", lambda port: None)
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)  # keep pytest's Ctrl-C
    monkeypatch.setattr(cli.sys, "argv", ["moa", command, *(["--no-open"] * (command == "ui"))])
    cli.main()  # served and returned: no exit code
    err = capsys.readouterr().err
    assert "starting local:m (0.1 GB)" in err, err
    assert "not for the operator" not in err and "warning" not in err
    assert local.level == level and not [h for h in local.handlers if "Notes" in type(h).__name__]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "hi", "-p", "moa-lite", "-c", "x.yaml"], "Give either --preset or --config"),
        (["run", "hi", "--variant", "select", "--aggregator", "local:x"], "--aggregator has no"),
        (["run", "hi", "--variant", "moa", "--method", "vote"], "--method chooses how"),
        (["run", "hi", "--variant", "self-moa", "--layers", "3"], "--layers 3 does not apply"),
        (["run", "hi", "--file", "q.txt"], "either as an argument or with --file"),
        (["run", "hi", "--samples", "3", "--temperature", "0"], "--samples 3 at --temperature 0"),
        (["serve", "--api-key", " "], "'--api-key' (env var: 'MOA_API_KEY'): The API key is empty"),
        (["eval", "-s", "moa-lite", "--dataset", "d", "--langsmith-dataset", "n"], "--dataset or"),
    ],
)
def test_options_that_contradict_each_other_are_a_usage_error(monkeypatch, capsys, args, message):
    """A contradiction among options is a usage error, exit 2 as click's own; exit 1 is a
    failed run. The one line still names both options (or the empty one) and the fix."""
    status, err = run_main(monkeypatch, capsys, *args)
    assert status == 2 and message in err.replace("\n", " "), err
    assert "Traceback" not in err and "unexpected" not in err


def test_a_negative_zero_temperature_is_read_as_zero():
    # '--temperature -0' passed the range check as -0.0: the header said 'T -0' and every
    # proposer call was sent temperature -0.0. It is read as 0, as the schema means it.
    import math

    from langgraph_moa.cli._ranges import parse_number

    temperature = parse_number(float, 0.0, 2.0)("-0")
    assert temperature == 0 and math.copysign(1.0, temperature) == 1.0
    cfg = build_config(None, None, proposers="openai:gpt-4o-mini", temperature=temperature)
    assert "T 0)" in describe(cfg) and "T -0" not in describe(cfg)


@pytest.mark.parametrize(
    ("value", "message"),
    [("", "MOA_API_KEY is set but empty"), ("   ", "The API key is empty")],
)
def test_an_empty_key_from_the_environment_is_refused_not_taken_for_no_key(
    monkeypatch, capsys, value, message
):
    """MOA_API_KEY="" (a secret that a deployment failed to fill in) was read by click as no
    key at all: on loopback the server then let every client in without a word."""
    monkeypatch.setenv("MOA_API_KEY", value)
    status, err = run_main(monkeypatch, capsys, "serve")
    assert status == 2 and message in " ".join(err.split()), err
    assert "MOA_API_KEY" in err and "Traceback" not in err


def test_an_empty_key_variable_is_checked_only_where_the_command_line_reads_it(monkeypatch):
    """`serve` called in-process reads no variable, so MOA_API_KEY="" does not refuse it."""
    import typer

    from langgraph_moa.cli._serve import no_empty_key_variable

    monkeypatch.setenv("MOA_API_KEY", "")
    assert no_empty_key_variable("secret") == "secret"  # --api-key given: the variable unread
    with pytest.raises(typer.BadParameter, match="MOA_API_KEY is set but empty"):
        no_empty_key_variable(None)
    monkeypatch.delenv("MOA_API_KEY")
    assert no_empty_key_variable(None) is None


def test_serve_takes_its_run_cap_from_a_flag_or_moa_max_runs(monkeypatch, capsys):
    from typer.testing import CliRunner

    from langgraph_moa.serving import _server as serve

    seen = {}
    monkeypatch.setattr(serve, "serve", lambda presets, **kwargs: seen.update(kwargs))
    monkeypatch.delenv("MOA_MAX_RUNS", raising=False)
    assert CliRunner().invoke(cli.app, ["serve"]).exit_code == 0
    assert seen["security"].max_runs == 256
    assert CliRunner().invoke(cli.app, ["serve", "--max-runs", "3"]).exit_code == 0
    assert seen["security"].max_runs == 3
    monkeypatch.setenv("MOA_MAX_RUNS", "7")
    assert CliRunner().invoke(cli.app, ["serve"]).exit_code == 0
    assert seen["security"].max_runs == 7
    seen.clear()
    monkeypatch.setenv("MOA_MAX_RUNS", "0")
    status, err = run_main(monkeypatch, capsys, "serve")
    assert status == 2 and "'--max-runs' (env var: 'MOA_MAX_RUNS'): 0 is out of range" in err
    assert "Traceback" not in err and not seen


@pytest.mark.parametrize("command", ["serve", "ui"])
def test_the_history_cap_is_an_operator_setting_checked_as_the_command_line_is_read(
    monkeypatch, capsys, tmp_path, command
):
    """The page's history kept 1000 runs, a number set only in code: --history-runs (or
    MOA_HISTORY_RUNS) sets it for moa serve and moa ui, and out of range is a usage error."""
    from typer.testing import CliRunner

    from langgraph_moa.cli import _ui
    from langgraph_moa.serving import _server as serve

    seen = {}
    monkeypatch.setattr(serve, "serve", lambda presets, **kwargs: seen.update(kwargs))
    monkeypatch.setattr(_ui, "_check_port_free", lambda port: None)
    monkeypatch.delenv("MOA_HISTORY_RUNS", raising=False)
    base = [command, *(["--no-open"] * (command == "ui"))]
    assert CliRunner().invoke(cli.app, base).exit_code == 0
    assert seen["history_runs"] == 1000
    assert CliRunner().invoke(cli.app, [*base, "--history-runs", "5"]).exit_code == 0
    assert seen["history_runs"] == 5
    monkeypatch.setenv("MOA_HISTORY_RUNS", "9")
    assert CliRunner().invoke(cli.app, base).exit_code == 0
    assert seen["history_runs"] == 9
    monkeypatch.delenv("MOA_HISTORY_RUNS")
    assert CliRunner().invoke(cli.app, [*base, "--history-runs", "0"]).exit_code == 0
    assert seen["history_runs"] == 0  # no history kept (`_open_history`)
    for bad in ("-1", "1000001", "many"):
        seen.clear()
        status, err = run_main(monkeypatch, capsys, *base, "--history-runs", bad)
        assert status == 2 and "'--history-runs'" in err and "from 0 to 1000000" in err, err
        assert "Traceback" not in err and not seen


def test_the_server_opens_its_history_with_the_operators_cap(tmp_path):
    from langgraph_moa.serving._history import History, RunRecord
    from langgraph_moa.serving._server import _open_history

    history = _open_history(tmp_path / "h.db", 2)
    for i in range(3):
        history.save(RunRecord(f"r{i}", "m", "q"))
    assert {run["id"] for run in history.list()} == {"r1", "r2"}  # the oldest deleted
    assert isinstance(history, History) and history.keep == 2


def test_a_second_ctrl_c_while_the_first_is_said_still_says_interrupted_once(monkeypatch, capfd):
    import signal

    # The second Ctrl-C ran the handler again in the middle of the first one's line: rich
    # held both lines in its buffer, and the exit dropped them, so the user saw nothing.
    from langgraph_moa.cli import _app
    from langgraph_moa.local.runtime import LocalRuntime

    monkeypatch.setattr(LocalRuntime, "_default", None)
    monkeypatch.setattr(_app.out, "interrupt_hint", " What finished is kept.")
    monkeypatch.setattr(_app, "_unsaid", [])

    class Exited(BaseException):
        pass

    said = []

    def exit_now(code):  # as os._exit: what is still in a buffer is lost
        said.append((code, capfd.readouterr().err))
        raise Exited

    monkeypatch.setattr(_app.os, "_exit", exit_now)
    real_write = _app.os.write
    pressed = []

    def write_pressed_again(fd, data):
        if not pressed:  # the second Ctrl-C comes before the first one's line is out
            pressed.append(True)
            _app._on_interrupt(signal.SIGINT, None)
        return real_write(fd, data)

    monkeypatch.setattr(_app.os, "write", write_pressed_again)
    with pytest.raises(Exited):
        _app._on_interrupt(signal.SIGINT, None)
    code, err = said[0]
    assert code == 130 and err.count("Interrupted.") == 1, err
    assert "What finished is kept." in err and "Traceback" not in err
    monkeypatch.setattr(_app.os, "write", real_write)
    monkeypatch.setattr(_app, "_unsaid", [])
    with pytest.raises(Exited):
        _app._on_interrupt(signal.SIGINT, None)  # the line is out, then Ctrl-C again
    with pytest.raises(Exited):
        _app._on_interrupt(signal.SIGINT, None)
    assert [(code, err.count("Interrupted.")) for code, err in said[1:]] == [(130, 1), (130, 0)]


def test_a_stopped_eval_says_when_the_report_there_is_an_earlier_runs(tmp_path):
    # A folder with a finished run's report.md, then a longer run stopped: that report
    # could be read as this run's.
    from types import SimpleNamespace

    from langgraph_moa.cli._eval import _resume_command, _stopped

    evaluation = SimpleNamespace(items=[1, 2, 3], finished={"mix": 3, "alone": 1})
    resume = _resume_command("moa eval -s mix", True, tmp_path / "cal.json", True)
    assert resume == f"moa eval -s mix --no-plots --calibration-out {tmp_path / 'cal.json'} --quiet"
    said = _stopped(evaluation, tmp_path, resume)
    assert said.startswith(" Finished: mix 3 of 3 items, alone 1 of 3. What finished is kept")
    assert "report.md" not in said and said.endswith(f"only the rest: {resume}")
    (tmp_path / "report.md").write_text("# an earlier run")
    said = _stopped(evaluation, tmp_path, resume)
    assert (
        "(a stopped run writes no summary or report; the report.md there is an earlier run's)"
        in said
    )


def test_ctrl_c_just_after_a_progress_line_does_not_write_that_line_again(monkeypatch, capfd):
    # Ctrl-C came while rich wrote a progress line and before it emptied its buffer: the
    # handler's line went through that buffer, and the progress line was written twice.
    import io
    import signal

    from langgraph_moa.cli import _app
    from langgraph_moa.local.runtime import LocalRuntime

    monkeypatch.setattr(LocalRuntime, "_default", None)
    monkeypatch.setattr(_app, "_unsaid", [])

    class Exited(BaseException):
        pass

    class Stderr(io.StringIO):
        def write(self, text):
            written = super().write(text)
            if "2/6 items" in text:  # written; rich has not emptied its buffer yet
                _app._on_interrupt(signal.SIGINT, None)
            return written

    stderr = Stderr()
    monkeypatch.setattr(sys, "stderr", stderr)  # the console writes to sys.stderr as it is then
    said = []

    def exit_now(code):  # as os._exit: what is still in a buffer is lost
        said.append(stderr.getvalue() + capfd.readouterr().err)
        raise Exited

    monkeypatch.setattr(_app.os, "_exit", exit_now)
    with pytest.raises(Exited):
        _app.out.plain("mix: 2/6 items, 3s; fact-02: wrong")
    assert said[0].count("mix: 2/6 items") == 1 and said[0].count("Interrupted.") == 1, said


def _shell_words(command: str, **variables: str) -> list[str]:
    """Return the words bash splits `command` into, with `variables` set."""
    import os
    import subprocess

    return subprocess.run(
        ["bash", "-c", f"for w in {command}; do printf '%s\\0' \"$w\"; done"],
        env={**os.environ, **variables},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")[:-1]


@pytest.mark.parametrize(
    "key",
    [
        "sk-secret-0123456789",
        "ab'cd-secret-tail",
        'ab"cd-secret-tail',
        "ab cd-secret-tail",
        "a<b>-secret-tail",
    ],
)
def test_a_stopped_evals_resume_command_shows_no_part_of_a_urls_key_and_still_runs(tmp_path, key):
    # The resume command showed `?key=[redacted]`, which, typed as shown, sent "[redacted]"
    # as the key; and a key holding a quote, a space or "<>" had its rest shown, as
    # `redact_url` ends a value there in running text. The command reads each key from a
    # variable now: it holds no part of a key, and the shell gives back the words it was.
    from types import SimpleNamespace

    from langgraph_moa._redact import keyless_command, redact_spec
    from langgraph_moa.cli._eval import _command, _resume_command, _stopped

    spec = f"single:m@https://api.example/v1?key={key}&alt=json"
    other = "single:n@https://h2.example/v1?key=second-secret-key"
    systems = [spec, other, "mix"]
    args = (systems, None, None, tmp_path, 2, 1, spec, spec, None, False)
    command = keyless_command(_command(*args))  # as Evaluation keeps it
    resume = _resume_command(command, True, None, False)
    said = _stopped(
        SimpleNamespace(items=[1, 2], finished={redact_spec(s): 1 for s in systems}),
        tmp_path,
        resume,
    )
    assert "secret" not in said and "[redacted]" not in resume
    assert said.endswith(
        "(no key is shown: the command reads each URL's key from its variable, "
        "$MOA_URL_KEY and $MOA_URL_KEY_2: set them to your keys before running it)"
    )
    words = _shell_words(resume, MOA_URL_KEY=key, MOA_URL_KEY_2="second-secret-key")
    expected = ["moa", "eval", "--system", spec, "--system", other, "--system", "mix"]
    assert words[: len(expected)] == expected
    assert words[words.index("--judge") + 1] == spec == words[words.index("--baseline") + 1]
    assert words[-1] == "--no-plots"
    keyless = _resume_command(
        _command(["single:m@http://127.0.0.1:9/v1"], *args[1:6], None, None, None, False),
        False,
        None,
        False,
    )
    assert "MOA_URL_KEY" not in keyless
    assert "variable" not in _stopped(
        SimpleNamespace(items=[1], finished={"m": 1}), tmp_path, keyless
    )


def test_the_variables_a_resume_command_reads_are_listed_as_a_sentence_lists():
    from langgraph_moa.cli._eval import _key_left_out

    # Three were "$MOA_URL_KEY and $MOA_URL_KEY_2 and $MOA_URL_KEY_3".
    said = _key_left_out("moa eval " + " ".join(f"${{MOA_URL_KEY{n}}}" for n in ("", "_2", "_3")))
    assert "from its variable, $MOA_URL_KEY, $MOA_URL_KEY_2 and $MOA_URL_KEY_3: set them" in said


def test_a_resume_command_keeps_a_path_that_looks_like_a_url_with_a_key(tmp_path):
    # Every word holding ";token=" or "?key=" had it read from $MOA_URL_KEY, paths too: the
    # command no longer ran the evaluation it came from. Only a model spec's URL key is.
    import shlex

    from langgraph_moa.cli._eval import _command

    spec = "single:m@https://api.example/v1?key=secret-key-1"
    dataset, out_dir = tmp_path / "items;token=x.jsonl", tmp_path / "runs?key=abc"
    prices = tmp_path / "p;sig=1.yaml"
    args = ([spec], dataset, None, out_dir, None, 1, spec, spec, prices, False)
    words = shlex.split(_command(*args))
    assert words[words.index("--dataset") + 1] == str(dataset)
    assert words[words.index("--out") + 1] == str(out_dir)
    assert words[words.index("--prices") + 1] == str(prices)
    for option in ("--system", "--judge", "--baseline"):
        assert words[words.index(option) + 1] == spec.replace("secret-key-1", "${MOA_URL_KEY}")


def test_a_resume_command_keeps_a_system_config_path_holding_a_key_parameter(tmp_path):
    # A --system config path holding "?key=" (no URL) had its "key" read from
    # $MOA_URL_KEY: the command no longer named the config it ran. Only a URL's key is.
    import shlex

    from langgraph_moa._redact import keyless_command
    from langgraph_moa.cli._eval import _command

    config = str(tmp_path / "exp?key=2" / "moa.yaml")
    command = _command([config], None, None, tmp_path, None, 1, None, None, None, False)
    assert shlex.split(command)[3] == config
    given = shlex.join(["moa", "eval", f"--system={config}", "-s", config])
    assert keyless_command(command) == command and keyless_command(given) == given


def test_a_resume_command_reads_its_keys_from_names_no_literal_text_holds(tmp_path):
    # A path written verbatim holding "?key=${MOA_URL_KEY}" reserved that name, and the line
    # said to set $MOA_URL_KEY (a folder's text, never read) as well as the key's own
    # variable; one holding "${MOA_URL_KEY}" without "?key=" shared the key's name.

    from langgraph_moa.cli._eval import _command, _key_left_out

    out_dir = tmp_path / "k?key=${MOA_URL_KEY}" / "${MOA_URL_KEY_2}"
    spec = "single:m@https://api.example/v1?key=secret-key-1"
    command = _command([spec], None, None, out_dir, None, 1, None, None, None, False)
    assert _key_left_out(command).endswith("$MOA_URL_KEY_3: set it to your key before running it)")
    words = _shell_words(command, MOA_URL_KEY_3="secret-key-1")
    assert words[3] == spec and words[words.index("--out") + 1] == str(out_dir)


def test_a_stop_while_judging_says_judging_was_under_way_and_how_far(tmp_path):
    # Ctrl-C while the judge was asked said "Finished: mix 6 of 6 items ... run the same
    # command again to answer only the rest": nothing said that judging had begun.
    import asyncio

    from langgraph_moa import MoAConfig
    from langgraph_moa.cli._eval import _stopped
    from langgraph_moa.eval import EvalItem, Evaluation
    from tests.fakes import FakeChat

    items = [EvalItem(id=str(i), turns=[f"Say {i}."], expected=[str(i)]) for i in range(4)]

    def system(name):
        return MoAConfig(
            name=name,
            variant="single-proposer",
            proposers=[FakeChat(label=f"{name}-p", reply=lambda *_: "An answer.")],
            aggregator=FakeChat(label=f"{name}-a", reply=lambda *_: "An answer."),
        )

    said = []

    def verdict(*_):
        if evaluation.judging[1] == 2 and not said:  # the third pair's first verdict
            said.append(_stopped(evaluation, tmp_path, "moa eval ..."))
        return "A"

    evaluation = Evaluation(
        [system("mix"), system("alone")],
        items,
        tmp_path,
        judge=FakeChat(label="judge", reply=verdict),
        baseline="alone",
        concurrency=1,
    )
    asyncio.run(evaluation.run(progress=False))
    assert said == [
        " Every answer was done (mix 4 of 4 items, alone 4 of 4); stopped while judging mix "
        f"against alone: 2 of 4 pairs judged. What finished is kept in {tmp_path} (a stopped "
        "run writes no summary or report): run the same command again to judge only the rest "
        "(the answers and the verdicts given are cached): moa eval ..."
    ]


def test_version_is_read_once_for_the_command_and_an_evaluations_provenance(monkeypatch):
    # `moa --version` and provenance.json each read the installed version their own way:
    # two copies of one rule, free to drift apart (one said "(not installed ...)").
    from typer.testing import CliRunner

    import langgraph_moa
    from langgraph_moa.eval import provenance

    # The package's `__version__` is the one copy (the build writes it into the metadata);
    # the installed metadata is not read: an editable install's goes stale, and a source
    # tree run without installing has none ("not installed as a package" was recorded).
    monkeypatch.setattr(langgraph_moa, "__version__", "9.8.7")
    result = CliRunner().invoke(cli.app, ["--version"])
    assert result.exit_code == 0 and result.stdout == "langgraph-moa 9.8.7\n"
    assert provenance.package_version() == "9.8.7"


def test_the_short_version_flag_and_python_dash_m_say_the_same_version():
    # `moa -V` was "No such option: -V", though -V is how many commands are asked.
    import subprocess
    import sys

    from typer.testing import CliRunner

    import langgraph_moa

    said = f"langgraph-moa {langgraph_moa.__version__}\n"
    for flag in ("--version", "-V"):
        result = CliRunner().invoke(cli.app, [flag])
        assert (result.exit_code, result.stdout) == (0, said), (flag, result.output)
    done = subprocess.run(
        [sys.executable, "-m", "langgraph_moa", "-V"], capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, said, "")


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_the_version_flag_with_stdout_closed_ends_quietly(monkeypatch, flag):
    # `moa -V >&-`: with no stdout at all, Python's sys.stdout is None, and the fast path
    # ended in a traceback (AttributeError: 'NoneType' ... 'write'), exit 1, where
    # `moa run ... >&-` and `moa -V | true` end quietly.
    from langgraph_moa.cli import main

    monkeypatch.setattr(sys, "argv", ["moa", flag])
    monkeypatch.setattr(sys, "stdout", None)
    main()


def test_a_chat_piped_with_windows_line_ends_reads_as_with_unix_ones(monkeypatch):
    # `moa chat < script.txt` with a file saved on Windows: off Windows, stdin splits lines
    # at "\n" only, so each line kept its "\r": a message ended in "\r", and a line ending
    # in "\\" was not continued (its last character was "\r").
    import io

    from langgraph_moa.cli._chat import LineReader

    data = b'hello\r\nfirst \\\r\nsecond\r\n"""\r\na\r\nb\r\n"""\r\n'
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), newline="\n"))
    reader = LineReader()
    reader.interactive = False
    assert [reader.message() for _ in range(3)] == ["hello", "first \nsecond", "a\nb"]


def test_piped_chat_refuses_a_message_that_is_not_utf8_and_reads_the_next(monkeypatch):
    # `moa chat < turns.txt` with one bad byte: stdin decodes a whole buffer at a time, so
    # the error took every message in it (here all): the chat refused one and ended, exit 0,
    # with the others never sent. A block is refused whole, not line by line.
    import io

    from langgraph_moa.cli._chat import LineReader

    data = b'hi\n"""\nline1 \xff\nline2\n"""\nhello\nbad \xfe\nbye\n'
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), newline="\n"))
    reader = LineReader()
    reader.interactive = False
    read: list[str] = []
    for _ in range(6):
        try:
            read.append(reader.message())
        except UnicodeError:
            read.append("(refused)")
        except EOFError:
            break
    assert read == ["hi", "(refused)", "hello", "(refused)", "bye"]


def test_a_terminal_block_with_a_line_that_is_not_utf8_is_refused_whole(monkeypatch):
    # Outside Python's UTF-8 mode a terminal's input() raises on such a line, not keeping it
    # as surrogates: the block stopped there, and its later lines went out as messages.
    lines = iter(['"""', b"caf\xe9", "more", '"""', "hello"])

    def typed(prompt: str = "") -> str:
        line = next(lines)
        if isinstance(line, bytes):
            raise UnicodeDecodeError("utf-8", line, 3, 4, "invalid continuation byte")
        return line

    reader = _terminal_reader(monkeypatch, typed)
    with pytest.raises(UnicodeError):
        reader.message()
    assert reader.message() == "hello"


def test_a_question_with_windows_line_ends_reaches_the_models_with_unix_ones(tmp_path, monkeypatch):
    # `moa run -` or --file with text saved on Windows: the bytes are read as they are, so
    # every line of the question, its last included, ended in "\r" for the models.
    import io

    from langgraph_moa.cli._run import read_question

    data = b"line one\r\nline two\r\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert read_question("-", None) == "line one\nline two\n"
    question = tmp_path / "q.txt"
    question.write_bytes(data)
    assert read_question(None, question) == "line one\nline two\n"


def test_a_question_saved_with_a_byte_order_mark_reaches_the_models_without_it(
    tmp_path, monkeypatch
):
    # Windows Notepad starts UTF-8 files with a byte order mark: it reached the models as
    # an invisible first character of the question.
    import io

    from langgraph_moa.cli._run import read_question

    data = "\ufeffWhy is the sky blue?".encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert read_question("-", None) == "Why is the sky blue?"
    question = tmp_path / "q.txt"
    question.write_bytes(data)
    assert read_question(None, question) == "Why is the sky blue?"


def test_the_version_flag_imports_nothing_heavy():
    # `moa --version` imported the whole command first (typer, rich, langchain, langgraph,
    # openai: over a thousand modules), seconds on a loaded machine for one line.
    import subprocess
    import sys

    import langgraph_moa

    probe = (
        "import json, sys\n"
        "sys.argv = ['moa', sys.argv[1]]\n"
        "from langgraph_moa.cli import main\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    sys.stderr.write(json.dumps(sorted(sys.modules)))\n"
    )
    for flag in ("--version", "-V"):
        done = subprocess.run(
            [sys.executable, "-c", probe, flag], capture_output=True, text=True, timeout=120
        )
        assert (done.returncode, done.stdout) == (0, f"langgraph-moa {langgraph_moa.__version__}\n")
        loaded = json.loads(done.stderr)
        heavy = [
            m
            for m in loaded
            if m.split(".")[0]
            in {
                "typer",
                "click",
                "rich",
                "langchain_core",
                "langgraph",
                "openai",
                "httpx",
                "pydantic",
            }
        ]
        assert heavy == [], flag
        ours = [m for m in loaded if m.startswith("langgraph_moa")]
        assert ours == ["langgraph_moa", "langgraph_moa.cli"], flag


def test_chat_load_refuses_a_file_past_its_limit_in_one_sentence(monkeypatch, tmp_path, capsys):
    # /load read any file whole: a multi-gigabyte log (or /dev/zero) given by mistake was
    # read into memory before anything was said.
    from langgraph_moa.cli import _chat

    monkeypatch.setattr(_chat, "MAX_LOAD_BYTES", 64, raising=False)
    history = [_chat.HumanMessage("kept")]
    big = tmp_path / "big.json"
    big.write_text('[{"role": "human", "content": "' + "x" * 64 + '"}]')
    assert _chat.load(str(big), history) is history
    said = " ".join(capsys.readouterr().err.split())
    assert str(big) in said and "64 bytes" in said and "unchanged" in said
    small = tmp_path / "small.json"
    small.write_text('[{"role": "human", "content": "new"}]')
    assert [m.text for m in _chat.load(str(small), history)] == ["new"]


def test_chat_save_says_when_it_writes_more_than_load_reads_back(monkeypatch, tmp_path, capsys):
    # /load refuses a file over its limit, and /save wrote one without a word: a long chat
    # was kept in a file its own /load then refused.
    from langgraph_moa.cli import _chat

    monkeypatch.setattr(_chat, "MAX_LOAD_BYTES", 64, raising=False)
    path = tmp_path / "chat.json"
    _chat.save([_chat.HumanMessage("x" * 64)], str(path))
    said = " ".join(capsys.readouterr().err.split())
    assert path.exists() and "/load" in said and "64 bytes" in said and "oldest" in said
    _chat.save([_chat.HumanMessage("short")], str(path))
    assert "/load" not in capsys.readouterr().err


@pytest.mark.parametrize("layer", [1, 2])
def test_chat_names_context_window_where_the_proposals_overflowed(layer):
    # moa serve's 400 names context_window, fewer proposers or layers where the calls that
    # overflowed read the proposals (a later layer, the aggregator); moa chat said only to
    # drop the oldest turns, which a one-line question in a fresh chat cannot.
    from langgraph_moa.cli._chat import _going_on
    from langgraph_moa.errors import AllProposersFailedError, ContextLengthError
    from langgraph_moa.run._accounting import failed_record

    too_long = ContextLengthError("The input is too long")
    record = failed_record(
        role="proposer", layer=layer, proposer=0, sample=0, configured_model="A", error=too_long
    )
    said = _going_on(AllProposersFailedError(layer, [record]))
    assert "/save" in said and "oldest turns" in said
    assert ("context_window" in said) == (layer > 1)
    assert ("fewer proposers or layers" in said) == (layer > 1)
