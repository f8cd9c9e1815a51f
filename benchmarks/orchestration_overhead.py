"""Orchestration overhead: the MoA graph against a bare `asyncio.gather` of the same calls.

A simulated-latency OpenAI-compatible server (`FaultServer`, fixed latency, no faults) runs in
a subprocess, so this process's CPU time is the client side alone. Every side makes the same
calls over real HTTP on loopback: 3 layers of MoA (two proposer layers of 6 proposers, then
the aggregator: 13 calls per run), each layer waiting for the one before. The project's side
is `create_moa_graph(...).ainvoke` with its models given as `model@url` specs (the package
builds their clients; `--specs instances` gives it `ChatOpenAI` instances on the SDK's httpx
client instead). The two baselines are one `AsyncOpenAI` client and `asyncio.gather` per
layer: on the SDK's default httpx client (the reference implementation's way) and on its
aiohttp client. `--floors` adds LangChain alone, LangGraph alone and the smallest LangGraph +
LangChain graph, on the package's client.

For 1, 16 and 64 concurrent runs it prints the median wall time of each side, its ratio to
the httpx baseline, the extra client CPU per model call against the aiohttp baseline, the
project's ratio to both baselines with the goals (<= 1.00 against httpx at every count,
<= 1.15 against aiohttp at 16 and 64), and the seconds each side spent in the garbage
collector. Then it profiles 64 project runs with cProfile and prints the CPU shares by package
and the top entries.

`--collector` sets the garbage collector up before measuring: `python` leaves it as the
interpreter has it; `frozen` freezes the warmed-up process's objects (`gc.freeze`), so that the
collector no longer walks the libraries' objects at each full collection; `serve` does what
`moa serve` does at startup (`serving._server.tune_collector`: frozen, and the youngest
generation collected every 10,000 allocations instead of 700). Every side runs in the same
process, so each one measures under the same collector. ``MOA_SDK_TRANSFORM=1`` gives the
project's models the SDK's own chat-completions ``create`` (see `transport._completions`), for
a before-and-after.

The figures are CPU-sensitive: run on a quiet machine and note its load average.

    python benchmarks/orchestration_overhead.py [--repeats 3] [--runs 1 16 64] [--floors]
        [--collector python|frozen|serve]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import operator
import os
import pstats
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypedDict

import httpx
import openai
from _served import load_average, spawn, stop
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from pydantic import SecretStr

from langgraph_moa import AGGREGATE_AND_SYNTHESIZE_PROMPT, MoAConfig, create_moa_graph
from langgraph_moa.serving._server import tune_collector
from langgraph_moa.transport._completions import lean_completions
from langgraph_moa.transport._http import own_async_client, transport_in_use
from langgraph_moa.transport._net import free_port

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
    url = f"http://127.0.0.1:{port}/v1"
    return spawn(SERVER.format(latency=latency), [str(port)], f"{url}/models", 30), url


def question(i: int) -> str:
    return f"Question {i}: why is the sky blue?"


# --- the floors: what LangGraph and LangChain cost by themselves ------------------------------


class FloorState(TypedDict, total=False):
    question: str
    layer: int
    outputs: Annotated[list[tuple[int, str]], operator.add]
    references: str | None
    answer: str


Ask = Callable[[str, str, "str | None"], Awaitable[str]]


def ask_with_openai(client: openai.AsyncOpenAI) -> Ask:
    async def ask(model: str, text: str, references: str | None) -> str:
        messages: list[Any] = [{"role": "user", "content": text}]
        if references is not None:
            system = f"{AGGREGATE_AND_SYNTHESIZE_PROMPT}\n{references}"
            messages.insert(0, {"role": "system", "content": system})
        reply = await client.chat.completions.create(
            model=model, messages=messages, temperature=0.7, max_tokens=512
        )
        return reply.choices[0].message.content or ""

    return ask


def ask_with_langchain(url: str, client: httpx.AsyncClient) -> Ask:
    """The same call through langchain-openai's `ChatOpenAI`, one shared HTTP client, with the
    chat-completions `create` the package gives the models it builds (`lean_completions`), so
    that the floors differ from the project in LangChain's and LangGraph's work alone."""
    models = {
        name: lean_completions(
            ChatOpenAI(
                model=name,
                base_url=url,
                api_key=SecretStr("not-needed"),
                max_retries=0,
                temperature=0.7,
                max_tokens=512,  # type: ignore[call-arg]  # alias of max_completion_tokens
                http_async_client=client,
            )
        )
        for name in [*(f"p{j}" for j in range(PROPOSERS)), "agg"]
    }

    async def ask(model: str, text: str, references: str | None) -> str:
        messages: list[Any] = [("user", text)]
        if references is not None:
            messages.insert(0, ("system", f"{AGGREGATE_AND_SYNTHESIZE_PROMPT}\n{references}"))
        return (await models[model].ainvoke(messages)).text

    return ask


async def plain_run(ask: Ask, i: int) -> str:
    """One MoA run as plain calls: each proposer layer gathered, then the aggregator."""
    references = None
    for _ in range(LAYERS - 1):
        outputs = await asyncio.gather(
            *(ask(f"p{j}", question(i), references) for j in range(PROPOSERS))
        )
        references = "\n".join(f"{k + 1}. {text}" for k, text in enumerate(outputs))
    return await ask("agg", question(i), references)


def floor_graph(ask: Ask) -> Any:
    """The smallest LangGraph that runs the same calls: `Send` fan-out per layer, a reducer
    collecting the outputs, a router to the aggregator. No retries, deadlines, records or
    provenance: what any LangGraph MoA pays before doing any of that."""

    async def propose(task: dict[str, Any]) -> FloorState:
        text = await ask(f"p{task['proposer']}", task["question"], task["references"])
        return {"outputs": [(task["layer"], text)]}

    def fan_out(state: FloorState) -> list[Send] | str:
        layer = state.get("layer", 0)
        if layer == LAYERS - 1:
            return "aggregate"
        references = state.get("references")
        return [
            Send(
                "propose",
                {
                    "proposer": j,
                    "layer": layer + 1,
                    "question": state["question"],
                    "references": references,
                },
            )
            for j in range(PROPOSERS)
        ]

    def collect(state: FloorState) -> FloorState:
        layer = state.get("layer", 0) + 1
        texts = [text for at, text in state["outputs"] if at == layer]
        return {
            "layer": layer,
            "references": "\n".join(f"{k + 1}. {t}" for k, t in enumerate(texts)),
        }

    async def aggregate(state: FloorState) -> FloorState:
        return {"answer": await ask("agg", state["question"], state.get("references"))}

    builder = StateGraph(FloorState)
    builder.add_node("propose", propose)
    builder.add_node("collect", collect)
    builder.add_node("aggregate", aggregate)
    builder.add_conditional_edges(START, fan_out, ["propose", "aggregate"])
    builder.add_edge("propose", "collect")
    builder.add_conditional_edges("collect", fan_out, ["propose", "aggregate"])
    builder.add_edge("aggregate", END)
    return builder.compile()


# --- measuring -------------------------------------------------------------------------------


FAILED: list[str] = []


class CollectorClock:
    """Seconds the garbage collector ran, from its own start and stop callbacks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._tick)

    def _tick(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


GC_CLOCK = CollectorClock()


async def measure(run: Callable[[int], Awaitable[Any]], n: int) -> tuple[float, float, float]:
    """Run `n` runs at once; return (wall seconds, process CPU seconds, collector seconds)."""
    cpu, wall, collecting = time.process_time(), time.perf_counter(), GC_CLOCK.seconds
    results = await asyncio.gather(*(run(i) for i in range(n)), return_exceptions=True)
    elapsed = (
        time.perf_counter() - wall,
        time.process_time() - cpu,
        GC_CLOCK.seconds - collecting,
    )
    FAILED.extend(f"{type(r).__name__}: {r}"[:120] for r in results if isinstance(r, Exception))
    return elapsed


def project_config(url: str, specs: str) -> MoAConfig:
    """The benchmark's MoA config: `model@url` specs (the package builds the clients) or
    `ChatOpenAI` instances the caller built, each with the SDK's default httpx client."""
    names = [*(f"p{j}" for j in range(PROPOSERS)), "agg"]
    if specs == "url":
        models: list[Any] = [f"{name}@{url}" for name in names]
    else:
        shared = openai.DefaultAsyncHttpxClient()
        models = [
            ChatOpenAI(
                model=name,
                base_url=url,
                api_key=SecretStr("not-needed"),
                max_retries=0,
                http_async_client=shared,
            )
            for name in names
        ]
    return MoAConfig(proposers=models[:-1], aggregator=models[-1], layers=LAYERS)


COLLECTORS = {
    "python": "as the interpreter has it",
    "frozen": "startup heap frozen (gc.freeze)",
    "serve": "as moa serve sets it (startup heap frozen, young generation raised)",
}

BASELINES = ("bare httpx", "bare aiohttp")
"""The reference's way (bare `asyncio.gather` on the SDK's default httpx client) and the same
on the SDK's aiohttp client, the fastest transport it offers."""


async def compare(
    url: str, runs: list[int], repeats: int, specs: str, floors: bool, collector: str
) -> None:
    config = project_config(url, specs)
    graph = create_moa_graph(config)
    calls = config.calls_per_run()
    bare = openai.AsyncOpenAI(base_url=url, api_key="not-needed", max_retries=0)
    aio = openai.AsyncOpenAI(
        base_url=url,
        api_key="not-needed",
        max_retries=0,
        http_client=own_async_client("aiohttp"),
    )
    shared = own_async_client()
    sides: dict[str, Callable[[int], Awaitable[Any]]] = {
        "project": lambda i: graph.ainvoke({"messages": [("user", question(i))]}),
        "bare httpx": lambda i: plain_run(ask_with_openai(bare), i),
        "bare aiohttp": lambda i: plain_run(ask_with_openai(aio), i),
    }
    if floors:  # what LangChain and LangGraph cost by themselves, on the package's client
        raw, chat = ask_with_openai(aio), ask_with_langchain(url, shared)
        langgraph_raw, langgraph_chat = floor_graph(raw), floor_graph(chat)
        sides["langchain"] = lambda i: plain_run(chat, i)
        sides["langgraph"] = lambda i: langgraph_raw.ainvoke({"question": question(i)})
        sides["langgraph+langchain"] = lambda i: langgraph_chat.ainvoke({"question": question(i)})
    for run in sides.values():  # warm up: imports, first connections
        await measure(run, 2)
    if collector == "frozen":
        gc.collect()
        gc.freeze()
    elif collector == "serve":  # what `moa serve` does once the server is built
        tune_collector()

    print(
        f"{LAYERS} layers x {PROPOSERS} proposers, {calls} calls per run, median of {repeats}; "
        f"project models given as {'model@url specs' if specs == 'url' else 'ChatOpenAI instances'}"
        f" (package transport: {transport_in_use()}); collector: "
        f"{COLLECTORS[collector]} (thresholds {gc.get_threshold()})"
    )
    print(
        "wall seconds of each side; ratio = side / bare httpx; CPU ms = extra client CPU per call"
    )
    names = list(sides)
    print(f"{'runs':>5} " + " ".join(f"{name:>20}" for name in names))
    for n in runs:
        wall: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        collecting: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(repeats):
            for name, run in sides.items():  # interleaved, so drift hits every side alike
                w, c, g = await measure(run, n)
                wall[name].append(w)
                cpu[name].append(c)
                collecting[name].append(g)
        med = {name: statistics.median(values) for name, values in wall.items()}
        base_cpu = statistics.median(cpu["bare aiohttp"])
        cells = []
        for name in names:
            extra = 1000 * (statistics.median(cpu[name]) - base_cpu) / (n * calls)
            cells.append(f"{med[name]:6.3f} {med[name] / med['bare httpx']:5.3f} {extra:5.2f}ms")
        print(f"{n:>5} " + " ".join(f"{cell:>20}" for cell in cells), flush=True)
        httpx_ratio = med["project"] / med["bare httpx"]
        aio_ratio = med["project"] / med["bare aiohttp"]
        print(
            f"      project / bare httpx = {httpx_ratio:.3f} (goal <= 1.00: "
            f"{'met' if httpx_ratio <= 1.0 else 'not met'}); project / bare aiohttp = "
            f"{aio_ratio:.3f}"
            + (f" (goal <= 1.15: {'met' if aio_ratio <= 1.15 else 'not met'})" if n >= 16 else "")
            + f"; bare aiohttp / bare httpx = {med['bare aiohttp'] / med['bare httpx']:.3f}",
            flush=True,
        )
        print(
            "      garbage collector, median seconds per measurement: "
            + ", ".join(f"{name} {statistics.median(collecting[name]):.3f}" for name in names),
            flush=True,
        )
    await bare.close()
    await aio.close()
    await shared.aclose()


async def profile(url: str, n: int, top: int, specs: str) -> None:
    config = project_config(url, specs)
    graph = create_moa_graph(config)

    async def run(i: int) -> Any:
        return await graph.ainvoke({"messages": [("user", question(i))]})

    await measure(run, 2)
    profiler = cProfile.Profile()
    profiler.enable()
    wall, cpu, _ = await measure(run, n)
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
    ours = by_package.get("langgraph_moa", 0.0)
    print(f"{'(this package)':>24} {ours:7.2f} s {100 * ours / total:5.1f}%")
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
    parser.add_argument(
        "--specs",
        choices=["url", "instances"],
        default="url",
        help="project models as model@url specs (the package's clients) or ChatOpenAI instances",
    )
    parser.add_argument(
        "--floors", action="store_true", help="also time LangChain and LangGraph alone"
    )
    parser.add_argument(
        "--collector",
        choices=list(COLLECTORS),
        default="python",
        help="the garbage collector as the interpreter has it, with the warmed-up process "
        "frozen (gc.freeze), or as `moa serve` sets it (frozen, young threshold raised)",
    )
    args = parser.parse_args()
    for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"):
        os.environ.pop(name, None)
    print(f"load average before: {load_average()}")
    proc, url = start_server(args.latency)
    try:
        asyncio.run(compare(url, args.runs, args.repeats, args.specs, args.floors, args.collector))
        if args.profile_runs:
            asyncio.run(profile(url, args.profile_runs, args.top, args.specs))
    finally:
        stop(proc)
    print(f"load average after: {load_average()}")
    print(f"failed runs (counted in the times above): {len(FAILED)}", *sorted(set(FAILED))[:5])


if __name__ == "__main__":
    main()
