"""Pairwise judging: position bias cancels, the bootstrap interval is pinned."""

import asyncio

import pytest
from langchain_core.messages import AIMessage

from langgraph_moa.errors import RetryPastDeadlineError
from langgraph_moa.eval.judge import (
    bootstrap_interval,
    judge_both_orders,
    judge_messages,
    pair_score,
    parse_verdict,
    win_rate,
)
from langgraph_moa.run.cache import SQLiteCallCache, call_key


def judged(*args, **kwargs):
    """Judge both orders, from a test's own event loop."""
    return asyncio.run(judge_both_orders(*args, **kwargs))


@pytest.mark.parametrize(
    ("text", "verdict"),
    [("A", "A"), ("b.", "B"), ("Tie", "tie"), ("Response A is better", "A"), ("hmm", None)],
)
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("It's a tie.", "tie"),
        ("Both are good: a tie", "tie"),
        ("A tie.", "tie"),
        ("As a judge: B", "B"),
        ("a close call, but B", "B"),
        ("TIE", "tie"),
        ("Verdict: A", "A"),
        ("verdict: tie", "tie"),
        ("B is longer, but a reader needs A.\nVerdict: A", "A"),  # the verdict line wins
        ("Reply with A, B or tie.\nVerdict: B", "B"),
        ("I cannot say, as a matter of fact.", None),
        ("b is better", "B"),  # there is no word "b": a lower-case b is the verdict
        ("response b is better", "B"),
        ("I pick b.", "B"),
        ("Verdict: a tie", "tie"),
        ("**Verdict: B**", "B"),
    ],
)
def test_the_article_a_is_not_read_as_response_a_and_a_verdict_line_wins(text, verdict):
    assert parse_verdict(text) == verdict


def test_a_judge_that_always_prefers_the_first_position_cancels_out(fake):
    biased = fake("JUDGE", reply=lambda *a: "A")
    assert pair_score(*judged(biased, "q", "candidate answer", "baseline answer")) == 0.5


def test_a_judge_that_prefers_the_candidate_in_both_orders_gives_a_win(fake):
    def prefers_candidate(label, n, messages):
        prompt = messages[-1].text
        return "A" if prompt.index("candidate answer") < prompt.index("baseline answer") else "B"

    judge = fake("JUDGE", reply=prefers_candidate)
    assert pair_score(*judged(judge, "q", "candidate answer", "baseline answer")) == 1.0
    assert len(judge.log.calls) == 2  # both orders asked


def test_pair_scores_and_win_rate():
    assert pair_score("A", "B") == 1.0 and pair_score("B", "A") == 0.0
    assert pair_score("tie", "tie") == 0.5 and pair_score(None, "B") == 0.75
    assert win_rate([1, 0, 0.5, 1]) == 62.5


def test_bootstrap_interval_is_seeded_and_sensible():
    assert bootstrap_interval([1.0] * 10) == (100.0, 100.0)
    scores = [1, 0, 1, 1, 0.5, 0, 1, 1, 0, 1]
    low, high = bootstrap_interval(scores, seed=7)
    assert (low, high) == bootstrap_interval(scores, seed=7)
    assert low < win_rate(scores) < high
    assert 30 <= low <= 50 and 80 <= high <= 95


def test_judge_reliability_counts_agreement_across_orders_and_position_bias():
    from langgraph_moa.eval.judge import judge_reliability

    fair = [("A", "B"), ("B", "A"), ("tie", "tie"), ("A", "A")]
    assert judge_reliability(fair) == {"consistent": 3, "first_position": 0.5, "unreadable": 0}
    always_a = [("A", "A")] * 5
    assert judge_reliability(always_a) == {"consistent": 0, "first_position": 1.0, "unreadable": 0}
    mute = [(None, None), ("B", None)]
    assert judge_reliability(mute) == {"consistent": 0, "first_position": 0.0, "unreadable": 3}


def _openai_error(status, body):
    import httpx
    import openai

    response = httpx.Response(
        status, request=httpx.Request("POST", "http://h:11434/v1/chat/completions"), json=body
    )
    kind = openai.NotFoundError if status == 404 else openai.BadRequestError
    return kind(f"Error code: {status} - {body}", response=response, body=body)


