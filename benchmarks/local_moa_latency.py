"""How long the default local MoA takes to answer a short question on this machine.

Prints, measured in one run: server start-up (model load), then the wall time of each run
of the `local-moa` preset, its critical path per layer, and tokens.

    python benchmarks/local_moa_latency.py [--runs 3] [--question "..."]
"""

from __future__ import annotations

import argparse
import statistics
import time

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.local.runtime import LocalRuntime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--question", default="Why is the sky blue? Answer briefly.")
    parser.add_argument("--preset", default="local-moa")
    args = parser.parse_args()
    config = MoAConfig.from_preset(args.preset)
    names = sorted(
        {p.model.split(":", 1)[1] for p in config.proposers} | {config.final.model.split(":", 1)[1]}
    )
    runtime = LocalRuntime.default()
    started = time.perf_counter()
    runtime.start(names)
    print(
        f"preset {args.preset}: servers for {', '.join(names)} ready in {time.perf_counter() - started:.1f}s "
        f"({runtime.threads} thread(s) per server)"
    )
    graph = create_moa_graph(config)
    walls = []
    for i in range(args.runs):
        started = time.perf_counter()
        out = graph.invoke({"messages": [("user", args.question)]})
        wall = time.perf_counter() - started
        walls.append(wall)
        layers = ", ".join(
            f"L{layer['layer']} {layer['latency_s']:.1f}s" for layer in out["usage"]["layers"]
        )
        total = out["usage"]["total"]
        print(
            f"run {i + 1}: {wall:.1f}s ({layers}); {total['prompt_tokens']} prompt + "
            f"{total['completion_tokens']} completion tokens"
        )
    print(f"median answer time: {statistics.median(walls):.1f}s over {args.runs} runs")
    runtime.stop_all()


if __name__ == "__main__":
    main()
