"""The live view of a run: every call with its state, time, tokens and tok/s, and its text.

On a terminal it redraws in place on stderr while the answer streams into it, then leaves
the final table on stderr; the answer itself goes to stdout once, alone. Off a terminal it
writes one line per finished or failed call instead, so a log shows progress too.

A local call that runs long is explained: on a shared machine the cores are busy with other
work, and a user watching a 270-second call against a 300-second timeout deserves to know
why, and which flag gives it more room.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.cells import cell_len, get_character_cell_size
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from langgraph_moa._terminal import for_terminal
from langgraph_moa._unicode import beginning, ending
from langgraph_moa.cli._output import out
from langgraph_moa.graph.streaming import AnswerStream
from langgraph_moa.providers._table import LOCAL_PREFIX
from langgraph_moa.run._accounting import is_cut_off_reason

SLOW_LOCAL_CALL_S = 60.0
"""A local call running this long gets a line saying why it may be slow."""
PREVIEW_CHARS = 70
MIN_PREVIEW_CHARS = 16
"""The table is drawn only where each call's text preview keeps at least this much room."""
ECHO_COLUMNS = 2
"""Columns the live view leaves free at the right of the terminal, for its "^C".

The terminal echoes Ctrl-C as "^C" where the cursor is, at the end of the view's last line.
A line within two columns of the width pushed it onto a line of its own, the screen moved
up one, and taking the view away erased that line instead of the view's: a stale frame
("running") stayed above what Ctrl-C leaves.
"""

NARROW_COLUMNS = 60
"""Below this terminal width the calls are lines, not a table: a table squeezed that narrow
showed its states as "fail…" and its times as "0.…"."""


@dataclass
class _Row:
    label: str
    model: str = ""
    state: str = "running"
    started: float = field(default_factory=time.perf_counter)
    seconds: float | None = None
    tokens: int | None = None
    cached: bool = False
    detail: str = ""
    streamed: int = 0
    """Chunks streamed so far (about a token each from OpenAI-compatible servers)."""
    tail: str = ""
    """The end of the text so far: the one-line preview while the call runs."""

    def elapsed(self) -> float:
        return self.seconds if self.seconds is not None else time.perf_counter() - self.started

    def rate(self) -> str:
        if self.cached:
            return "cached"
        if self.tokens is None and not self.streamed:
            return ""
        seconds = self.elapsed()
        tokens = self.tokens if self.tokens is not None else self.streamed
        per_s = f", {tokens / seconds:.1f} tok/s" if seconds > 0 else ""
        return f"{tokens} tok{per_s}"


