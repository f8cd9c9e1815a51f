"""Chunk-wise aggregation when things go wrong: failures, drops, retries, budget, options.

Each test holds a case an adversarial review found handled wrongly (session 21): a degraded
answer must say so, every started call must end in a record and an event, a dropped proposal's
request must be closed at once, and the run's options and budget must apply to the parts.
"""

import asyncio
import contextlib
import re
import types

import pytest

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa._redact import register_secret
from langgraph_moa.errors import (
    AggregatorFailedError,
    AllProposersFailedError,
    BudgetExhaustedError,
    MoAConfigError,
)
from tests.fakes import WordStreamer

QUESTION = {"messages": [("user", "q")]}
CHUNKS = {"start": "chunks", "chunk_tokens": 2}
NO_WAIT = {"initial_interval": 0.0, "jitter": False}
HANG_S = 30.0
"""A hang bound only, never a timing: the slow fakes it guards against take 60 s or more."""


def chunkwise(proposers, aggregator, **extra) -> MoAConfig:
    aggregation = {**CHUNKS, **extra.pop("aggregation", {})}
    return MoAConfig(
        proposers=proposers, aggregator=aggregator, layers=2, aggregation=aggregation, **extra
    )


def by_model(out, label):
    return [c for c in out["calls"] if c["configured_model"] == label]


async def events_of(config) -> list[dict]:
    return [e async for e in create_moa_graph(config).astream(QUESTION, stream_mode="custom")]


async def test_every_proposal_failing_mid_stream_raises_even_after_parts_were_written(fake):
    config = chunkwise(
        [WordStreamer(label=x, words=6, gap=0.05, fail_at=3) for x in "AB"],
        fake("AGG"),
        retry={"max_attempts": 1},
    )
    with pytest.raises(AllProposersFailedError) as info:
        await create_moa_graph(config).ainvoke(QUESTION)
    statuses = [(c["role"], c["status"]) for c in info.value.calls]
    # The parts written before the failures are on record: their tokens were spent.
    assert statuses == [("proposer", "failed"), ("proposer", "failed"), ("aggregator", "ok")]


async def test_all_proposers_failed_carries_the_earlier_layers_calls(fake):
    def bad(n, messages):
        return ValueError("boom") if n >= 2 else None

    config = MoAConfig(
        proposers=[fake("A", fail=bad), fake("B", fail=bad)],
        aggregator=fake("AGG"),
        layers=3,
        aggregation=CHUNKS,
    )
    with pytest.raises(AllProposersFailedError) as info:
        await create_moa_graph(config).ainvoke(QUESTION)
    assert [(c["layer"], c["status"]) for c in info.value.calls] == [
        (1, "ok"),
        (1, "ok"),
        (2, "failed"),
        (2, "failed"),
    ]


