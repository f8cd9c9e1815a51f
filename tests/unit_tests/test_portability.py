"""Portability: what would break on Windows or macOS, checked here by simulation.

Windows' default text encoding is the locale's (often cp1252), not UTF-8: a file the package
reads or writes without naming its encoding mis-decodes non-ASCII text there. Python's
``-X warn_default_encoding`` flags each such call, so the package's own code paths run
with that warning made an error (tests' own file reads are not the package's concern).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

# Tests whose code paths read or write the package's text files: presets, model stamps,
# /proc and cgroup files. The model catalog's stamps and a dead server's log are not run
# here: the locks on their way open lock files in text mode too, code another change reworks.
PATHS_WITH_TEXT_FILES = [
    "tests/unit_tests/test_config.py::test_the_self_moa_presets_keep_the_papers_settings",
    "tests/unit_tests/test_local_runtime.py::test_without_a_cgroup_limit_the_memory_available_is_the_machines",
    "tests/unit_tests/test_local_runtime.py::test_swap_is_not_counted_as_memory_for_a_server",
]


@pytest.mark.timeout(300)
def test_the_package_names_the_encoding_of_every_text_file_it_reads_or_writes():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run(
        [
            sys.executable,
            "-X",
            "warn_default_encoding",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            r"filterwarnings=error::EncodingWarning:langgraph_moa\.",
            *PATHS_WITH_TEXT_FILES,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert f"{len(PATHS_WITH_TEXT_FILES)} passed" in run.stdout