@pytest.mark.parametrize(
    ("body", "status", "kind", "fix"),
    [
        (
            {"error": {"message": 'model "qwen3:8b" not found, try pulling it first'}},
            404,
            "EndpointNotFoundError",
            "run `ollama pull qwen3:8b` on its host",
        ),
        (
            {
                "message": "This model's maximum context length is 4096 tokens, however you "
                "requested 5000 tokens",
                "code": "context_length_exceeded",
            },
            400,
            "ContextLengthError",
            "The input is too long for the judge openai:o3-mini (its context holds 4096 tokens)",
        ),
        (
            {
                "error": {
                    "message": "Unsupported value: 'temperature' does not support 0.0.",
                    "code": "unsupported_value",
                    "param": "temperature",
                }
            },
            400,
            "UnsupportedParameterError",
            "set temperature: null for it in the config",
        ),
    ],
)
def test_a_judge_that_fails_is_explained_with_its_model_and_the_fix(fake, body, status, kind, fix):
    # The judge was called directly, past the calls' explanations: its 404, context overflow
    # or refused parameter reached the eval's summary as the provider's bare words.
    failing = fake("JUDGE", fail=lambda n, m: _openai_error(status, body))
    with pytest.raises(Exception) as raised:
        judged(failing, "q", "a", "b", name="openai:o3-mini")
    assert type(raised.value).__name__ == kind
    assert "the judge openai:o3-mini" in str(raised.value) and fix in str(raised.value)


def test_a_judge_failure_with_no_known_fix_is_raised_as_it_came(fake):
    down = RuntimeError("Error code: 500 - the judge's server is down")
    failing = fake("JUDGE", fail=lambda n, m: down)
    with pytest.raises(RuntimeError) as raised:
        judged(failing, "q", "a", "b", name="openai:o3-mini")
    assert raised.value is down


def test_only_a_readable_verdict_is_cached_an_unreadable_one_asked_again(fake, tmp_path):
    # Every reply was stored: a judge that once answered "hmm" scored that pair a tie on
    # every rerun, never asked again.
    replies = iter(["hmm", "B", "A"])
    judge = fake("JUDGE", reply=lambda *a: next(replies))
    cache = SQLiteCallCache(tmp_path / "calls.db")
    assert judged(judge, "q", "c", "b", cache=cache) == (None, "B")
    assert judged(judge, "q", "c", "b", cache=cache) == ("A", "B")
    assert len(judge.log.calls) == 3  # the unreadable one asked again, the readable one not
    assert judged(judge, "q", "c", "b", cache=cache) == ("A", "B")
    assert len(judge.log.calls) == 3


def test_an_unreadable_verdict_an_earlier_version_cached_is_asked_again(fake, tmp_path):
    cache = SQLiteCallCache(tmp_path / "calls.db")
    for first, second in (("c", "b"), ("b", "c")):
        messages = judge_messages("q", first, second)
        key = call_key(model="judge", params={}, messages=messages, role="judge", sample=0)
        cache.put(key, AIMessage("hmm"))
    judge = fake("JUDGE", reply=lambda *a: "A")
    assert judged(judge, "q", "c", "b", cache=cache) == ("A", "A")
    assert len(judge.log.calls) == 2
    # asked again, they were no hits: the counts said 2 hits for 2 calls made
    assert (cache.hits, cache.misses) == (0, 2)


def _rate_limited(seconds: float) -> Exception:
    import httpx
    import openai

    request = httpx.Request("POST", "http://h/v1/chat/completions")
    headers = {"retry-after": f"{seconds:g}"}
    return openai.RateLimitError(
        "slow down", response=httpx.Response(429, request=request, headers=headers), body=None
    )


