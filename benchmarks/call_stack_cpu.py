"""Client CPU per chat-completion call at each level of the stack, from the SDK up to LangChain.

A zero-latency OpenAI-compatible server (`FaultServer`) runs in a subprocess, so this
process's CPU time (`time.process_time`) is the client's alone. Each level makes the same call
(a system message with six 80-word references and a question, as an aggregator gets) `--calls`
times per round, `--concurrency` at a time, on one aiohttp client
(`openai.DefaultAioHttpClient`). The levels take turns, round after round (`--rounds`), so that
the machine's drift hits each alike; the median round is printed, in milliseconds of CPU per
call, with the lowest and highest:

- the openai SDK's ``chat.completions.create``, and the same with its per-request parameter
  transform replaced by dropping the omitted values (what `transport._completions` does);
- langchain-openai's ``BaseChatOpenAI._agenerate``, ``agenerate`` and ``ainvoke`` on the SDK's
  ``create``, and ``ainvoke`` and ``_agenerate`` on the package's lean ``create``;
- ``_agenerate`` on the lean ``create`` with the response built as the SDK builds it
  (``construct_type``) instead of by pydantic's validation, to size that step;
- ``_agenerate`` with the chat result built inline instead of in a worker thread (what
  langchain-openai does, ``run_in_executor``), to size that hop.

Then, in microseconds of CPU, the cost of building one response (an aggregator's answer with
usage) and one streamed chunk, as the SDK builds them and as the lean ``create`` does.

These are the figures behind docs/performance.md's proposals upstream. Run on a quiet machine.

    python benchmarks/call_stack_cpu.py [--calls 1600] [--concurrency 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import timeit
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import langchain_openai.chat_models.base as langchain_openai_base
import openai
import openai.resources.chat.completions.completions as sdk_completions
from _served import load_average
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai.chat_models.base import BaseChatOpenAI
from openai._models import construct_type
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from orchestration_overhead import start_server, stop

import langgraph_moa.transport._completions as lean_module
from langgraph_moa.transport._completions import LeanAsyncCompletions, without_omitted

REFERENCES = "\n".join(f"{k + 1}. " + "word " * 80 for k in range(6))
SYSTEM = f"Synthesize these responses.\n{REFERENCES}"
QUESTION = "Why is the sky blue?"


async def cpu_per_call(call: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> float:
    """One round: milliseconds of this process's CPU per call."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await call()

    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(calls)))
    return (time.process_time() - started) / calls * 1000


@contextmanager
def patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    """Set ``owner.name`` to `value` for one level's round, and put it back."""
    kept = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, kept)


async def main(url: str, calls: int, concurrency: int, rounds: int) -> None:
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

    async def drop_omitted(data: Any, expected_type: Any) -> Any:
        return without_omitted(data)

    async def inline(_executor: Any, func: Callable[..., Any], *args: Any) -> Any:
        return func(*args)

    def lean_agenerate() -> Awaitable[Any]:
        return lean._agenerate(lc_messages)

    levels: list[tuple[str, Callable[[], Awaitable[Any]], Callable[[], Any]]] = [
        ("openai SDK create", sdk, nullcontext),
        ("langchain-openai _agenerate", lambda: chat._agenerate(lc_messages), nullcontext),
        ("langchain-core agenerate", lambda: chat.agenerate([lc_messages]), nullcontext),
        ("langchain-core ainvoke", lambda: chat.ainvoke(lc_messages), nullcontext),
        ("_agenerate on the lean create", lean_agenerate, nullcontext),
        ("ainvoke on the lean create", lambda: lean.ainvoke(lc_messages), nullcontext),
        (
            "openai SDK create, transform skipped",
            sdk,
            lambda: patched(sdk_completions, "async_maybe_transform", drop_omitted),
        ),
        (
            "_agenerate on the lean create, SDK-built response",
            lean_agenerate,
            # the SDK builds the response (construct_type), as before the lean create did not
            lambda: patched(lean_module, "ValidatedChatCompletion", ChatCompletion),
        ),
        (
            "_agenerate on the lean create, result inline",
            lean_agenerate,
            lambda: patched(langchain_openai_base, "run_in_executor", inline),
        ),
    ]
    figures: dict[str, list[float]] = {name: [] for name, _, _ in levels}
    for _, call, setting in levels:  # warm up: connections, caches
        with setting():
            for _ in range(32):
                await call()
    for _ in range(rounds):  # interleaved, so the machine's drift hits every level alike
        for name, call, setting in levels:
            with setting():
                figures[name].append(await cpu_per_call(call, calls, concurrency))
    await client.close()

    medians = {name: statistics.median(values) for name, values in figures.items()}
    base = medians["openai SDK create"]
    print(
        f"{calls} calls per round, {concurrency} at a time, zero-latency server; "
        f"median of {rounds} interleaved rounds (lowest, highest)"
    )
    print(f"{'level':<52} {'CPU ms/call':>11} {'vs SDK create':>13}")
    for name, ms in medians.items():
        spread = f"({min(figures[name]):.3f}, {max(figures[name]):.3f})"
        print(f"{name:<52} {ms:11.3f} {ms / base:12.2f}x  {spread}")


def building_cost(repeats: int = 5000) -> None:
    """Print the CPU of building one response and one streamed chunk, both ways."""
    text = "The sky is blue because air scatters short wavelengths more than long ones. " * 6
    top = {"id": "c1", "created": 1, "model": "m", "system_fingerprint": "b1"}
    usage = {"prompt_tokens": 600, "completion_tokens": 80, "total_tokens": 680}
    completion = {
        **top,
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }
    chunk = {
        **top,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": " blue"}, "finish_reason": None}],
    }
    print(f"{'building one':<48} {'SDK (us)':>11} {'lean (us)':>13}")
    for name, sdk_type, lean_type, data in (
        ("chat completion", ChatCompletion, lean_module.ValidatedChatCompletion, completion),
        ("streamed chunk", ChatCompletionChunk, lean_module.ValidatedChatCompletionChunk, chunk),
    ):
        lean_type.build(response=None, data=data)  # pydantic builds its validator once

        def sdk(sdk_type: Any = sdk_type, data: Any = data) -> Any:
            return construct_type(type_=sdk_type, value=data)

        def lean(lean_type: Any = lean_type, data: Any = data) -> Any:
            return lean_type.build(response=None, data=data)

        costs = [
            min(timeit.repeat(build, number=repeats, repeat=3)) / repeats * 1e6
            for build in (sdk, lean)
        ]
        print(f"{name:<48} {costs[0]:11.1f} {costs[1]:13.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {load_average()}")
    proc, url = start_server(0.0)
    try:
        asyncio.run(main(url, args.calls, args.concurrency, args.rounds))
    finally:
        stop(proc)
    building_cost()
    print(f"load average after: {load_average()}")
