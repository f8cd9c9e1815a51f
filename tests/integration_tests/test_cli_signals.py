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
    "moa": [str(Path(sys.executable).with_name("moa"))],  # the installed console script
    "python -m langgraph_moa": [sys.executable, "-m", "langgraph_moa"],
}


@pytest.mark.parametrize("delay_s", [0.05, 0.3, 0.8])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_ctrl_c_at_any_moment_of_start_up_exits_130_without_a_traceback(entry, delay_s):
    # The package imported langgraph and langchain before the command's Ctrl-C handler was
    # installed: for over a second, Ctrl-C printed a KeyboardInterrupt traceback.
    command = subprocess.Popen(
        [*ENTRY_POINTS[entry], "run", "-"],  # waits for its question on stdin, left open
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay_s)
    command.send_signal(signal.SIGINT)
    out, err = command.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    # 130 from the command; killed by SIGINT (before Python itself is up) a shell says 130 too.
    assert command.returncode in (130, -signal.SIGINT), (command.returncode, err)
    assert out == ""
    if command.returncode == 130:
        assert "Interrupted." in err