def test_a_judge_call_is_retried_on_a_transient_failure(fake, log, monkeypatch):
    """The judge's client does not retry (a run's calls are retried by the graph, and the
    judge is called outside any run): one 429 failed the judging of a whole system."""
    import openai

    from langgraph_moa.eval import judge as judging

    slept: list[float] = []

    async def recorded(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(judging.asyncio, "sleep", recorded)

    limited = _rate_limited(2)
    flaky = fake("JUDGE", reply=lambda *a: "A", fail=lambda n, m: limited if n == 1 else None)
    assert judged(flaky, "q", "a", "b") == ("A", "A")
    assert len(log.by("JUDGE")) == 3 and slept == [2.0]  # its Retry-After waited out
    refused = fake("REFUSED", fail=lambda n, m: _openai_error(404, {"error": {"message": "x"}}))
    with pytest.raises(openai.NotFoundError):
        judged(refused, "q", "a", "b")
    assert len(log.by("REFUSED")) == 1  # a 404 is not tried again


def test_a_judge_call_is_retried_as_a_runs_call_is_and_its_failure_explained_once(
    fake, log, monkeypatch
):
    """The judge had attempts and a backoff of its own (1 s, doubled) beside the config's
    retry settings, and explained each failure twice: once to tell whether it may pass,
    once more, naming the judge, to raise it."""
    from langgraph_moa.config._schema import RetrySettings
    from langgraph_moa.eval import judge as judging

    slept: list[float] = []

    async def recorded(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(judging.asyncio, "sleep", recorded)

    dropped = fake(
        "JUDGE", reply=lambda *a: "A", fail=lambda n, m: ConnectionError() if n <= 2 else None
    )
    assert judged(dropped, "q", "a", "b") == ("A", "A")
    retry = RetrySettings()
    assert slept == [retry.initial_interval, retry.initial_interval * retry.backoff_factor]
    explained = []

    def counted(exc, model, messages):
        explained.append(model)
        return judging_explain(exc, model, messages)

    judging_explain = judging.explain_failure
    monkeypatch.setattr(judging, "explain_failure", counted)
    refused = fake("REFUSED", fail=lambda n, m: _openai_error(404, {"error": {"message": "x"}}))
    with pytest.raises(Exception, match="Error code: 404"):
        judged(refused, "q", "a", "b", label="REFUSED")
    assert explained == ["the judge REFUSED"]


def test_a_judge_asked_to_wait_too_long_says_so_as_a_runs_call_does(fake, log):
    """A Retry-After over 60 s raised the provider's bare "slow down": nothing said that the
    wait asked for was longer than a call waits, as a run's call says."""
    slow = fake("JUDGE", fail=lambda n, m: _rate_limited(120))
    with pytest.raises(RetryPastDeadlineError) as raised:
        judged(slow, "q", "a", "b", name="openai:o3-mini")
    assert str(raised.value) == (
        "the judge openai:o3-mini asked to be retried after 120s, longer than the 60s a call "
        "waits: try again later, or use another model or endpoint"
    )
    assert isinstance(raised.value.__cause__, Exception) and len(log.by("JUDGE")) == 1


def test_a_cancelled_judge_gives_up_its_wait_at_once(fake, log):
    """The wait between a judge's attempts could not be cut short: a Ctrl-C during judging
    waited out a Retry-After of up to a minute in the judging thread."""

    async def cancelled() -> None:
        task = asyncio.ensure_future(judge_both_orders(slow, "q", "a", "b"))
        while not log.by("JUDGE"):  # its first attempt refused: now it waits 50 s
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    slow = fake("JUDGE", fail=lambda n, m: _rate_limited(50))
    asyncio.run(asyncio.wait_for(cancelled(), 30))  # cancelled, not the wait's TimeoutError
    assert len(log.by("JUDGE")) == 1  # and no second attempt


def test_a_judging_cancelled_during_its_first_order_does_not_ask_the_second(fake, log):
    """A Ctrl-C while the judge answered the first order still asked it the second: the
    event loop's close waited out a whole judge call more."""
    started: list[int] = []
    judge = fake("JUDGE", reply=lambda *a: "A", delay=lambda n: started.append(n) or 50.0)

    async def cancelled() -> None:
        task = asyncio.ensure_future(judge_both_orders(judge, "q", "a", "b"))
        while not started:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(cancelled(), 30))
    assert started == [1] and log.by("JUDGE") == []  # the call under way ended unanswered


@pytest.mark.parametrize(
    "reply",
    [
        "<think>Response A misses a step, so B. Or is A right?</think>\n\ntie",
        "Response A misses a step, so B. Or is A right?\n</think>\n\ntie",  # template-opened
    ],
)
def test_a_reasoning_judges_verdict_is_read_after_its_thinking(fake, tmp_path, reply):
    # The first A or B of the reply was read, in its thinking: "B" for a judge that said tie.
    judge = fake("JUDGE", reply=lambda *a: reply)
    assert parse_verdict(reply) == "tie"
    assert judged(judge, "q", "c", "b") == ("tie", "tie")


def test_a_reasoning_judge_cut_off_while_thinking_gave_no_verdict():
    assert parse_verdict("<think>Response A is better, but") is None
