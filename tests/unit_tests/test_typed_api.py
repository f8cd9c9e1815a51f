"""A user who type-checks their code against the package (it ships py.typed) gets its types.

`mypy --strict` on tests/typing/user_api.py, a user's program over the serve, eval and chat
model API: `from langgraph_moa.serving import craete_app` (a typo) passed, every serve name
being Any, and `with_structured_output(Schema).invoke` handed back Any, not a Schema.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

ROOT = Path(__file__).resolve().parents[2]


def test_a_user_program_passes_mypy_strict_with_the_types_it_asserts(tmp_path):
    user = ROOT / "tests" / "typing" / "user_api.py"
    (tmp_path / "mypy.ini").write_text("[mypy]\n")  # a user's own settings, not the package's
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(tmp_path / "mypy.ini"),
            "--cache-dir",
            str(tmp_path / "cache"),
            str(user),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(ROOT / "src")},
        timeout=600,
    )
    # The package is read from src, as its own source: only what the user's file is told counts
    # (an installed package's own strict findings are not shown to its user).
    report = run.stdout + run.stderr
    mine = [line for line in report.splitlines() if line.startswith("tests/typing/user_api.py")]
    assert mine == [], report
    assert "source file" in report, report  # mypy ran to the end ("Found"/"Success")
