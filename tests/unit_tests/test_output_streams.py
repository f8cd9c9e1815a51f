"""Where the live view may redraw: only a real terminal that can move its cursor.

rich calls a stream a terminal on FORCE_COLOR (colours asked for, in a CI log) and draws
nothing on TERM=dumb (Emacs' shell, a screen reader's console) until the view ends. Both
get the plain lines a log gets, one per finished call, so progress is said as it happens.
"""

import io
import sys

import pytest

from langgraph_moa.cli._output import Output


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_forcing(monkeypatch):
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


def test_a_terminal_that_moves_its_cursor_is_redrawn(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert Output().stderr_is_terminal


def test_a_dumb_terminal_gets_lines_not_a_view_that_shows_nothing_until_the_end(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert not Output().stderr_is_terminal


def test_force_color_into_a_file_colours_it_but_does_not_redraw_it(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    output = Output()
    assert output.err.is_terminal and not output.stderr_is_terminal
