"""The real local models through llama.cpp: MoA and Self-MoA answers, provenance, clean-up."""

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.local.runtime import LocalRuntime
from tests.helpers import serve_pids, wait_until_up

pytestmark = [pytest.mark.local_models, pytest.mark.usefixtures("local_models_available")]

QUESTION = {"messages": [("user", "What is the capital of France? Answer in one sentence.")]}
SHORT = {"max_tokens": 48}


@pytest.fixture
def runtime(no_new_servers_left):
    runtime = LocalRuntime.default()
    yield runtime
    runtime.stop_all()


def test_two_layer_moa_on_local_models(runtime):
    config = MoAConfig.from_preset(
        "local-moa",
        proposers=[
            {"model": "local:qwen2.5-coder-0.5b", **SHORT},
            {"model": "local:qwen2.5-coder-1.5b", **SHORT},
        ],
        aggregator={"model": "local:qwen2.5-coder-0.5b", **SHORT},
    )
    out = create_moa_graph(config).invoke(QUESTION)
    answer = out["messages"][-1]
    assert answer.text.strip()
    models = {c["model"] for c in out["calls"]}
    assert models == {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"}
    assert all(c["status"] == "ok" for c in out["calls"])
    assert (
        out["usage"]["total"]["prompt_tokens"] > 0
        and out["usage"]["total"]["completion_tokens"] > 0
    )
    assert len(runtime.running()) == 2


async def test_self_moa_on_a_local_model_async(runtime):
    config = MoAConfig.from_preset(
        "local-self-moa", proposers=[{"model": "local:qwen2.5-coder-0.5b", "samples": 3, **SHORT}]
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    assert out["messages"][-1].text.strip()
    proposals = [c for c in out["calls"] if c["role"] == "proposer"]
    assert [c["sample"] for c in proposals] == [0, 1, 2]
    assert {c["model"] for c in out["calls"]} == {"qwen2.5-coder-0.5b"}


def test_final_answer_streams_token_by_token(runtime):
    config = MoAConfig(
        proposers=[{"model": "local:qwen2.5-coder-0.5b", **SHORT}],
        aggregator={"model": "local:qwen2.5-coder-0.5b", **SHORT},
        variant="single-proposer",
    )
    from langgraph_moa import final_answer_only

    chunks = [
        m.text
        for m, meta in create_moa_graph(config).stream(QUESTION, stream_mode="messages")
        if final_answer_only(meta)
    ]
    assert len([c for c in chunks if c]) > 3
    assert "".join(chunks).strip()


def test_a_server_that_dies_mid_run_is_replaced(runtime, caplog):
    config = MoAConfig(
        proposers=[{"model": "local:qwen2.5-coder-0.5b", **SHORT}],
        aggregator={"model": "local:qwen2.5-coder-0.5b", **SHORT},
        variant="single-proposer",
    )
    graph = create_moa_graph(config)
    graph.invoke(QUESTION)
    [server] = runtime.running()
    os.kill(server.pid, signal.SIGKILL)
    server.process.wait()
    log = Path(server.log_path)  # where it is kept once the runtime finds it dead (moved)
    try:
        with caplog.at_level(logging.WARNING, logger="langgraph_moa.local"):
            out = graph.invoke(QUESTION)
        assert out["messages"][-1].text.strip()
        [replacement] = runtime.running()
        assert replacement.pid != server.pid
        # Replaced, but not silently: the user is told once, with the kept log's path.
        warned = [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith("langgraph_moa.local") and r.levelno >= logging.WARNING
        ]
        log = Path(server.log_path)
        naming = [m for m in warned if str(log) in m]
        assert len(naming) == 1, warned
        assert "'qwen2.5-coder-0.5b'" in naming[0] and "killed by SIGKILL" in naming[0]
        assert log.exists()
    finally:
        log.unlink(missing_ok=True)  # killed on purpose: its log is not left in the temp folder


def test_cli_json_run_prints_the_full_record_and_leaves_no_server(no_new_servers_left):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "langgraph_moa",
            "run",
            "--json",
            "--proposers",
            "local:qwen2.5-coder-1.5b,local:qwen2.5-coder-0.5b",
            "--aggregator",
            "local:qwen2.5-coder-0.5b",
            "--layers",
            "2",  # named models start from a neutral base, whose layered default is 3
            "Name one primary colour.",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["answer"].strip()
    assert {p["model"] for p in record["proposals"]} == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"}
    assert record["usage"]["total"]["calls"] == 3


def test_the_default_moa_run_weighs_votes_of_greedy_and_samples(no_new_servers_left):
    # `moa run` with no preset: local-confidence on the 1.5B model, the answer picked by
    # votes weighted with each answer's own token probability.
    result = subprocess.run(
        [sys.executable, "-m", "langgraph_moa", "run", "--json", "What is 6 times 7?"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["system"]["name"] == "local-confidence"
    assert record["system"]["variant"] == "select"
    assert "42" in record["answer"]
    calls = record["calls"]
    assert [(c["proposer"], c["sample"]) for c in calls] == [(0, 0), (1, 0), (1, 1)]
    assert all(c["model"] == "qwen2.5-coder-1.5b" and c["status"] == "ok" for c in calls)
    # What selection reads from llama.cpp: logprobs, and why each answer ended.
    assert all(c["mean_logprob"] is not None and c["mean_logprob"] <= 0 for c in calls)
    assert all(c["finish_reason"] in ("stop", "length") for c in calls)
    chosen = record["selection"]
    assert chosen["method"] == "confidence" and chosen["tally"][0]["answer"] == "42"
    assert chosen["weights"] and all(0 < w <= 1 for w in chosen["weights"])  # exp(mean logprob)
    assert not chosen.get("note")  # no fallback to plain votes: llama.cpp gave logprobs
    assert record["answer"] == calls[chosen["winner"]]["output"]


def test_local_math_draws_rounds_until_the_worked_answers_agree(no_new_servers_left):
    # The step-by-step preset: the greedy answer and 3 samples in one batch, then rounds of 3
    # until 70% agree (at most 13 answers); worked solutions vote by their stated number.
    question = "A box holds 6 eggs. How many eggs are in 7 boxes?"
    result = subprocess.run(
        [sys.executable, "-m", "langgraph_moa", "run", "-p", "local-math", "--json", question],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    calls, chosen = record["calls"], record["selection"]
    assert [(c["proposer"], c["sample"]) for c in calls[:4]] == [(0, 0), (1, 0), (1, 1), (1, 2)]
    assert len(calls) in (4, 7, 10, 13) and all(c["status"] == "ok" for c in calls)
    assert all(c["finish_reason"] == "stop" for c in calls)  # 640 tokens leave room to finish
    assert chosen["method"] == "vote" and chosen["tally"][0]["answer"] == "42"
    assert chosen["agreement"] >= 0.7 or len(calls) == 13  # stopped early, or drew them all
    assert record["answer"] == calls[chosen["winner"]]["output"]


def test_a_local_answer_cut_off_by_max_tokens_is_recorded_as_such(runtime):
    config = MoAConfig(
        variant="select",
        proposers=[{"model": "local:qwen2.5-coder-0.5b", "temperature": 0.0, "max_tokens": 4}],
    )
    out = create_moa_graph(config).invoke(
        {"messages": [("user", "Explain in detail why the sky is blue.")]}
    )
    (call,) = out["calls"]
    assert call["finish_reason"] == "length" and call["completion_tokens"] == 4


@pytest.mark.parametrize(
    ("stop", "code", "said"),
    [(signal.SIGINT, 130, "Interrupted"), (signal.SIGTERM, 143, "Terminated")],
)
def test_ctrl_c_stops_the_run_cleanly_and_leaves_no_server(no_new_servers_left, stop, code, said):
    # SIGTERM (`timeout`, `docker stop`) too: it killed the command silently, and its
    # servers were left to notice their parent's death by themselves.
    before = serve_pids()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "langgraph_moa",
            "run",
            "--no-stream",
            "Write a long story about a dragon.",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (serve_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(stop)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert said in err and "Traceback" not in err
    deadline = time.monotonic() + 10
    while serve_pids() - before and time.monotonic() < deadline:
        time.sleep(0.2)


def test_streamed_answer_still_reports_its_tokens(runtime):
    config = MoAConfig(
        proposers=[{"model": "local:qwen2.5-coder-0.5b", **SHORT}],
        aggregator={"model": "local:qwen2.5-coder-0.5b", **SHORT},
        variant="single-proposer",
    )
    final = None
    for mode, chunk in create_moa_graph(config).stream(
        QUESTION, stream_mode=["messages", "values"]
    ):
        if mode == "values":
            final = chunk
    aggregator = final["calls"][-1]
    assert aggregator["role"] == "aggregator"
    assert aggregator["prompt_tokens"] > 20 and aggregator["completion_tokens"] > 0
    assert final["usage"]["total"]["total_tokens"] == sum(c["total_tokens"] for c in final["calls"])


def test_a_prompt_longer_than_the_context_gets_a_clear_error(runtime):
    from langgraph_moa import AllProposersFailedError

    config = MoAConfig(
        proposers=[{"model": "local:qwen2.5-coder-0.5b", **SHORT}],
        aggregator={"model": "local:qwen2.5-coder-0.5b", **SHORT},
        variant="single-proposer",
    )
    huge = {"messages": [("user", "Summarize: " + "lorem ipsum dolor sit amet " * 1500)]}
    with pytest.raises(AllProposersFailedError) as err:
        create_moa_graph(config).invoke(huge)
    # The size before the provider's words: a failed call's line is clipped.
    assert "too long for local:qwen2.5-coder-0.5b (its context holds 4096 tokens)" in str(err.value)


def test_structured_output_on_a_local_aggregator_has_the_requested_shape(runtime):
    from pydantic import BaseModel

    from langgraph_moa import MoAChatModel

    class Capital(BaseModel):
        country: str
        capital: str

    config = MoAConfig(
        variant="single-proposer",
        proposers=[{"model": "local:qwen2.5-coder-0.5b", **SHORT}],
        aggregator={"model": "local:qwen2.5-coder-0.5b", "max_tokens": 64, "temperature": 0.0},
    )
    # llama.cpp constrains decoding to the JSON schema, so even a 0.5B model keeps the shape.
    answer = (
        MoAChatModel(config=config)
        .with_structured_output(Capital)
        .invoke("What is the capital of France?")
    )
    assert isinstance(answer, Capital)
    assert "paris" in answer.capital.lower()


def test_a_taken_port_is_replaced_by_a_free_one(no_new_servers_left):
    import socket

    from langgraph_moa.local.catalog import lookup
    from langgraph_moa.local.runtime import LocalServer

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server = LocalServer(lookup("qwen2.5-coder-0.5b"), threads=1, port=taken)
        try:
            server.wait_ready()
            assert server.port != taken and server.alive()
        finally:
            server.stop()


def test_chat_holds_a_multi_turn_conversation(no_new_servers_left):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "langgraph_moa",
            "chat",
            "--proposers",
            "local:qwen2.5-coder-0.5b",
            "--aggregator",
            "local:qwen2.5-coder-0.5b",
            "--variant",
            "single-proposer",
        ],
        input="My name is Ada. Say hello to me.\nWhat is my name?\n",  # then end of input
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    answers = result.stdout.strip().splitlines()  # stdout holds the answers alone
    assert len(answers) >= 2 and "Ada" in answers[-1]  # the second turn remembers the first
    assert "Traceback" not in result.stderr


def test_moa_chat_warns_when_it_replaces_a_server_that_died_between_turns(no_new_servers_left):
    # A server killed between two turns (by the user, by the OOM killer) was replaced in
    # silence, its kept log named nowhere: the command now warns, naming the log.
    import re

    before = serve_pids()
    chat = subprocess.Popen(
        [
            *[sys.executable, "-m", "langgraph_moa", "chat", "--quiet", "--max-tokens", "16"],
            *[
                "--proposers",
                "local:qwen2.5-coder-0.5b",
                "--aggregator",
                "local:qwen2.5-coder-0.5b",
            ],
            *["--variant", "single-proposer"],
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        chat.stdin.write("Say hello.\n")
        chat.stdin.flush()
        assert chat.stdout.readline().strip()  # the first answer: its server is up
        [server] = serve_pids() - before
        os.kill(server, signal.SIGKILL)
        out, err = chat.communicate("Say goodbye.\n", timeout=300)
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()
    assert chat.returncode == 0, err
    assert out.strip() and "Traceback" not in err
    warned = [line for line in err.splitlines() if line.startswith("warning: The llama.cpp")]
    assert warned and "a new one was started" in warned[-1], err
    # The log named once: where the replacement is said, or first where a call broke with
    # the server (chat may still be calling it), that warning then showing the log's end.
    [said] = [line for line in warned if "kept at" in line]
    assert "'qwen2.5-coder-0.5b'" in said and "killed by SIGKILL" in said, said
    log = Path(re.search(r"kept at (\S+\.log)", said).group(1))
    assert log.exists()
    log.unlink()  # killed on purpose: the test leaves no log behind


def test_moa_serve_process_streams_a_local_answer_and_leaves_nothing_behind(no_new_servers_left):
    from langgraph_moa.transport._net import free_port

    port = free_port()
    # `with`: the pipes are closed at the end; left open, each was an unclosed file
    # (ResourceWarning) once the Popen was collected.
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "langgraph_moa",
            "serve",
            "--preset",
            "local-self-moa",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        _stream_a_local_answer(proc, port)
    deadline = time.monotonic() + 10
    while serve_pids() and time.monotonic() < deadline:
        time.sleep(0.2)


def _stream_a_local_answer(proc: subprocess.Popen, port: int) -> None:
    """Ask the `moa serve` process `proc` for a streamed answer, then stop it with Ctrl-C."""
    import openai

    try:
        wait_until_up(
            f"http://127.0.0.1:{port}/v1/models", proc, 60, why=lambda: proc.stderr.read()
        )
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0
        )
        stream = client.chat.completions.create(
            model="local-self-moa",
            messages=[{"role": "user", "content": "Name a colour."}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=32,
            extra_body={"samples": 2},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip()
        assert chunks[-1].usage.completion_tokens > 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # else leaving the `with` would wait for it forever
            raise


def test_chunk_wise_parts_continue_the_local_aggregators_own_message(runtime):
    from langgraph_moa import final_answer_only

    explain = {"messages": [("user", "Explain in three sentences why the sky is blue.")]}
    config = MoAConfig(
        proposers=[{"model": "local:qwen2.5-coder-0.5b", "max_tokens": 64}] * 2,
        aggregator={"model": "local:qwen2.5-coder-0.5b", "max_tokens": 40},
        layers=2,
        aggregation={"start": "chunks", "chunk_tokens": 8},
    )
    tokens, final = [], {}
    for mode, chunk in create_moa_graph(config).stream(explain, stream_mode=["messages", "values"]):
        if mode == "messages" and final_answer_only(chunk[1]):
            tokens.append(chunk[0].text)
        elif mode == "values":
            final = chunk
    answer = final["messages"][-1]
    chunkwise = answer.response_metadata["moa"]["chunkwise"]
    assert chunkwise["continuation"] == "prefill" and len(chunkwise["parts"]) >= 2
    # The parts join into the answer streamed: llama.cpp continued each prefilled message
    # (streaming only the continuation) and no marker of the instruction mode leaked in.
    assert "".join(tokens) == answer.text and answer.text.strip()
    assert "answer_so_far" not in answer.text
    aggregator = final["calls"][-1]
    assert aggregator["role"] == "aggregator" and 0 < aggregator["completion_tokens"] <= 40


async def test_llama_cpp_answers_and_chunks_are_built_by_validation(runtime, monkeypatch):
    """The lean create builds responses by pydantic's validation and leaves to the SDK's
    ``construct_type`` only what would not validate: llama.cpp's answers and streamed chunks
    (with its own extra fields) must validate, or the local models lose that speed silently."""
    import langgraph_moa.transport._completions as lean_module
    from langgraph_moa.providers._models import build_model

    built, left_to_the_sdk = [], []
    construct, build = lean_module.construct_type, lean_module.validate_or_construct

    def counted_construct(**kwargs):
        left_to_the_sdk.append(kwargs["value"])
        return construct(**kwargs)

    def counted_build(sdk_type, data):
        built.append(sdk_type.__name__)
        return build(sdk_type, data)

    monkeypatch.setattr(lean_module, "construct_type", counted_construct)
    monkeypatch.setattr(lean_module, "validate_or_construct", counted_build)
    model = build_model("local:qwen2.5-coder-0.5b", {"max_tokens": 16})
    assert type(model.async_client) is lean_module.LeanAsyncCompletions
    answer = await model.ainvoke("Say hi.")
    chunks = [chunk async for chunk in model.astream("Say hi.")]
    assert answer.text.strip() and answer.usage_metadata["output_tokens"] > 0
    assert len(chunks) > 2 and "".join(chunk.text for chunk in chunks).strip()
    assert built.count("ChatCompletion") == 1 and built.count("ChatCompletionChunk") > 2
    assert left_to_the_sdk == []


def _server_gone(pid: int) -> bool:
    """Gone, or a zombie nobody reaps (its parent is dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _reached_its_prctl(pid: int) -> bool:
    """Wait until the server runs its watchdog thread, started just after its prctl.

    False if it is gone first, or after a minute.
    """
    deadline = time.monotonic() + 60
    while not _server_gone(pid) and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if len(os.listdir(f"/proc/{pid}/task")) >= 2:
                return True
        time.sleep(0.05)
    return False


def test_a_server_whose_parent_is_killed_while_it_loads_dies_with_it(tmp_path):
    # The server's watchdog thread started only after seconds of imports (langchain, via
    # the `local` package), and cannot run while llama.cpp holds the GIL loading the model:
    # a parent killed then left an orphan that loaded on for many seconds.
    code = (
        "import time\n"
        "from langgraph_moa.local.runtime import LocalRuntime\n"
        "print(LocalRuntime.default().server('qwen2.5-coder-0.5b').pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env) as parent:
        try:
            server = int(parent.stdout.readline())
            # Killed earlier, the server's watchdog would still see it before the load: the
            # test would pass without the prctl it is about.
            assert _reached_its_prctl(server), "the server ended before it began to load it"
        finally:  # also on a failure: leaving the `with` waits for the parent's 600 s sleep
            parent.kill()
    deadline = time.monotonic() + 5  # the model's load takes far longer on this machine
    while not _server_gone(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = not _server_gone(server)
    if alive:
        os.kill(server, signal.SIGKILL)
    assert not alive, "the orphaned server went on loading its model"


def test_a_server_started_from_a_thread_that_ended_lives_on(runtime):
    # The kernel kills a child when the *thread* that started it ends (PR_SET_PDEATHSIG):
    # servers are started from one thread that lives as long as the process. The thread
    # here ends only once the server has asked for that (its watchdog thread starts right
    # after its prctl): ended before, it would not show the server killed with it.
    import threading

    started, reached = [], []

    def start_and_wait_for_the_prctl():
        started.append(runtime.server("qwen2.5-coder-0.5b"))
        reached.append(_reached_its_prctl(started[0].pid))

    thread = threading.Thread(target=start_and_wait_for_the_prctl)
    thread.start()
    thread.join()
    (server,) = started
    server.wait_ready()
    assert server.alive()
    assert reached == [True], "the test's thread ended before the server asked for PDEATHSIG"
