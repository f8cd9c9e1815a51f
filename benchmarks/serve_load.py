"""Load test: `moa serve` under 16, 64 and 256 concurrent streaming clients, before and after.

Three processes, so each side's CPU is its own: the fake backend (`FaultServer`, an
OpenAI-compatible server on loopback, 5-20 ms per call, no faults), the MoA server (the app of
`moa serve`: 3 proposers + aggregator per request, 2 layers) and this process, whose clients
stream their answers over aiohttp. The MoA server runs in these setups:

- before: the models' HTTP clients on httpx (``MOA_HTTP_TRANSPORT=httpx``), uvicorn on the
  asyncio loop and the h11 parser (what `moa serve` used);
- after: the aiohttp clients and uvicorn on uvloop and httptools (`serving._server.server_options`);
- guarded-h11 and served: as after, with `moa serve`'s guard (head deadline, connection limit
  per address, raised here since every client is 127.0.0.1) on h11 (what `moa serve` ran)
  and on httptools, the models' calls through the openai SDK's own ``create``;
- lean: as served, with the package's chat-completions ``create`` that skips the SDK's
  parameter transform (`transport._completions`);
- frozen: as lean, with the startup heap frozen for the garbage collector (`gc.freeze`);
- tuned: as frozen, with the youngest generation collected every 10,000 allocations instead of
  700 (`serving._server.tune_collector`): what `moa serve` runs now.

For each setup and concurrency it prints requests per second, p50/p99 total latency and time to
first token, and errors (a failed or truncated stream). The figures are CPU-bound on a small
machine: run it on a quiet one and note the load average it prints.

    python benchmarks/serve_load.py [--clients 16 64 256] [--requests 512] [--setups before after]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import aiohttp
from _served import load_average, spawn, stop

from langgraph_moa.transport._net import free_port

# What `moa serve` runs, but for the startup heap: the guard's head deadline and connection
# limit on httptools, the package's chat-completions create without the SDK's parameter
# transform (`transport._completions`).
LEAN = {"transport": "aiohttp", "loop": "uvloop", "http": "guarded-httptools"}
SETUPS = {
    "before": {"transport": "httpx", "loop": "asyncio", "http": "h11"},
    "after": {"transport": "aiohttp", "loop": "uvloop", "http": "httptools"},
    "guarded-h11": {"transport": "aiohttp", "loop": "uvloop", "http": "guarded-h11"},
    # As lean, the models' calls through the openai SDK's own create, with its transform.
    "served": {**LEAN, "sdk_transform": "1"},
    "lean": LEAN,
    # As lean, with the startup heap frozen.
    "frozen": {**LEAN, "collector": "frozen"},
    # As frozen, the young generation's threshold raised: what `moa serve` runs now.
    "tuned": {**LEAN, "collector": "tuned"},
}
REPLY_WORDS = 40

BACKEND = """
import os, sys, threading
import uvicorn
from langgraph_moa.testing import FaultProfile, FaultServer
app = FaultServer(default=FaultProfile(latency_s=(0.005, 0.02), reply_words={words})).app()
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error",
            timeout_keep_alive=300)
"""

MOA_SERVER = """
import os, sys, threading
import uvicorn
from langgraph_moa import MoAConfig
from langgraph_moa.serving._app import create_app
backend = sys.argv[2]
config = MoAConfig(
    proposers=[f"p{{i}}@{{backend}}" for i in range(3)], aggregator=f"agg@{{backend}}", layers=2
)
app = create_app({{"fake-moa": config}})
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
http = "{http}"
if http.startswith("guarded-"):
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from langgraph_moa.serving._guard import ServeSecurity, guarded_protocol
    base = H11Protocol if http == "guarded-h11" else HttpToolsProtocol
    # Every client here comes from 127.0.0.1, as behind a proxy: the per-address limit is off.
    http = guarded_protocol(ServeSecurity(max_connections_per_client=100_000), base)
