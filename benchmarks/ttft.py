"""Time to first token: standard MoA against early aggregation, on a simulated server.

The server (`FaultServer` in a subprocess) streams its answers with timed tokens: every model
waits `--latency` seconds, then writes `--tokens` words, one every `token_s` seconds. The six
proposers run at different speeds (as different models and providers do), so a layer of
standard MoA lasts as long as its slowest proposer; the aggregator streams too. 3 layers x 6
proposers (two proposer layers, then the aggregator).

Setups (``--setups``):
- standard: the aggregator starts after every proposal of the last layer;
- early-last: ``aggregation: {start: quorum, quorum: k}``, on the last proposer layer only;
- early-every: the same quorum on every proposer layer (``every_layer: true``);
- chunks: chunk-wise aggregation on the last layer (``start: chunks``, ``chunk_tokens``), the
  quorum on the layer before it.

For each it prints the time to the answer's first token and to its last, the calls cancelled,
and the ratio to standard (goal: TTFT at most a quarter of standard's). The times are mostly
the server's simulated sleeps, so a busy machine moves them little. Answer quality is not
measured here (the simulated answers carry no content): `moa eval` with the configs in
`benchmarks/aggregation_systems/` measures it on the local models (README, "Early and
chunk-wise aggregation").

    python benchmarks/ttft.py [--tokens 512] [--quorum 3] [--chunk-tokens 32] [--runs 1]

``--local`` runs the ``local-moa`` preset on the embedded models instead (Qwen2.5-Coder 1.5B
and 0.5B propose, the 1.5B aggregates; 2 layers, so the quorum has no earlier layer to act
on): standard against chunk-wise, same question each run.

    python benchmarks/ttft.py --local --setups standard chunks [--chunk-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
from typing import Any

from _served import load_average, spawn, stop

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.run._answer import final_answer_only
from langgraph_moa.transport._net import free_port

PROPOSERS = 6
LAYERS = 3
# Seconds per token of each proposer: the fastest writes 512 tokens in about 2 s, the slowest
# in about 10 s.
PROPOSER_TOKEN_S = [0.004, 0.005, 0.006, 0.008, 0.012, 0.02]
AGGREGATOR_TOKEN_S = 0.005

SERVER = """
import json, os, sys, threading
import uvicorn
from langgraph_moa.testing import FaultProfile, FaultServer
spec = json.loads(sys.argv[2])
profiles = {{name: FaultProfile(**p) for name, p in spec.items()}}
app = FaultServer(profiles).app()
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error",
            timeout_keep_alive=300)
"""


def start_server(latency: float, tokens: int) -> tuple[subprocess.Popen[str], str]:
    profiles: dict[str, Any] = {
        f"p{j}": {
            "latency_s": (latency, latency),
            "reply_words": tokens,
            "token_s": token_s,
            "honor_max_tokens": True,
        }
        for j, token_s in enumerate(PROPOSER_TOKEN_S)
    }
    profiles["agg"] = {
        "latency_s": (latency, latency),
        "reply_words": tokens,
        "token_s": AGGREGATOR_TOKEN_S,
        "honor_max_tokens": True,  # a chunk-wise part is capped at chunk_tokens
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    return spawn(SERVER.format(), [str(port), json.dumps(profiles)], f"{url}/models", 30), url


def config(url: str, setup: str, quorum: int, tokens: int, chunk_tokens: int = 32) -> MoAConfig:
    aggregation: dict[str, Any] = {}
    if setup == "chunks":
        aggregation = {"start": "chunks", "chunk_tokens": chunk_tokens, "quorum": quorum}
    elif setup != "standard":
        aggregation = {"start": "quorum", "quorum": quorum, "every_layer": setup == "early-every"}
    return MoAConfig(
        proposers=[{"model": f"p{j}@{url}", "max_tokens": tokens} for j in range(PROPOSERS)],
        aggregator={"model": f"agg@{url}", "max_tokens": tokens},
        layers=LAYERS,
        aggregation=aggregation,
        call_timeout_s=600,
    )


async def one_run(graph: Any, i: int) -> tuple[float, float, int]:
    """Return (seconds to the first answer token, to the last, calls cancelled)."""
    started = time.perf_counter()
    first = None
    result: dict[str, Any] = {}
    async for mode, chunk in graph.astream(
        {"messages": [("user", f"Question {i}: why is the sky blue?")]},
        stream_mode=["messages", "values"],
    ):
        if mode == "messages":
            message, metadata = chunk
            if first is None and final_answer_only(metadata) and message.content:
                first = time.perf_counter()
        else:
            result = chunk
    end = time.perf_counter()
    cancelled = sum(1 for c in result.get("calls", []) if c["status"] == "cancelled")
    return (first or end) - started, end - started, cancelled


def local_config(setup: str, chunk_tokens: int) -> MoAConfig:
    """The local-moa preset with the setup's aggregation (standard or chunk-wise only)."""
    aggregation: dict[str, Any] = {}
    if setup == "chunks":
        aggregation = {"start": "chunks", "chunk_tokens": chunk_tokens}
    elif setup != "standard":
        raise SystemExit("--local compares the setups standard and chunks")
    return MoAConfig.from_preset("local-moa").with_overrides(aggregation=aggregation)


