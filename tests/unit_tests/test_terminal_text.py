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
