"""The work one model call costs above the model: this package's graph against the floor, no HTTP.

`orchestration_overhead.py` times the graph over real HTTP, where the server, the sockets and a
shared 2-core machine make single runs differ by 10% or more. This script takes the network
out, so that what is left is the orchestration alone: every model answers at once, in this
process (`InstantChat`, a langchain-openai `BaseChatOpenAI` whose `_agenerate` returns a fixed
reply, so LangChain's per-call work is the real one). Four sides make the same 13 calls per
run (3 layers x 6 proposers, as in `orchestration_overhead.py`):

- ``langchain``: each layer an `asyncio.gather` of `ainvoke` calls;
- ``floor``: the smallest LangGraph graph making them through LangChain (`floor_graph`);
- ``project``: `create_moa_graph` with ``model@url`` specs; the package resolves and caches
  its models as usual (model cache, parameters, timeouts), but `build_model` is replaced, for
  the whole process, by one that returns `InstantChat` with the same parameters (so no HTTP
  client and no lean ``create``: those are `call_stack_cpu.py`'s subject);
- ``project-ainvoke``: the same graph with every model call through LangChain's ``ainvoke``
  (``MOA_DIRECT_CALLS=0``), as before the package called the model directly when nothing
  listens (`run._direct`).

For each it prints, per model call: the Python function calls made (cProfile's count: within
0.3% on every run of the same versions, so a change of a few percent shows where CPU time
cannot), and the client CPU in microseconds, median of interleaved measurements of `--runs`
concurrent runs, with the garbage collector off during each measurement and as `moa serve`
sets it. Then it splits each side's function calls by where they are made: inside a model
call (LangChain's pipeline and the stand-in), in this package's own frames (anything they
call directly included), or elsewhere, by the package of the innermost frame (LangGraph,
asyncio, langchain-core's config and callbacks, the rest); and it lists the package's
functions that make most.

    python benchmarks/graph_call_work.py [--runs 64] [--repeats 9]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from _served import load_average
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_openai.chat_models.base import BaseChatOpenAI
from orchestration_overhead import LAYERS, PROPOSERS, floor_graph, plain_run, question
from pydantic import SecretStr

import langgraph_moa.providers._models as package_models
from langgraph_moa import AGGREGATE_AND_SYNTHESIZE_PROMPT, MoAConfig, create_moa_graph
from langgraph_moa.run._direct import DIRECT_CALLS_ENV
from langgraph_moa.serving._server import tune_collector

URL = "http://127.0.0.1:9/v1"
"""Never connected to: every model answers in this process."""
REPLY = "The sky is blue because air scatters short wavelengths more than long ones. " * 6


class InstantChat(BaseChatOpenAI):
    """langchain-openai's chat model with the HTTP call replaced by an immediate reply."""

    async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
        await asyncio.sleep(0)  # one trip through the event loop, as a real call makes
        message = AIMessage(
            REPLY,
            usage_metadata={"input_tokens": 60, "output_tokens": 80, "total_tokens": 140},
            response_metadata={"model_name": self.model_name},
        )
        return ChatResult(
            generations=[ChatGeneration(message=message, generation_info={"finish_reason": "stop"})]
        )

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        return asyncio.run(self._agenerate(*args, **kwargs))


def instant(name: str, **params: Any) -> InstantChat:
    return InstantChat(
        model=name, base_url=URL, api_key=SecretStr("not-needed"), max_retries=0, **params
    )


def build_instant(spec: Any, params: dict[str, Any], **_clients: Any) -> InstantChat:
    """Stands in for `build_model`: the package's model, minus its HTTP client."""
    endpoint = package_models.parse_endpoint_string(spec)
    assert endpoint is not None, spec
    return instant(endpoint.model, **{k: v for k, v in params.items() if v is not None})


Run = Callable[[int], Awaitable[Any]]


def sides() -> dict[str, Run]:
    names = [*(f"p{j}" for j in range(PROPOSERS)), "agg"]
    models = {name: instant(name, temperature=0.7, max_tokens=512) for name in names}

    async def ask(model: str, text: str, references: str | None) -> str:
        messages: list[Any] = [("user", text)]
        if references is not None:
            messages.insert(0, ("system", f"{AGGREGATE_AND_SYNTHESIZE_PROMPT}\n{references}"))
        return (await models[model].ainvoke(messages)).text

    package_models.build_model = build_instant  # type: ignore[assignment]
    specs = [f"{name}@{URL}" for name in names]
    graph = create_moa_graph(MoAConfig(proposers=specs[:-1], aggregator=specs[-1], layers=LAYERS))
    floor = floor_graph(ask)

    def project(direct_calls: str) -> Run:
        async def run(i: int) -> Any:
            os.environ[DIRECT_CALLS_ENV] = direct_calls  # read per call; a side runs alone
            return await graph.ainvoke({"messages": [("user", question(i))]})

        return run

    return {
        "langchain": lambda i: plain_run(ask, i),
        "floor": lambda i: floor.ainvoke({"question": question(i)}),
        "project": project("1"),
        "project-ainvoke": project("0"),
    }


