import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

_AMBIENT = (
    "OPENAI_API_KEY",
    "TOGETHER_API_KEY",
    "ANTHROPIC_API_KEY",
    "LANGSMITH_API_KEY",
    "LANGSMITH_TRACING",
    "LANGCHAIN_TRACING_V2",
    "LANGCHAIN_API_KEY",
)

ROOT = Path(__file__).resolve().parents[1]

settings.register_profile(
    "moa",
    deadline=None,
    max_examples=60,
    derandomize=bool(os.environ.get("CI")),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("moa")
"""The property tests' rules (tests/unit_tests/test_properties*.py): no per-example deadline,
which a loaded shared machine misses at random; few examples, so a file runs in seconds; the
same examples on every CI run (`CI` set), so a red build is reproduced, not redrawn; and no
example database in the checkout (`.hypothesis/examples`): an example that once failed is
kept in the test as an explicit `@example`, where every checkout and CI run has it."""

_BY_THE_TOOLS = ("__pycache__", ".pytest_cache", ".hypothesis", ".langgraph_api", "test-artifacts")
"""What is written into the checkout on purpose, not left behind by a test: Python's,
pytest's and hypothesis's caches (the last, `.hypothesis/constants`, even with no example
database), `langgraph dev`'s `.langgraph_api/` (its in-memory runtime keeps it in the
folder it serves from, the repository root where README's instructions run it, as two tests
do), and the browser tests' screenshots in `test-artifacts/ui/`, kept for a person to look at
(README says where)."""


@pytest.fixture(autouse=True)
def signal_handlers_restored() -> Iterator[None]:
    """Give every test the SIGINT and SIGTERM handlers it found, whatever it installed.

    A test that runs the `moa` command in-process (`cli.main()`) leaves the command's
    handlers, which end the process with `os._exit(130)`: a later test that presses Ctrl-C
    (`signal.pthread_kill`) then killed the whole pytest run, silently, with exit code 130.
    """
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in kept.items():
        if handler is not None:
            signal.signal(sig, handler)


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ambient provider key or tracing setting leaks into a test."""
    for name in _AMBIENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANGSMITH_TEST_TRACKING", "false")


def _untracked() -> set[str] | None:
    """Return the checkout's untracked and ignored paths (None outside a git checkout)."""
    try:
        listed = subprocess.run(
            ["git", "status", "--porcelain", "--ignored=matching"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    paths = {line[3:] for line in listed.splitlines() if line[:2] in ("??", "!!")}
    return {p for p in paths if not any(part in _BY_THE_TOOLS for part in Path(p).parts)}


_BEFORE = pytest.StashKey[set[str] | None]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BEFORE] = _untracked()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail a run whose tests left files in the checkout: they belong under `tmp_path`.

    A test writing into the repository (an import-linter cache, a run's SQLite cache, an
    eval's output folder) leaves a CI checkout dirty, and files that git ignores hide it
    from `git status`; both are listed here.
    """
    before = session.config.stash.get(_BEFORE, None)
    after = _untracked()
    if before is None or after is None or not (left := sorted(after - before)):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write("\n")
        reporter.write_sep("=", "tests left files in the checkout", red=True)
        reporter.write_line(f"{ROOT}: {left}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
