"""A user's type checker sees the package's public names as before they were imported lazily.

`langgraph_moa` imports its names on first use (a module-level ``__getattr__``, PEP 562). A
``__getattr__`` a type checker sees makes every name of the module exist, typed Any: a user's
``from langgraph_moa import MoAConfg`` (a typo) then passed mypy, and so did any attribute.
This runs mypy, as a user's CI would, on code that uses the package.

tests/typing/user_api.py, a user's program over the serve, local and chat model API, is checked
here with `mypy --strict` (`make lint` checks it under the package's settings): a serve name was
Any (``from langgraph_moa.serving import craete_app`` passed) and
``with_structured_output(Schema).invoke`` handed back Any, not a Schema.
"""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import langgraph_moa

pytest.importorskip("mypy")


ROOT = Path(__file__).resolve().parents[2]


def _mypy(tmp_path: Path, user: Path, *flags: str) -> str:
    """mypy's report on the file `user` under a user's own, empty settings."""
    (tmp_path / "mypy.ini").write_text("[mypy]\n")  # not the package's pyproject settings
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            *flags,
            "--no-incremental",
            "--config-file",
            str(tmp_path / "mypy.ini"),
            "--cache-dir",
            str(tmp_path / "c"),
            str(user),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    return run.stdout + run.stderr


def test_mypy_flags_a_misspelled_name_and_types_every_public_one(tmp_path):
    names = ", ".join(n for n in langgraph_moa.__all__ if n != "__version__")
    user = tmp_path / "user_code.py"
    user.write_text(
        textwrap.dedent(
            f"""
        import langgraph_moa
        from langgraph_moa import {names}
        from langgraph_moa import MoAConfg

        reveal_type(MoAConfig)
        reveal_type(langgraph_moa.TAG_FINAL)
        langgraph_moa.no_such_name
        """
        )
    )
    report = _mypy(tmp_path, user)
    assert 'Module "langgraph_moa" has no attribute "MoAConfg"' in report, report
    assert 'Module has no attribute "no_such_name"' in report, report
    assert "langgraph_moa.config._schema.MoAConfig" in report, report
    assert re.search(r'Revealed type is "(builtins\.)?str"', report), report
    assert report.count("error:") == 2, report  # every public name resolves


def test_a_user_program_passes_mypy_strict_with_the_types_it_asserts(tmp_path):
    # The package is imported as installed (or from PYTHONPATH): its own code's findings are
    # not shown to its user, so the report is the user file's alone.
    report = _mypy(tmp_path, ROOT / "tests" / "typing" / "user_api.py", "--strict")
    assert report.strip() == "Success: no issues found in 1 source file", report