async def test_a_proposal_dropped_at_first_chunk_s_is_cancelled_before_the_first_part(fake):
    hung = WordStreamer(label="H", first=3.0)
    seen = {}

    def reply(label, n, messages):
        seen.setdefault("closed before part 1", "cancelled_at" in hung.state)
        return f"AGG{n}"

    config = chunkwise(
        [WordStreamer(label="A", words=2), WordStreamer(label="B", words=2), hung],
        fake("AGG", reply=reply, delay=lambda n: 0.3),
        aggregation={"first_chunk_s": 0.3},
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    [h] = by_model(out, "H")
    assert h["status"] == "cancelled" and "first_chunk_s" in h["error"]
    assert h["latency_s"] >= 0.25  # how long the answer waited for it
    assert seen["closed before part 1"]


async def test_a_dropped_proposal_ends_in_a_cancelled_event(fake):
    config = chunkwise(
        [WordStreamer(label="A", words=2), WordStreamer(label="H", first=3.0)],
        fake("AGG"),
        aggregation={"first_chunk_s": 0.3},
    )
    mine = [
        (e["event"], e.get("status"))
        for e in await events_of(config)
        if e.get("configured_model") == "H"
    ]
    assert mine == [("started", None), ("failed", "cancelled")]


async def test_a_streamed_proposals_failed_event_is_redacted_and_says_its_status(fake):
    secret = "sk-chunkwise-review-0123456789abcdef"
    register_secret(secret)
    bad = WordStreamer(label="B", words=4, fail_at=1, fail_exc=ValueError(f"bad key {secret}"))
    config = chunkwise([WordStreamer(label="A", words=2), bad], fake("AGG"))
    failed = [e for e in await events_of(config) if e["event"] == "failed"]
    assert [(e["configured_model"], e["status"]) for e in failed] == [("B", "failed")]
    assert secret not in str(failed) and "bad key" in failed[0]["error"]


async def test_finished_events_of_the_streamed_layer_carry_tokens(fake):
    config = chunkwise([WordStreamer(label="A", words=2)], fake("AGG"))
    finished = [e for e in await events_of(config) if e["event"] == "finished"]
    assert {e["configured_model"] for e in finished} == {"A", "AGG"}
    assert all(e["completion_tokens"] > 0 for e in finished)


async def test_a_retried_part_is_in_the_aggregators_record(fake):
    config = chunkwise(
        [fake("A"), fake("B")],
        fake("AGG", fail=lambda n, m: ConnectionError("reset by peer") if n == 1 else None),
        retry=NO_WAIT,
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    [agg] = by_model(out, "AGG")
    assert agg["status"] == "ok" and agg["attempts"] == 2
    assert "reset by peer" in agg["retried_errors"][0]


async def test_a_proposal_that_fails_before_its_first_word_is_retried(fake):
    flaky = WordStreamer(label="F", words=2, fail_attempts=1)
    config = chunkwise([WordStreamer(label="A", words=2), flaky], fake("AGG"), retry=NO_WAIT)
    out = await create_moa_graph(config).ainvoke(QUESTION)
    [f] = by_model(out, "F")
    assert (f["status"], f["attempts"], f["output"]) == ("ok", 2, "F0 F1")


async def test_a_proposal_that_fails_after_its_first_word_is_not_retried(fake):
    broken = WordStreamer(label="B", words=6, gap=0.02, fail_at=3)
    config = chunkwise([WordStreamer(label="A", words=2), broken], fake("AGG"), retry=NO_WAIT)
    out = await create_moa_graph(config).ainvoke(QUESTION)
    [b] = by_model(out, "B")
    assert (b["status"], b["attempts"], broken.state["calls"]) == ("failed", 1, 1)


async def test_a_streamed_proposer_past_its_timeout_says_so(fake):
    config = chunkwise(
        [WordStreamer(label="A", words=2), WordStreamer(label="H", first=5.0)],
        fake("AGG"),
        call_timeout_s=0.3,
        retry={"max_attempts": 1},
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    [h] = by_model(out, "H")
    assert h["status"] == "failed" and "did not answer within 0.3s" in h["error"]


async def test_parts_stop_once_the_run_budget_is_spent_and_the_answer_says_so(fake):
    config = chunkwise(
        [WordStreamer(label=x, words=40, gap=0.005) for x in "AB"],
        fake("AGG"),
        budget={"max_tokens": 100},
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    meta = out["messages"][-1].response_metadata["moa"]
    assert (
        meta["fallback"] == "budget" and "the answer ends after its part" in meta["fallback_reason"]
    )
    assert out["usage"]["total"]["total_tokens"] < 200
    assert {c["status"] for c in out["calls"] if c["role"] == "proposer"} == {"cancelled"}


async def test_a_budget_spent_before_the_first_part_answers_with_a_labelled_proposal(fake):
    # A's whole answer costs 3 tokens: the budget is spent before the first part.
    proposers = [WordStreamer(label="A", words=2), WordStreamer(label="B", words=10, gap=0.1)]
    config = chunkwise(proposers, fake("AGG"), budget={"max_tokens": 3})
    out = await create_moa_graph(config).ainvoke(QUESTION)
    meta = out["messages"][-1].response_metadata["moa"]
    assert (out["messages"][-1].content, meta["fallback"]) == ("A0 A1", "budget")
    assert "no aggregator part was started" in meta["fallback_reason"]
    assert [c["status"] for c in out["calls"]] == ["ok", "cancelled"]
    raising = config.model_copy(update={"on_aggregator_failure": "raise"})
    with pytest.raises(BudgetExhaustedError):
        await create_moa_graph(raising).ainvoke(QUESTION)


def test_stop_and_call_options_reach_the_parts_and_the_proposers(fake, log):
    config = chunkwise([fake("A"), fake("B")], fake("AGG"))
    create_moa_graph(config).invoke(
        {**QUESTION, "stop": ["X"], "call_kwargs": {"seed": 3}, "final_kwargs": {"logprobs": True}}
    )
    agg, proposer = log.by("AGG")[0].kwargs, log.by("A")[0].kwargs
    assert (agg.get("stop"), agg.get("seed"), agg.get("logprobs")) == (["X"], 3, True)
    assert proposer.get("seed") == 3 and "stop" not in proposer and "logprobs" not in proposer


def test_each_streamed_sample_gets_its_own_seed(fake, log):
    """Samples of one model with one seed were one answer repeated (moa-spec section 3)."""
    config = chunkwise([{"model": fake("A"), "samples": 3}], fake("AGG"))
    create_moa_graph(config).invoke({**QUESTION, "call_kwargs": {"seed": 3}})
    assert sorted(c.kwargs["seed"] for c in log.by("A")) == [3, 4, 5]
    assert {c.kwargs["seed"] for c in log.by("AGG")} == {3}


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"final_kwargs": {"response_format": {"type": "json_object"}}},
    ],
    ids=["tools", "response_format"],
)
def test_options_chunk_wise_cannot_honour_are_refused_with_the_fix(fake, extra):
    config = chunkwise([fake("A")], fake("AGG"))
    with pytest.raises(MoAConfigError, match=r"aggregation\.start 'all' or 'quorum'"):
        create_moa_graph(config).invoke({**QUESTION, **extra})


async def test_early_start_says_how_long_a_dropped_straggler_ran(fake):
    config = MoAConfig(
        proposers=[
            fake("Q0", delay=lambda n: 0.3),
            fake("Q1", delay=lambda n: 0.3),
            fake("H", delay=lambda n: 30.0),
        ],
        aggregator=fake("AGG"),
        layers=2,
        aggregation={"start": "quorum", "quorum": 2},
        retry={"max_attempts": 1},
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    dropped = out["messages"][-1].response_metadata["moa"]["early_start"]["dropped"]
    assert [d["configured_model"] for d in dropped] == ["H"] and dropped[0]["latency_s"] >= 0.25


async def test_a_failed_part_with_raise_stops_the_proposals_at_once(fake):
    slow = WordStreamer(label="S", words=4, gap=60.0)
    config = chunkwise(
        [WordStreamer(label="A", words=2), slow],
        fake("AGG", fail=lambda n, m: ValueError("400 bad request")),
        on_aggregator_failure="raise",
        aggregation={"chunk_tokens": 1},
    )
    with pytest.raises(AggregatorFailedError) as info:
        async with asyncio.timeout(HANG_S):
            await create_moa_graph(config).ainvoke(QUESTION)
    assert "cancelled_at" in slow.state and slow.state["words"] == 1  # not its second word
    assert [c["status"] for c in info.value.calls] == ["ok", "cancelled", "failed"]


async def test_a_failed_part_falls_back_once_one_proposal_is_complete(fake):
    slow = WordStreamer(label="S", words=4, gap=60.0)
    config = chunkwise(
        [WordStreamer(label="A", words=2), slow],
        fake("AGG", fail=lambda n, m: ValueError("400 bad request")),
        aggregation={"chunk_tokens": 1},
    )
    async with asyncio.timeout(HANG_S):
        out = await create_moa_graph(config).ainvoke(QUESTION)
    assert "cancelled_at" in slow.state and slow.state["words"] == 1  # not waited for
    assert out["messages"][-1].content == "A0 A1"
    assert out["messages"][-1].response_metadata["moa"]["fallback"] == "best_proposal"


async def test_first_chunk_s_never_drops_below_the_quorum(fake):
    config = chunkwise(
        [WordStreamer(label=x, first=0.4, words=2) for x in "AB"],
        fake("AGG"),
        aggregation={"first_chunk_s": 0.2},
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    assert out["messages"][-1].content.startswith("AGG")
    # The first to write keeps the answer going; the other, still silent then, is dropped.
    assert sorted(c["status"] for c in out["calls"] if c["role"] == "proposer") in (
        ["cancelled", "ok"],
        ["ok", "ok"],
    )


async def test_a_failed_proposal_is_not_listed_in_later_parts(fake):
    config = chunkwise(
        [
            WordStreamer(label="A", words=8, gap=0.05),
            WordStreamer(label="B", words=8, gap=0.05, fail_at=3),
        ],
        fake("AGG"),
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    parts = out["messages"][-1].response_metadata["moa"]["chunkwise"]["parts"]
    seen_b = [s for p in parts for s in p["saw"] if s["proposer"] == 1]
    assert seen_b and not any(s["complete"] for s in seen_b)
    assert all(s["proposer"] == 0 for s in parts[-1]["saw"])


async def test_shuffled_reference_order_applies_to_the_chunk_wise_layer(fake, log):
    def config(start):
        aggregation = {"start": "chunks", "chunk_tokens": 50} if start == "chunks" else {}
        return MoAConfig(
            proposers=[fake(f"P{i}") for i in range(6)],
            aggregator=fake(f"AGG-{start}"),
            layers=2,
            reference_order="shuffled",
            shuffle_seed=1,
            aggregation=aggregation,
        )

    def order(label):
        text = "".join(m.text for m in log.by(label)[-1].messages)
        return [int(n) for n in re.findall(r"P(\d) #", text)]

    await create_moa_graph(config("all")).ainvoke(QUESTION)
    await create_moa_graph(config("chunks")).ainvoke(QUESTION)
    assert order("AGG-all") == order("AGG-chunks") != sorted(order("AGG-all"))


async def test_max_parts_bounds_the_aggregator_calls_and_the_last_reads_complete_proposals(
    fake, log
):
    config = chunkwise(
        [WordStreamer(label=x, words=30, gap=0.002) for x in "AB"],
        fake("AGG"),
        aggregation={"max_parts": 3},
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    parts = out["messages"][-1].response_metadata["moa"]["chunkwise"]["parts"]
    assert len(parts) == len(log.by("AGG")) == 3
    assert [s["complete"] for s in parts[-1]["saw"]] == [True, True]


def test_the_parts_count_toward_the_calls_a_run_makes(fake):
    config = chunkwise([fake("A"), fake("B")], fake("AGG"), aggregation={"max_parts": 5})
    assert config.calls_per_run() == 2 + 5
    with pytest.raises(ValueError, match=r"over the limit of 6 set by budget\.max_calls"):
        chunkwise(
            [fake("A"), fake("B")],
            fake("AGG"),
            aggregation={"max_parts": 5},
            budget={"max_calls": 6},
        )
    with pytest.raises(ValueError, match="max_parts applies with start 'chunks' only"):
        MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), aggregation={"max_parts": 2})


async def test_an_answer_at_its_cap_stands_though_every_proposal_was_cut_off(fake):
    config = chunkwise(
        [WordStreamer(label=x, words=40, gap=0.01) for x in "AB"],
        {"model": fake("AGG"), "max_tokens": 3},
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    assert out["messages"][-1].content.startswith("AGG")
    assert [c["status"] for c in out["calls"]] == ["cancelled", "cancelled", "ok"]
    assert "fallback" not in out["messages"][-1].response_metadata["moa"]


# --- a second review of the rewrite (session 21) ----------------------------------------------


class _RateLimited(Exception):
    """A provider's 429 whose response asks to come back in 3 s (an SDK error's shape)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.response = types.SimpleNamespace(headers={"retry-after": "3"})


async def test_tokens_of_the_parts_written_survive_a_later_part_failing(fake):
    agg = fake("AGG", fail=lambda n, m: ValueError("400 bad request") if n == 2 else None)
    config = chunkwise([WordStreamer(label=x, words=8, gap=0.05) for x in "AB"], agg)
    out = await create_moa_graph(config).ainvoke(QUESTION)
    assert out["messages"][-1].response_metadata["moa"]["fallback"] == "best_proposal"
    [record] = by_model(out, "AGG")
    assert record["status"] == "failed" and record["total_tokens"] > 0
    assert out["usage"]["total"]["total_tokens"] == sum(c["total_tokens"] for c in out["calls"])


@pytest.mark.parametrize("case", ["budget before part 1", "every proposal failed"])
async def test_the_aggregator_starts_only_with_its_first_part(fake, case):
    if case == "budget before part 1":
        proposers = [WordStreamer(label="A", words=2), WordStreamer(label="B", words=10, gap=0.1)]
        config = chunkwise(proposers, fake("AGG"), budget={"max_tokens": 3})
    else:
        proposers = [WordStreamer(label=x, words=4, fail_at=0) for x in "AB"]
        config = chunkwise(proposers, fake("AGG"), retry={"max_attempts": 1})
    events = []
    with contextlib.suppress(AllProposersFailedError):
        async for event in create_moa_graph(config).astream(QUESTION, stream_mode="custom"):
            events.append(event)
    assert not [e for e in events if e.get("configured_model") == "AGG"]


def retry_after_waits(monkeypatch) -> list[float]:
    """Return the list of the 3 s waits `_RateLimited` asks for, which are recorded, not slept."""
    from langgraph_moa.run import _calls

    waits: list[float] = []
    real = _calls.asyncio.sleep

    async def sleep(s, *args, **kwargs):
        if s == 3.0:
            waits.append(s)
            return None
        return await real(s, *args, **kwargs)

    monkeypatch.setattr(_calls.asyncio, "sleep", sleep)
    return waits


async def test_a_mid_stream_failure_is_not_held_for_a_retry_after_it_will_not_use(
    fake, monkeypatch
):
    waits = retry_after_waits(monkeypatch)
    broken = WordStreamer(label="B", words=6, fail_at=2, fail_exc=_RateLimited("429 mid-stream"))
    config = chunkwise([WordStreamer(label="A", words=2), broken], fake("AGG"))
    out = await create_moa_graph(config).ainvoke(QUESTION)
    [b] = by_model(out, "B")
    assert (b["status"], b["attempts"]) == ("failed", 1)
    assert waits == []


async def test_a_part_waits_out_a_retry_after_only_before_a_retry(fake, monkeypatch):
    """The part's last attempt slept its Retry-After before failing: no attempt followed."""
    waits = retry_after_waits(monkeypatch)
    agg = fake("AGG", fail=lambda n, m: _RateLimited("429 slow down"))
    config = chunkwise(
        [WordStreamer(label=x, words=4) for x in "AB"],
        agg,
        retry={**NO_WAIT, "max_attempts": 2},
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    [record] = by_model(out, "AGG")
    assert (record["status"], record["attempts"]) == ("failed", 2)
    assert waits == [3.0]  # between the two attempts, not after the second


async def test_a_proposal_dropped_while_waiting_to_retry_keeps_its_failed_attempt(fake):
    flaky = WordStreamer(label="F", words=2, fail_attempts=1)
    config = chunkwise(
        [WordStreamer(label="A", words=2), flaky],
        fake("AGG"),
        retry={"initial_interval": 2.0, "jitter": False},
        aggregation={"first_chunk_s": 0.3},
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    [f] = by_model(out, "F")
    assert (f["status"], f["attempts"]) == ("cancelled", 2)
    assert "connection reset" in f["retried_errors"][0]


async def test_every_proposal_failing_while_the_part_that_fills_the_cap_is_written_raises(fake):
    # Part 1 ("AGG #1", 2 tokens) fills max_tokens=2; while it is written both proposals fail.
    config = chunkwise(
        [WordStreamer(label=x, words=6, gap=0.05, fail_at=3) for x in "AB"],
        {"model": fake("AGG", delay=lambda n: 0.4), "max_tokens": 2},
        retry={"max_attempts": 1},
    )
    with pytest.raises(AllProposersFailedError):
        await create_moa_graph(config).ainvoke(QUESTION)


def test_what_parts_cannot_write_is_refused_before_any_call_is_paid_for(fake, log):
    config = MoAConfig(
        proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=3, aggregation=CHUNKS
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    with pytest.raises(MoAConfigError, match="tool calls"):
        create_moa_graph(config).invoke({**QUESTION, "tools": tools})
    assert log.calls == []


@pytest.mark.parametrize("max_parts", [2, 16])
async def test_a_budget_spent_by_a_part_stops_the_proposals_at_once(fake, max_parts):
    proposers = [WordStreamer(label=x, words=12, gap=60.0) for x in "AB"]
    config = chunkwise(
        proposers,
        fake("AGG"),
        budget={"max_tokens": 10},  # part 1 alone reads more than 10 tokens
        aggregation={"max_parts": max_parts, "chunk_tokens": 1},
    )
    async with asyncio.timeout(HANG_S):
        out = await create_moa_graph(config).ainvoke(QUESTION)
    assert out["messages"][-1].response_metadata["moa"]["fallback"] == "budget"
    assert {c["status"] for c in out["calls"] if c["role"] == "proposer"} == {"cancelled"}
    assert [(p.state["words"], "cancelled_at" in p.state) for p in proposers] == [(1, True)] * 2


async def test_the_aggregators_latency_is_its_parts_not_the_wait_for_proposals(fake):
    slow = [WordStreamer(label=x, words=2, first=2.0) for x in "AB"]
    out = await create_moa_graph(chunkwise(slow, fake("AGG"))).ainvoke(QUESTION)
    [agg] = by_model(out, "AGG")
    assert agg["latency_s"] < 1.0  # half the 2 s wait for the proposals, which it once held


async def test_the_layer_deadline_applies_to_the_streamed_layer(fake):
    straggler = WordStreamer(label="S", words=20, gap=60.0)
    config = chunkwise(
        [WordStreamer(label="A", words=2), straggler],
        fake("AGG"),
        layer_deadline_s=0.5,
    )
    async with asyncio.timeout(HANG_S):
        out = await create_moa_graph(config).ainvoke(QUESTION)
    [s] = by_model(out, "S")
    assert s["status"] == "cancelled" and "layer deadline (0.5s)" in s["error"]
    assert "cancelled_at" in straggler.state and straggler.state["words"] == 1
    assert out["messages"][-1].content.startswith("AGG")


async def test_a_proposal_its_reader_held_past_the_layer_deadline_is_kept(fake, monkeypatch):
    # A served stream's slow reader holds every model at its next token (serving's
    # ReaderPace, through off_the_clock); the deadline slept on meanwhile and dropped the
    # held proposal once A had answered. Wall time moves only while the reader holds it
    # (an hour): the deadline's clock stops then, so 0.2 s of it never pass.
    import asyncio

    from langgraph_moa.run import _clock as clock
    from langgraph_moa.run._calls import off_the_clock

    now = [1_000_000.0]
    monkeypatch.setattr(clock, "now", lambda: now[0])

    async def reader_behind():
        now[0] += 3600
        await asyncio.sleep(1.0)  # five times the deadline, in real time too

    class Held(WordStreamer):
        async def _astream(self, messages, stop=None, run_manager=None, **kwargs):
            async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
                await off_the_clock(reader_behind())
                yield chunk

    config = chunkwise(
        [WordStreamer(label="A", words=2), Held(label="HELD", words=2)],
        fake("AGG"),
        layer_deadline_s=0.2,
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    [held] = by_model(out, "HELD")
    assert held["status"] == "ok", held


async def test_the_layer_deadline_waits_for_the_quorum(fake):
    config = chunkwise(
        [WordStreamer(label="A", words=2), WordStreamer(label="B", words=4, gap=0.3)],
        fake("AGG"),
        layer_deadline_s=0.2,
        min_proposers=2,
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    assert [c["status"] for c in out["calls"]] == ["ok", "ok", "ok"]


async def _answer_as_streamed(config):
    """Read the answer from the graph's own streams as README shows: the final answer's
    tokens, less what each ``discarded`` event drops (noted with it as ``dropped``).
    Return that text, the discarded events and the final state."""
    from langgraph_moa import final_answer_only

    text, discarded, state = "", [], {}
    modes = ["messages", "custom", "values"]
    async for mode, chunk in create_moa_graph(config).astream(QUESTION, stream_mode=modes):
        if mode == "messages" and final_answer_only(chunk[1]):
            text += chunk[0].text
        elif mode == "custom" and chunk["event"] == "discarded":
            discarded.append({**chunk, "dropped": text[chunk["keep"] :]})
            text = text[: chunk["keep"]]
        elif mode == "values":
            state = chunk
    return text, discarded, state


async def test_a_chunkwise_answer_abandoned_for_a_fallback_is_marked_discarded(fake):
    # Part 1 streamed (tagged moa:final), part 2 failed for good and the best proposal
    # answered: the first part's text stayed in the stream with nothing saying to drop it.
    config = chunkwise(
        [WordStreamer(label="A", words=6), WordStreamer(label="B", words=6)],
        fake("AGG", fail=lambda n, m: ValueError("400 bad request") if n >= 2 else None),
        aggregation={"chunk_tokens": 2},
    )
    text, discarded, state = await _answer_as_streamed(config)
    assert state["messages"][-1].response_metadata["moa"]["fallback"] == "best_proposal"
    assert discarded[0]["dropped"] == "AGG #1"  # the part that had gone out
    assert [(d["role"], d["configured_model"]) for d in discarded] == [("aggregator", "AGG")]
    assert "400 bad request" in discarded[0]["error"] and text == ""


class _PartBreaks(WordStreamer):
    """An aggregator whose second call breaks after its first word (a retried part)."""

    async def _astream(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        from langchain_core.messages import AIMessageChunk
        from langchain_core.outputs import ChatGenerationChunk

        n = self.state["calls"] = self.state.get("calls", 0) + 1
        for i, word in enumerate([f"P{n}a", f" P{n}b"]):
            if n == 2 and i == 1:
                raise ConnectionError("stream reset")
            usage = {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3} if i else None
            chunk = AIMessageChunk(content=word, usage_metadata=usage)  # type: ignore[arg-type]
            yield ChatGenerationChunk(message=chunk)


async def test_a_retried_part_is_marked_discarded_keeping_the_parts_before_it():
    # Part 2 broke after its first word and was written again: its word stayed in the
    # stream ("P1a P1bP2aP3a P3b..."), with nothing saying to drop it.
    config = chunkwise(
        [WordStreamer(label="A", words=4), WordStreamer(label="B", words=4)],
        _PartBreaks(label="AGG"),
        retry={**NO_WAIT, "max_attempts": 2},
    )
    text, discarded, state = await _answer_as_streamed(config)
    answer = state["messages"][-1]
    assert "fallback" not in answer.response_metadata["moa"]
    assert [d["keep"] for d in discarded] == [len("P1a P1b")]
    assert text == answer.text and answer.text.startswith("P1a P1bP3a P3b")
