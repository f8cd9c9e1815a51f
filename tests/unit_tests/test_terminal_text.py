"""Untrusted text (answers, provider errors, model names) shown on a terminal cannot act on it.

An ESC in a model's answer or a provider's error message is a terminal escape sequence: it
can clear the screen, retitle the window or hide a link. On a terminal such characters are
spelled out; machine output (--json, a pipe) keeps the answer's exact text.
"""

import json

from langgraph_moa.cli import _app as cli
from langgraph_moa.cli._output import Output

HOSTILE = (
    "plain\x1b]0;owned\x07 \x1b[2J\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\ a\rb \u202eevil\x9b"
)
"""A title change, a screen clear, an OSC 8 hyperlink, a line overwritten, a bidi override
and a C1 CSI."""
ACTING = ("\x1b", "\x07", "\r", "\u202e", "\x9b")


def run_main(monkeypatch, capsys, *args):
    monkeypatch.setattr(cli.signal, "signal", lambda *a: None)  # keep pytest's Ctrl-C
    monkeypatch.setattr(cli.sys, "argv", ["moa", *args])
    try:
        cli.main()
        status = 0
    except SystemExit as exited:
        status = exited.code or 0
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def on_a_terminal(monkeypatch, stdout: bool) -> None:
    monkeypatch.setattr(Output, "stdout_is_terminal", property(lambda self: stdout))


def hostile_config(fake, *, failing: bool = False):
    from langgraph_moa.config._schema import MoAConfig

    def down(n, messages):
        return RuntimeError(f"Error code: 500 - {HOSTILE}") if failing else None

    return MoAConfig(
        proposers=[fake("A", fail=down), fake("B")],
        aggregator=fake("AGG", reply=lambda label, n, messages: f"answer {HOSTILE}\r\nend"),
        layers=2,
        retry={"max_attempts": 1},
    )


def test_an_answer_shown_on_a_terminal_spells_out_its_control_characters(monkeypatch, capsys, fake):
    from langgraph_moa.cli import _run

    monkeypatch.setattr(_run, "build_config", lambda *a, **k: hostile_config(fake))
    on_a_terminal(monkeypatch, stdout=True)
    status, shown, _ = run_main(monkeypatch, capsys, "run", "-q", "--no-stream", "hi")
    assert status == 0
    assert not any(char in shown for char in ACTING), repr(shown)
    assert "\\x1b]0;owned\\x07" in shown and "\\u202eevil\\x9b" in shown and "a\\x0db" in shown
    assert shown.endswith("\nend\n")  # a CRLF line end is a line break, not spelled out


def test_an_answer_piped_or_as_json_keeps_its_exact_text(monkeypatch, capsys, fake):
    from langgraph_moa.cli import _run

    monkeypatch.setattr(_run, "build_config", lambda *a, **k: hostile_config(fake))
    on_a_terminal(monkeypatch, stdout=False)
    _, piped, _ = run_main(monkeypatch, capsys, "run", "-q", "--no-stream", "hi")
    assert piped == f"answer {HOSTILE}\r\nend\n"
    on_a_terminal(monkeypatch, stdout=True)
    _, as_json, _ = run_main(monkeypatch, capsys, "run", "-q", "--json", "hi")
    assert json.loads(as_json)["answer"] == f"answer {HOSTILE}\r\nend"


def test_a_providers_error_on_stderr_cannot_act_on_the_terminal(monkeypatch, capsys, fake):
    from langgraph_moa.cli import _run

    monkeypatch.setattr(_run, "build_config", lambda *a, **k: hostile_config(fake, failing=True))
    on_a_terminal(monkeypatch, stdout=False)
    status, _, err = run_main(monkeypatch, capsys, "run", "--no-stream", "hi")
    assert status == 0 and "1 of 3 calls failed" in err.replace("\n", " ")
    assert "\x1b" not in err and "\x07" not in err and "\u202e" not in err, repr(err)
    assert "\\x1b]0;owned" in err  # spelled out, not dropped: the reader sees what came


