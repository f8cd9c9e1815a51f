"""Memory and open files of `moa serve` after many requests with distinct sampling settings.

An earlier version of the server kept one model, with its own HTTP client, per distinct
(model, temperature, max_tokens): 150 requests grew it from 153 MB to 3.1 GB and from 20 to
620 open file descriptors. This benchmark starts the served app in a subprocess (so its RSS
is the server's alone) against a loopback FaultServer, sends N requests that each carry a
temperature and a max_tokens no other request used, and prints the server's RSS and open
file descriptors before and after, and the growth. Goal: flat within 50 MB.

    python benchmarks/serve_memory.py                 # 1000 requests, 8 at a time
    python benchmarks/serve_memory.py --requests 150  # the issue's count

Everything stays on 127.0.0.1; no model is downloaded and no provider is called.
"""

import argparse
import asyncio
import os
import subprocess
import sys
import textwrap
import time

import httpx

from langgraph_moa.testing import FaultProfile, FaultServer, free_port

SERVER = textwrap.dedent(
    """
    import sys, uvicorn
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    url, port = sys.argv[1], int(sys.argv[2])
    config = MoAConfig(
        proposers=[f"p1@{url}", f"p2@{url}"], aggregator=f"agg@{url}", layers=2, name="bench"
    )
    uvicorn.run(create_app({"bench": config}), host="127.0.0.1", port=port, log_level="error")
    """
)


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def send(root: str, count: int, offset: int, concurrency: int) -> int:
    """Send `count` requests, each with its own temperature and max_tokens; return failures."""
    gate = asyncio.Semaphore(concurrency)
    failures = 0
    async with httpx.AsyncClient(base_url=root, timeout=60) as client:

        async def one(i: int) -> None:
            nonlocal failures
            body = {
                "model": "bench",
                "messages": [{"role": "user", "content": f"question {i}"}],
                "temperature": round((i % 1000) / 500, 3),  # 0.000 .. 1.998, distinct per i
                "max_tokens": 16 + i,
            }
            async with gate:
                response = await client.post("/v1/chat/completions", json=body)
            failures += response.status_code != 200

        await asyncio.gather(*(one(offset + i) for i in range(count)))
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    with FaultServer(default=FaultProfile(latency_s=(0.0, 0.005), reply_words=8)) as backend:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-c", SERVER, backend.url, str(port)])
        root = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{root}/v1/models", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            # Warm-up: imports, first models and connections are not growth.
            asyncio.run(send(root, args.warmup, 10_000, args.concurrency))
            time.sleep(1)
            rss0, fds0 = rss_mb(proc.pid), open_fds(proc.pid)
            started = time.monotonic()
            failures = asyncio.run(send(root, args.requests, 0, args.concurrency))
            seconds = time.monotonic() - started
            time.sleep(1)
            rss1, fds1 = rss_mb(proc.pid), open_fds(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    print(
        f"{args.requests} requests with distinct temperature and max_tokens "
        f"({args.concurrency} at a time, 3 model calls each) in {seconds:.1f}s, "
        f"{failures} failed"
    )
    print(f"server RSS:        {rss0:7.1f} MB -> {rss1:7.1f} MB  (growth {rss1 - rss0:+.1f} MB)")
    print(f"open descriptors:  {fds0:7d}    -> {fds1:7d}     (growth {fds1 - fds0:+d})")
    verdict = "flat" if rss1 - rss0 <= 50 else "NOT flat"
    print(f"goal: growth within 50 MB -> {verdict}")


if __name__ == "__main__":
    main()
