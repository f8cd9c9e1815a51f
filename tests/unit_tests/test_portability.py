"""Portability: what would break on Windows or macOS, checked here by simulation.

Windows' default text encoding is the locale's (often cp1252), not UTF-8: a file the package
reads or writes without naming its encoding mis-decodes non-ASCII text there. Python's
``-X warn_default_encoding`` flags each such call, so the package's own code paths run
with that warning made an error (tests' own file reads are not the package's concern).
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]

# Tests whose code paths read or write the package's text files: presets, model stamps,
# /proc and cgroup files. Every other call is checked by reading the source (below).
CAPTURED = {
    "capture_output": True,
    "text": True,
    "encoding": "utf-8",
    "errors": "replace",
    "check": False,
}
"""How each test here runs a Python child: its output read as UTF-8, its failure asserted."""

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
        **CAPTURED,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert f"{len(PATHS_WITH_TEXT_FILES)} passed" in run.stdout


SUBPROCESS_CALLS = {"run", "Popen", "popen", "check_output", "check_call", "call"}
TEXT_CALLS = {"open", "read_text", "write_text", "NamedTemporaryFile", "TemporaryFile", "fdopen"}


def _unnamed_encodings(source: str) -> list[int]:
    """Lines of `source` opening a file in text mode, or a text-mode subprocess, with no encoding."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = (
            func.value.id
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            else ""
        )
        words = {k.arg: k.value for k in node.keywords}
        if "encoding" in words:
            continue
        if name in SUBPROCESS_CALLS and ("text" in words or "universal_newlines" in words):
            lines.append(node.lineno)  # subprocess(..., text=True) decodes with the locale's
            continue
        if name not in TEXT_CALLS or owner in ("os", "webbrowser"):
            continue  # os.open opens a descriptor, webbrowser.open a page: no text
        # The mode is open(path, mode)'s second argument, but Path.open(mode)'s first: a
        # literal path holding a "b" ("memory.limit_in_bytes") was taken for a binary mode.
        at = 1 if isinstance(func, ast.Name) and name == "open" else 0
        mode = words.get("mode", node.args[at] if len(node.args) > at else None)
        binary = isinstance(mode, ast.Constant) and "b" in str(mode.value)
        if name == "NamedTemporaryFile" or name == "TemporaryFile":
            binary = mode is None or binary  # their default mode is "w+b"
        if not binary:
            lines.append(node.lineno)
    return lines


def test_the_helper_flags_a_text_open_without_an_encoding():
    flagged = 'path.open("a")\nPath(p).read_text()\nrun(args, text=True)\nopen(p, "w")\n'
    named = 'path.open("ab")\npath.read_text(encoding="utf-8")\nNamedTemporaryFile()\n'
    named += 'os.open(p, os.O_RDONLY)\nwebbrowser.open(url)\nopen(p, mode="rb")\n'
    named += 'Candidate(text="an answer")\n'
    assert _unnamed_encodings(flagged) == [1, 2, 3, 4]
    assert _unnamed_encodings(named) == []


def test_every_text_file_call_in_the_package_names_its_encoding():
    # The run above covers the code paths its tests reach; this covers every call, reached
    # or not: a text-mode open, read_text, write_text or subprocess without `encoding=`
    # uses the locale's encoding on Windows (cp1252), mis-decoding non-ASCII text.
    unnamed = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted((ROOT / "src").rglob("*.py"))
        for line in _unnamed_encodings(path.read_text(encoding="utf-8"))
    ]
    assert not unnamed, unnamed


def test_the_package_imports_and_finds_a_local_model_without_fcntl(tmp_path):
    # Windows has no fcntl: importing the package, its local runtime and catalog, and
    # looking a local model up must not need it (Windows locks with msvcrt; an OS with
    # neither skips the lock, as documented).
    code = (
        "import sys; sys.modules['fcntl'] = None\n"
        "import langgraph_moa\n"
        "from langgraph_moa.local import _filelock, runtime, catalog\n"
        "assert _filelock.fcntl is None\n"
        "from pathlib import Path\n"
        "lock = Path(sys.argv[1]) / 'x.lock'\n"
        "with _filelock.file_lock(lock, 0.0) as held:\n"
        "    assert held\n"
        "print(catalog.lookup('qwen2.5-coder-0.5b').name)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, **CAPTURED)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "qwen2.5-coder-0.5b"
