"""The `moa` command as a process against a fake OpenAI-compatible backend on loopback.

What a script sees: stdout holds the answer's bytes and nothing else, every other line is on
stderr, exit codes tell a degraded answer and a failed evaluation from a clean one, the
question comes from stdin or a file, a chat survives a failed turn, and `moa serve` refuses
what cannot work before it says "Serving".
"""

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from langgraph_moa.testing import FaultProfile, FaultServer
from langgraph_moa.transport._net import free_port

MOA = [sys.executable, "-c", "from langgraph_moa.cli._app import main; main()"]
ANSI = "\x1b["


def moa(*args, input=None, env=None, timeout=120):
    return subprocess.run(
        [*MOA, *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def reply(model, n, words=12):
    """The fake backend's n-th answer for `model` (see testing/fault_server.py)."""
    return f"{model} answer {n} " + " ".join(f"w{i}" for i in range(words - 3))


@pytest.fixture
def backend():
    failing = FaultProfile(error_rate=1.0, errors=["400"])
    with FaultServer({"bad": failing, "flaky": failing}) as server:
        yield server


def models(backend, *names):
    return ",".join(f"{n}@{backend.url}" for n in names)


def test_piped_output_is_the_answer_alone_byte_exact(backend):
    result = moa(
        "run",
        "--proposers",
        models(backend, "a", "b"),
        "--aggregator",
        models(backend, "agg"),
        "--layers",
        "2",
        "Why is the sky blue?",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == reply("agg", 1) + "\n"
    assert ANSI not in result.stdout + result.stderr
    err = result.stderr.splitlines()
    # The header states the neutral base in full; one line per call; the summary last.
    assert err[0].startswith("custom: moa, 2 layers · proposers a@")
    assert "(max 512 tokens, T 0.7)" in err[0] and "aggregator agg@" in err[0]
    assert sum(": done in " in line and " tok/s: " in line for line in err) == 3
    assert err[-1].startswith("3 calls (0 failed)")
    quiet = moa("run", "-q", "--proposers", models(backend, "a"), "--layers", "2", "hi")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout == reply("a", 3) + "\n"  # "a" aggregates: its 3rd call here


def test_no_stream_and_json_pipe_too(backend):
    result = moa("run", "--no-stream", "--proposers", models(backend, "a"), "--layers", "2", "x")
    assert result.stdout == reply("a", 2) + "\n"
    record = json.loads(moa("run", "--json", "-q", "--proposers", models(backend, "c"), "x").stdout)
    assert record["answer"] == reply("c", 3) and len(record["calls"]) == 3


def test_a_fallback_is_said_and_its_exit_code_says_it_too(backend):
    args = ["run", "--proposers", models(backend, "a"), "--aggregator", models(backend, "bad")]
    args += ["--layers", "2", "q"]
    fallback = moa(*args)
    assert fallback.returncode == 3
    assert fallback.stdout == reply("a", 1) + "\n"  # the proposal is still given, labelled
    warning = next(line for line in fallback.stderr.splitlines() if "fallback" in line)
    assert warning.startswith("warning: this answer is a fallback (best_proposal)")
    assert "injected 400 for bad" in warning
    strict = moa(*args, "--strict")
    assert strict.returncode == 3 and "fallback" in strict.stderr


def test_a_failed_proposer_is_said_and_strict_makes_it_an_exit_code(backend):
    proposers = f"{models(backend, 'a')},{models(backend, 'bad')}"
    args = ["run", "--proposers", proposers, "--aggregator", models(backend, "a"), "--layers", "2"]
    lenient = moa(*args, "q")
    assert lenient.returncode == 0  # the configured aggregator answered, from one proposal
    assert "warning: 1 of 3 calls failed" in lenient.stderr
    strict = moa(*args, "--strict", "q")
    assert strict.returncode == 3 and strict.stdout.startswith("a answer")  # still given


def test_the_question_comes_from_stdin_or_a_file(backend, tmp_path):
    spec = models(backend, "a")
    piped = moa("run", "-q", "--proposers", spec, "--layers", "2", "-", input="line 1\nline 2\n")
    assert piped.returncode == 0, piped.stderr
    assert backend.requests["a"] == 2
    question = tmp_path / "q.txt"
    question.write_bytes(b"\xff\xfe not text")
    bad = moa("run", "--proposers", spec, "--file", str(question))
    assert bad.returncode == 1 and "is not UTF-8 text" in bad.stderr
    assert backend.requests["a"] == 2  # refused before any call
    question.write_text("a long question " * 5000, encoding="utf-8")  # past no argument limit
    from_file = moa("run", "-q", "--proposers", spec, "--layers", "2", "--file", str(question))
    assert from_file.returncode == 0 and from_file.stdout == reply("a", 4) + "\n"


def test_conflicting_flags_are_one_line_and_nothing_is_called(backend):
    result = moa(
        "run", "--variant", "select", "--aggregator", models(backend, "a"), "--proposers",
        models(backend, "b"), "q",
    )  # fmt: skip
    assert result.returncode == 2  # a usage error, as click's own
    assert result.stderr.startswith("error: --aggregator has no effect with variant select")
    assert len(result.stderr.strip().splitlines()) == 1
    assert backend.requests == {}


def test_a_chat_turn_that_fails_is_reported_and_the_session_goes_on(backend, tmp_path):
    chat = subprocess.Popen(
        [*MOA, "chat", "--proposers", models(backend, "flaky"), "--aggregator",
         models(backend, "agg"), "--layers", "2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in chat.stderr], daemon=True).start()

    def wait_for(text):
        """Return the lines of stderr up to the one holding `text`."""
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seen.append(lines.get(timeout=deadline - time.monotonic()))
            if text in seen[-1]:
                return seen
        raise AssertionError(f"never saw {text!r}")

    chat.stdin.write("first question\n")
    chat.stdin.flush()
    failure = wait_for("the conversation goes on")
    # Every proposer failed: the error lists each failure on a line of its own.
    start = next(i for i, line in enumerate(failure) if line.startswith("error: "))
    assert "failed, so the aggregator was not called:" in failure[start]
    assert "injected 400 for flaky" in failure[start + 1]
    assert failure[-1] == "(this turn was not added; the conversation goes on)\n"
    backend.profiles["flaky"] = FaultProfile()  # the provider recovers
    save = tmp_path / "chat.json"
    chat.stdin.write(f"\nsecond \\\ncontinued\n/save {save}\n/exit\n")
    chat.stdin.flush()
    stdout, _ = chat.communicate(timeout=120)
    assert chat.returncode == 1  # the session went on, and its exit code says a turn failed
    assert stdout == reply("agg", 1) + "\n"
    saved = json.loads(save.read_text())
    # The failed turn was taken back; the continued line is one message.
    assert [m["content"] for m in saved] == ["second \ncontinued", reply("agg", 1)]


def test_serve_refuses_a_keyless_preset_before_serving():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    result = subprocess.run(
        [*MOA, "serve", "-p", "moa-lite"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1
    assert "Serving" not in result.stdout + result.stderr
    assert result.stderr.startswith("error: Preset 'moa-lite' needs TOGETHER_API_KEY")
    unknown = moa("serve", "-p", "nope")
    assert unknown.returncode == 1 and "Unknown preset 'nope'" in unknown.stderr
    assert "Serving" not in unknown.stderr


def _serving(config, *args):
    """Start `moa serve --config config *args` on a free port; return the process and port."""
    port = free_port()
    server = subprocess.Popen(
        [*MOA, "serve", "--config", str(config), "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return server, port


def _health(base):
    """Return the server's /health answer once it listens ("Serving" is said just before)."""
    for _ in range(100):
        try:
            return httpx.get(f"{base}/health")
        except httpx.ConnectError:
            time.sleep(0.1)
    raise AssertionError(f"{base} did not answer within 10 s")


def _until_in_flight(base, client):
    """Return once /health counts a request in flight; fail if `client` ended first or 60 s pass."""
    deadline = time.monotonic() + 60
    while httpx.get(f"{base}/health", timeout=30).json().get("in_flight", 0) < 1:
        assert client.is_alive(), "the request ended before the server counted it"
        assert time.monotonic() < deadline, "the request was never counted in flight"
        time.sleep(0.1)


def test_serve_a_config_file_logs_each_request_and_refuses_a_taken_port(backend, tmp_path):
    config = tmp_path / "fake.yaml"
    config.write_text(
        f"name: fake-moa\nlayers: 2\nproposers: ['a@{backend.url}']\naggregator: 'bad@{backend.url}'\n"
    )
    server, port = _serving(config)
    try:
        assert server.stderr.readline().startswith(f"Serving fake-moa on http://127.0.0.1:{port}")
        base = f"http://127.0.0.1:{port}"
        health = _health(base).json()
        assert health["status"] == "ok" and health["models"] == ["fake-moa"]
        assert (health["in_flight"], health["runs"], health["busy"]) == (0, 0, False)
        body = {"model": "fake-moa", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).json()
        assert answer["moa"]["fallback"] == "best_proposal"
        line = server.stderr.readline()
        assert line.startswith("POST /v1/chat/completions 200 · fake-moa · 2 calls, 1 failed")
        assert "tokens · fallback: best_proposal" in line
        missing = httpx.post(f"{base}/v1/chat/completions", json={**body, "model": "x"})
        assert missing.status_code == 404
        line = server.stderr.readline()
        assert line.startswith("POST /v1/chat/completions 404 · x · error: The model 'x'")
        taken = moa("serve", "--config", str(config), "--port", str(port))
        assert taken.returncode == 1 and "Serving" not in taken.stderr
        assert "choose another with --port" in taken.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_eval_fails_when_a_system_errors_on_every_item(backend, tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text(
        f"name: broken-moa\nlayers: 2\nproposers: ['bad@{backend.url}']\n"
        f"aggregator: 'a@{backend.url}'\n"
    )
    data = tmp_path / "items.jsonl"
    rows = [
        {"id": "q1", "instruction": "2+2?", "expected": "4", "category": "math"},
        {"id": "q2", "instruction": "Say hi."},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = moa(
        "eval", "-s", str(config), "--dataset", str(data), "--out", str(tmp_path / "out"),
        "--no-plots",
    )  # fmt: skip
    assert result.returncode == 1
    error = result.stderr[result.stderr.index("error: broken-moa") :]  # its failures, a line each
    assert error.startswith("error: broken-moa failed on every item (2); the first error:")
    assert "injected 400 for bad" in error
    # The report, on stdout, names the system by its `name:` and says what was not scored.
    assert "| broken-moa |" in result.stdout
    assert "broken-moa**: 2 of 2 items failed; the first error:" in result.stdout
    # Progress lines, since stderr is not a terminal.
    assert "broken-moa: 2/2 items" in result.stderr


def test_models_prints_whole_specs_and_json():
    listing = moa("models")
    assert listing.returncode == 0 and ANSI not in listing.stdout
    assert listing.stdout.splitlines()[1].startswith("local:qwen2.5-coder-1.5b\t")
    data = json.loads(moa("models", "--json").stdout)
    assert "local:qwen2.5-coder-1.5b" in [m["spec"] for m in data["local"]]
    assert "local-confidence" in data["presets"]
    version = moa("--version")
    assert version.returncode == 0 and version.stdout.startswith("langgraph-moa ")


def test_unreachable_langsmith_costs_one_line(backend):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    env = {
        "LANGSMITH_TRACING": "true",
        "LANGSMITH_API_KEY": "lsv2-secret-key",
        "LANGSMITH_ENDPOINT": f"http://127.0.0.1:{dead}",
    }
    args = ["run", "--proposers", models(backend, "a"), "--layers", "2", "q"]
    result = moa(*args, env=env)
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if "LangSmith" in line]
    assert warnings == [
        f"warning: LangSmith tracing is off for this run: http://127.0.0.1:{dead} cannot be "
        "reached."
    ]
    assert "lsv2-secret-key" not in result.stderr
    no_key = moa("eval", "-s", "local-confidence", "--langsmith-dataset", "d", env={
        "LANGSMITH_API_KEY": "", "LANGCHAIN_API_KEY": ""})  # fmt: skip
    assert no_key.returncode == 1
    assert no_key.stderr.strip() == (
        "error: --langsmith-dataset 'd' needs LANGSMITH_API_KEY: export it, or give a local "
        "file with --dataset."
    )
    env["LANGSMITH_TRACING"] = "false"
    offline = moa("eval", "-s", "local-confidence", "--langsmith-dataset", "d", env=env)
    assert offline.returncode == 1 and "lsv2" not in offline.stderr
    assert offline.stderr.strip() == (
        f"error: Cannot read the LangSmith dataset 'd': http://127.0.0.1:{dead} cannot be "
        "reached (check the network or LANGSMITH_ENDPOINT)."
    )


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_an_answer_cut_off_at_max_tokens_is_said(stream):
    # The aggregator's answer, cut by its max_tokens (finish_reason "length"), was printed
    # as if whole: exit 0 and not a word on stderr, though it may stop mid-sentence.
    from langgraph_moa.testing import ScriptedServer

    with ScriptedServer() as server:
        spec = f"a@{server.url}"
        args = ["run", stream, "--proposers", spec, "--layers", "2"]
        cut = moa(*args, "--max-tokens", "3", "why is the sky so very blue today")
        whole = moa(*args, "why")
    assert cut.returncode == 0 and cut.stdout == "a answers: why\n"
    warning = [line for line in cut.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "max_tokens" in warning[0] and "--max-tokens" in warning[0]
    assert whole.returncode == 0 and "warning" not in whole.stderr


def test_an_aggregator_cut_midway_still_gives_the_labelled_fallback():
    # The aggregator's stream broke halfway on every attempt, and the labelled fallback
    # answered: moa run, which prints the answer once at the end (the live view only shows
    # the text streaming), ended with "error: The answer's stream broke", exit 1, and no
    # answer, as if it had sent the cut half somewhere.
    cutting = FaultProfile(error_rate=1.0, errors=["cut"], reply_words=40)
    with FaultServer({"cutter": cutting}) as server:
        args = ["--proposers", f"a@{server.url}", "--aggregator", f"cutter@{server.url}"]
        result = moa("run", *args, "--layers", "2", "q")
    assert result.returncode == 3, result.stderr
    assert result.stdout == reply("a", 1) + "\n"
    assert "warning: this answer is a fallback (best_proposal)" in result.stderr
    assert "stream broke" not in result.stderr


@contextlib.contextmanager
def _serving_a_run_in_flight(tmp_path, latency_s, answers):
    """Serve a one-proposer MoA whose backend answers after `latency_s`, and yield the server
    once /health counts a chat request in flight; each status it answers goes to `answers`."""
    slow = FaultProfile(latency_s=(latency_s, latency_s))
    with FaultServer({"slow": slow}) as backend:
        config = tmp_path / "slow.yaml"
        config.write_text(f"name: slow\nvariant: select\nproposers: ['slow@{backend.url}']\n")
        server, port = _serving(config)
        try:
            assert server.stderr.readline().startswith("Serving slow on")
            base = f"http://127.0.0.1:{port}"
            _health(base)
            body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
            url = f"{base}/v1/chat/completions"

            def ask() -> None:
                with contextlib.suppress(httpx.HTTPError):  # the server may end mid-request
                    answers.put(httpx.post(url, json=body, timeout=120).status_code)

            client = threading.Thread(target=ask, daemon=True)
            client.start()
            _until_in_flight(base, client)
            yield server
        finally:
            if server.poll() is None:
                server.kill()
            server.wait(timeout=30)


def test_ctrl_c_while_a_request_runs_says_that_serve_waits_for_it(tmp_path):
    # Ctrl-C on `moa serve` with a run in flight was silent until the run ended (17 s on the
    # local models): uvicorn drains the open requests, but says so below the log level the
    # command runs it at. The wait is now said, with the way to stop at once.
    answers: queue.Queue[int] = queue.Queue()
    with _serving_a_run_in_flight(tmp_path, 6.0, answers) as server:
        server.send_signal(signal.SIGINT)
        line = server.stderr.readline()
        # Said while the run was still in flight, not when it ended (no clock: it read
        # 4.1 s against a 3 s bound on a loaded machine, the line right all the same).
        assert answers.empty(), line
        assert "waiting for the requests in flight" in line and "Ctrl-C again" in line
        assert answers.get(timeout=30) == 200  # the run in flight still answered
        rest = server.communicate(timeout=30)[1]
        assert "Traceback" not in rest and "Interrupted." in rest, rest
        assert server.returncode == 130


def test_a_second_sigterm_during_the_drain_stops_serve_at_once(tmp_path):
    # A second SIGTERM during the drain did nothing (uvicorn forces only on a second SIGINT):
    # `docker stop` waited for its SIGKILL. It now ends the drain: "Terminated.", 143.
    # The run in flight never ends by itself (600 s).
    with _serving_a_run_in_flight(tmp_path, 600.0, queue.Queue()) as server:
        server.send_signal(signal.SIGTERM)
        line = server.stderr.readline()
        assert "waiting for the requests in flight" in line and "SIGTERM" in line, line
        server.send_signal(signal.SIGTERM)
        rest = server.communicate(timeout=60)[1]  # the run would hold it for 600 s
        assert "Traceback" not in rest and "Terminated." in rest, rest
        assert server.returncode == 143


def test_past_the_drain_timeout_an_open_stream_ends_with_a_last_event(tmp_path):
    # The drain was bounded only by --request-timeout (600 s): `docker stop` (10 s) and
    # Kubernetes (30 s) killed open streams mid-answer, and their clients saw a cut
    # connection. Past --drain-timeout each open stream now ends with an error event saying
    # the server is stopping, then [DONE], and the terminal says how many runs it stopped.
    profiles = {"fast": FaultProfile(), "slow": FaultProfile(reply_words=600, token_s=1.0)}
    with FaultServer(profiles) as backend:
        config = tmp_path / "slow.yaml"
        config.write_text(
            f"name: slow\nproposers: ['fast@{backend.url}']\naggregator: 'slow@{backend.url}'\n"
        )
        server, port = _serving(config, "--drain-timeout", "1")
        try:
            assert server.stderr.readline().startswith("Serving slow on")
            base = f"http://127.0.0.1:{port}"
            _health(base)
            body = {
                "model": "slow",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
            }
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as r:
                assert r.status_code == 200
                events = (line for line in r.iter_lines() if line.startswith("data: "))
                assert "content" in next(events)  # the answer has begun
                server.send_signal(signal.SIGTERM)
                rest = list(events)  # the 600 words would take 10 minutes
            assert rest[-1] == "data: [DONE]", rest[-3:]
            error = json.loads(rest[-2].removeprefix("data: "))["error"]
            assert "stopping" in error["message"] and error["code"] == 503, error
            err = server.communicate(timeout=60)[1]
            assert "Stopped 1 run" in err and "--drain-timeout" in err, err
            assert "Traceback" not in err and server.returncode == 143, err
        finally:
            if server.poll() is None:
                server.kill()
            server.wait(timeout=30)


def test_an_answer_stdouts_encoding_cannot_hold_is_escaped_and_said():
    # With a non-UTF-8 stdout (PYTHONIOENCODING=ascii, or a C locale with UTF-8 mode off)
    # the finished answer was lost: "unexpected error: UnicodeEncodeError", exit code 1.
    profile = FaultProfile(reply_text="Grüße — 答え")
    with FaultServer({"u": profile}) as server:
        args = ["run", "-q", "--proposers", f"u@{server.url}", "--layers", "2", "hi"]
        for env in ({"PYTHONIOENCODING": "ascii"}, {"LC_ALL": "C", "PYTHONUTF8": "0"}):
            result = moa(*args, env=env)
            assert result.returncode == 0, result.stderr
            assert result.stdout == "Gr\\xfc\\xdfe \\u2014 \\u7b54\\u3048\n"
            assert result.stderr.startswith("warning: standard output's encoding (")
            assert "PYTHONIOENCODING=utf-8" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]])
def test_help_into_a_pipe_whose_reader_left_exits_0_quietly(args):
    """`moa --help | head -1`: the help was given; a reader that left is no failure (exit 0).

    rich, which writes the help, ends the process with exit code 1 when stdout's reader has
    left. The pipe's read end is closed before the command writes, as `head -1` closes it.
    """
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [*MOA, *args], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (0, "")


REDRAW = ("\x1b[1A", "\x1b[2K")
"""A live view's cursor-up and erase-line: what redraws a frame in place."""


def test_force_color_into_a_log_colours_its_lines_and_redraws_nothing(backend):
    # FORCE_COLOR=1 (set by many CI systems) made rich take the log file for a terminal:
    # the live view redrew into it, eight frames a second of cursor moves, not a line a call.
    result = moa(
        "run", "--proposers", models(backend, "a"), "--layers", "2", "Why?",
        env={"FORCE_COLOR": "1", "TTY_COMPATIBLE": "", "TTY_INTERACTIVE": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not any(code in result.stderr for code in REDRAW), result.stderr
    assert ANSI in result.stderr  # the colours asked for
    assert result.stderr.count(": done in ") == 2, result.stderr


def test_a_closed_stdout_runs_to_the_end_without_an_unexpected_error(backend):
    # `moa run ... >&-`: with no stdout at all, Python's sys.stdout is None, and the finished
    # run ended in "unexpected error: AttributeError: 'NoneType' ... 'isatty'", exit 1.
    command = " ".join(
        [*MOA[:2], f"'{MOA[2]}'", "run", "--proposers", models(backend, "a"), "Why?"]
    )
    result = subprocess.run(
        ["bash", "-c", f"{command} >&-"], capture_output=True, text=True, timeout=120
    )
    assert "unexpected error" not in result.stderr, result.stderr
    assert result.returncode == 0 and "L1 proposer 1" in result.stderr, result.stderr
