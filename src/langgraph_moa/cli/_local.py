"""First use of the local models, said out loud: assembling, verifying and loading, with sizes.

Before, a first `moa run` sat for 14 s behind a header while 1.1 GB was concatenated and
hashed, then loaded; the user could not tell work from a hang. The command now prepares the
models the run will call (only those: see `_config.local_models`) before the run starts,
saying what it does, how big it is and how long it took.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.markup import escape

from langgraph_moa.cli._output import out


def interrupted_line(what: str = "Interrupted.") -> str:
    """Return the line Ctrl-C (or SIGTERM: `what` is then "Terminated.") ends a command with.

    It says that local model servers stop only when this process started any, and adds the
    command's hint, if it has one.
    """
    from langgraph_moa.local.runtime import LocalRuntime

    runtime = LocalRuntime._default
    stopping = " Stopping local model servers." if runtime and runtime.has_servers() else ""
    hint = out.interrupt_hint() if callable(out.interrupt_hint) else out.interrupt_hint
    return f"[yellow]{what}[/]{stopping}{escape(hint)}"


class _RuntimeWarnings(logging.Handler):
    """Shows the local runtime's warnings as the command's own (``warning: ...`` on stderr)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Warn with the record's message: always shown, --quiet or not."""
        out.warn(record.getMessage())


@contextmanager
def runtime_warnings_shown() -> Iterator[None]:
    """Show what the local runtime warns about (a dead server replaced, its kept log).

    The runtime says it through `logging`, which nobody configures in the `moa` command:
    its lines went to Python's last-resort handler, bare, through the live view. The
    handler goes when the command ends, so that a program which ran a command in-process
    gets the runtime's warnings through its own logging again. Nesting adds no second one.
    """
    logger = logging.getLogger("langgraph_moa.local")
    if any(isinstance(handler, _RuntimeWarnings) for handler in logger.handlers):
        yield
        return
    handler = _RuntimeWarnings(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


class _RuntimeNotes(logging.Handler):
    """Shows the local runtime's info lines (a server starting, then ready) dim on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        """Say the record's message; warnings are `_RuntimeWarnings`' to show."""
        if record.levelno < logging.WARNING:
            out.info(f"[dim]{escape(record.getMessage())}[/]")


@contextmanager
def local_starts_shown() -> Iterator[None]:
    """Say on stderr when a local model's server starts and when it is ready (`moa serve`).

    A server starts on the first request that needs its model, which then waits seconds
    while it loads; said nowhere, that looked like a hang to the operator. `moa run` says
    the same in its own lines (`prepare`) before the run, so only the servers use this.
    The logger's level and handlers are put back when serving ends.
    """
    logger = logging.getLogger("langgraph_moa.local")
    handler, level = _RuntimeNotes(logging.INFO), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def prepare(names: list[str]) -> None:
    """Assemble, verify and start the servers of these local models, saying so on stderr."""
    if not names:
        return
    from langgraph_moa.local.catalog import assembled, cache_dir, lookup, model_path
    from langgraph_moa.local.runtime import LocalRuntime

    runtime = LocalRuntime.default()
    for name in names:
        info = lookup(name)
        info.chunk_paths()  # not installed: LocalModelError with the install command
        size = f"{info.size / 1e9:.1f} GB"
        if not assembled(info):
            parts = len(info.files)
            what = f"assembling {parts} parts and verifying" if parts > 1 else "verifying"
            out.info(
                f"[dim]first use of local:{name}: {what} {size} into {cache_dir()} "
                "(once; later runs skip this)[/]"
            )
            started = time.perf_counter()
            partial = cache_dir() / f"{name}.partial" if parts > 1 else None
            _with_progress(
                f"local:{name}: {what}", info.size, partial, functools.partial(model_path, info)
            )
            out.info(f"[dim]local:{name} ready on disk in {time.perf_counter() - started:.1f}s[/]")
        started = time.perf_counter()
        _with_progress(
            f"loading local:{name} ({size})", None, None, functools.partial(runtime.start, [name])
        )
        out.info(f"[dim]loaded local:{name} ({size}) in {time.perf_counter() - started:.1f}s[/]")


def _with_progress(
    label: str, total: int | None, growing: Path | None, work: Callable[[], Any]
) -> None:
    """Run `work` in a thread while a bar on stderr shows the file it writes and the time.

    Off a terminal (or with --quiet) it just runs: the lines before and after say enough.
    """
    if out.quiet or not out.stderr_is_terminal:
        work()
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the main thread below
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    columns: list[Any] = [SpinnerColumn(), TextColumn("[dim]{task.description}")]
    if total is not None:
        columns += [BarColumn(), DownloadColumn()]
    bar = Progress(*columns, TimeElapsedColumn(), console=out.err, transient=True)
    with bar, out.showing(bar.live):
        task = bar.add_task(label, total=total)
        thread.start()
        while thread.is_alive():
            if growing is not None and total is not None:
                done = growing.stat().st_size if growing.exists() else total
                bar.update(task, completed=min(done, total))
            thread.join(0.1)
    if failure:
        raise failure[0]
