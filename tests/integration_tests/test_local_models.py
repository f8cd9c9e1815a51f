"""The real local models through llama.cpp: MoA and Self-MoA answers, provenance, clean-up."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.local.runtime import LocalRuntime
from tests.integration_tests.conftest import serve_pids

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
            {"model": "local:smollm2-135m", **SHORT},
        ],
        aggregator={"model": "local:qwen2.5-coder-0.5b", **SHORT},
    )
    out = create_moa_graph(config).invoke(QUESTION)
    answer = out["messages"][-1]
    assert answer.text.strip()
    models = {c["model"] for c in out["calls"]}
    assert models == {"qwen2.5-coder-0.5b", "smollm2-135m"}
    assert all(c["status"] == "ok" for c in out["calls"])
    assert (
        out["usage"]["total"]["prompt_tokens"] > 0
        and out["usage"]["total"]["completion_tokens"] > 0
    )
    assert len(runtime.running()) == 2


async def test_self_moa_on_a_local_model_async(runtime):
    config = MoAConfig.from_preset(
        "local-self-moa", proposers=[{"model": "local:smollm2-135m", "samples": 3, **SHORT}]
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    assert out["messages"][-1].text.strip()
    proposals = [c for c in out["calls"] if c["role"] == "proposer"]
    assert [c["sample"] for c in proposals] == [0, 1, 2]
    assert {c["model"] for c in out["calls"]} == {"smollm2-135m"}


def test_final_answer_streams_token_by_token(runtime):
    config = MoAConfig(
        proposers=[{"model": "local:smollm2-135m", **SHORT}],
        aggregator={"model": "local:smollm2-135m", **SHORT},
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


def test_a_server_that_dies_mid_run_is_replaced(runtime):
    config = MoAConfig(
        proposers=[{"model": "local:smollm2-135m", **SHORT}],
        aggregator={"model": "local:smollm2-135m", **SHORT},
        variant="single-proposer",
    )
    graph = create_moa_graph(config)
    graph.invoke(QUESTION)
    [server] = runtime.running()
    os.kill(server.pid, signal.SIGKILL)
    server.process.wait()
    out = graph.invoke(QUESTION)
    assert out["messages"][-1].text.strip()
    [replacement] = runtime.running()
    assert replacement.pid != server.pid


def test_cli_json_run_prints_the_full_record_and_leaves_no_server(no_new_servers_left):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "langgraph_moa",
            "run",
            "--json",
            "--proposers",
            "local:smollm2-135m,local:qwen2.5-coder-0.5b",
            "--aggregator",
            "local:qwen2.5-coder-0.5b",
            "Name one primary colour.",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["answer"].strip()
    assert {p["model"] for p in record["proposals"]} == {"smollm2-135m", "qwen2.5-coder-0.5b"}
    assert record["usage"]["total"]["calls"] == 3


def test_ctrl_c_stops_the_run_cleanly_and_leaves_no_server(no_new_servers_left):
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
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Interrupted" in err and "Traceback" not in err
    deadline = time.monotonic() + 10
    while serve_pids() - before and time.monotonic() < deadline:
        time.sleep(0.2)
