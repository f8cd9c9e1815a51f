"""Which local system should `moa run` use? The measurement behind the choice, in one command.

Runs `moa eval` over the shipped verifiable dataset (or a stratified subset, the default here,
so it fits a session on 2 cores) with every packaged model alone and every local preset,
against the best single model as the baseline: accuracy with its 95% interval, each system's
paired accuracy difference to the baseline with a bootstrap interval, tokens and latency. All
selection presets draw the same samples (same model, settings and messages), so the call
cache generates each sample once and the selection methods are compared on identical
proposals (README, "What it found on the local models").

    python benchmarks/local_model_choice.py [--full | --heldout | --synthesis] [--out DIR]

The subset, `data/verifiable_subset.jsonl`, holds the shipped items whose position modulo 5
is 0 or 2: 103 items, every category in its share. `--full` uses all 256 items. The
selection rules were refined after reading the subset's results (how worked answers state
their conclusion, how ties between different numbers go), so `--heldout` evaluates on the
other 153 items, which no rule was fitted to.
`--synthesis` evaluates the synthesizing presets (local-moa, local-self-moa, local-ranker)
instead, against the same baseline, on every fourth item of that subset
(`data/verifiable_synthesis_subset.jsonl`, 26 items): their aggregation calls read every
proposal and write up to 256 tokens, 25-50 s per item on 2 cores, so the whole subset would
not fit a session. Give it the same `--out` as the selection run to reuse its samples.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT / "benchmarks" / "data" / "verifiable_subset.jsonl"
SYNTHESIS_SUBSET = ROOT / "benchmarks" / "data" / "verifiable_synthesis_subset.jsonl"
BASELINE = "single:local:qwen2.5-coder-1.5b"
SYSTEMS = [
    BASELINE,
    "single:local:qwen2.5-coder-0.5b",
    "local-vote",
    "local-confidence",
    "local-consensus",
    "local-vote-adaptive",
    "local-mux",
]
SYNTHESIS = [BASELINE, "local-self-moa", "local-moa", "local-ranker"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="all items, not the subset")
    parser.add_argument("--heldout", action="store_true", help="the 153 items outside the subset")
    parser.add_argument(
        "--synthesis", action="store_true", help="the synthesizing presets, on 26 items"
    )
    parser.add_argument("--out", default="moa-eval-local")
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    systems = SYNTHESIS if args.synthesis else SYSTEMS
    cmd = [sys.executable, "-m", "langgraph_moa", "eval", "--baseline", BASELINE]
    cmd += [arg for name in systems for arg in ("-s", name)]
    cmd += ["--concurrency", str(args.concurrency), "--out", args.out]
    if args.synthesis:
        cmd += ["--dataset", str(SYNTHESIS_SUBSET)]
    else:
        cmd += ["--calibration-out", str(Path(args.out) / "calibration.json")]
        if args.heldout:
            cmd += ["--dataset", str(_heldout(Path(args.out)))]
        elif not args.full:
            cmd += ["--dataset", str(SUBSET)]
    print(" ".join(cmd), flush=True)
    sys.exit(subprocess.call(cmd))


def _heldout(out: Path) -> Path:
    """Write the shipped items that are not in the subset; return the file."""
    from langgraph_moa.eval.datasets import shipped_dataset

    subset = {json.loads(line)["id"] for line in SUBSET.read_text(encoding="utf-8").splitlines()}
    lines = shipped_dataset().read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if json.loads(line)["id"] not in subset]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "heldout.jsonl"
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return path


if __name__ == "__main__":
    main()
