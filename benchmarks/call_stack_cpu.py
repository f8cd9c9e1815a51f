"""Client CPU per chat-completion call at each level of the stack, from the SDK up to LangChain.

A zero-latency OpenAI-compatible server (`FaultServer`) runs in a subprocess, so this
process's CPU time (`time.process_time`) is the client's alone. Each level makes the same call
(a system message with six 80-word references and a question, as an aggregator gets) `--calls`
times, `--concurrency` at a time, on one aiohttp client (`openai.DefaultAioHttpClient`); the
best of three rounds is printed, in milliseconds of CPU per call:

- the openai SDK's ``chat.completions.create``, and the same with its per-request parameter
  transform replaced by dropping the omitted values (what `transport._completions` does);
- langchain-openai's ``BaseChatOpenAI._agenerate``, ``agenerate`` and ``ainvoke`` on the SDK's
  ``create``, and ``ainvoke`` and ``_agenerate`` on the package's lean ``create``;
- ``_agenerate`` with the chat result built inline instead of in a worker thread (what
  langchain-openai does, ``run_in_executor``), to size that hop.

These are the figures behind docs/performance.md's proposals upstream. Run on a quiet machine.

    python benchmarks/call_stack_cpu.py [--calls 1600] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import langchain_openai.chat_models.base as langchain_openai_base
import openai
import openai.resources.chat.completions.completions as sdk_completions
from _served import load_average
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai.chat_models.base import BaseChatOpenAI
from orchestration_overhead import start_server, stop

from langgraph_moa.transport._completions import LeanAsyncCompletions, without_omitted

REFERENCES = "\n".join(f"{k + 1}. " + "word " * 80 for k in range(6))
SYSTEM = f"Synthesize these responses.\n{REFERENCES}"
QUESTION = "Why is the sky blue?"


async def cpu_per_call(call: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> float:
    """Best of three rounds: milliseconds of this process's CPU per call."""
    for _ in range(32):  # warm up: connections, caches
        await call()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await call()

    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        await asyncio.gather(*(one() for _ in range(calls)))
        best = min(best, (time.process_time() - started) / calls * 1000)
    return best


async def main(url: str, calls: int, concurrency: int) -> None:
    client = openai.AsyncOpenAI(
        base_url=url, api_key="x", max_retries=0, http_client=openai.DefaultAioHttpClient()
    )
    messages: Any = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    chat = BaseChatOpenAI(
        model="m",
        base_url=url,
        api_key="x",  # type: ignore[arg-type]
        max_retries=0,
        temperature=0.7,
        max_tokens=512,  # type: ignore[call-arg]
    )
    chat.async_client = client.chat.completions  # one client for every level
    lean = chat.model_copy()
    lean.async_client = LeanAsyncCompletions(client)
    lc_messages = [SystemMessage(SYSTEM), HumanMessage(QUESTION)]

    async def sdk() -> Any:
        return await client.chat.completions.create(
            model="m", messages=messages, temperature=0.7, max_tokens=512
        )

    levels: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("openai SDK create", sdk),
        ("langchain-openai _agenerate", lambda: chat._agenerate(lc_messages)),
        ("langchain-core agenerate", lambda: chat.agenerate([lc_messages])),
        ("langchain-core ainvoke", lambda: chat.ainvoke(lc_messages)),
        ("_agenerate on the lean create", lambda: lean._agenerate(lc_messages)),
        ("ainvoke on the lean create", lambda: lean.ainvoke(lc_messages)),
    ]
    figures: dict[str, float] = {}
    for name, call in levels:
        figures[name] = await cpu_per_call(call, calls, concurrency)

    transform = sdk_completions.async_maybe_transform

    async def drop_omitted(data: Any, expected_type: Any) -> Any:
        return without_omitted(data)

    sdk_completions.async_maybe_transform = drop_omitted  # type: ignore[assignment]
    try:
        figures["openai SDK create, transform skipped"] = await cpu_per_call(
            sdk, calls, concurrency
        )
    finally:
        sdk_completions.async_maybe_transform = transform

    in_executor = langchain_openai_base.run_in_executor

    async def inline(_executor: Any, func: Callable[..., Any], *args: Any) -> Any:
        return func(*args)

    langchain_openai_base.run_in_executor = inline  # type: ignore[assignment]
    try:
        figures["_agenerate on the lean create, result inline"] = await cpu_per_call(
            lambda: lean._agenerate(lc_messages), calls, concurrency
        )
    finally:
        langchain_openai_base.run_in_executor = in_executor
    await client.close()

    base = figures["openai SDK create"]
    print(f"{calls} calls, {concurrency} at a time, zero-latency server; best of 3 rounds")
    print(f"{'level':<48} {'CPU ms/call':>11} {'vs SDK create':>13}")
    for name, ms in figures.items():
        print(f"{name:<48} {ms:11.3f} {ms / base:12.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1600)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(f"load average before: {load_average()}")
    proc, url = start_server(0.0)
    try:
        asyncio.run(main(url, args.calls, args.concurrency))
    finally:
        stop(proc)
    print(f"load average after: {load_average()}")
