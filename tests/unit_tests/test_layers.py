"""The package's layers are a contract: an upward import or an import circle fails here.

The contracts live in pyproject.toml (``[tool.importlinter]``); `make lint` checks them too.
This test makes CI check them, and shows that the check bites: a copy of the package with one
upward import (the lowest floor, `errors`, importing the graph) breaks the layers contract.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = (
    "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
)
"""import-linter, without the cache it would write into the checkout (the run's folder)."""


def _lint(src: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LINT],
        cwd=ROOT,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_layers_and_acyclic_contracts_are_kept():
    result = _lint(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("errors.py", "from langgraph_moa.graph import _builder", "never upward BROKEN"),
        ("run/_ledger.py", "from langgraph_moa.variants import _base", "never upward BROKEN"),
        ("text/_prompts.py", "from langgraph_moa.providers import _table", "never upward BROKEN"),
    ],
)
def test_an_upward_import_breaks_the_contract(tmp_path, module, line, contract):
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "langgraph_moa", copy / "langgraph_moa")
    target = copy / "langgraph_moa" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = _lint(copy)
    assert result.returncode != 0
    assert contract in result.stdout.replace("\n", " ")
