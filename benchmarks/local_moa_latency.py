"""How long each local system takes to answer, servers warm: the cost side of `moa run`'s default.

For every system (each packaged model alone, greedy, and the local presets) it answers the
same questions, a short factual one, a sum, a word problem and two open questions, and
prints the median wall time per question, the tokens generated, and the ratio to the best
single model (Qwen2.5-Coder 1.5B) answering alone. Servers are started first and warmed
with one call, so the times are answers, not model loads (start-up is printed separately).

    python benchmarks/local_moa_latency.py [--systems local-vote local-moa ...] [--repeats 1]

Run it on a quiet machine: two cores shared with another job halve the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.local.runtime import LocalRuntime

BASELINE = "single:qwen2.5-coder-1.5b"
SYSTEMS = [
    BASELINE,
    "single:qwen2.5-coder-0.5b",
    "local-confidence",
    "local-vote",
    "local-vote-adaptive",
    "local-self-moa",
    "local-moa",
    "local-ranker",
]
QUESTIONS = [
    "What is the capital of Australia?",
    "What is 17 times 23?",
    "A shop sells pencils at 3 for 45 cents. How much do 12 pencils cost, in cents?",
    "Why is the sky blue?",
    "Explain what a hash table is.",
]


def config_of(system: str) -> MoAConfig:
    """A preset, or one model alone as `single:<name>` (greedy, 256 tokens, like `moa eval`)."""
    if system.startswith("single:"):
        model = f"local:{system.removeprefix('single:')}"
        return MoAConfig(
            variant="select", proposers=[{"model": model, "temperature": 0.0, "max_tokens": 256}]
        )
    return MoAConfig.from_preset(system)


def local_names(config: MoAConfig) -> list[str]:
    roles = [*config.proposers, *([config.final] if config.variant != "select" else [])]
    return sorted({str(r.model).split(":", 1)[1] for r in roles})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=SYSTEMS)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each question")
    args = parser.parse_args()
    configs = {system: config_of(system) for system in args.systems}
    runtime = LocalRuntime.default()
    names = sorted({name for c in configs.values() for name in local_names(c)})
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    for name in names:
        started = time.perf_counter()
        runtime.start([name])
        print(f"server for {name} ready in {time.perf_counter() - started:.1f} s")
    warm = create_moa_graph(config_of(BASELINE))
    warm.invoke({"messages": [("user", "Say hi.")]})

    medians: dict[str, float] = {}
    print(f"\n{'system':<28} {'median s':>9} {'tokens':>7} {'calls':>6}  per question (s)")
    for system, config in configs.items():
        graph = create_moa_graph(config)
        walls, tokens, calls = [], [], []
        for question in QUESTIONS:
            for _ in range(args.repeats):
                started = time.perf_counter()
                out = graph.invoke({"messages": [("user", question)]})
                walls.append(time.perf_counter() - started)
                tokens.append(out["usage"]["total"]["completion_tokens"])
                calls.append(out["usage"]["total"]["calls"])
        medians[system] = statistics.median(walls)
        print(
            f"{system:<28} {medians[system]:>9.1f} {statistics.median(tokens):>7.0f} "
            f"{statistics.mean(calls):>6.1f}  " + " ".join(f"{w:.1f}" for w in walls),
            flush=True,
        )
    if BASELINE in medians:
        print(f"\nratio of median answer time to {BASELINE}:")
        for system, median in medians.items():
            print(f"  {system:<28} {median / medians[BASELINE]:.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    runtime.stop_all()


if __name__ == "__main__":
    main()
