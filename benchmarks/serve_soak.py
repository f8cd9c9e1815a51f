"""What `moa serve` holds after N and after 2N requests of a week's mix: nothing may grow.

The real `serve()` runs in a subprocess (its history, its access log, uvicorn as `moa serve`
sets it up), its models pointed at a loopback FaultServer. The driver sends rounds of a
mixed load: answers with and without ``stream``, streams the client closes half-way,
upstream failures (500 and 429 from every model; an aggregator failing for good where a
structured answer was asked for), refusals (bad JSON: 415 without a JSON content type, 400
with one; 413 too large, 404 unknown model; and the bodies and query parameters FastAPI would
answer with a 422: a request of the wrong shape), the web page's event streams read to the
end or dropped after their first events, its history listed at its `limit` bound, a run it
does not hold, and requests that carry an ``X-Request-ID``. The page history is kept to
``--history-runs`` runs (10), which the warm-up fills: its rows must stay at that bound.
After a warm-up round and after each of the two measured rounds the server reports, after
a garbage collection: its RSS, open descriptors, threads, asyncio tasks, its live objects
per type (the package's own and its dependencies'; the run ledger's steps on a row of their
own), the page history's rows, the lru caches' sizes and the log handlers.
The table shows the counts at N and at 2N; a count that grows from N to 2N by more than a
few is what to look at (RSS settles slowly; read it beside the object counts).

    python benchmarks/serve_soak.py                    # N = 600 requests
    python benchmarks/serve_soak.py --requests 1500 --concurrency 16

Everything stays on 127.0.0.1; no model is downloaded and no provider is called.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any

import httpx
from _served import answers, load_average

from langgraph_moa.testing import FaultProfile, FaultServer
from langgraph_moa.transport._net import free_port

SERVER = textwrap.dedent(
    """
    import asyncio, collections, gc, json, logging, os, sys, threading
    from langgraph_moa import MoAConfig
    from langgraph_moa.serving._server import serve

    spec = json.loads(sys.argv[1])
    lines = []

    def loops():
        return [o for o in gc.get_objects()
                if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]

    def tasks():
        for _ in range(20):  # read from another thread: the set may change meanwhile
            try:
                return sum(len(asyncio.all_tasks(loop)) for loop in loops())
            except RuntimeError:
                continue
        return -1

    def stats():
        gc.collect()
        kinds = collections.Counter()
        for o in gc.get_objects():
            t = type(o)
            module = t.__module__ if isinstance(t.__module__, str) else ""
            if module.split(".")[0] in spec["modules"]:
                kinds[f"{module}.{t.__qualname__}"] += 1
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        from langgraph_moa.providers import _models
        from langgraph_moa.run import _calls
        handlers = sum(len(getattr(logger, "handlers", ()))
                       for logger in logging.Logger.manager.loggerDict.values())
        handlers += len(logging.getLogger().handlers)
        return {
            "rss_mb": int(status["VmRSS"].split()[0]) // 1024,
            "fds": len(os.listdir("/proc/self/fd")),
            "threads": threading.active_count(),
            "tasks": tasks(),
            "log_handlers": handlers,
            "log_lines": len(lines),
            "lru": sum(f.cache_info().currsize for f in (
                _models._remembered_endpoint, _models._shown, _calls._digest)),
            "objects": dict(kinds),
        }

    def answer_stdin():
        try:
            for _ in sys.stdin:
                print(json.dumps(stats()), flush=True)
        finally:
            os._exit(0)

    threading.Thread(target=answer_stdin, daemon=True).start()
    url = spec["url"]
    config = MoAConfig(proposers=[f"ok@{url}", f"ok2@{url}"], aggregator=f"ok@{url}",
                       layers=2, name="soak")
    serve({"soak": config}, port=spec["port"], history_path=spec["history"],
          history_runs=spec["history_runs"],
          allow_models=[f"{m}@{url}" for m in ("slow", "e500", "e429")],
          max_body_bytes=64 * 1024, log=lambda line: lines.append(None), announce=None)
    """
)

MODULES = [
    "langgraph_moa",
    "langgraph",
    "langchain_core",
    "langchain_openai",
    "openai",
    "httpx",
    "httpcore",
    "starlette",
    "fastapi",
    "uvicorn",
    "anyio",
    "asyncio",
    "h11",
    "httptools",
    "uvloop",
    "sqlite3",
    "pydantic",
    "logging",
]


def body(i: int, **extra: Any) -> dict[str, Any]:
    return {"model": "soak", "messages": [{"role": "user", "content": f"question {i}"}], **extra}


async def one(client: httpx.AsyncClient, i: int) -> str:
    """Send request `i` of the mix; return what kind it was and its outcome."""
    kind = i % 16
    headers = {"X-Request-ID": f"soak-{i}"} if i % 3 == 0 else {}
    path = "/v1/chat/completions"
    if kind == 0:
        r = await client.post(path, json=body(i), headers=headers)
        return f"plain {r.status_code}"
    if kind == 1:
        async with client.stream("POST", path, json=body(i, stream=True), headers=headers) as r:
            async for _ in r.aiter_bytes():
                pass
        return f"stream {r.status_code}"
    if kind == 2:  # a slow stream the client leaves after its first bytes
        slow = body(i, stream=True, aggregator=f"slow@{URL}")
        async with client.stream("POST", path, json=slow, headers=headers) as r:
            async for _ in r.aiter_bytes():
                break
        return f"stream-left {r.status_code}"
    if kind == 3:
        failing = body(i, proposers=[f"e500@{URL}"], aggregator=f"e429@{URL}")
        r = await client.post(path, json=failing, headers=headers)
        return f"upstream-fail {r.status_code}"
    if kind == 4:
        r = await client.post(path, content=b"{not json", headers=headers)
        return f"bad-json {r.status_code}"
    if kind == 5:
        r = await client.post(path, content=b"x" * 100_000, headers=headers)
        return f"too-large {r.status_code}"
    if kind == 6:
        r = await client.post(path, json={**body(i), "model": "nope"}, headers=headers)
        return f"bad-model {r.status_code}"
    if kind == 7:  # the page's event stream, read to the end
        async with client.stream("POST", "/v1/moa/runs", json=body(i), headers=headers) as r:
            async for _ in r.aiter_bytes():
                pass
        return f"page {r.status_code}"
    if kind == 8:  # the page's event stream, dropped (the tab closed)
        slow = body(i, aggregator=f"slow@{URL}")
        async with client.stream("POST", "/v1/moa/runs", json=slow, headers=headers) as r:
            async for _ in r.aiter_bytes():
                break
        return f"page-left {r.status_code}"
    if kind == 9:
        progress = body(i, stream=True, moa_progress=True)
        r = await client.post(path, json=progress, headers=headers)
        return f"progress {r.status_code}"
    return await refused_or_read(client, kind, i, headers)


SCHEMA = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}


async def refused_or_read(
    client: httpx.AsyncClient, kind: int, i: int, headers: dict[str, str]
) -> str:
    """The rest of the mix: refusals of a request's shape, the history read, a failed end."""
    path = "/v1/chat/completions"
    if kind == 10:  # a JSON content type on a body that is not JSON
        typed = {**headers, "Content-Type": "application/json"}
        r = await client.post(path, content=b'{"model": "soak", ', headers=typed)
        return f"bad-json-typed {r.status_code}"
    if kind == 11:  # FastAPI's 422 cases: a body of the wrong shape
        wrong = {**body(i), "messages": "not a list"} if i % 2 else {**body(i), "n": "two"}
        r = await client.post(path, json=wrong, headers=headers)
        return f"wrong-shape {r.status_code}"
    if kind == 12:  # and a query parameter of the wrong kind, or past its bound
        limit = "abc" if i % 2 else "1001"
        r = await client.get(f"/v1/moa/runs?limit={limit}", headers=headers)
        return f"wrong-query {r.status_code}"
    if kind == 13:  # the history at its limit, and a run it does not hold
        r = await client.get("/v1/moa/runs?limit=1000", headers=headers)
        held = len(r.json()["data"])
        gone = await client.get(f"/v1/moa/runs/none-{i}", headers=headers)
        return f"history {r.status_code} ({held} runs) missing {gone.status_code}"
    if kind == 14:  # every aggregator failed and a structure was asked for: no fallback
        failed = body(i, aggregator=f"e500@{URL}", response_format=SCHEMA)
        r = await client.post(path, json=failed, headers=headers)
        return f"aggregator-fail {r.status_code}"
    r = await client.post(path, json=body(i, temperature="hot"), headers=headers)
    return f"wrong-type {r.status_code}"


