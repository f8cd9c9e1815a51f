"""Where the `moa` command writes: the answer alone on stdout, everything else on stderr.

A user who pipes `moa run ... > answer.txt` must get the answer's bytes and nothing else: no
wrapping at column 80, no colour codes, no summary line. So stdout gets plain writes (rich
only when stdout is a terminal), and headers, progress, notes, warnings and errors go to one
stderr console that never wraps a line. `--quiet` silences the informative part of stderr;
warnings about a degraded answer and errors are always shown.

Everything shown passes through `for_terminal` where it can reach a terminal: an answer's or
a provider's escape sequence must not act on it. stderr is always a terminal's or a log's,
so what goes there is always made safe; stdout only when it is a terminal, for a pipe or
--json gets the answer's exact text.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape

from langgraph_moa._terminal import for_terminal


class Output:
    """The two streams of one command, and whether the user asked for quiet."""

    def __init__(self) -> None:
        """Consoles on the real streams; quiet is off until a command turns it on."""
        self.quiet = False
        self.interrupt_hint: str | Callable[[], str] = ""
        """What a Ctrl-C leaves behind and how to go on (said after "Interrupted."); a
        function when that changes as the command runs (how many items are done)."""
        self.err = Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)
        """No emoji codes: ':x:' in a provider's error or a model's text is what it wrote."""
        self.live: Any = None
        """The live view (a rich `Live`) on screen now, if any: Ctrl-C clears it first, so
        the last lines and the shell prompt do not land inside it."""
        self.left: Callable[[], Any] | None = None
        """What the live view leaves on screen when Ctrl-C clears it (see `showing`)."""
        self.escaped_said = False
        """Whether stdout's encoding was found short of the output's characters, and said."""
        self.json_lines = False
        """Whether each stderr line is one JSON object (``moa serve --log-format json``):
        each says its level itself (`json_record`), where a text line's "warning:" had to be
        parsed back; `err` then draws nothing (a model's download bar)."""

    @property
    def stdout_is_terminal(self) -> bool:
        """Tell whether stdout is a terminal (then rich may format it).

        A command run with stdout closed (``>&-``) has none: Python's `sys.stdout` is None.
        """
        return sys.stdout is not None and sys.stdout.isatty()

    @property
    def stderr_is_terminal(self) -> bool:
        """Tell whether stderr is a terminal a live view may redraw in place.

        Not rich's `is_terminal` alone: FORCE_COLOR makes a log file one (colours asked
        for, not eight frames a second of cursor moves in the log), and on TERM=dumb (Emacs'
        shell, a screen reader's console) rich's live view draws nothing until it ends.
        Both get a line per finished call instead, as a log does.
        """
        stream = sys.stderr
        return self.err.is_interactive and stream is not None and stream.isatty()

    def answer(self, text: str) -> None:
        """Write the answer to stdout: its bytes and one newline, unwrapped, uncoloured.

        A reader that left (`moa eval ... | head -3`) is not a failure of the command: the
        rest of stdout goes nowhere and the command goes on, so that it still ends with its
        own exit code (3 for a fallback answer, 1 for a failed system), not a blanket 0.
        On a terminal its control characters are spelled out (`for_terminal`).
        """
        self._write(for_terminal(text) if self.stdout_is_terminal else text)

    def data(self, text: str) -> None:
        """Write machine-readable output (JSON, a table for scripts) to stdout as is."""
        self._write(text)

    def _write(self, text: str) -> None:
        """Write `text` and one newline to stdout; a reader that left is not a failure."""
        line = text if text.endswith("\n") else text + "\n"
        if sys.stdout is None:  # run with stdout closed (`>&-`): no reader to begin with
            return
        try:
            try:
                sys.stdout.write(line)
            except UnicodeEncodeError:  # nothing was written: the text is encoded first
                sys.stdout.write(self._escaped(line))
            sys.stdout.flush()
        except BrokenPipeError:
            _discard_stdout()

    def _escaped(self, line: str) -> str:
        """Return `line` with what stdout's encoding cannot hold escaped, said once.

        A non-UTF-8 stdout (a C locale with Python's UTF-8 mode off, PYTHONIOENCODING=ascii)
        cannot take every answer: the finished answer was lost to a UnicodeEncodeError. It
        is written escaped, which loses no character, and a warning says how to get it as is.
        """
        encoding = getattr(sys.stdout, "encoding", None) or "ascii"
        if not self.escaped_said:
            self.escaped_said = True
            self.warn(
                f"standard output's encoding ({encoding}) cannot hold some characters of "
                "this output: they are written as escapes (\\u....). For the text as is, run "
                "with a UTF-8 locale (LANG=C.UTF-8) or PYTHONIOENCODING=utf-8."
            )
        return line.encode(encoding, "backslashreplace").decode(encoding)

    def info(self, markup: str) -> None:
        """Say something useful but not essential on stderr (silenced by --quiet)."""
        if not self.quiet:
            self.say(markup)

    def say(self, markup: str) -> None:
        """Say `markup` on stderr, even under --quiet (the address a server answers on)."""
        if self.json_lines:
            self._json("info", plain_text(markup))
        else:
            self.err.print(for_terminal(markup))

    def plain(self, text: str) -> None:
        """Say `text` on stderr without reading it as markup (silenced by --quiet)."""
        if self.quiet:
            return
        if self.json_lines:
            self._json("info", text)
        else:
            self.err.print(for_terminal(text), markup=False, highlight=False)

    def _json(self, level: str, text: str) -> None:
        """Write `text` to stderr as one JSON line of `level` (`json_lines`)."""
        print(json_record(level, text), file=sys.stderr, end="", flush=True)  # noqa: T201

    def render(self, renderable: Any) -> None:
        """Show a rich object (a table) on stderr (silenced by --quiet)."""
        if not self.quiet:
            self.err.print(renderable)

    def warn(self, text: str) -> None:
        """Warn on stderr, always: a degraded answer is never silent."""
        if self.json_lines:
            self._json("warning", text)
            return
        self.err.print(f"[bold yellow]warning:[/] {escape(for_terminal(text))}")

    @contextmanager
    def showing(self, live: Any, left: Callable[[], Any] | None = None) -> Iterator[None]:
        """Note `live` as the live view on screen while the block runs.

        `left` returns what stays on screen when Ctrl-C takes the view away (`stop_live`).
        """
        self.live, self.left = live, left
        try:
            yield
        finally:
            self.live = self.left = None

    def stop_live(self) -> None:
        """Take a live view off the screen (from the Ctrl-C handler), its cursor restored.

        What it showed that was computed stays (`showing`'s `left`).
        """
        live, left, self.live, self.left = self.live, self.left, None, None
        if live is not None:
            live.stop()
            if left is not None:
                self.render(left())

    def error(self, text: str) -> None:
        """Report a failure on stderr in one line."""
        if self.json_lines:
            self._json("error", text)
            return
        self.err.print(f"[bold red]error:[/] {escape(for_terminal(text))}")

    def failed(self, exc: BaseException) -> int:
        """Say the failure that ends the command (`error`); return its exit code.

        2 for options that conflict (`USAGE_EXIT`), 1 for any other.
        """
        from langgraph_moa.cli._usage import USAGE_EXIT, OptionConflictError
        from langgraph_moa.errors import MoAError

        self.error(message_of(exc) if isinstance(exc, MoAError) else str(exc))
        return USAGE_EXIT if isinstance(exc, OptionConflictError) else 1


COMMAND_LOGGER = "langgraph_moa.cli"
"""The ``logger`` of the command's own JSON lines, among the server's records' names."""


def json_record(level: str, text: str) -> str:
    """Return `text` as one JSON line of `level`, in the server's record shape, newline ended.

    ``{"time", "level", "logger", "message"}``: the command's lines among `moa serve`'s
    records under ``--log-format json`` (`_server._JsonRecords`).
    """
    from langgraph_moa.serving._access import json_line

    return json_line({"level": level, "logger": COMMAND_LOGGER, "message": text}) + "\n"


def plain_text(markup: str) -> str:
    """Return what `markup` says, without its styles (for a JSON line)."""
    from rich.text import Text

    return Text.from_markup(markup).plain


def _discard_stdout() -> None:
    """Send whatever stdout still holds, and gets, to the null device (the reader left).

    Without it, the interpreter's last flush at exit raises BrokenPipeError once more.
    """
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a real file (a test's capture): nothing will flush it at exit


def message_of(exc: BaseException) -> str:
    """Return an error's message as shown: each line's spacing tidied, its breaks kept.

    Most messages are one sentence, but some list one failure per line (every proposer of a
    layer failed, each with its provider's error); run together, such a list is unreadable.
    """
    lines = []
    for line in str(exc).splitlines():
        if line.strip():
            indent = line[: len(line) - len(line.lstrip())]
            lines.append(indent + " ".join(line.split()))
    return "\n".join(lines)


out = Output()
"""The process's output; commands share it so that `--quiet` set once applies everywhere."""
