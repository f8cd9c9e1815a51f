"""`moa chat` and `moa run` on a real terminal (tmux's pseudo-terminal), as a user sees them.

The live view must show tokens and tok/s per call, and the chat must edit lines and recall
earlier ones with the arrow keys (readline), not print escape codes.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from langgraph_moa.testing import FaultProfile, FaultServer


@pytest.fixture(autouse=True)
def _require_tmux() -> None:
    """Skip (outside CI) or fail (in CI, where `.ci/run` installs it) when tmux is missing."""
    if shutil.which("tmux") is not None:
        return
    why = "the terminal tests need tmux: apt-get install -y tmux"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


class Screen:
    """A tmux session on its own server socket, running one command."""

    def __init__(self, command: list[str], width: int = 200) -> None:
        self.socket = f"moa-test-{os.getpid()}-{time.monotonic_ns()}"
        env = f"PYTHONPATH={shlex.quote(os.environ.get('PYTHONPATH', ''))}"
        line = f"env -u COLUMNS -u LINES {env} {shlex.join(command)}; sleep 30"
        self.tmux("new-session", "-d", "-x", str(width), "-y", "60", line)

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        ).stdout

    def text(self) -> str:
        return self.tmux("capture-pane", "-p", "-S", "-200")

    def wait_for(self, text: str, count: int = 1, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.text()
            if screen.count(text) >= count:
                return screen
            time.sleep(0.3)
        raise AssertionError(f"{text!r} x{count} never appeared; the screen:\n{self.text()}")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def backend():
    with FaultServer(default=FaultProfile(latency_s=(0.2, 0.3))) as server:
        yield server


def moa_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from langgraph_moa.cli._app import main; main()", *args]


def test_chat_on_a_terminal_shows_tokens_per_call_and_recalls_history(backend):
    screen = Screen(
        moa_command(
            "chat",
            "--proposers",
            f"a@{backend.url},b@{backend.url}",
            "--aggregator",
            f"agg@{backend.url}",
            "--layers",
            "2",
        )
    )
    try:
        screen.wait_for("you>")
        screen.keys("what is two plus two", "Enter")
        screen.wait_for("agg answer 1 w0")
        # The final frame of the live view, left above the next prompt once the turn ends
        # (the answer's text shows a frame or two before the aggregator's row is done):
        # each call with its tokens and rate.
        shown = screen.wait_for("you>", count=2)
        calls = [line for line in shown.splitlines() if " · a@" in line or " · agg@" in line]
        assert len(calls) == 2 and all(" tok/s" in line for line in calls), shown
        assert "12 tok" in calls[0]
        screen.keys("Up")  # readline: the previous message comes back, editable
        screen.wait_for("you> what is two plus two")
        screen.keys("BSpace", "BSpace", "BSpace", "three", "Enter")
        shown = screen.wait_for("agg answer 2 w0")
        assert "you> what is two plus three" in shown
        assert "\x1b[A" not in shown and "^[[A" not in shown
        screen.wait_for("you>", count=3)
        screen.keys("/exit", "Enter")
        time.sleep(1)
        assert backend.requests["agg"] == 2
    finally:
        screen.close()


def test_run_on_a_terminal_leaves_the_calls_and_the_answer(backend):
    screen = Screen(moa_command("run", "--proposers", f"a@{backend.url}", "--layers", "2", "Why?"))
    try:
        shown = screen.wait_for("critical path")
        assert "custom: select" not in shown and "custom: moa, 2 layers" in shown
        assert "L1 proposer 1 · a@" in shown and "L2 aggregator · a@" in shown
        assert shown.count(" tok/s") == 2
        assert "a answer 2 w0" in shown
    finally:
        screen.close()


@pytest.fixture
def slow_backend():
    with FaultServer(default=FaultProfile(latency_s=(60, 60))) as server:
        yield server


def then_exit_code(command: list[str]) -> list[str]:
    """Run `command` in a shell that prints its exit code after it, on a line of its own."""
    return ["bash", "-c", f'{shlex.join(command)}; echo "exit=$?"']


def test_ctrl_c_in_chat_cancels_the_turn_and_ctrl_d_ends_it(slow_backend):
    url = slow_backend.url
    screen = Screen(then_exit_code(moa_command("chat", "--proposers", f"slow@{url}")))
    try:
        screen.wait_for("you>")
        screen.keys("a question the model is slow to answer", "Enter")
        screen.wait_for("running")
        started = time.monotonic()
        screen.keys("C-c")
        shown = screen.wait_for("turn cancelled (Ctrl-C)", timeout=10)
        shown = screen.wait_for("you>", count=2, timeout=10)
        assert time.monotonic() - started < 10  # not the model's 60 seconds
        assert "Interrupted" not in shown and "local model servers" not in shown.lower()
        screen.keys("C-d")
        shown = screen.wait_for("exit=0", timeout=10)
        lines = shown.rstrip().splitlines()
        assert lines[-1] == "exit=0" and lines[-2].rstrip() == "you>", shown
    finally:
        screen.close()


def interrupt_run(screen):
    """Press Ctrl-C in `moa run`, check that it ends on 'Interrupted.' and exit 130.

    Return the screen's text and its lines, for the test's own checks.
    """
    screen.keys("C-c")
    shown = screen.wait_for("exit=130", timeout=10)
    lines = shown.rstrip().splitlines()
    assert lines[-1] == "exit=130" and lines[-2].strip().endswith("Interrupted."), shown
    return shown, lines


def test_ctrl_c_in_run_leaves_no_live_view_and_ends_its_line(slow_backend):
    url = slow_backend.url
    command = moa_command("run", "--proposers", f"slow@{url}", "Why?")
    screen = Screen(then_exit_code(command))
    try:
        screen.wait_for("running")
        shown, lines = interrupt_run(screen)
        assert "local model servers" not in shown.lower()
        # The live view was taken off the screen; the call it showed stays, once, stopped.
        assert shown.count("L1 proposer 1") == 1 and "running" not in shown, shown
        assert "stopped" in next(line for line in lines if "L1 proposer 1" in line)
    finally:
        screen.close()


@pytest.mark.parametrize("spare", [0, 1])
def test_ctrl_c_leaves_no_stale_frame_when_the_view_fills_the_terminals_width(slow_backend, spare):
    # The terminal echoes Ctrl-C as "^C" at the cursor: after a line of the live view
    # within two columns of the width it wrapped onto a line of its own, and taking the
    # view away erased that line instead: the "running" frame stayed above the result.
    url = slow_backend.url
    row = f"L1 proposer 1 · slow@{url} running 1.6s"  # one line each on a narrow terminal
    command = moa_command("run", "--proposers", f"slow@{url}", "Why?")
    screen = Screen(then_exit_code(command), width=len(row) + spare)
    try:
        screen.wait_for("running")
        time.sleep(1)
        shown, _ = interrupt_run(screen)
        assert shown.count("L1 proposer 1") == 1 and "running" not in shown, shown
    finally:
        screen.close()


@pytest.fixture
def slow_writer():
    """Fast proposers, and an aggregator that writes one word every half second."""
    writer = FaultProfile(reply_words=60, token_s=0.5)
    with FaultServer({"writer": writer}, default=FaultProfile(latency_s=(0.1, 0.2))) as server:
        yield server


def test_ctrl_c_in_run_keeps_the_finished_calls_and_the_answer_so_far(slow_writer):
    # Ctrl-C while the aggregator wrote the answer took the whole live view off the screen:
    # the proposals that had finished, and the half answer the user was reading, were gone.
    url = slow_writer.url
    command = moa_command(
        "run", "--proposers", f"a@{url},b@{url}", "--aggregator", f"writer@{url}",
        "--layers", "2", "Why?",
    )  # fmt: skip
    screen = Screen(then_exit_code(command))
    try:
        screen.wait_for("writer answer 1 w0 w1 w2")
        shown, _ = interrupt_run(screen)
        calls = [line for line in shown.splitlines() if line.startswith("L")]
        # Each call once (no frame of the live view left behind), in its final state.
        assert len(calls) == 3 and "done" in calls[0] and "done" in calls[1], shown
        assert "stopped" in calls[2] and "running" not in shown, shown
        assert "writer answer 1 w0 w1 w2" in shown and "cut off by Ctrl-C" in shown, shown
    finally:
        screen.close()


def test_a_narrow_terminal_still_shows_each_calls_state_time_and_tokens():
    # On a terminal 35 columns wide the calls' table squeezed every column: the states
    # read "fail…" and "done", the times "0.…", the labels "L2 aggre… · bad@h…".
    failing = FaultProfile(error_rate=1.0, errors=["400"])
    with FaultServer({"bad": failing}, default=FaultProfile(latency_s=(0.1, 0.2))) as server:
        url = server.url
        command = moa_command(
            "run", "--proposers", f"a@{url}", "--aggregator", f"bad@{url}", "--layers", "2", "q"
        )  # fmt: skip
        screen = Screen(then_exit_code(command), width=35)
        try:
            shown = screen.wait_for("exit=3")
        finally:
            screen.close()
    # The terminal wraps long lines at the 35th column: read them joined back.
    text = " ".join("".join(line.ljust(35) for line in shown.splitlines()).split())
    assert "…" not in text, shown
    assert "L1 proposer 1 · a@" in text and "L2 aggregator · bad@" in text, shown
    assert "done" in text and "failed" in text and " tok/s" in text, shown


def test_run_dash_on_a_terminal_says_it_reads_the_question_until_ctrl_d(backend):
    # `moa run -` typed at a terminal waited for standard input with an empty screen: the
    # user could not tell a wait for their question from a hang, nor how to end it.
    command = moa_command("run", "--proposers", f"a@{backend.url}", "--layers", "2", "-")
    screen = Screen(then_exit_code(command))
    try:
        screen.wait_for("Ctrl-D", timeout=30)
        screen.keys("why is the sky blue", "Enter", "C-d")
        shown = screen.wait_for("exit=0")
        assert "a answer 2 w0" in shown
    finally:
        screen.close()


def test_escape_sequences_in_an_answer_do_not_act_on_the_terminal():
    # An answer that retitled the window, cleared the screen and overwrote its own line acted
    # on the user's terminal: on a terminal it is shown with those characters spelled out.
    hostile = "safe \x1b]2;owned\x07 \x1b[2J then \rgone"
    with FaultServer(default=FaultProfile(reply_text=hostile)) as server:
        command = moa_command("run", "--proposers", f"a@{server.url}", "--layers", "2", "Why?")
        screen = Screen(command)
        try:
            shown = screen.wait_for("critical path")
            title = screen.tmux("display-message", "-p", "#{pane_title}")
            assert "owned" not in title, title
            assert "custom: moa, 2 layers" in shown  # not cleared away
            assert "safe \\x1b]2;owned\\x07 \\x1b[2J then \\x0dgone" in shown, shown
        finally:
            screen.close()


def test_ctrl_c_in_eval_takes_its_progress_bar_away_and_shows_the_cursor(backend, tmp_path):
    # The bar was left as it was: the cursor it hides stayed hidden in the user's shell, and
    # "Interrupted." was written on the bar's own line, after it.
    command = moa_command(
        "eval", "-s", f"single:a@{backend.url}", "--limit", "30", "--no-plots",
        "--out", str(tmp_path),
    )  # fmt: skip
    screen = Screen(then_exit_code(command))
    try:
        screen.wait_for("2/30")
        screen.keys("C-c")
        shown = screen.wait_for("exit=130", timeout=10)
        said = next(line for line in shown.splitlines() if "Interrupted." in line)
        assert said.lstrip("^C").startswith("Interrupted. Finished:"), shown
        assert screen.tmux("display", "-p", "#{cursor_flag}").strip() == "1", shown
    finally:
        screen.close()


def test_a_model_named_in_wide_characters_keeps_its_calls_rows_whole(backend):
    # A CJK character takes two columns: the view measured the label in characters and drew
    # the table at 130 columns though it did not fit, so each row's preview was "通 …".
    model = "通义千问" * 6
    command = moa_command("run", "--proposers", f"{model}@{backend.url}", "--layers", "2", "q")
    screen = Screen(then_exit_code(command), width=130)
    try:
        shown = screen.wait_for("exit=0")
    finally:
        screen.close()
    assert " …" not in shown and "tok…" not in shown, shown
    assert shown.count(" tok/s") == 2, shown
    assert "answer 1 w0" in shown, shown  # the proposer's preview, as the answer's below


def test_chat_that_outgrew_a_context_says_so_keeps_the_conversation_and_goes_on(tmp_path):
    from langgraph_moa.testing import ScriptedServer

    saved = tmp_path / "chat.json"
    with ScriptedServer(n_ctx={"a": 30}) as server:
        screen = Screen(
            moa_command(
                "chat",
                "--proposers",
                f"a@{server.url}",
                "--aggregator",
                f"agg@{server.url}",
                "--layers",
                "2",
            )
        )
        try:
            screen.wait_for("you>")
            screen.keys("hello", "Enter")
            screen.wait_for("you>", count=2)
            screen.keys("long " * 40, "Enter")  # past the proposer's 30 words
            shown = screen.wait_for("you>", count=3)
            flat = " ".join(shown.split())
            assert "too long for a model's context: /save FILE keeps it" in flat, shown
            assert "or choose a model with a longer context." in flat  # the fix, not clipped
            screen.keys(f"/save {saved}", "Enter")
            screen.wait_for("saved 2 messages")
            screen.keys("/exit", "Enter")
            screen.wait_for("exits with 1")
            assert [b["model"] for b in server.requests].count("a") == 2  # not retried
        finally:
            screen.close()
    kept = json.loads(saved.read_text(encoding="utf-8"))
    assert [m["content"] for m in kept] == ["hello", "agg answers: hello"]


def test_a_dumb_terminal_says_each_call_as_a_line_while_the_run_goes_on():
    # On TERM=dumb (Emacs' shell, a screen reader's console) rich's live view draws nothing
    # until it ends: a run whose aggregator took a minute showed no progress for a minute.
    slow = FaultProfile(latency_s=(60, 60))
    with FaultServer({"slow": slow}, default=FaultProfile(latency_s=(0.1, 0.2))) as server:
        url = server.url
        command = moa_command(
            "run", "--proposers", f"a@{url}", "--aggregator", f"slow@{url}", "--layers", "2", "q"
        )  # fmt: skip
        screen = Screen(then_exit_code(["env", "TERM=dumb", *command]))
        try:
            shown = screen.wait_for(": done in ", timeout=40)  # the aggregator still runs
            assert "L1 proposer 1 · a@" in shown and "running" not in shown, shown
            interrupt_run(screen)
        finally:
            screen.close()


def test_bytes_typed_in_chat_that_are_not_utf8_are_refused_not_sent(backend):
    # A terminal not set to UTF-8 sends other bytes: input() kept them as lone surrogates,
    # every proposer failed with "UnicodeEncodeError: ... surrogates not allowed", and the
    # turn counted as failed (exit 1) instead of the user being told to retype it.
    command = then_exit_code(moa_command("chat", "--proposers", f"a@{backend.url}"))
    screen = Screen(command)
    try:
        screen.wait_for("you>")
        screen.keys("caf")
        screen.tmux("send-keys", "-H", "ff", "fe")  # bytes UTF-8 never uses
        screen.keys("Enter")
        screen.wait_for("not UTF-8 text", timeout=30)
        screen.keys("C-d")
        shown = screen.wait_for("exit=", timeout=10)
        assert "exit=0" in shown and "UnicodeEncodeError" not in shown, shown
        assert backend.requests.get("a", 0) == 0
    finally:
        screen.close()