async def round_of(root: str, start: int, count: int, concurrency: int) -> dict[str, int]:
    gate = asyncio.Semaphore(concurrency)
    outcomes: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=root, timeout=60) as client:

        async def send(i: int) -> None:
            async with gate:
                try:
                    outcome = await one(client, i)
                except httpx.HTTPError as exc:
                    outcome = f"client-error {type(exc).__name__}"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

        await asyncio.gather(*(send(start + i) for i in range(count)))
    return outcomes


def ask(proc: subprocess.Popen[str], history: str) -> dict[str, Any]:
    time.sleep(1.5)  # the dropped runs' cancellations and the history's writes settle
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("stats\n")
    proc.stdin.flush()
    stats = json.loads(proc.stdout.readline())
    import sqlite3

    with sqlite3.connect(history) as db:
        stats["history_rows"] = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    return stats


URL = ""
STEP = "langgraph_moa.run._ledger.Step"


def main() -> None:
    global URL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="N, per measured round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--show", type=int, default=15, help="object types shown")
    parser.add_argument("--history-runs", type=int, default=10, help="the page history's bound")
    args = parser.parse_args()
    profiles = {
        "slow": FaultProfile(token_s=0.05, reply_words=200),
        "e500": FaultProfile(error_rate=1.0, errors=["500"]),
        "e429": FaultProfile(error_rate=1.0, errors=["429"]),
    }
    default = FaultProfile(latency_s=(0.0, 0.005), reply_words=8)
    with FaultServer(profiles, default=default) as backend, tempfile.TemporaryDirectory() as tmp:
        URL = backend.url
        port = free_port()
        history = os.path.join(tmp, "history.sqlite")
        spec = {
            "url": URL,
            "port": port,
            "history": history,
            "history_runs": args.history_runs,
            "modules": MODULES,
        }
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        root = f"http://127.0.0.1:{port}"
        try:
            if not answers(f"{root}/v1/models", proc, 60):
                raise SystemExit("the server did not start")
            outcomes = asyncio.run(round_of(root, 10**6, args.warmup, args.concurrency))
            at = [ask(proc, history)]
            for n in range(2):
                outcomes = asyncio.run(
                    round_of(root, n * args.requests, args.requests, args.concurrency)
                )
                at.append(ask(proc, history))
        finally:
            proc.kill()
            proc.wait()
    report(args, at, outcomes)


