"""The docs' python blocks that call the local models, and every examples/*.py, run as written.

The blocks (`tests/snippets.py` finds them; tests/unit_tests/test_doc_snippets.py runs the
rest and checks every block is run by one of the two) run in a fresh interpreter in an empty
working folder, joined after the blocks above them under the same heading. Each example runs
as `python <repository>/examples/x.py` from an empty folder (langsmith_eval.py writes its
cache where it runs), and must exit 0 saying what it claims.

What a test supplies, as tests/integration_tests/test_readme_cli.py does for the `moa`
lines: the servers a block or an example names (`moa serve --preset local-moa --port 8000`,
the command examples/openai_client.py's docstring gives, and `langgraph dev --port 2025`,
examples/langgraph_server_client.py's), started once per module; `my-moa.yaml` (two
proposers and an aggregator on the fake OpenAI-compatible backend on loopback) and
`prices.yaml` made in the working folder first. The one change to a block: docs/evaluation.md's
`load_dataset(shipped_dataset())` becomes `load_dataset(shipped_dataset())[:1]`, `moa eval`'s
`--limit 1` (the shipped dataset has 256 items).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from langgraph_moa.testing import FaultProfile, FaultServer
from tests.helpers import serve_pids, wait_until_up
from tests.snippets import ROOT, snippets, with_earlier_in_section

pytestmark = [pytest.mark.local_models, pytest.mark.usefixtures("local_models_available")]


def environment(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "LANGGRAPH_CLI_NO_ANALYTICS": "1"}
    env.pop("LANGSMITH_TRACING", None)
    return {**env, **extra}


def stop(proc: subprocess.Popen, before: set[int]) -> None:
    """Stop a server started in its own session; its llama.cpp servers must go with it."""
    with suppress(ProcessLookupError):  # a server that exited (a taken port) left no group
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 15
    while serve_pids() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not serve_pids() - before, "llama.cpp servers outlived their parent"


def port_taken(port: int) -> bool:
    """Tell whether a program listens on this loopback port now."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def serving(
    args: list[str], port: int, path: str, log: Path, cwd: Path | None = None
) -> Iterator[None]:
    """Run a server the docs name on its fixed `port` until `path` answers; always stop it.

    A port another program holds fails at once, naming it: that program would answer the
    health check, and the blocks would run against it. A server that never comes up is
    stopped as well, its llama.cpp servers with it.
    """
    if port_taken(port):
        pytest.fail(
            f"port {port} is taken by another program; the docs' commands name it, "
            "so stop that program and run this module again.",
            pytrace=False,
        )
    before = serve_pids()
    with log.open("w") as out:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}{path}"
        wait_until_up(url, proc, 90, why=lambda: log.read_text()[-2000:])
        yield
    finally:
        stop(proc, before)


@pytest.fixture(scope="module")
def moa_serve(tmp_path_factory) -> Iterator[Path]:
    """`moa serve --preset local-moa --port 8000`, as examples/openai_client.py says; its log."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    code = "from langgraph_moa.cli._app import main; main()"
    args = [sys.executable, "-c", code, "serve", "--preset", "local-moa", "--port", "8000"]
    with serving(args, 8000, "/health", log):
        yield log


@pytest.fixture(scope="module")
def langgraph_dev(tmp_path_factory) -> Iterator[None]:
    """`langgraph dev --no-browser --port 2025`, as examples/langgraph_server_client.py says."""
    langgraph = Path(sys.executable).with_name("langgraph")
    if not langgraph.exists():
        pytest.skip("langgraph-cli[inmem] is not installed")
    log = tmp_path_factory.mktemp("lg") / "dev.log"
    args = [str(langgraph), "dev", "--no-browser", "--no-reload", "--port", "2025"]
    with serving(args, 2025, "/ok", log, cwd=ROOT):
        yield


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{args}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.stdout


# --- the docs' blocks ---------------------------------------------------------------------

EVAL_DATASET = "load_dataset(shipped_dataset())"


def block(heading: str):
    (found,) = [s for s in snippets() if s.section[-1] == heading]
    return found


def run_block(heading: str, folder: Path, env: dict[str, str] | None = None) -> str:
    code = with_earlier_in_section(block(heading))
    if EVAL_DATASET in code:  # `moa eval --limit 1`: the shipped dataset has 256 items
        code = code.replace(EVAL_DATASET, f"{EVAL_DATASET}[:1]")
    (folder / "block.py").write_text(code, encoding="utf-8")
    return run(["block.py"], folder, env or environment())


def test_the_chat_model_block(tmp_path):
    out = run_block("### As a LangChain chat model (`MoAChatModel`)", tmp_path)
    assert len(out.strip()) > 40, out


def test_the_openai_client_block(moa_serve, tmp_path):
    served = len(moa_serve.read_text().splitlines())
    run_block("### As an OpenAI-compatible endpoint (`moa serve`)", tmp_path)
    lines = moa_serve.read_text().splitlines()[served:]  # `moa serve`'s line per request
    assert any("POST /v1/chat/completions 200" in line for line in lines), lines


def test_the_evaluation_block(tmp_path):
    with FaultServer(default=FaultProfile(reply_words=8)) as backend:
        (tmp_path / "my-moa.yaml").write_text(
            f"name: my-moa\nproposers: ['a@{backend.url}', 'b@{backend.url}']\n"
            f"aggregator: 'agg@{backend.url}'\n"
        )
        (tmp_path / "prices.yaml").write_text("agg: {prompt: 1.0, completion: 2.0}\n")
        run_block("# Evaluating MoA on your own data", tmp_path)
    written = {path.name for path in (tmp_path / "moa-eval").iterdir()}
    assert {"report.md", "summary.json", "results"} <= written, written
    rows = {path.stem for path in (tmp_path / "moa-eval" / "results").iterdir()}
    assert len(rows) == 3, rows  # the three systems each answered


# --- examples/*.py -------------------------------------------------------------------------

EXAMPLES = {
    # example: what its output must say (each line a piece it must hold)
    "agent_tools.py": ["-> calculator(", "7006652"],
    "chat_model_chain.py": [],
    "invoke_and_stream.py": ["calls: 3", "Streaming:", "[finished] aggregator"],
    "subgraph.py": ["(answered by a mixture of agents)"],
    "langsmith_eval.py": ["single:local:qwen2.5-coder-0.5b", "local-moa", "correct"],
    "openai_client.py": ["local-moa", "usage over every inner call:"],
    "langgraph_server_client.py": ["Ada"],
}


def test_every_example_is_run():
    assert sorted(EXAMPLES) == sorted(path.name for path in (ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_example_runs_as_written(example, request, tmp_path):
    if example == "openai_client.py":
        request.getfixturevalue("moa_serve")
    if example == "langgraph_server_client.py":
        request.getfixturevalue("langgraph_dev")
    started = time.monotonic()
    # From an empty folder: langsmith_eval.py writes its call cache where it runs.
    out = run([str(ROOT / "examples" / example)], tmp_path, environment())
    assert out.strip(), f"{example}: nothing on stdout"
    for piece in EXAMPLES[example]:
        assert piece in out, f"{example}: {piece!r} not in\n{out}"
    print(f"{example}: {time.monotonic() - started:.1f}s")
