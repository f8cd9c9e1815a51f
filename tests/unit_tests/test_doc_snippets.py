"""Every ```python block of README.md and docs/*.md that needs no local model, run as written.

Each block runs as a module's code (`__name__` is "__main__"), in an empty working folder,
as a reader would paste it into a file; a block that continues an earlier one (uses a name it
defines) runs joined after the blocks above it under the same heading (`tests/snippets.py`),
never after another section's. The providers that need an API (OpenAI, Together) are served
by the fake OpenAI-compatible backend on loopback: OPENAI_BASE_URL and TOGETHER_API_BASE
point at it, with dummy keys, as in tests/integration_tests/test_readme_cli.py (the only sockets
this module allows are loopback ones). Nothing in a
block is changed. The blocks that call the packaged local models run in
tests/integration_tests/test_doc_examples_local.py; every block is run by one of the two,
or named in NOT_RUN with the reason (`test_every_block_is_run_somewhere`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import pytest
from pytest_socket import _remove_restrictions, socket_allow_hosts

from langgraph_moa import MoAConfig
from langgraph_moa.testing import FaultProfile, FaultServer
from tests.snippets import snippets, with_earlier_in_section


def answered(names: dict) -> bool:
    return bool(names["out"]["messages"][-1].response_metadata["moa"]["calls"])


def three_layers(calls: int) -> bool:
    """The run's context was honored: moa-lite's proposers answered in two layers."""
    return calls >= 2 * len(MoAConfig.from_preset("moa-lite").proposers) + 1


# The blocks this module runs, by heading, each with what it must leave: its names, its
# output, the number of calls the fake backend answered.
FAKE_BACKEND: dict[str, Callable[[dict, str, int], bool]] = {
    "## Quickstart": lambda names, out, calls: answered(names),
    "## Streaming": lambda names, out, calls: "'event': 'finished'" in out and "answer" in out,
    "## Per-run settings (LangGraph server)": lambda _, out, calls: three_layers(calls),
    "#### Tools and agents": lambda names, out, calls: bool(names["agent"] and names["llm"]),
    "## What the package cut": lambda names, out, calls: gc.get_threshold()[0] >= 10_000,
    "### Embedding the HTTP app in your own service (`create_app`)": (
        lambda names, out, calls: names["reply"].status_code == 200 and calls >= 3
    ),
}
# Run in tests/integration_tests/test_doc_examples_local.py (they call the local models).
LOCAL_MODELS = (
    "### As a LangChain chat model (`MoAChatModel`)",
    "### As an OpenAI-compatible endpoint (`moa serve`)",
    "# Evaluating MoA on your own data",
)
# Not run by any test, and why.
NOT_RUN = {
    "## LangSmith": "needs a LangSmith account holding a dataset of that name; "
    "examples/langsmith_eval.py runs evaluate_system offline",
}


def heading(snippet) -> str:
    return snippet.section[-1]


def unaccounted(blocks) -> list[str]:
    """The blocks beyond the first under a heading run by the local module or not run.

    The local module runs the one block of each of its headings, and a NOT_RUN reason was
    given for the one block there: a block added under either would be run by no test.
    """
    seen: set[str] = set()
    extra = []
    for snippet in blocks:
        if heading(snippet) in (*LOCAL_MODELS, *NOT_RUN):
            if heading(snippet) in seen:
                extra.append(snippet.id)
            seen.add(heading(snippet))
    return extra


def test_every_block_is_run_somewhere():
    headings = {heading(s) for s in snippets()}
    known = {*FAKE_BACKEND, *LOCAL_MODELS, *NOT_RUN}
    assert headings <= known, f"a block no test runs: {headings - known}"
    assert known <= headings, f"a block that is gone: {known - headings}"
    assert not unaccounted(snippets()), f"a block no test runs: {unaccounted(snippets())}"


@pytest.fixture
def no_network():
    """Loopback only: the fake backend is the one server these blocks reach.

    Replaces the unit suite's fixture of this name, which refuses every socket.
    """
    socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)
    yield
    _remove_restrictions()


@pytest.fixture(scope="module")
def backend():
    with FaultServer(default=FaultProfile(reply_words=8)) as server:
        yield server


@pytest.fixture
def reader(backend, tmp_path, monkeypatch):
    """An empty working folder and the fake backend's base URLs, with dummy keys."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "fake")
    monkeypatch.setenv("OPENAI_BASE_URL", backend.url)
    monkeypatch.setenv("TOGETHER_API_KEY", "fake")
    monkeypatch.setenv("TOGETHER_API_BASE", backend.url)
    threshold = gc.get_threshold()  # performance.md's block tunes this process's collector
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.parametrize(
    "snippet",
    [pytest.param(s, id=s.id) for s in snippets() if heading(s) in FAKE_BACKEND],
)
def test_block_runs_as_written(snippet, reader, backend, capsys):
    code = compile(with_earlier_in_section(snippet), snippet.id, "exec")
    names: dict = {"__name__": "__main__"}  # as `python snippet.py` runs it
    before = backend.requests.total()
    exec(code, names)
    out = capsys.readouterr().out
    calls = backend.requests.total() - before
    assert FAKE_BACKEND[heading(snippet)](names, out, calls), (out, calls)


def test_a_block_fenced_py_or_python3_is_found(tmp_path, monkeypatch):
    """GitHub shows ```py and ```python3 blocks as Python: one added so is run, or named."""
    import tests.snippets

    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n```py\nx = 1\n```\n```python3\ny = 2\n```\n```Python\nz = 3\n```\n"
        "```bash\nls\n```\n"
    )
    monkeypatch.setattr(tests.snippets, "ROOT", tmp_path)
    found = tests.snippets._blocks(page)
    assert [s.code for s in found] == ["x = 1\n", "y = 2\n", "z = 3\n"], found


def test_a_second_block_under_a_heading_run_elsewhere_or_not_run_is_seen():
    """The local module runs the one block of its headings; a block added there is named.

    So is one added under a NOT_RUN heading: its reason was given for the block there.
    """
    from tests.snippets import Snippet

    def under(title: str, line: int) -> Snippet:
        return Snippet(page="README.md", section=(title,), line=line, code="pass\n")

    blocks = [under(title, 1) for title in (*FAKE_BACKEND, *LOCAL_MODELS, *NOT_RUN)]
    assert not unaccounted(blocks)
    extra = [under(LOCAL_MODELS[0], 9), under("## LangSmith", 9)]
    assert unaccounted(blocks + extra) == ["README.md:9", "README.md:9"]


@pytest.mark.parametrize("title", ["## Per-run settings (LangGraph server)", "## Streaming"])
def test_the_typed_blocks_are_type_checked_as_written(title):
    """`make lint` type-checks tests/typing/readme_examples.py as a typed user's code; the
    README's per-run block passed a dict as `context`, which mypy refused (the graph's context
    type is `MoAContext`) while the typed copy used `MoAContext`, and its streaming block
    unpacked `stream`'s untyped (mode, chunk) pairs, which strict mypy refused without a
    cast and no copy checked: each line must be there."""
    from tests.snippets import ROOT

    typed = (ROOT / "tests" / "typing" / "readme_examples.py").read_text(encoding="utf-8")
    typed_lines = {line.split("#")[0].strip() for line in typed.splitlines()}
    [block] = [s for s in snippets() if heading(s) == title]
    code = [line.split("#")[0].strip() for line in block.code.splitlines()]
    statements = [line for line in code if line and not line.startswith("from ")]
    assert [line for line in statements if line not in typed_lines] == []
