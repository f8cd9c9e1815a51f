"""`moa serve` under a slow-client flood: is a well-behaved client still served within 1 s?

The review that prompted this (issue 21) opened two times 9,990 connections that each sent a
request head one byte at a time: the server had no head or body deadline and no limit per
client address, reached its 20,000 descriptors in 18 s, and every ``GET /v1/models`` probe
failed for about 56 s.

This benchmark starts ``moa serve`` (the real command, its defaults: heads within 10 s, 64
connections per address) in a subprocess, opens `--connections` slow connections from
`--addresses` loopback addresses (127.0.0.2, 127.0.0.3, ...), each sending one byte of a
request head every second and opening again whenever the server closes it, for
`--seconds`; meanwhile a probe client on 127.0.0.1 sends ``GET /v1/models`` every 0.25 s on
a new connection. It prints the probes' latency (p50, p95, max), how many failed or took
over 1 s, the server's open descriptors (peak), and how many connections the server closed.
The server runs with the usual default soft limit of 1,024 descriptors (`--server-nofile`).

    python benchmarks/serve_slow_clients.py                    # 2,000 connections, 30 s
    python benchmarks/serve_slow_clients.py --baseline         # plain uvicorn, no guard
    python benchmarks/serve_slow_clients.py --seconds 10       # a short run
    python benchmarks/serve_slow_clients.py --server-nofile 20000  # the review's server

Every loop is bounded (it stops after `--seconds`), and everything stays on loopback.
"""

import argparse
import asyncio
import os
import resource
import statistics
import sys
import textwrap
import time

import httpx
from _served import MOA_SERVE, served

BASELINE = textwrap.dedent(
    """
    import sys, uvicorn
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._app import create_app
    config = MoAConfig.from_preset("moa-lite")
    uvicorn.run(create_app({"moa-lite": config}), host="127.0.0.1", port=int(sys.argv[1]),
                log_level="critical")
    """
)

HEAD = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4096


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Flood:
    """Slow connections that dribble a request head and come back when closed."""

    def __init__(self, port: int, addresses: list[str], until: float) -> None:
        self.port, self.addresses, self.until = port, addresses, until
        self.opened = self.closed_by_server = self.refused = 0

    async def one(self, source: str) -> None:
        while time.monotonic() < self.until:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(source, 0)
                )
            except OSError:
                self.refused += 1
                await asyncio.sleep(1.0)
                continue
            self.opened += 1
            try:
                for i in range(len(HEAD)):
                    if time.monotonic() >= self.until:
                        break
                    writer.write(HEAD[i : i + 1])
                    await writer.drain()
                    try:  # one byte a second; a close by the server ends the wait early
                        if await asyncio.wait_for(reader.read(1), timeout=1.0) == b"":
                            self.closed_by_server += 1
                            break
                    except TimeoutError:
                        pass
            except OSError:
                self.closed_by_server += 1
            finally:
                writer.close()
            await asyncio.sleep(1.0)  # then open again


async def probe(root: str, until: float, latencies: list[float], failures: list[str]) -> None:
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=5) as client:  # a new connection each time
                response = await client.get(f"{root}/v1/models")
            if response.status_code != 200:
                failures.append(str(response.status_code))
            else:
                latencies.append(time.monotonic() - started)
        except httpx.HTTPError as exc:
            failures.append(type(exc).__name__)
        await asyncio.sleep(0.25)


async def watch(pid: int, until: float, peaks: list[int]) -> None:
    while time.monotonic() < until:
        peaks.append(open_fds(pid))
        await asyncio.sleep(0.5)


async def flood_for(port: int, connections: int, addresses: int, seconds: float) -> None:
    """The attacker (run in its own process, so that it never slows the probe down)."""
    sources = [f"127.0.0.{2 + i}" for i in range(addresses)]
    flood = Flood(port, sources, time.monotonic() + seconds)
    await asyncio.gather(*(flood.one(sources[i % len(sources)]) for i in range(connections)))
    print(f"{flood.opened} {flood.closed_by_server} {flood.refused}")


async def measure(args: argparse.Namespace, port: int, pid: int) -> None:
    until = time.monotonic() + args.seconds
    latencies: list[float] = []
    failures: list[str] = []
    fds: list[int] = []
    attacker = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--flood",
        str(port),
        "--connections",
        str(args.connections),
        "--addresses",
        str(args.addresses),
        "--seconds",
        str(args.seconds),
        stdout=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(min(5.0, args.seconds / 4))  # let the flood build up first
    await asyncio.gather(
        probe(f"http://127.0.0.1:{port}", until, latencies, failures), watch(pid, until, fds)
    )
    out, _ = await attacker.communicate()
    opened, closed, refused = (int(x) for x in out.split()[-3:])
    over = sum(latency > 1.0 for latency in latencies) + len(failures)
    p95 = statistics.quantiles(latencies, n=20)[18] if len(latencies) >= 2 else float("nan")
    print(
        f"{args.connections} slow connections from {args.addresses} address(es) for "
        f"{args.seconds:g}s against {'plain uvicorn' if args.baseline else 'moa serve'} "
        f"(server descriptor limit {args.server_nofile})"
    )
    print(
        f"probes: {len(latencies) + len(failures)}, served {len(latencies)}, failed "
        f"{len(failures)} {sorted(set(failures)) or ''}"
    )
    if latencies:
        print(
            f"probe latency: p50 {statistics.median(latencies) * 1000:.0f} ms, p95 "
            f"{p95 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        )
    print(f"probes failed or over 1 s: {over}")
    print(
        f"slow connections opened {opened}, closed by the server {closed}, connects refused "
        f"{refused}; server descriptors peak {max(fds, default=-1)}"
    )
    verdict = "met" if over == 0 and latencies else "NOT met"
    print(f"goal: every probe served within 1 s -> {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--addresses", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--baseline", action="store_true", help="plain uvicorn, no guard")
    parser.add_argument(
        "--server-nofile",
        type=int,
        default=1024,
        help="descriptor limit of the server process (1024: the usual default soft limit)",
    )
    parser.add_argument("--flood", type=int, help=argparse.SUPPRESS)  # the attacker process
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.connections)), hard))
    if args.flood:
        asyncio.run(flood_for(args.flood, args.connections, args.addresses, args.seconds))
        return

    if args.baseline:
        command, port_flag = [sys.executable, "-c", BASELINE], False
    else:
        command, port_flag = [*MOA_SERVE, "-p", "moa-lite"], True

    def limit_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.server_nofile, hard))

    # moa-lite's models are never called here, but the server checks for a key before it starts.
    env = {"OPENAI_API_KEY": "sk-never-used", "TOGETHER_API_KEY": "never-used", **os.environ}
    with served(
        command, port_flag=port_flag, env=env, preexec_fn=limit_descriptors, start_s=120
    ) as (
        root,
        proc,
    ):
        asyncio.run(measure(args, int(root.rsplit(":", 1)[1]), proc.pid))


if __name__ == "__main__":
    main()