if "{collector}" == "frozen":
    import gc
    gc.collect()
    gc.freeze()
elif "{collector}" == "tuned":
    from langgraph_moa.serving._server import tune_collector
    tune_collector()
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error",
            loop="{loop}", http=http, timeout_keep_alive=300, backlog=4096)
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def load(url: str, clients: int, requests: int) -> dict[str, float]:
    """`clients` concurrent streaming clients making `requests` requests in all."""
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=300)
    totals: list[float] = []
    ttfts: list[float] = []
    errors = 0
    queue = iter(range(requests))

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for i in queue:
            body = {
                "model": "fake-moa",
                "messages": [{"role": "user", "content": f"question {i}"}],
                "stream": True,
            }
            started = time.perf_counter()
            first = None
            words = 0
            try:
                async with session.post(url, json=body) as response:
                    async for line in response.content:
                        if not line.startswith(b"data: {"):
                            continue
                        chunk = json.loads(line[6:])
                        if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                            first = first or time.perf_counter()
                            words += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                continue
            end = time.perf_counter()
            if words != REPLY_WORDS:
                errors += 1  # a truncated or failed stream
                continue
            totals.append(end - started)
            ttfts.append((first or end) - started)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {
        "rps": len(totals) / elapsed,
        "p50": pct(totals, 0.5),
        "p99": pct(totals, 0.99),
        "ttft50": pct(ttfts, 0.5),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--requests", type=int, default=512, help="requests per measurement")
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=list(SETUPS))
    args = parser.parse_args()
    # MOA_GC_FREEZE=0 would make the tuned setup the same as lean without a word.
    env = {k: v for k, v in os.environ.items() if k not in ("LANGSMITH_TRACING", "MOA_GC_FREEZE")}
    print(f"load average before: {load_average()}")
    backend_port = free_port()
    backend_url = f"http://127.0.0.1:{backend_port}/v1"
    backend = spawn(
        BACKEND.format(words=REPLY_WORDS), [str(backend_port)], f"{backend_url}/models", 60, env
    )
    results: dict[tuple[str, int], dict[str, float]] = {}
    try:
        for name in args.setups:
            setup = SETUPS[name]
            port = free_port()
            server = spawn(
                MOA_SERVER.format(
                    loop=setup["loop"],
                    http=setup["http"],
                    collector=setup.get("collector", "python"),
                ),
                [str(port), backend_url],
                f"http://127.0.0.1:{port}/v1/models",
                60,
                {
                    **env,
                    "MOA_HTTP_TRANSPORT": setup["transport"],
                    "MOA_SDK_TRANSFORM": setup.get("sdk_transform", "0"),
                },
            )
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            try:
                asyncio.run(load(url, 8, 32))  # warm up: imports, first connections
                for clients in args.clients:
                    results[(name, clients)] = asyncio.run(load(url, clients, args.requests))
                    r = results[(name, clients)]
                    print(
                        f"{name:>7} ({setup['transport']}, {setup['loop']}, {setup['http']}) "
                        f"{clients:>4} clients: {r['rps']:6.1f} req/s  p50 {r['p50'] * 1000:6.0f} ms"
                        f"  p99 {r['p99'] * 1000:6.0f} ms  TTFT p50 {r['ttft50'] * 1000:6.0f} ms"
                        f"  errors {r['errors']:.0f}",
                        flush=True,
                    )
            finally:
                stop(server)
    finally:
        stop(backend)
    for old, new in (
        ("before", "after"),
        ("guarded-h11", "served"),
        ("before", "served"),
        ("frozen", "tuned"),
    ):
        if old not in args.setups or new not in args.setups:
            continue
        for clients in args.clients:
            b, a = results[(old, clients)], results[(new, clients)]
            print(
                f"{clients:>4} clients: {new}/{old} req/s {a['rps'] / b['rps']:.2f}x, "
                f"p50 {a['p50'] / b['p50']:.2f}x, p99 {a['p99'] / b['p99']:.2f}x"
            )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