def report(args: argparse.Namespace, at: list[dict[str, Any]], outcomes: dict[str, int]) -> None:
    n = args.requests
    print(
        f"serve soak: warm-up {args.warmup}, then N = {n} and 2N = {2 * n} requests, "
        f"{args.concurrency} at a time (load {load_average()})"
    )
    print(
        "last round's outcomes: " + ", ".join(f"{k} \u00d7{v}" for k, v in sorted(outcomes.items()))
    )
    print(f"{'':34s} {'warm-up':>9s} {'N':>9s} {'2N':>9s} {'2N-N':>7s}")
    rows = [(k, [s[k] for s in at]) for k in ("rss_mb", "fds", "threads", "tasks")]
    rows += [(k, [s[k] for s in at]) for k in ("log_handlers", "lru", "history_rows")]
    # The run ledger's steps: one per run in flight, none once the runs ended.
    rows.append(("ledger_steps", [s["objects"].get(STEP, 0) for s in at]))
    for key, values in rows:
        print(f"{key:34s} " + " ".join(f"{v:9d}" for v in values) + f" {values[2] - values[1]:+7d}")
    kinds = set().union(*(s["objects"] for s in at))
    growth = sorted(
        kinds, key=lambda k: at[2]["objects"].get(k, 0) - at[1]["objects"].get(k, 0), reverse=True
    )
    print(f"live objects, most grown from N to 2N (of {len(kinds)} types):")
    for kind in growth[: args.show]:
        values = [s["objects"].get(kind, 0) for s in at]
        print(
            f"  {kind[-32:]:32s} "
            + " ".join(f"{v:9d}" for v in values)
            + f" {values[2] - values[1]:+7d}"
        )
    total = [sum(s["objects"].values()) for s in at]
    print(
        f"{'objects of those modules':34s} "
        + " ".join(f"{v:9d}" for v in total)
        + f" {total[2] - total[1]:+7d}"
    )


if __name__ == "__main__":
    main()