class Progress:
    """A table of every call (layer, role, model, state, time, tokens) above the answer."""

    _STYLE: ClassVar[dict[str, str]] = {
        "running": "yellow",
        "done": "green",
        "failed": "red",
        "stopped": "red",
    }

    def __init__(self, timeout_s: float | None = None, lines: bool = False) -> None:
        """Start empty; with `lines`, also print one line per finished or failed call."""
        self.rows: dict[tuple[Any, ...], _Row] = {}
        self.answer = ""
        self.notes: list[str] = []
        self.timeout_s = timeout_s
        self.lines = lines

    def event(self, e: dict[str, Any]) -> None:
        """Apply one custom stream event from the graph."""
        if "role" not in e:  # a run-level event, not one call's: the pick, a spent budget
            if e["event"] == "selected":
                self._note(picked(e))
            elif e["event"] == "budget_spent":
                self._note(f"token budget spent: {e['used']} of {e['limit']}")
            return
        key = (e["role"], e["layer"], e["proposer"], e["sample"])
        if e["event"] == "token":  # a watched run: every call streams its text
            row = self.rows.setdefault(key, _Row(for_terminal(str(e["role"]))))
            row.streamed += 1
            row.tail = ending(row.tail + str(e.get("text", "")), 200)
            row.detail = _short(row.tail)  # its line breaks (CRLF too) become spaces there
            return
        if e["event"] == "started":
            who = "aggregator" if e["proposer"] < 0 else f"proposer {e['proposer'] + 1}"
            if e["role"] in ("ranker",):
                who = e["role"]
            sample = f" #{e['sample'] + 1}" if e["sample"] else ""
            model = str(e["configured_model"])
            label = for_terminal(f"L{e['layer']} {who}{sample} · {model}")
            self.rows[key] = _Row(label, model=model)
            return
        row = self.rows.setdefault(key, _Row(for_terminal(str(e.get("configured_model")))))
        row.seconds = e.get("latency_s") or (time.perf_counter() - row.started)
        if e["event"] == "finished":
            row.state = "done"
            row.tokens = e.get("completion_tokens")
            row.cached = bool(e.get("cached"))
            preview = str(e.get("preview") or "")
            if e.get("model") and e["model"] not in row.label:
                preview = f"(answered by {e['model']}) {preview}"
            if is_cut_off_reason(e.get("finish_reason")):
                preview = f"(cut off at max_tokens) {preview}"  # not a whole answer
            row.detail = _short(preview)
            if self.lines:
                out.plain(f"{row.label}: done in {row.seconds:.1f}s, {row.rate()}: {row.detail}")
        else:
            row.state = "failed"
            row.detail = _short(str(e.get("error", "")), 120)
            if self.lines:
                out.plain(f"{row.label}: failed after {row.seconds:.1f}s: {row.detail}")

    def _note(self, text: str) -> None:
        self.notes.append(for_terminal(text))
        if self.lines:
            out.plain(text)

    def restart(self) -> None:
        """Forget the answer so far: another attempt (a retry, a fallback) writes it anew.

        The view only shows the answer as it streams; the command prints it once, whole,
        at the end, so a broken first attempt costs nothing but its text on screen.
        """
        self.answer = ""

    def calls(self) -> list[_Row]:
        """Return the rows as they are now, safe to go through while calls start.

        The view is drawn in a thread of Rich's (and the slow-call notes in one of their
        own) while the run's events add rows: going through the dict itself there failed,
        "dictionary changed size during iteration", and the view froze. The copy is made at
        once, by the dict, never interleaved with an event's change.
        """
        return list(self.rows.values())

    def slow_note(self) -> str | None:
        """Say why a local call is slow, when one has been running for a minute or more."""
        slow = [
            r
            for r in self.calls()
            if r.state == "running" and r.model.startswith(f"{LOCAL_PREFIX}:")
            if r.elapsed() >= SLOW_LOCAL_CALL_S
        ]
        if not slow:
            return None
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        cores = os.cpu_count() or 1
        busy = (
            f"the machine is busy (load average {load:.1f} on {cores} cores), so local models "
            "decode slower than usual"
            if load > cores * 0.8
            else f"load average {load:.1f} on {cores} cores"
        )
        limit = f"; each call may take {self.timeout_s:g}s (--timeout)" if self.timeout_s else ""
        return f"a local call has run {slow[0].elapsed():.0f}s: {busy}{limit}"

    def table(self, width: int | None = None) -> Table | Group:
        """Tabulate the calls so far, one row each (on a narrow terminal, one line each).

        `width` is the room it is drawn in (the terminal's, unless said).
        """
        if not self._table_fits(out.err.width if width is None else width):
            return Group(*(self._line(row) for row in self.calls()))
        table = Table(box=None, show_header=False, pad_edge=False)
        for _ in range(4):  # label, state, time, tokens whole; the preview takes what is left
            table.add_column(no_wrap=True)
        table.add_column()
        for row in self.calls():
            table.add_row(
                Text(row.label),
                Text(row.state, style=self._STYLE[row.state]),
                Text(f"{row.elapsed():5.1f}s", style="dim"),
                Text(row.rate(), style="dim"),
                Text(row.detail, style="dim", no_wrap=True, overflow="ellipsis"),
            )
        return table

    def _table_fits(self, width: int) -> bool:
        """Say whether each call's label, state, time and tokens fit on one table line.

        A label that did not fit was wrapped by the table, so at 80 or 100 columns every
        call took two lines and its model read "local:qwen2.5-coder-…". Measured in terminal
        columns (`cell_len`), not characters: a CJK character takes two.
        """
        if width < NARROW_COLUMNS:
            return False
        rows = self.calls()
        label = max((cell_len(r.label) for r in rows), default=0)
        rate = max((cell_len(r.rate()) for r in rows), default=0)
        state, seconds, gaps = len("running"), len("999.9s"), 4 * 2
        return label + state + seconds + rate + gaps + MIN_PREVIEW_CHARS <= width

    def _line(self, row: _Row) -> Text:
        """Say one call in a line that may wrap: label, state, time, tokens, text."""
        line = Text.assemble(
            f"{row.label} ",
            (row.state, self._STYLE[row.state]),
            (f" {row.elapsed():.1f}s", "dim"),
            no_wrap=False,  # wrapped, in the live view too (which crops a line otherwise)
            overflow="fold",
        )
        if rate := row.rate():
            line.append(f" {rate}", style="dim")
        if row.detail:
            line.append(f": {row.detail}", style="dim")
        return line

    def summary(self) -> Group:
        """Group the table and the notes, without the answer (what stays on screen at the end)."""
        return Group(self.table(), *(Text(note, style="dim") for note in self.notes))

    def cut_off(self) -> Group:
        """Return what a Ctrl-C leaves on screen once the live view is taken away.

        The calls (those in flight marked stopped) and the answer so far, labelled as cut off:
        they were computed, and the user was reading them.
        """
        for row in self.calls():
            if row.state == "running":
                row.state, row.seconds = "stopped", row.elapsed()
        parts: list[Any] = [self.summary()]
        if self.answer:
            parts += [Text("the answer so far (cut off by Ctrl-C):", style="yellow")]
            parts += [Text(for_terminal(self.answer))]
        return Group(*parts)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """Render the live frame: the table, the notes, a slow call's note, the answer so far.

        `ECHO_COLUMNS` narrower than the terminal, so that Ctrl-C's "^C" never wraps.
        """
        options = options.update_width(max(1, options.max_width - ECHO_COLUMNS))
        parts: list[Any] = [self.table(options.max_width)]
        parts += [Text(n, style="dim") for n in self.notes]
        if note := self.slow_note():
            parts.append(Text(note, style="yellow"))
        if self.answer:
            parts += [Text(""), Text(for_terminal(self.answer))]
        yield from console.render(Group(*parts), options)


