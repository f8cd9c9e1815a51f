"""`moa serve` while clients send large bodies: how long does a side request wait?

The review that prompted this (issue 21) measured a side request's p95 at 818 ms while 8
clients sent 870 KB bodies: parsing and validating a body runs in a worker thread, but on
CPython that thread holds the GIL, and eight of them at once leave the event loop a ninth
of it. `moa serve` now lets one large body (64 KiB and more) be parsed at a time; the others
wait without holding a thread or the GIL.

This starts `moa serve` (the real command, its defaults, one served config whose endpoint is
never reached: every large body here is refused by `--max-chars 20000` after it is parsed and
its characters counted) and for `--seconds` runs `--senders` clients that each post an 870 KB body after the
other, while a probe client sends ``GET /v1/models`` every 0.1 s. Two body shapes:
``string`` (one message of 870 KB) and ``parts`` (one message of about 29,000 text parts:
what costs the most to validate). It prints the probe's latency (p50, p95, max), the bodies
sent and the answers' status codes.

    python benchmarks/serve_large_bodies.py [--senders 8] [--seconds 20] [--shapes string parts]

CPU-bound: run it on a quiet machine and note the load average it prints.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from _served import MOA_SERVE, load_average, served

SIZE = 870_000


def body(shape: str) -> bytes:
    """An 870 KB chat request of one shape."""
    if shape == "string":
        content: object = "word " * (SIZE // 5)
    else:
        content = [{"type": "text", "text": "w"} for _ in range(SIZE // 30)]
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}).encode()


async def send_for(root: str, raw: bytes, until: float, codes: collections.Counter[int]) -> None:
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(timeout=60) as client:
        while time.monotonic() < until:
            response = await client.post(
                f"{root}/v1/chat/completions", content=raw, headers=headers
            )
            codes[response.status_code] += 1


async def probe_for(root: str, until: float, latencies: list[float], failures: list[str]) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                (await client.get(f"{root}/v1/models")).raise_for_status()
                latencies.append(time.perf_counter() - started)
            except httpx.HTTPError as exc:
                failures.append(type(exc).__name__)
            await asyncio.sleep(0.1)


async def measure(root: str, shape: str, senders: int, seconds: float) -> None:
    raw = body(shape)
    codes: collections.Counter[int] = collections.Counter()
    latencies: list[float] = []
    failures: list[str] = []
    until = time.monotonic() + seconds
    await asyncio.gather(
        probe_for(root, until, latencies, failures),
        *(send_for(root, raw, until, codes) for _ in range(senders)),
    )
    p95 = statistics.quantiles(latencies, n=20)[18] if len(latencies) >= 2 else float("nan")
    print(
        f"{shape:>6}: {len(raw) / 1000:.0f} KB bodies x {senders} senders, {seconds:.0f} s: "
        f"{sum(codes.values())} sent {dict(codes)}; probe p50 "
        f"{statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max "
        f"{max(latencies) * 1000:.0f} ms, failed {len(failures)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--shapes", nargs="+", choices=["string", "parts"], default=["string", "parts"]
    )
    args = parser.parse_args()
    print(f"load average before: {load_average()}")
    folder = Path(tempfile.mkdtemp())
    config = folder / "m.yaml"
    config.write_text(
        "variant: moa\nproposers: ['p@http://127.0.0.1:9/v1']\naggregator: 'a@http://127.0.0.1:9/v1'\n"
    )
    flags = ["-p", str(config), "--max-chars", "20000"]  # every body is refused once counted
    with served([*MOA_SERVE, *flags]) as (root, _):
        for shape in args.shapes:
            asyncio.run(measure(root, shape, args.senders, args.seconds))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
