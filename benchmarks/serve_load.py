"""Load test: concurrent streaming clients on `moa serve` with a fast fake backend.

The backend is `FaultServer` (an OpenAI-compatible server on loopback, 5-20 ms per call, no
faults), so the figures measure this package's overhead: the graph, streaming and HTTP.
Prints errors, time to first token and total latency percentiles, throughput and memory.

    python benchmarks/serve_load.py [--clients 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import openai

from langgraph_moa import MoAConfig
from langgraph_moa.serving._app import create_app
from langgraph_moa.testing import BackgroundServer, FaultProfile, FaultServer


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(clients: int, rounds: int) -> None:
    backend = FaultServer(default=FaultProfile(latency_s=(0.005, 0.02), reply_words=40)).start()
    config = MoAConfig(
        proposers=[f"p{i}@{backend.url}" for i in range(3)],
        aggregator=f"agg@{backend.url}",
        layers=2,
    )
    server = BackgroundServer(create_app({"fake-moa": config})).start()
    client = openai.AsyncOpenAI(
        base_url=f"{server.root}/v1", api_key="unused", max_retries=0, timeout=60
    )
    before = rss_mb()

    async def one(i: int) -> tuple[float, float, int]:
        started = time.perf_counter()
        first = None
        tokens = 0
        stream = await client.chat.completions.create(
            model="fake-moa",
            messages=[{"role": "user", "content": f"question {i}"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter()
                tokens += 1
        end = time.perf_counter()
        return (first or end) - started, end - started, tokens

    ttft: list[float] = []
    total: list[float] = []
    errors = 0
    started = time.perf_counter()
    for r in range(rounds):
        results = await asyncio.gather(
            *(one(r * clients + i) for i in range(clients)), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                errors += 1
            else:
                ttft.append(result[0])
                total.append(result[1])
                if result[2] != 40:
                    errors += 1  # a truncated stream counts as an error
    elapsed = time.perf_counter() - started
    requests = clients * rounds
    print(
        f"{requests} streaming requests, {clients} concurrent clients x {rounds} rounds, 3 proposers + aggregator each"
    )
    print(f"errors: {errors}")
    print(
        f"time to first token  p50 {pct(ttft, 0.5) * 1000:7.0f} ms  p90 {pct(ttft, 0.9) * 1000:7.0f} ms  p99 {pct(ttft, 0.99) * 1000:7.0f} ms"
    )
    print(
        f"total latency        p50 {pct(total, 0.5) * 1000:7.0f} ms  p90 {pct(total, 0.9) * 1000:7.0f} ms  p99 {pct(total, 0.99) * 1000:7.0f} ms  mean {statistics.mean(total) * 1000:.0f} ms"
    )
    print(
        f"throughput: {requests / elapsed:.1f} answers/s ({requests * 4 / elapsed:.0f} model calls/s)"
    )
    print(
        f"memory (server, backend and clients in one process): RSS {before:.0f} MB before, {rss_mb():.0f} MB after, peak {rss_mb('VmHWM'):.0f} MB"
    )
    await client.close()
    server.stop()
    backend.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.rounds))
