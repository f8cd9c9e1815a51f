"""Every `moa` line of the README's command blocks, run as written, in a shell.

The blocks: "The `moa` command", the web page's (`moa ui`) and the OpenAI-compatible
endpoint's (`moa serve`); in the last, the `pip install` and `python examples/...` lines are
left out (an install, and a client that needs a served local model).

Providers that need an API (OpenAI, Together) are served by the fake OpenAI-compatible
backend on loopback (their base-URL variables point at it, with dummy keys); the local
models are the real ones, so the lines that call them are marked `local_models`. The only
change to a line: `moa eval` gets `--limit 1` (its default dataset has 256 items), and
`moa serve` is stopped once it says "Serving", `moa ui` once it names its page. `my-moa.yaml` and `question.txt` are made
in the working folder first.
"""

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from langgraph_moa.testing import FaultProfile, FaultServer

README = Path(__file__).parents[2] / "README.md"


BLOCKS = (
    "## The `moa` command",
    "## Watching a run: the web page (`moa ui`)",
    "### As an OpenAI-compatible endpoint (`moa serve`)",
)


def readme_lines() -> list[str]:
    text = README.read_text(encoding="utf-8")
    lines = []
    for heading in BLOCKS:
        section = text[text.index(heading) :]
        block = section[section.index("```bash") + len("```bash") : section.index("```\n", 8)]
        lines += [re.sub(r"\s+#.*$", "", line).strip() for line in block.strip().splitlines()]
    return list(dict.fromkeys(line for line in lines if line.startswith("moa ")))  # once each


def test_the_readme_blocks_are_found():
    lines = readme_lines()
    assert lines[0] == 'moa run "Why is the sky blue?"', lines
    assert any(line.startswith("moa ui -p") for line in lines), lines
    assert any(line.startswith("moa serve --config") for line in lines), lines


def calls_a_local_model(line: str) -> bool:
    command = line.split()[1]
    if command not in ("run", "chat", "eval"):
        return False
    return "moa-lite" not in line and "--config" not in line


LINES = [
    pytest.param(
        line, id=line[:60], marks=[pytest.mark.local_models] if calls_a_local_model(line) else []
    )
    for line in readme_lines()
]


@pytest.fixture(scope="module")
def backend():
    with FaultServer(default=FaultProfile(reply_words=8)) as server:
        yield server


@pytest.fixture
def shell(backend, tmp_path):
    """A working folder with a `moa` on PATH that runs this checkout, and fake API keys."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    moa = bin_dir / "moa"
    moa.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -c "from langgraph_moa.cli._app '
        'import main; main()" "$@"\n'
    )
    moa.chmod(0o755)
    (tmp_path / "my-moa.yaml").write_text(
        f"name: my-moa\nproposers: ['a@{backend.url}', 'b@{backend.url}']\n"
        f"aggregator: 'agg@{backend.url}'\n"
    )
    (tmp_path / "question.txt").write_text("What is 2 + 2?\n")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "OPENAI_API_KEY": "fake",
        "OPENAI_BASE_URL": backend.url,
        "TOGETHER_API_KEY": "fake",
        "TOGETHER_API_BASE": backend.url,
    }
    env.pop("LANGSMITH_TRACING", None)
    return tmp_path, env


@pytest.mark.parametrize("line", LINES)
def test_readme_line_runs_as_written(line, shell, local_models_available_if_needed):
    folder, env = shell
    if line.startswith("moa eval"):
        line += f" --limit 1 --out {folder / 'eval'}"
    if line.startswith(("moa serve", "moa ui")):
        server = subprocess.Popen(
            ["bash", "-c", f"exec {line}"],
            cwd=folder,
            env={**env, "BROWSER": "true"},  # `moa ui` opens the page: a no-op browser here
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            first = server.stderr.readline()
            expected = {
                "moa serve": "Serving local-confidence, local-moa, local-self-moa on",
                "moa serve --preset local-moa --preset local-self-moa": (
                    "Serving local-moa, local-self-moa on"
                ),
                "moa serve --config my-moa.yaml": "Serving my-moa on",
            }.get(line.split(" --port")[0], "Serving " if line.startswith("moa serve") else "")
            if line.startswith("moa ui"):
                expected = "The page is at http://127.0.0.1:8000/ui"
            assert first.startswith(expected), first
        finally:
            server.terminate()
            server.wait(timeout=60)
        return
    started = time.monotonic()
    result = subprocess.run(
        ["bash", "-c", line],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        input="Hello\n/exit\n" if line.startswith("moa chat") else None,
        timeout=1500,
    )
    assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr
    if "> answer.txt" in line:
        assert result.stdout == "" and (folder / "answer.txt").read_text().strip()
    elif line.startswith(("moa run", "moa chat", "moa models")):
        assert result.stdout.strip(), f"{line}: nothing on stdout"
    print(f"{line}: {time.monotonic() - started:.1f}s")


@pytest.fixture
def local_models_available_if_needed(request):
    if request.node.get_closest_marker("local_models"):
        request.getfixturevalue("local_models_available")
