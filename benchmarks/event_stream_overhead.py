"""What the run event stream costs: 16 concurrent runs with and without it, on a fake backend.

The same `moa serve` process serves both; each round starts 16 runs at once and times until
the last one ends:

- plain: `POST /v1/chat/completions` with `stream: true` (the answer's tokens only);
- events: `POST /v1/moa/runs` (every call's start, tokens, finish; proposers stream too;
  the run is written to the history), the stream read to its end as the page reads it.

The backend (`FaultServer`, in its own process) takes 0.5-1 s before each answer and 60
words at 20 ms each (50 per second, a hosted model's pace; `--token-ms`), whether it streams
them or sends the answer whole, so a round's wall time is mostly the models' and the figure
is what the stream adds to a run. Where it goes: a watched run streams the proposers too,
and the OpenAI SDK's parsing of each streamed chunk (about half a millisecond of CPU) is
most of the added CPU time; at 10 ms per word on 2 busy cores that CPU shows in wall time. Rounds alternate (plain, events, plain, ...) so that
drift of a busy machine falls on both. Goal: events / plain <= 1.05. Prints the figures and
the ratio; asserts nothing.

    python benchmarks/event_stream_overhead.py [--runs 16] [--rounds 5] [--token-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from _served import MOA_SERVE, served

from langgraph_moa.testing import FaultProfile, FaultServer


def backend(port_queue: multiprocessing.Queue, stop: multiprocessing.Event, token_s: float) -> None:  # type: ignore[type-arg]
    profile = FaultProfile(latency_s=(0.5, 1.0), reply_words=60, token_s=token_s)
    with FaultServer(default=profile) as server:
        port_queue.put(server.url)
        stop.wait()


async def one(client: httpx.AsyncClient, path: str, body: dict) -> int:
    """Run once, reading the stream to its end; return the bytes received."""
    size = 0
    async with client.stream("POST", path, json=body) as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            size += len(chunk)
    return size


async def round_of(
    client: httpx.AsyncClient, path: str, runs: int, extra: dict
) -> tuple[float, int]:
    body = {"model": "fake-moa", "messages": [{"role": "user", "content": "Explain X"}], **extra}
    started = time.perf_counter()
    sizes = await asyncio.gather(*(one(client, path, body) for _ in range(runs)))
    return time.perf_counter() - started, sum(sizes)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used: steady where wall time is not."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(root: str, runs: int, rounds: int, pid: int) -> None:
    limits = httpx.Limits(max_connections=runs * 2)
    async with httpx.AsyncClient(base_url=root, timeout=120, limits=limits) as client:
        await round_of(client, "/v1/chat/completions", 2, {"stream": True})  # warm up
        await round_of(client, "/v1/moa/runs", 2, {})
        plain, events = [], []
        cpu: dict[str, float] = {"plain": 0.0, "events": 0.0}
        for r in range(rounds):
            for name, path, extra, walls in (
                ("plain", "/v1/chat/completions", {"stream": True}, plain),
                ("events", "/v1/moa/runs", {}, events),
            ):
                before = cpu_s(pid)
                wall, size = await round_of(client, path, runs, extra)
                used = cpu_s(pid) - before
                cpu[name] += used
                walls.append(wall)
                print(
                    f"round {r + 1}: {name:6} {wall:6.2f} s wall, server CPU {used:5.2f} s "
                    f"({size / 1024:6.1f} KiB streamed)"
                )
    p, e = statistics.median(plain), statistics.median(events)
    print(f"\n{runs} concurrent runs, median of {rounds} rounds:")
    print(f"  plain OpenAI stream: {p:.3f} s")
    print(f"  run event stream:    {e:.3f} s")
    print(f"  ratio events/plain:  {e / p:.3f} (goal <= 1.05)")
    # On a shared machine the fastest round of each is the least disturbed one.
    fp, fe = min(plain), min(events)
    print(f"fastest rounds: plain {fp:.3f} s, events {fe:.3f} s, ratio {fe / fp:.3f}")
    n = runs * rounds
    per_plain, per_events = cpu["plain"] / n * 1000, cpu["events"] / n * 1000
    print(
        f"server CPU per run: plain {per_plain:.0f} ms, events {per_events:.0f} ms "
        f"(+{per_events - per_plain:.0f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--token-ms", type=float, default=20.0, help="ms per word the fake models take (20: 50/s)"
    )
    args = parser.parse_args()
    ports: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    stop = multiprocessing.Event()
    fake = multiprocessing.Process(
        target=backend, args=(ports, stop, args.token_ms / 1000), daemon=True
    )
    fake.start()
    url = ports.get(timeout=30)
    folder = Path(tempfile.mkdtemp(prefix="moa-bench-"))
    config = {
        "variant": "moa",
        "layers": 2,
        "proposers": [f"p{i}@{url}" for i in range(3)],
        "aggregator": f"agg@{url}",
    }
    (folder / "fake-moa.yaml").write_text(yaml.safe_dump(config))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "MOA_HISTORY": str(folder / "history.sqlite3")}
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    try:
        with served([*MOA_SERVE, "-p", str(folder / "fake-moa.yaml")], env=env) as (root, server):
            asyncio.run(measure(root, args.runs, args.rounds, server.pid))
    finally:
        stop.set()
        fake.join(timeout=10)


if __name__ == "__main__":
    main()