def test_the_live_view_spells_out_what_models_and_providers_wrote(fake):
    from rich.console import Console

    from langgraph_moa import MoAConfig
    from tests.helpers import watched_progress

    def down(n, messages):
        return RuntimeError(f"Error code: 500 - {HOSTILE}")

    config = MoAConfig(
        proposers=[fake("A", reply=lambda *a: HOSTILE), fake("B", fail=down)],
        aggregator=fake("AGG", reply=lambda *a: HOSTILE, reported_model=f"m{HOSTILE}"),
        layers=2,
        retry={"max_attempts": 1},
    )
    progress = watched_progress(config)
    assert progress.answer == HOSTILE  # the view's own copy; the command prints it whole
    for view in (progress, progress.summary(), progress.cut_off()):
        screen = Console(file=None, width=400, color_system=None, record=True)
        with screen.capture() as captured:
            screen.print(view)
        shown = captured.get()
        assert not any(char in shown for char in ACTING), repr(shown)
    assert "\\x1b]0;owned" in shown  # the answer so far, spelled out


def test_the_eval_report_shown_on_a_terminal_spells_out_a_providers_error(
    monkeypatch, capsys, tmp_path
):
    from langgraph_moa import MoAConfig
    from langgraph_moa.eval import runner
    from tests.fakes import FakeChat

    down = FakeChat(label="p", fail=lambda n, m: RuntimeError(f"Error code: 500 - {HOSTILE}"))
    config = MoAConfig(name="down", variant="single-proposer", proposers=[down], aggregator=down)
    monkeypatch.setattr(
        runner, "resolve_system", lambda spec, cache: runner._system(spec, config, cache)
    )
    data = tmp_path / "alpha.jsonl"
    data.write_text('{"instruction": "Say alpha0.", "expected": ["alpha0"]}\n')
    args = [
        "eval",
        "-s",
        "down",
        "--dataset",
        str(data),
        "--no-plots",
        "--out",
        str(tmp_path / "o"),
    ]
    on_a_terminal(monkeypatch, stdout=True)
    status, shown, err = run_main(monkeypatch, capsys, *args)
    assert status == 1 and "the first error: All 1 proposer calls" in shown
    assert not any(char in shown + err for char in ACTING), repr(shown)
    assert "\\x1b]0;owned" in shown
    assert "\x1b]0;owned" in (tmp_path / "o" / "report.md").read_text()  # the file keeps what came