async def measure(
    url: str | None, setups: list[str], quorum: int, tokens: int, runs: int, chunk_tokens: int
) -> None:
    if url is None:
        print(f"local-moa preset (256-token answers); chunk-wise parts of {chunk_tokens} tokens;")
    else:
        print(
            f"{LAYERS} layers x {PROPOSERS} proposers, {tokens}-token answers, proposer token "
            f"intervals {PROPOSER_TOKEN_S} s, aggregator {AGGREGATOR_TOKEN_S} s; quorum "
            f"{quorum}; chunk-wise parts of {chunk_tokens} tokens;"
        )
    print(f"median of {runs} run(s)")
    ttft: dict[str, float] = {}

    def build(setup: str) -> Any:
        if url is None:
            return create_moa_graph(local_config(setup, chunk_tokens))
        return create_moa_graph(config(url, setup, quorum, tokens, chunk_tokens))

    if url is None:  # start the local servers first, unmeasured (a run would take minutes)
        from langgraph_moa.local.runtime import LocalRuntime

        LocalRuntime.default().start(["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"])
    else:  # warm up (imports, first connections) on the quickest setup, unmeasured
        await one_run(build("early-every"), -1)
    for setup in setups:
        graph = build(setup)
        results = [await one_run(graph, i) for i in range(runs)]
        ttft[setup] = statistics.median(r[0] for r in results)
        total = statistics.median(r[1] for r in results)
        cancelled = statistics.median(r[2] for r in results)
        ratio = ttft[setup] / ttft["standard"] if "standard" in ttft else float("nan")
        print(
            f"{setup:>12}: TTFT {ttft[setup]:6.2f} s  last token {total:6.2f} s  "
            f"cancelled calls {cancelled:.0f}  TTFT / standard {ratio:.2f}"
            + (
                f" (goal <= 0.25: {'met' if ratio <= 0.25 else 'not met'})"
                if setup != "standard"
                else ""
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds before a first token")
    parser.add_argument("--quorum", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--chunk-tokens", type=int, default=32)
    parser.add_argument("--local", action="store_true", help="the local-moa preset instead")
    parser.add_argument(
        "--setups", nargs="+", default=["standard", "early-last", "early-every", "chunks"]
    )
    args = parser.parse_args()
    for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"):
        os.environ.pop(name, None)
    print(f"load average before: {load_average()}")
    if args.local:
        asyncio.run(measure(None, args.setups, 0, 256, args.runs, args.chunk_tokens))
        print(f"load average after: {load_average()}")
        return
    proc, url = start_server(args.latency, args.tokens)
    try:
        asyncio.run(
            measure(url, args.setups, args.quorum, args.tokens, args.runs, args.chunk_tokens)
        )
    finally:
        stop(proc)
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
