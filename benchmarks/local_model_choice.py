"""Which packaged models make the best local MoA? Accuracy and latency, measured in one run.

Every system answers the short verifiable questions of `data/short_facts.jsonl`; an answer
counts as right when it contains one of the expected answers as a whole word (case-insensitive).
Systems: each packaged model alone, the `local-moa` mixture, the same mixture with Gemma added,
and Self-MoA on Qwen. The figures decided the `local-moa` preset (see README).

    python benchmarks/local_model_choice.py [--limit N] [--systems NAME ...]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.local.runtime import LocalRuntime
from langgraph_moa.models import build_model

DATA = Path(__file__).parent / "data" / "short_facts.jsonl"
PROMPT = "{question} Answer briefly."
P = {"temperature": 0.7, "max_tokens": 128}
A = {"temperature": 0.3, "max_tokens": 256}


class Single:
    """One model answering alone, with the aggregator's settings: the baseline to beat."""

    def __init__(self, spec: str) -> None:
        self.model = build_model(spec, A)

    def invoke(self, state: dict[str, Any]) -> dict[str, Any]:
        reply = self.model.invoke(state["messages"])
        return {"messages": [reply], "calls": [reply]}


def single(spec: str) -> Single:
    return Single(spec)


SYSTEMS: dict[str, Any] = {
    "qwen2.5-coder-0.5b alone": lambda: single("local:qwen2.5-coder-0.5b"),
    "smollm2-135m alone": lambda: single("local:smollm2-135m"),
    "gemma3-270m alone": lambda: single("local:gemma3-270m"),
    "local-moa (qwen+smollm2 -> qwen)": lambda: MoAConfig.from_preset("local-moa"),
    "qwen+smollm2+gemma -> qwen": lambda: MoAConfig.from_preset(
        "local-moa",
        proposers=[
            {"model": f"local:{m}", **P}
            for m in ("qwen2.5-coder-0.5b", "smollm2-135m", "gemma3-270m")
        ],
    ),
    "local-self-moa (qwen x3 -> qwen)": lambda: MoAConfig.from_preset("local-self-moa"),
}


def correct(answer: str, expected: list[str]) -> bool:
    text = answer.lower()
    return any(re.search(rf"(?<![\w]){re.escape(e)}(?![\w])", text) for e in expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS))
    args = parser.parse_args()
    items = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()][
        : args.limit
    ]
    runtime = LocalRuntime.default()
    runtime.start(["qwen2.5-coder-0.5b", "smollm2-135m", "gemma3-270m"])
    print(f"{len(items)} questions; {runtime.threads} thread(s) per server")
    print(f"{'system':36} {'accuracy':>9} {'median s':>9} {'calls':>6}")
    for name in args.systems:
        system = SYSTEMS[name]()
        graph = system if isinstance(system, Single) else create_moa_graph(system)
        right, seconds, calls = 0, [], 0
        for item in items:
            started = time.perf_counter()
            out = graph.invoke({"messages": [("user", PROMPT.format(**item))]})
            seconds.append(time.perf_counter() - started)
            right += correct(out["messages"][-1].text, item["answers"])
            calls += len(out["calls"])
        print(
            f"{name:36} {right:>4}/{len(items):<4} {statistics.median(seconds):>9.1f} {calls / len(items):>6.1f}"
        )
    runtime.stop_all()


if __name__ == "__main__":
    main()