async def cpu_seconds(run: Run, n: int, collector_off: bool) -> float:
    if collector_off:
        gc.collect()
        gc.disable()
    started = time.process_time()
    results = await asyncio.gather(*(run(i) for i in range(n)), return_exceptions=True)
    elapsed = time.process_time() - started
    gc.enable()
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise SystemExit(f"{len(failed)} runs failed, the first with {failed[0]!r}")
    return elapsed


async def function_calls(run: Run, n: int) -> float:
    profiler = cProfile.Profile()
    profiler.enable()
    await cpu_seconds(run, n, collector_off=False)
    profiler.disable()
    return float(pstats.Stats(profiler).total_calls)  # type: ignore[attr-defined]


MODEL_CALL = ("/langchain_core/language_models/", "/langchain_openai/")
"""Frames of a chat model's ``ainvoke`` (LangChain's pipeline and the stand-in model)."""


ELSEWHERE = {
    "/langgraph/": "LangGraph",
    "/asyncio/": "asyncio",
    "/langchain_core/": "langchain-core config and callbacks",
}
"""Where a call made outside the model calls and the package is counted: by the package of
the innermost frame (the function called, or the caller of a built-in)."""


async def where_the_calls_are(run: Run, n: int) -> Counter[str]:
    """Count function calls by where they are made: inside a model call, in this package's own
    frames (by function), or elsewhere (by `ELSEWHERE`)."""
    counts: Counter[str] = Counter()

    def tally(frame: Any, event: str, _: Any) -> None:
        if event not in ("call", "c_call"):
            return
        innermost = frame.f_code.co_filename
        while frame is not None:  # innermost first: the nearest frame that says where
            path = frame.f_code.co_filename
            if any(part in path for part in MODEL_CALL):
                counts[MODEL] += 1
                return
            if "/langgraph_moa/" in path:
                where = path.split("/langgraph_moa/", 1)[1]
                counts[f"{PACKAGE}{where}:{frame.f_code.co_name}"] += 1
                return
            frame = frame.f_back
        label = next((name for part, name in ELSEWHERE.items() if part in innermost), "the rest")
        counts[label] += 1

    sys.setprofile(tally)
    try:
        await cpu_seconds(run, n, collector_off=False)
    finally:
        sys.setprofile(None)
    return counts


MODEL, PACKAGE = "model calls", "package:"


async def main(runs: int, repeats: int, top: int) -> None:
    measured = sides()
    calls = runs * (PROPOSERS * (LAYERS - 1) + 1)
    for run in measured.values():  # warm up: imports, caches
        await cpu_seconds(run, 8, collector_off=False)
    counted = {name: await function_calls(run, 16) / (16 * 13) for name, run in measured.items()}
    tune_collector()
    cpu: dict[tuple[str, bool], list[float]] = {}
    for _ in range(repeats):  # interleaved, so drift hits every side alike
        for off in (True, False):
            for name, run in measured.items():
                seconds = await cpu_seconds(run, runs, collector_off=off)
                cpu.setdefault((name, off), []).append(seconds)

    def us(name: str, off: bool) -> float:
        return 1e6 * statistics.median(cpu[(name, off)]) / calls

    print(
        f"{LAYERS} layers x {PROPOSERS} proposers, 13 calls per run, {runs} concurrent runs, "
        f"median of {repeats}; models answer at once in this process (no HTTP)"
    )
    print(
        f"{'per model call':>16} {'function calls':>15} {'CPU us, GC off':>15} {'CPU us, GC on':>14}"
    )
    for name in measured:
        print(f"{name:>16} {counted[name]:15.0f} {us(name, True):15.0f} {us(name, False):14.0f}")
    extra_calls = counted["project"] - counted["floor"]
    print(
        f"project - floor: {extra_calls:+.0f} function calls ({extra_calls / counted['floor']:+.1%}), "
        f"{us('project', True) - us('floor', True):+.0f} us with GC off, "
        f"{us('project', False) - us('floor', False):+.0f} us with GC on"
    )
    direct = "project-ainvoke"
    print(
        f"{direct} - project (what calling the model directly saves): "
        f"{counted[direct] - counted['project']:+.0f} function calls, "
        f"{us(direct, True) - us('project', True):+.0f} us with GC off, "
        f"{us(direct, False) - us('project', False):+.0f} us with GC on"
    )
    per_call = 16 * 13
    split = {name: await where_the_calls_are(run, 16) for name, run in measured.items()}
    places = [MODEL, "this package", *ELSEWHERE.values(), "the rest"]
    print("function calls per model call, by where they are made:")
    print(f"{'':>16} " + " ".join(f"{place:>14.14}" for place in places))
    for name, counts in split.items():
        mine = sum(v for k, v in counts.items() if k.startswith(PACKAGE))
        cells = [counts[MODEL], mine, *(counts[place] for place in places[2:])]
        print(f"{name:>16} " + " ".join(f"{cell / per_call:14.0f}" for cell in cells))
    ours = Counter({k: v for k, v in split["project"].items() if k.startswith(PACKAGE)})
    print(f"the package's functions that make most (per model call, top {top}):")
    for where, count in ours.most_common(top):
        print(f"{count / per_call:8.1f}  {where.removeprefix(PACKAGE)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"):
        os.environ.pop(name, None)
    print(f"load average before: {load_average()}")
    asyncio.run(main(args.runs, args.repeats, args.top))
    print(f"load average after: {load_average()}")
