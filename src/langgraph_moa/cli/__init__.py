"""The `moa` command; its entry point (`main`) is here, kept light.

Importing the command (`_app`) imports langgraph, langchain and the rest: over a second in
which Python's own Ctrl-C handling raised KeyboardInterrupt inside some import and printed a
traceback. `main` first makes Ctrl-C end the process as the command does ("Interrupted.",
exit code 130), and SIGTERM too ("Terminated.", 143), then imports the command, whose own
handler takes over: nothing has started yet (no server, no call), so there is nothing to stop
or keep.

``moa --version`` (``-V``) alone is answered here, before that import: one line that needs
only the package's `__version__`, not the thousand modules of the command.
"""

import os
import signal
import sys
from typing import Any

INTERRUPTED_EXIT = 130
"""The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells give it."""

TERMINATED_EXIT = 143
"""The exit code of a command stopped by SIGTERM (128 + 15), as shells give it."""


def _stop_words(signum: int) -> tuple[str, int]:
    """Return what the command says when stopped by `signum` (SIGTERM, Ctrl-C) and its exit code."""
    if signum == signal.SIGTERM:
        return "Terminated.", TERMINATED_EXIT
    return "Interrupted.", INTERRUPTED_EXIT


def _write_stderr(data: bytes) -> None:
    """Write all of `data` to stderr's file descriptor (a terminal may take part of it)."""
    while data:
        data = data[os.write(2, data) :]


def _interrupted_while_starting(signum: int, frame: Any) -> None:
    """Ctrl-C (or SIGTERM) before the command is imported: say so, exit 130 (143), no traceback."""
    what, code = _stop_words(signum)
    try:
        _write_stderr(f"{what}\n".encode())
    except OSError:  # stderr closed: the exit code says it
        pass
    os._exit(code)


def _print_version() -> None:
    """Print the version as the command's ``--version`` does (`_app._version`), and no more."""
    from langgraph_moa import __version__

    if sys.stdout is None:  # run with stdout closed (`>&-`): no reader to begin with
        return
    try:
        sys.stdout.write(f"langgraph-moa {__version__}\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `moa -V | true`: the reader left, as the command takes it
        sys.stderr.close()


def main() -> None:
    """Run the `moa` command, Ctrl-C and SIGTERM handled from its first moment."""
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    signal.signal(signal.SIGTERM, _interrupted_while_starting)
    if sys.argv[1:] in (["--version"], ["-V"]):
        _print_version()
        return
    from langgraph_moa.cli._app import main as run_command

    run_command()


__all__ = ["INTERRUPTED_EXIT", "TERMINATED_EXIT", "main"]
