"""A user's type checker sees the package's public names as before they were imported lazily.

`langgraph_moa` imports its names on first use (a module-level ``__getattr__``, PEP 562). A
``__getattr__`` a type checker sees makes every name of the module exist, typed Any: a user's
``from langgraph_moa import MoAConfg`` (a typo) then passed mypy, and so did any attribute.
This runs mypy, as a user's CI would, on code that uses the package.
"""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import langgraph_moa

pytest.importorskip("mypy")


def _mypy(tmp_path: Path, code: str) -> str:
    user = tmp_path / "user_code.py"
    user.write_text(textwrap.dedent(code))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "c"),
            str(user),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    return run.stdout + run.stderr


def test_mypy_flags_a_misspelled_name_and_types_every_public_one(tmp_path):
    names = ", ".join(n for n in langgraph_moa.__all__ if n != "__version__")
    report = _mypy(
        tmp_path,
        f"""
        import langgraph_moa
        from langgraph_moa import {names}
        from langgraph_moa import MoAConfg

        reveal_type(MoAConfig)
        reveal_type(langgraph_moa.TAG_FINAL)
        langgraph_moa.no_such_name
        """,
    )
    assert 'Module "langgraph_moa" has no attribute "MoAConfg"' in report, report
    assert 'Module has no attribute "no_such_name"' in report, report
    assert "langgraph_moa.config._schema.MoAConfig" in report, report
    assert re.search(r'Revealed type is "(builtins\.)?str"', report), report
    assert report.count("error:") == 2, report  # every public name resolves
