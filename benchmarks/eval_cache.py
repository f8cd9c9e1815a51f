"""How much does the call cache save? The same evaluation twice, timed in one run.

The first run generates every answer into a fresh `calls.db`; the second, identical run is
served from it. Prints both wall times, the speed-up, and how many calls the second run made.
Local model servers are started and warmed before the clock starts, so the ratio compares
generation with cache reads, not server start-up.

    python benchmarks/eval_cache.py [--limit N] [--system SPEC ...]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from langgraph_moa.eval import Evaluation, load_dataset, shipped_dataset
from langgraph_moa.local.runtime import LocalRuntime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=6)
    parser.add_argument(
        "--system", nargs="*", default=["single:local:qwen2.5-coder-0.5b", "local-moa"]
    )
    args = parser.parse_args()
    items = load_dataset(shipped_dataset())[: args.limit]
    runtime = LocalRuntime.default()
    runtime.start(["qwen2.5-coder-0.5b", "smollm2-135m"])
    with tempfile.TemporaryDirectory() as out:
        times, summaries = [], []
        for _ in range(2):
            with Evaluation(args.system, items, out, plots=False, exports=False) as evaluation:
                started = time.perf_counter()
                summaries.append(asyncio.run(evaluation.run(progress=False)))
                times.append(time.perf_counter() - started)
    first, second = times
    calls = sum(s["calls"] for s in summaries[1].values())
    cached = sum(s["cached_calls"] for s in summaries[1].values())
    print(f"{len(items)} items x {len(args.system)} systems ({', '.join(args.system)})")
    print(f"first run   {first:8.1f} s   (every call generated)")
    print(f"second run  {second:8.2f} s   ({cached}/{calls} calls from the cache)")
    print(f"speed-up    {first / second:8.0f}x")
    runtime.stop_all()


if __name__ == "__main__":
    main()
