"""Orchestration overhead: the MoA graph against a bare `asyncio.gather` of the same calls.

A simulated-latency OpenAI-compatible server (`FaultServer`, fixed latency, no faults) runs in
a subprocess, so this process's CPU time is the client side alone. Both sides make the same
calls over real HTTP on loopback through the openai client: 3 layers of MoA (two proposer
layers of 6 proposers, then the aggregator: 13 calls per run), each layer waiting for the one
before. The project's side is `create_moa_graph(...).ainvoke`; the bare side is one
`AsyncOpenAI` client with its default connection pool and `asyncio.gather` per layer.

For 1, 16 and 64 concurrent runs it prints the median wall time of each side, their ratio
(goal: <= 1.03 for one run, <= 1.10 at 16 and 64), and the orchestration CPU per model call
(the project's process CPU time minus the bare side's, over the calls made). Then it profiles
one project case with cProfile and prints the top entries.

The figures are CPU-sensitive: run on a quiet machine and note its load average.

    python benchmarks/orchestration_overhead.py [--repeats 3] [--latency 0.2] [--runs 1 16 64]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai

from langgraph_moa import AGGREGATE_AND_SYNTHESIZE_PROMPT, MoAConfig, create_moa_graph
from langgraph_moa._http import own_async_client
from langgraph_moa._net import free_port

PROPOSERS = 6
LAYERS = 3  # MoA layers: proposer layers + the aggregator

SERVER = """
import os, sys, threading
import uvicorn
from langgraph_moa.testing import FaultProfile, FaultServer
port = int(sys.argv[1])
app = FaultServer(default=FaultProfile(latency_s=({latency}, {latency}))).app()
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
# Keep-alive longer than any pause between measurements: a client reusing a connection the
# server has just closed gets a connection error, which would be the benchmark's own fault.
uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", timeout_keep_alive=300)
"""


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(latency=latency), str(port)],
        stdin=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the simulated server did not start")
        time.sleep(0.1)


def question(i: int) -> str:
    return f"Question {i}: why is the sky blue?"


# --- the bare side ---------------------------------------------------------------------------


async def bare_run(client: openai.AsyncOpenAI, i: int) -> str:
    """One MoA run as plain calls: each proposer layer gathered, then the aggregator."""

    async def ask(model: str, references: str | None) -> str:
        messages: list[Any] = [{"role": "user", "content": question(i)}]
        if references is not None:
            system = f"{AGGREGATE_AND_SYNTHESIZE_PROMPT}\n{references}"
            messages.insert(0, {"role": "system", "content": system})
        reply = await client.chat.completions.create(
            model=model, messages=messages, temperature=0.7, max_tokens=512
        )
        return reply.choices[0].message.content or ""

    references = None
    for _ in range(LAYERS - 1):
        outputs = await asyncio.gather(*(ask(f"p{j}", references) for j in range(PROPOSERS)))
        references = "\n".join(f"{k + 1}. {text}" for k, text in enumerate(outputs))
    return await ask("agg", references)


# --- measuring -------------------------------------------------------------------------------


FAILED: list[str] = []


async def measure(run: Callable[[int], Awaitable[Any]], n: int) -> tuple[float, float]:
    """Run `n` runs at once; return (wall seconds, process CPU seconds)."""
    cpu, wall = time.process_time(), time.perf_counter()
    results = await asyncio.gather(*(run(i) for i in range(n)), return_exceptions=True)
    elapsed = time.perf_counter() - wall, time.process_time() - cpu
    FAILED.extend(f"{type(r).__name__}: {r}"[:120] for r in results if isinstance(r, Exception))
    return elapsed


async def compare(url: str, runs: list[int], repeats: int) -> None:
    config = MoAConfig(
        proposers=[f"p{j}@{url}" for j in range(PROPOSERS)],
        aggregator=f"agg@{url}",
        layers=LAYERS,
    )
    graph = create_moa_graph(config)
    calls = config.calls_per_run()
    bare = openai.AsyncOpenAI(base_url=url, api_key="not-needed", max_retries=0)
    # The bare calls again, through the HTTP client the project's models get
    # (`own_async_client`), to tell the client's pool from orchestration.
    pooled = openai.AsyncOpenAI(
        base_url=url, api_key="not-needed", max_retries=0, http_client=own_async_client()
    )
    sides: dict[str, Callable[[int], Awaitable[Any]]] = {
        "project": lambda i: graph.ainvoke({"messages": [("user", question(i))]}),
        "bare": lambda i: bare_run(bare, i),
        "bare, own client": lambda i: bare_run(pooled, i),
    }
    for run in sides.values():  # warm up: imports, first connections
        await measure(run, 2)

    print(f"{LAYERS} layers x {PROPOSERS} proposers, {calls} calls per run, median of {repeats}")
    header = f"{'runs':>5} {'project s':>10} {'bare s':>8} {'ratio':>6} {'CPU/call ms':>12}"
    print(f"{header} {'bare+pool s':>12} {'ratio to it':>12}")
    for n in runs:
        wall: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(repeats):
            for name, run in sides.items():  # interleaved, so drift hits every side alike
                w, c = await measure(run, n)
                wall[name].append(w)
                cpu[name].append(c)
        med = {name: statistics.median(values) for name, values in wall.items()}
        extra_cpu = statistics.median(cpu["project"]) - statistics.median(cpu["bare"])
        print(
            f"{n:>5} {med['project']:>10.3f} {med['bare']:>8.3f} "
            f"{med['project'] / med['bare']:>6.3f} {1000 * extra_cpu / (n * calls):>12.2f} "
            f"{med['bare, own client']:>12.3f} {med['project'] / med['bare, own client']:>12.3f}"
        )
    await bare.close()
    await pooled.close()


async def profile(url: str, n: int, top: int) -> None:
    config = MoAConfig(
        proposers=[f"p{j}@{url}" for j in range(PROPOSERS)],
        aggregator=f"agg@{url}",
        layers=LAYERS,
    )
    graph = create_moa_graph(config)

    async def run(i: int) -> Any:
        return await graph.ainvoke({"messages": [("user", question(i))]})

    await measure(run, 2)
    profiler = cProfile.Profile()
    profiler.enable()
    wall, cpu = await measure(run, n)
    profiler.disable()
    print(f"\ncProfile of {n} concurrent project runs ({wall:.2f} s wall, {cpu:.2f} s CPU)")
    stats = pstats.Stats(profiler)
    by_package: dict[str, float] = {}
    for (path, _, _), (_, _, own, _, _) in stats.stats.items():
        by_package[package_of(path)] = by_package.get(package_of(path), 0.0) + own
    total = sum(by_package.values())
    print("--- own CPU time by package")
    for package, own in sorted(by_package.items(), key=lambda kv: -kv[1])[:12]:
        print(f"{package:>24} {own:7.2f} s {100 * own / total:5.1f}%")
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(top)
        body = out.getvalue()
        print(f"--- top {top} by {order}")
        print(body[body.index("   ncalls") :].rstrip())


def package_of(path: str) -> str:
    """Name what a profiled function belongs to: a package, an stdlib module, or builtins."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/langgraph_moa/" in path:
        return "langgraph_moa"
    if path.startswith(("~", "<")):
        return "builtins (C)"
    parts = path.split("/")
    return "stdlib " + (parts[-2] if parts[-2] in ("asyncio", "json", "concurrent") else parts[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per call")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--profile-runs", type=int, default=64)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"):
        os.environ.pop(name, None)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    proc, url = start_server(args.latency)
    try:
        asyncio.run(compare(url, args.runs, args.repeats))
        if args.profile_runs:
            asyncio.run(profile(url, args.profile_runs, args.top))
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"failed runs (counted in the times above): {len(FAILED)}", *sorted(set(FAILED))[:5])


if __name__ == "__main__":
    main()
