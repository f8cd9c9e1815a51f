"""The `moa` command; its entry point (`main`) is here, kept light.

Importing the command (`_app`) imports langgraph, langchain and the rest: over a second in
which Python's own Ctrl-C handling raised KeyboardInterrupt inside some import and printed a
traceback. `main` first makes Ctrl-C end the process as the command does ("Interrupted.",
exit code 130), and SIGTERM too ("Terminated.", 143), then imports the command, whose own
handler takes over: nothing has started yet (no server, no call), so there is nothing to stop
or keep.
"""

import os
import signal
from typing import Any

INTERRUPTED_EXIT = 130
"""The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells give it."""

TERMINATED_EXIT = 143
"""The exit code of a command stopped by SIGTERM (128 + 15), as shells give it."""


def _interrupted_while_starting(signum: int, frame: Any) -> None:
    """Ctrl-C (or SIGTERM) before the command is imported: say so, exit 130 (143), no traceback."""
    terminated = signum == signal.SIGTERM
    line = b"Terminated.\n" if terminated else b"Interrupted.\n"
    try:
        while line:
            line = line[os.write(2, line) :]
    except OSError:  # stderr closed: the exit code says it
        pass
    os._exit(TERMINATED_EXIT if terminated else INTERRUPTED_EXIT)


def main() -> None:
    """Run the `moa` command, Ctrl-C and SIGTERM handled from its first moment."""
    signal.signal(signal.SIGINT, _interrupted_while_starting)
    signal.signal(signal.SIGTERM, _interrupted_while_starting)
    from langgraph_moa.cli._app import main as run_command

    run_command()


__all__ = ["INTERRUPTED_EXIT", "TERMINATED_EXIT", "main"]
