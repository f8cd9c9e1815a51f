"""One MoA layer of two different local models: concurrent vs one after another.

Prints wall times and the speed-up ratio, measured in one run, for each threads-per-server
setting given (default: 1 and the number of cores). Each model has its own server process,
so the two calls of the layer go to two processes that share the cores. The calls use
temperature 0 and a fixed token cap, so both schedules do the same work. This is what
decides how many threads each server gets (`default_threads`).

    python benchmarks/local_concurrency.py [--threads 1 2] [--max-tokens 96] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from langgraph_moa.local.runtime import LocalRuntime

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


def measure(threads: int, max_tokens: int, repeats: int) -> tuple[float, float]:
    runtime = LocalRuntime(threads=threads)
    try:
        runtime.start(MODELS)
        models = [
            runtime.chat_model(n, {"temperature": 0.0, "max_tokens": max_tokens}) for n in MODELS
        ]

        async def run() -> tuple[list[float], list[float]]:
            await layer(models, concurrent=False)  # warm-up: first prompt evaluation
            seq, par = [], []
            for _ in range(repeats):
                seq.append(await layer(models, concurrent=False))
                par.append(await layer(models, concurrent=True))
            return seq, par

        seq, par = asyncio.run(run())
        return statistics.median(seq), statistics.median(par)
    finally:
        runtime.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; layer: {', '.join(MODELS)}; max_tokens={args.max_tokens}")
    print(f"{'threads/server':>15} {'sequential s':>13} {'concurrent s':>13} {'speed-up':>9}")
    for threads in args.threads:
        seq, par = measure(threads, args.max_tokens, args.repeats)
        print(f"{threads:>15} {seq:>13.2f} {par:>13.2f} {seq / par:>8.2f}x")


if __name__ == "__main__":
    main()
