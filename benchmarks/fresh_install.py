"""Time the README's first command on a fresh machine: empty pip cache to the printed answer.

    python benchmarks/fresh_install.py [--keep]

It clones this checkout into a temporary folder and runs the README's quickstart line there,
step by step (its `&&`-joined commands, read from README.md, so what is timed is what users
run), with an empty pip cache and an empty model cache, so nothing built or downloaded before
helps. It prints the seconds of each step, the first run's own account of its first use
(assembling, loading) and the total. The goal is under 60 s on 2 cores, the model package
included. A busy machine (other jobs on the cores, a shared network) makes every figure
slower: the load average is printed first and last.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def step(label: str, cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(
            f"{label} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    print(f"{label[:70]:<70} {elapsed:7.1f} s")
    if "moa run " in label:
        print("  answer:", " ".join(result.stdout.split())[:200])
        for line in result.stderr.splitlines():
            if line.startswith(("first use", "local:", "loaded ")) or "calls (" in line:
                print("  " + line)
    return elapsed


def quickstart() -> list[str]:
    """Return the README's first command (venv, install, first answer), split at `&&`."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("python3 -m venv .venv") and "moa run " in line:
            return [part.strip() for part in line.split("&&")]
    sys.exit("README.md has no quickstart line (python3 -m venv .venv && ... moa run ...)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="moa-fresh-"))
    env = {
        **os.environ,
        "PIP_CACHE_DIR": str(work / "pip-cache"),  # empty: every package is downloaded
        "LANGGRAPH_MOA_CACHE": str(work / "moa-cache"),  # empty: models assembled anew
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    try:
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; in {work}")
        subprocess.run(["git", "clone", "-q", str(ROOT), str(work / "p")], check=True)
        project = work / "p"
        total = 0.0
        for command in quickstart():
            total += step(command, ["bash", "-c", command], project, env)
        print(f"{'total':<40} {total:7.1f} s  (goal: under 60 s)")
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
