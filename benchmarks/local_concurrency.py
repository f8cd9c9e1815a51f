"""One MoA layer of two different local models: three schedules, measured in one run.

- sequential: one call after the other;
- turns: both calls at once, the runtime letting one model at a time use the cores
  (`CoreRoom`, the default);
- shared: both calls at once, both servers computing at the same time
  (``LANGGRAPH_MOA_SHARE_CORES=1``).

Each model has its own server process, so the two calls go to two processes that share the
cores. The calls use temperature 0 and a fixed token cap, so every schedule does the same
work. Printed for each threads-per-server setting given (default: 1 and the number of cores).

    python benchmarks/local_concurrency.py [--threads 1 2] [--max-tokens 96] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from langgraph_moa.local.runtime import CoreRoom, LocalRuntime

MODELS = ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"]
PROMPT = "Explain in a short paragraph why the sky is blue."


async def layer(models, concurrent: bool) -> float:
    started = time.perf_counter()
    if concurrent:
        await asyncio.gather(*(m.ainvoke(PROMPT) for m in models))
    else:
        for m in models:
            await m.ainvoke(PROMPT)
    return time.perf_counter() - started


def measure(threads: int, max_tokens: int, repeats: int) -> tuple[float, float, float]:
    runtime = LocalRuntime(threads=threads)
    try:
        runtime.start(MODELS)
        models = [
            runtime.chat_model(n, {"temperature": 0.0, "max_tokens": max_tokens}) for n in MODELS
        ]

        async def run() -> tuple[list[float], list[float], list[float]]:
            await layer(models, concurrent=False)  # warm-up: first prompt evaluation
            seq, turns, shared = [], [], []
            for _ in range(repeats):  # interleaved, so drift in the machine's load hits all
                seq.append(await layer(models, concurrent=False))
                runtime.room = CoreRoom(shared=False)
                turns.append(await layer(models, concurrent=True))
                runtime.room = CoreRoom(shared=True)
                shared.append(await layer(models, concurrent=True))
            return seq, turns, shared

        seq, turns, shared = asyncio.run(run())
        return statistics.median(seq), statistics.median(turns), statistics.median(shared)
    finally:
        runtime.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; layer: {', '.join(MODELS)}; max_tokens={args.max_tokens}")
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print(f"{'threads/server':>15} {'sequential s':>13} {'turns s':>9} {'shared s':>9}")
    for threads in args.threads:
        seq, turns, shared = measure(threads, args.max_tokens, args.repeats)
        print(f"{threads:>15} {seq:>13.2f} {turns:>9.2f} {shared:>9.2f}")


if __name__ == "__main__":
    main()
