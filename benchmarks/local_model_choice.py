"""Which packaged models make the best local MoA? Accuracy and latency, measured in one run.

Every system answers the short verifiable questions of `data/short_facts.jsonl` (with
"Answer briefly." appended) through `langgraph_moa.eval.Evaluation`; an answer counts as
right when it contains one of the expected answers as a whole word, the package's
``contains`` scorer. Systems: each packaged model alone, the `local-moa` mixture, the same
mixture with Gemma added, and Self-MoA on Qwen. The figures decided the `local-moa` preset
(see README). Each run uses a fresh call cache, so every answer is generated.

    python benchmarks/local_model_choice.py [--limit N] [--systems NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from langgraph_moa import MoAConfig
from langgraph_moa.eval import Evaluation, load_dataset
from langgraph_moa.local.runtime import LocalRuntime

DATA = Path(__file__).parent / "data" / "short_facts.jsonl"
P = {"temperature": 0.7, "max_tokens": 128}


def with_gemma() -> MoAConfig:
    return MoAConfig.from_preset(
        "local-moa",
        proposers=[
            {"model": f"local:{m}", **P}
            for m in ("qwen2.5-coder-0.5b", "smollm2-135m", "gemma3-270m")
        ],
    ).with_overrides(name="qwen+smollm2+gemma -> qwen")


SYSTEMS = {
    "single:local:qwen2.5-coder-0.5b": lambda: "single:local:qwen2.5-coder-0.5b",
    "single:local:smollm2-135m": lambda: "single:local:smollm2-135m",
    "single:local:gemma3-270m": lambda: "single:local:gemma3-270m",
    "local-moa": lambda: "local-moa",
    "qwen+smollm2+gemma -> qwen": with_gemma,
    "local-self-moa": lambda: "local-self-moa",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS))
    args = parser.parse_args()
    items = load_dataset(DATA)[: args.limit]
    for item in items:
        item.turns = [f"{item.turns[0]} Answer briefly."]
    runtime = LocalRuntime.default()
    runtime.start(["qwen2.5-coder-0.5b", "smollm2-135m", "gemma3-270m"])
    print(f"{len(items)} questions; {runtime.threads} thread(s) per server")
    with tempfile.TemporaryDirectory() as out:
        systems = [SYSTEMS[name]() for name in args.systems]
        summary = asyncio.run(Evaluation(systems, items, out, plots=False, exports=False).run())
    print(f"{'system':36} {'correct':>8} {'median s':>9} {'calls/item':>11}")
    for name, s in summary.items():
        print(
            f"{name:36} {s['correct']:>4}/{s['scored']:<3} {s['median_item_s']:>9.1f} {s['calls'] / s['items']:>11.1f}"
        )
    runtime.stop_all()


if __name__ == "__main__":
    main()
