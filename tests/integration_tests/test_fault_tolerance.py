"""Fault tolerance under load: 200 runs against a server that fails 30% of proposer calls.

Real HTTP on loopback through langchain-openai, so the errors are the ones a provider gives.
"""

import asyncio
import time

import pytest

from langgraph_moa import MoAConfig, MoAError, RetrySettings, create_moa_graph
from langgraph_moa.testing import FaultProfile, FaultServer

PROPOSERS = ["p1", "p2", "p3"]
KINDS = ["500", "503", "429", "400", "401", "hang", "truncated", "garbage"]
RETRY = RetrySettings(max_attempts=3, initial_interval=0.01, backoff_factor=2.0, jitter=False)
CALL_TIMEOUT_S = 0.5
MARGIN_S = 1.5  # stated margin: polling, thread hand-offs and 10 concurrent runs on 2 cores
# Worst case of one run: every proposer attempt times out, plus backoff, plus the aggregator.
BOUND_S = RETRY.max_attempts * CALL_TIMEOUT_S + 0.01 + 0.02 + CALL_TIMEOUT_S + MARGIN_S


@pytest.fixture(scope="module")
def server():
    flaky = FaultProfile(latency_s=(0.0, 0.02), error_rate=0.3, errors=KINDS, hang_s=2.0)
    with FaultServer(
        {p: flaky for p in PROPOSERS} | {"agg": FaultProfile(latency_s=(0.0, 0.01))}, seed=7
    ) as s:
        yield s


def config_for(server) -> MoAConfig:
    return MoAConfig(
        proposers=[f"{p}@{server.url}" for p in PROPOSERS],
        aggregator=f"agg@{server.url}",
        layers=2,
        retry=RETRY,
        call_timeout_s=CALL_TIMEOUT_S,
    )


def proposer_failures(calls) -> int:
    """Failures the metadata reports: retried errors plus calls that failed for good."""
    return sum(
        len(c["retried_errors"]) + (c["status"] != "ok") for c in calls if c["role"] == "proposer"
    )


async def test_200_runs_with_30_percent_failures(server):
    graph = create_moa_graph(config_for(server))
    gate = asyncio.Semaphore(10)

    async def one(i: int):
        async with gate:
            started = time.monotonic()
            try:
                result = await graph.ainvoke({"messages": [("user", f"question {i}")]})
            except MoAError as exc:  # typed, explained
                result = exc
            return result, time.monotonic() - started

    outcomes = await asyncio.gather(*(one(i) for i in range(200)), return_exceptions=True)
    unhandled = [o for o in outcomes if isinstance(o, BaseException)]
    assert unhandled == []  # every exception that escaped was a typed MoAError
    answers = [r for r, _ in outcomes if isinstance(r, dict)]
    errors = [r for r, _ in outcomes if isinstance(r, MoAError)]
    assert len(answers) + len(errors) == 200
    for error in errors:
        assert "proposer" in str(error) and error.calls  # explained, work kept
    for answer in answers:
        assert answer["messages"][-1].text.startswith("agg answer")
    slowest = max(seconds for _, seconds in outcomes)
    assert slowest < BOUND_S, (
        f"a run took {slowest:.2f}s, beyond the configured bound {BOUND_S:.2f}s"
    )
    reported = sum(proposer_failures(r["calls"]) for r in answers) + sum(
        proposer_failures(e.calls) for e in errors
    )
    injected = server.injected_total(PROPOSERS)
    assert injected > 100  # the test really exercised failures
    assert reported == injected
    print(
        f"\n200 runs: {len(answers)} answered, {len(errors)} typed errors, {injected} faults injected "
        f"and reported, slowest run {slowest:.2f}s (bound {BOUND_S:.2f}s)"
    )


def test_sync_runs_count_failures_honestly_too(server):
    graph = create_moa_graph(config_for(server))
    before = server.injected_total(PROPOSERS)
    reported = 0
    for i in range(20):
        try:
            out = graph.invoke({"messages": [("user", f"sync {i}")]})
            reported += proposer_failures(out["calls"])
        except MoAError as exc:
            reported += proposer_failures(exc.calls)
    assert reported == server.injected_total(PROPOSERS) - before