def test_an_eval_out_path_with_brackets_is_named_as_it_is_after_the_run(
    monkeypatch, capsys, tmp_path
):
    """Rich read "[/x]" in a path as a closing tag: a MarkupError after the whole run."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.eval import runner
    from tests.fakes import FakeChat

    model = FakeChat(label="p", reply=lambda *_: "The code word is alpha0.")
    config = MoAConfig(name="one", variant="single-proposer", proposers=[model], aggregator=model)
    monkeypatch.setattr(
        runner, "resolve_system", lambda spec, cache: runner._system(spec, config, cache)
    )
    data = tmp_path / "alpha.jsonl"
    data.write_text('{"instruction": "Say alpha0.", "expected": ["alpha0"]}\n')
    out_dir = tmp_path / "runs[/x][bold]v2"
    (tmp_path / "cal[").mkdir()
    calibration = tmp_path / "cal[/y].json"
    args = ["eval", "-s", "single:p", "--dataset", str(data), "--no-plots", "--out", str(out_dir)]
    status, _, err = run_main(monkeypatch, capsys, *args, "--calibration-out", str(calibration))
    assert status == 0, err
    assert "unexpected error" not in err and "Traceback" not in err
    said = " ".join(err.split())
    assert f"results: {out_dir}/results" in said and f"calibration: {calibration}" in said


def test_an_unexpected_errors_message_cannot_act_on_the_terminal(monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise RuntimeError(f"upstream said {HOSTILE}")

    monkeypatch.setattr(cli, "app", boom)
    status, _, err = run_main(monkeypatch, capsys, "models")
    assert status == 1 and "unexpected error: RuntimeError: upstream said" in err
    assert not any(char in err for char in ACTING), repr(err)
    assert "\\x1b]0;owned" in err


def test_the_eval_progress_bar_shows_a_system_name_with_brackets_as_it_is(
    monkeypatch, capsys, tmp_path
):
    """The bar read its system's name as markup: "[/v2]" in a config's name: was a crash."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.eval import runner
    from tests.fakes import FakeChat

    model = FakeChat(label="p", reply=lambda *_: "The code word is alpha0.")
    name = "mix [/v2] [bold]"
    config = MoAConfig(name=name, variant="single-proposer", proposers=[model], aggregator=model)
    monkeypatch.setattr(
        runner, "resolve_system", lambda spec, cache: runner._system(spec, config, cache)
    )
    monkeypatch.setattr(Output, "stderr_is_terminal", property(lambda self: True))
    data = tmp_path / "alpha.jsonl"
    data.write_text('{"instruction": "Say alpha0.", "expected": ["alpha0"]}\n')
    args = ["eval", "-s", name, "--dataset", str(data), "--no-plots", "--out", str(tmp_path / "o")]
    status, shown, err = run_main(monkeypatch, capsys, *args)
    assert status == 0, err
    assert "unexpected error" not in err and f"{name} ━" in err
    assert f"| {name} | 1/1 |" in shown


def test_text_in_any_script_is_shown_as_it_is():
    """Only what acts on a terminal is spelled out: scripts, emoji sequences, combining marks,
    tabs and the bidi marks (U+200E, U+200F) that right-to-left text needs stay."""
    from langgraph_moa._terminal import for_terminal

    text = (
        "مرحبا بالعالم \u200fשלום עולם\u200e 你好，世界 こんにちは 안녕 Привет\n"  # noqa: RUF001
        "👩\u200d💻 ❤\ufe0f 👍🏽 🇫🇷 e\u0301 ক্ষ\tcol\u00a0x \u2028\u061c"
    )
    assert for_terminal(text) == text


def test_an_escape_split_across_streamed_chunks_is_spelled_out_as_if_whole():
    from langgraph_moa._terminal import for_terminal

    whole = "a\x1b]0;x\x07b\r\nc"
    assert for_terminal("a\x1b") + for_terminal("]0;x\x07b\r\nc") == for_terminal(whole)


def test_a_streamed_crlf_in_the_live_view_is_a_space_not_a_spelled_out_cr():
    """A call's streamed preview replaced each line feed with a space before spelling out,
    so every Windows line end of a code block (CR LF) showed as '\\x0d ' in the view."""
    from langgraph_moa.cli._live import Progress

    progress = Progress(timeout_s=None)
    call = {"role": "proposer", "layer": 1, "proposer": 0, "sample": 0}
    for text in ("def f():\r", "\n    return 1\r\n", "x = 2\x1b[2J"):
        progress.event({**call, "event": "token", "text": text})
    (row,) = progress.rows.values()
    assert row.detail == "def f(): return 1 x = 2\\x1b[2J"


def test_words_between_colons_stay_words_on_stderr(capsys):
    """The stderr console read ':x:' or ':fire:' in a provider's error or a model's preview
    (a log line off a terminal) as an emoji code, so the reader saw '❌', not what was
    written."""
    shown = Output()
    shown.warn("the provider said :x: at 10:30:00")
    shown.error("bad :fire: token")
    shown.plain("L1 proposer 1: done: use :thumbs_up: here")
    shown.info("[dim]a note :smile:[/]")
    err = capsys.readouterr().err
    for written in (":x: at 10:30:00", ":fire:", ":thumbs_up:", ":smile:"):
        assert written in err, err
