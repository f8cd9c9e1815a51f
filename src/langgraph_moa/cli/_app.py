"""The `moa` command: the typer app, its commands, and the entry point.

Each command lives in its own module (`_run`, `_chat`, `_models`, `_eval`, `_serve`); this
one assembles them, adds `--version` and shell completion, and turns every failure a user
can cause (bad config, missing model, missing key or extra, dead server, Ctrl-C) into one
clear line on stderr and a non-zero exit code, never a stack trace.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from langgraph_moa._redact import redact
from langgraph_moa._terminal import for_terminal
from langgraph_moa.cli import INTERRUPTED_EXIT, _stop_words, _write_stderr
from langgraph_moa.cli._chat import chat
from langgraph_moa.cli._config import DEFAULT_PRESET, build_config
from langgraph_moa.cli._eval import evaluate
from langgraph_moa.cli._langsmith import check_langsmith
from langgraph_moa.cli._local import interrupted_line, runtime_warnings_shown
from langgraph_moa.cli._models import models
from langgraph_moa.cli._output import json_record, out, plain_text
from langgraph_moa.cli._run import run
from langgraph_moa.cli._serve import serve
from langgraph_moa.cli._ui import ui
from langgraph_moa.errors import MoAError


class _FlagsTakeNoValue:
    """Show no value placeholder after a flag in --help (``--json``, not ``--json <bool>``).

    Typer's rich help prints the type of every option, flags included; a user who read
    ``--quiet -q <bool>`` typed ``--quiet true``, and "true" became the question. An empty
    metavar makes the help show nothing there, and changes nothing else. An option that
    takes a value and names no metavar of its own is shown with a word for it (`_metavar`).
    """

    def get_params(self, ctx: Any) -> Any:  # typer's own copy of click's types
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if param.param_type_name == "argument":  # named by its name: no type beside it
                param.display_type_rich = lambda ctx: None
            elif param.metavar is None:
                param.metavar = "" if getattr(param, "is_flag", False) else _metavar(param)
        return params


def _metavar(param: Any) -> str:
    """Name an option's value in a word: ``-s SYSTEM``, ``--config PATH``.

    Typer showed Python's types (``<list[str]>``, ``<list[Path]>``, ``<str>``), which say
    how the value is stored, not what to write. A path is a PATH; anything else is named
    after its option (repeatable options say "repeatable" in their help).
    """
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None and descriptor.is_path:
        return "PATH"
    return str(param.name).upper()


class _Group(_FlagsTakeNoValue, typer.core.TyperGroup):
    """The `moa` group, its flags shown without a value placeholder."""


class _Command(_FlagsTakeNoValue, typer.core.TyperCommand):
    """A `moa` command, its flags shown without a value placeholder."""


app = typer.Typer(
    cls=_Group,
    add_completion=True,
    no_args_is_help=True,
    help="Mixture-of-Agents on LangGraph: several models answer, an aggregator synthesizes.",
)
errors = out.err  # the stderr console (kept as a name for callers that print errors)

app.command(cls=_Command)(run)
app.command(cls=_Command)(chat)
app.command(cls=_Command)(models)
app.command(name="eval", cls=_Command)(evaluate)
app.command(cls=_Command)(serve)
app.command(cls=_Command)(ui)


def _version(value: bool) -> None:
    """Print the version an evaluation's provenance records (one reading of it, not two)."""
    if value:
        from langgraph_moa.eval.provenance import package_version

        out.data(f"langgraph-moa {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Mixture-of-Agents on LangGraph: several models answer, an aggregator synthesizes."""


MODEL_COMMANDS = ("run", "chat", "eval", "serve", "ui")


_unsaid: list[bytes] = []
"""The line the first Ctrl-C is saying, until it is out (see `_on_interrupt`)."""


def _on_interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C: stop at once, servers included, whatever thread is busy.

    A plain KeyboardInterrupt only reaches the main thread, which is waiting on LangGraph's
    worker threads and may not see it until the run is over; the user expects an immediate
    stop, so the handler cleans up and exits itself. Its line goes straight to stderr, past
    rich's buffer: the main thread may be stopped inside a print whose line is written but
    not yet taken out of that buffer, and printing through it wrote that line twice. A
    second Ctrl-C runs this handler again inside the first: it exits at once too, after
    writing the first one's line if that is not out yet. SIGTERM (``timeout``, ``docker
    stop``, a cancelled CI job) stops the same way, saying "Terminated." and exiting with
    143: killed by the signal's default action, the command said nothing of what finished.
    """
    what, code = _stop_words(signum)
    if _unsaid:
        _write_stderr(_unsaid[0])
        _exit_interrupted(code)
    _unsaid.append(_rendered(interrupted_line(what)))
    out.stop_live()
    _write_stderr(_unsaid[0])
    _unsaid[0] = b""
    _exit_interrupted(code)


def _rendered(markup: str) -> bytes:
    """Return `markup` as the stderr console would print it (colours on a terminal only).

    As JSON while ``moa serve --log-format json`` serves (`Output.json_lines`): uvicorn
    raises the signal it caught again once drained, and "Terminated." was the one text line.
    """
    if out.json_lines:
        return json_record("info", plain_text(markup)).encode("utf-8", "replace")
    console = Console(
        file=io.StringIO(),
        force_terminal=errors.is_terminal,
        color_system=errors.color_system,  # type: ignore[arg-type]
        no_color=errors.no_color,
        width=errors.width,
        soft_wrap=True,
        highlight=False,
        emoji=False,
    )
    console.print(markup)
    text: str = console.file.getvalue()  # type: ignore[attr-defined]
    return text.encode("utf-8", "replace")


def _exit_interrupted(code: int) -> None:
    """Stop the local model servers this process started, and exit with `code` (130, 143)."""
    from langgraph_moa.local.runtime import LocalRuntime

    runtime = LocalRuntime._default
    if runtime is not None:
        runtime.kill_now()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """Entry point: run the app, turning known failures into one clear line."""
    signal.signal(signal.SIGINT, _on_interrupt)
    signal.signal(signal.SIGTERM, _on_interrupt)
    with runtime_warnings_shown():
        _main()


def _main() -> None:
    """Run the app (see `main`)."""
    if len(sys.argv) > 1 and sys.argv[1] in MODEL_COMMANDS and "--help" not in sys.argv:
        check_langsmith()
    from langgraph_moa.errors import LocalModelError

    try:
        code = app(standalone_mode=False)
    except (MoAError, LocalModelError) as exc:
        sys.exit(out.failed(exc))
    except (KeyboardInterrupt, typer.Abort):
        # click turns Ctrl-C into Abort; atexit then stops the local servers.
        errors.print(interrupted_line())
        sys.exit(INTERRUPTED_EXIT)
    except BrokenPipeError:  # a write outside `out.answer`, whose reader left mid-command
        # `out.answer` (the answer, the report) swallows a reader that left, so the command
        # goes on to its own exit code (3 for a fallback); only other writes end here.
        sys.stderr.close()
        sys.exit(0)
    except SystemExit as exc:
        if _rich_saw_the_reader_leave(exc):
            sys.exit(0)
        raise
    except Exception as exc:  # usage errors and anything unforeseen
        # Usage errors (unknown option, missing argument) know how to show themselves;
        # typer may carry its own copy of click, so recognize them by behaviour.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        text = for_terminal(redact(str(exc)))  # may quote a request (its key), or an upstream
        errors.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {escape(text)}")
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


def _rich_saw_the_reader_leave(exc: SystemExit) -> bool:
    """Tell whether `exc` is rich's exit (code 1) for a stdout whose reader left.

    rich, which writes the help (`moa --help | head -1`), sends stdout to the null device and
    exits with 1 when the reader has left: the help was given, and the command's other
    writes count a reader that left as no failure (exit code 0), so this one does too.
    """
    return exc.code == 1 and isinstance(exc.__context__, BrokenPipeError)


__all__ = ["DEFAULT_PRESET", "app", "build_config", "main"]
