"""Memory and open files of `moa serve` after many requests with distinct sampling settings.

An earlier version of the server kept one model, with its own HTTP client, per distinct
(model, temperature, max_tokens): 150 requests grew it from 153 MB to 3.1 GB. A later one
shared the async client per endpoint, but a provider model (``together:...``) still built
its own sync openai clients, each with its own TLS setup (about 2 MB a model), and under
``ainvoke`` the sync ``prepare`` node built every model a second time: 150 requests on
``moa-together`` took the server from 147 to 879 MB (issue 21).

This benchmark serves each shipped remote preset (every preset that is not ``local-*``) with
``moa serve``'s app in a subprocess, its providers pointed at a loopback FaultServer
(``OPENAI_BASE_URL``, ``TOGETHER_API_BASE``, dummy keys), sends N requests that each carry a
temperature and a max_tokens no other request used, and prints the server's RSS and open
descriptors before and after, per preset. Goal: growth within 100 MB per preset.

    python benchmarks/serve_memory.py                           # every remote preset, 1000 each
    python benchmarks/serve_memory.py --presets moa-together --requests 150   # the issue's run

Everything stays on 127.0.0.1; no model is downloaded and no provider is called.
"""

import argparse
import asyncio
import os
import sys
import textwrap
import time

import httpx
from _served import served

from langgraph_moa.config import list_presets
from langgraph_moa.testing import FaultProfile, FaultServer

SERVER = textwrap.dedent(
    """
    import sys, uvicorn
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    from langgraph_moa.serving._guard import ServeSecurity, uvicorn_options
    preset, port = sys.argv[1], int(sys.argv[2])
    app = create_app({preset: MoAConfig.from_preset(preset)})
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error",
                **uvicorn_options(ServeSecurity()))
    """
)


def remote_presets() -> list[str]:
    return [name for name in list_presets() if not name.startswith("local-")]


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def send(root: str, model: str, count: int, offset: int, concurrency: int) -> int:
    """Send `count` requests, each with its own temperature and max_tokens; return failures."""
    gate = asyncio.Semaphore(concurrency)
    failures = 0
    async with httpx.AsyncClient(base_url=root, timeout=120) as client:

        async def one(i: int) -> None:
            nonlocal failures
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"question {i}"}],
                "temperature": round((i % 1000) / 500, 3),  # 0.000 .. 1.998, distinct per i
                "max_tokens": 16 + i % 4000,
            }
            async with gate:
                response = await client.post("/v1/chat/completions", json=body)
            failures += response.status_code != 200

        await asyncio.gather(*(one(offset + i) for i in range(count)))
    return failures


def measure(preset: str, backend_url: str, args: argparse.Namespace) -> None:
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-fake-benchmark",
        "TOGETHER_API_KEY": "fake-benchmark",
        "OPENAI_BASE_URL": backend_url,
        "OPENAI_API_BASE": backend_url,
        "TOGETHER_API_BASE": backend_url,
    }
    command = [sys.executable, "-c", SERVER, preset]
    with served(command, port_flag=False, env=env) as (root, proc):
        # Warm-up: imports, first models and connections are not growth.
        asyncio.run(send(root, preset, args.warmup, 10_000, args.concurrency))
        time.sleep(1)
        rss0, fds0 = rss_mb(proc.pid), open_fds(proc.pid)
        started = time.monotonic()
        failures = asyncio.run(send(root, preset, args.requests, 0, args.concurrency))
        seconds = time.monotonic() - started
        time.sleep(1)
        rss1, fds1 = rss_mb(proc.pid), open_fds(proc.pid)
    verdict = "flat" if rss1 - rss0 <= 100 else "NOT flat"
    print(
        f"{preset:17s} {args.requests:5d} req {seconds:6.1f}s fail {failures:3d}  "
        f"RSS {rss0:6.1f} -> {rss1:6.1f} MB ({rss1 - rss0:+6.1f})  "
        f"fds {fds0:3d} -> {fds1:3d} ({fds1 - fds0:+d})  {verdict}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--presets", nargs="*", default=None, help="default: every remote one")
    args = parser.parse_args()
    presets = args.presets or remote_presets()
    print(
        f"{args.requests} requests per preset, each with a temperature and max_tokens no "
        f"other used, {args.concurrency} at a time; goal: RSS growth within 100 MB"
    )
    with FaultServer(default=FaultProfile(latency_s=(0.0, 0.005), reply_words=8)) as backend:
        for preset in presets:
            measure(preset, backend.url, args)


if __name__ == "__main__":
    main()
