"""The `moa` command stopped from outside: Ctrl-C at any moment, a reader that leaves.

What a user sees when they press Ctrl-C, or pipe the answer into `head`: one line and an
exit code, never a Python traceback, and no process left behind.
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENTRY_POINTS = {
    "moa": [sys.executable, "-X", "importtime", str(Path(sys.executable).with_name("moa"))],
    "python -m langgraph_moa": [sys.executable, "-X", "importtime", "-m", "langgraph_moa"],
}
"""The installed console script and ``python -m``, each saying what it imports (on stderr)."""


def _signalled_during_start_up(
    entry: str, signum: int, delay_s: float
) -> tuple[subprocess.Popen, str, str]:
    """Start `moa run -` by `entry`, send `signum` `delay_s` after the package's first
    imported module, and return the ended process with its stdout and stderr."""
    command = subprocess.Popen(
        [*ENTRY_POINTS[entry], "run", "-"],  # waits for its question on stdin, left open
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = []
    while not seen or "| langgraph_moa" not in seen[-1]:  # the package's first module
        seen.append(command.stderr.readline())
        assert seen[-1], "".join(seen)
    time.sleep(delay_s)
    command.send_signal(signum)
    out, err = command.communicate(timeout=60)
    return command, out, err


@pytest.mark.parametrize("delay_s", [0.05, 0.3, 0.8])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_ctrl_c_at_any_moment_of_start_up_exits_130_without_a_traceback(entry, delay_s):
    # The package imported langgraph and langchain before the command's Ctrl-C handler was
    # installed: for over a second, Ctrl-C printed a KeyboardInterrupt traceback. The
    # moments are counted from the package's first imported module (the interpreter's own
    # start-up, and the `import re` of the script pip writes, come before any of its code).
    command, out, err = _signalled_during_start_up(entry, signal.SIGINT, delay_s)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert command.returncode == 130, (command.returncode, err)
    assert out == "" and "Interrupted." in err


@pytest.mark.parametrize("delay_s", [0.05, 0.3])
def test_sigterm_during_start_up_says_terminated_and_exits_143(delay_s):
    # The light entry point handled only Ctrl-C: SIGTERM before the command was imported
    # killed it by the signal's default action, silently (-15), unlike once it had started.
    command, out, err = _signalled_during_start_up("moa", signal.SIGTERM, delay_s)
    assert command.returncode == 143, (command.returncode, err)
    assert out == "" and "Terminated." in err and "Traceback" not in err


def test_sigterm_mid_run_says_it_stopped_and_exits_143():
    # `timeout`, `docker stop` or a CI job's cancel end a command with SIGTERM: it died at
    # once and silently (killed by the signal), without the line Ctrl-C gives, which says
    # what finished and how to go on (moa eval's resume command).
    from langgraph_moa.testing import FaultProfile, FaultServer

    with FaultServer({"slow": FaultProfile(latency_s=(30.0, 30.0))}) as server:
        args = ["run", "--no-stream", "--proposers", f"slow@{server.url}", "--layers", "2", "q"]
        command = subprocess.Popen(
            [str(Path(sys.executable).with_name("moa")), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        header = command.stderr.readline()  # the run has begun: its calls are waiting
        command.send_signal(signal.SIGTERM)
        out, err = command.communicate(timeout=60)
    assert header.startswith("custom: moa, 2 layers")
    assert command.returncode == 143, (command.returncode, err)
    assert err.strip() == "Terminated." and out == ""