def _say_when_slow(progress: Progress, done: threading.Event, every_s: float = 5.0) -> None:
    """Off a terminal, write the slow-call explanation once per slow call, as a log line."""
    told: set[int] = set()
    while not done.wait(every_s):
        slow = [id(r) for r in progress.calls() if r.state == "running"]
        note = progress.slow_note()
        if note and not told.issuperset(slow):
            out.plain(note)
            told.update(slow)


def _short(text: str, limit: int = PREVIEW_CHARS) -> str:
    """Return a model's or provider's text as one short line, safe on a terminal.

    `limit` is in terminal columns (`cell_len`), not characters: a 70-character preview of
    Chinese took 140 columns and wrapped. The cut falls between whole characters as drawn
    (`boundary`).
    """
    text = " ".join(for_terminal(text).split())
    if cell_len(text) <= limit:
        return text
    columns = itertools.accumulate(map(get_character_cell_size, text))
    end = sum(1 for used in itertools.takewhile(lambda used: used < limit, columns))
    return beginning(text, end) + "…"


def picked(selection: dict[str, Any]) -> str:
    """Put a selection's provenance (or its progress event, which carries the same) in words."""
    line = f"picked by {selection['method']}: {selection['reason']}"
    return f"{line} ({selection['note']})" if selection.get("note") else line


def _view(timeout_s: float | None) -> tuple[bool, Progress]:
    """Return whether the live view redraws on a terminal, and the progress it shows."""
    live_view = out.stderr_is_terminal and not out.quiet
    return live_view, Progress(timeout_s, lines=not live_view and not out.quiet)


@contextmanager
def _slow_calls_said(progress: Progress) -> Iterator[None]:
    """Off a terminal, write the slow-call explanation as log lines while the block runs."""
    done = threading.Event()
    if not out.quiet:
        threading.Thread(target=_say_when_slow, args=(progress, done), daemon=True).start()
    try:
        yield
    finally:
        done.set()


@contextmanager
def _on_screen(progress: Progress) -> Iterator[Live]:
    """Redraw `progress` in place while the block runs; then leave its calls on screen.

    Ctrl-C leaves them too, with the answer so far (`Progress.cut_off`): in `moa run` the
    interrupt handler stops the view (`Output.stop_live`), in `moa chat` the turn's task
    is cancelled. What was computed stays readable; only the redrawing frame goes.
    """
    live = Live(progress, console=out.err, refresh_per_second=8, transient=True)
    try:
        with live, out.showing(live, left=progress.cut_off):
            yield live
    except (KeyboardInterrupt, asyncio.CancelledError):
        out.render(progress.cut_off())
        raise
    out.render(progress.summary())


def run_live(
    graph: Any, run_input: dict[str, Any], *, timeout_s: float | None, context: Any = None
) -> dict[str, Any]:
    """Run the graph with the live view on stderr; return the final state.

    On a terminal the view redraws in place and its last frame (the calls, without the
    answer, which goes to stdout) stays on screen. Elsewhere, one line per call. Watched
    on a terminal: proposers stream too, so each row shows its tokens and text as they come.
    """
    live_view, progress = _view(timeout_s)
    stream = AnswerStream(
        graph,
        run_input,
        context=context,
        on_progress=progress.event,
        watch=live_view,
        on_restart=progress.restart,
    )
    if not live_view:
        with _slow_calls_said(progress):
            for _ in stream:
                pass
        return stream.final
    with _on_screen(progress) as live:
        for text in stream:
            progress.answer += text
            live.refresh()
    return stream.final


async def arun_live(
    graph: Any, run_input: dict[str, Any], *, timeout_s: float | None
) -> dict[str, Any]:
    """Run the graph on the event loop with the live view, as `run_live` does; return the state.

    `moa chat` runs its turns this way so that Ctrl-C can cancel one: cancelling the task
    stops its calls at once, where a sync run waits for the calls in flight to end. A
    cancelled run's view is taken off the screen (it is transient), leaving no table.
    """
    live_view, progress = _view(timeout_s)
    stream = AnswerStream(
        graph, run_input, on_progress=progress.event, watch=live_view, on_restart=progress.restart
    )
    if not live_view:
        with _slow_calls_said(progress):
            async for _ in stream:
                pass
        return stream.final
    with _on_screen(progress) as live:
        async for text in stream:
            progress.answer += text
            live.refresh()
    return stream.final
