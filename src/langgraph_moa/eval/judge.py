"""Pairwise LLM judging against a baseline, both orders asked, with a bootstrap interval.

Each item is judged twice: the candidate as response A and the baseline as B, then swapped.
A judge that always prefers the first position therefore scores every pair 0.5, and its
bias cancels. The candidate's score per item is the mean of its two verdicts (win 1, tie
0.5, loss 0), and the win rate is the mean over items, in percent, with a percentile
bootstrap confidence interval over items.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from langgraph_moa.config._schema import RetrySettings
from langgraph_moa.eval.stats import bootstrap_mean_interval
from langgraph_moa.providers._retry import (
    explain_failure,
    is_retryable,
    retry_after_s,
    too_long_a_wait,
)
from langgraph_moa.run.cache import CallCache, call_key, refused_hit
from langgraph_moa.text._thinking import split_thinking

Verdict = Literal["A", "B", "tie"]

JUDGE_SYSTEM = (
    "You are an impartial judge. Compare two responses to the user's instruction and decide "
    "which one is more helpful, accurate and complete. Do not let the order of the responses, "
    "their length or their style sway you. Reply with exactly one of: A, B, tie."
)


def judge_messages(instruction: str, first: str, second: str) -> list[SystemMessage | HumanMessage]:
    """Build the judge's input for one order of the pair."""
    return [
        SystemMessage(JUDGE_SYSTEM),
        HumanMessage(
            f"[Instruction]\n{instruction}\n\n[Response A]\n{first}\n\n[Response B]\n{second}\n\n"
            "Which response is better? Reply with A, B or tie."
        ),
    ]


# The reply is the judge model's, untrusted: `\W*\s*` tried every split of a long run of
# spaces, and a `^\W*` that crossed lines rescanned a run of blank lines from each of them
# (quadratic); each run is taken whole now, and what leads up to "verdict" stays on its line.
_VERDICT_LINE = re.compile(
    r"^[^\w\n]*+verdict\W*+(?:a\s+(?=tie\b))?(A|B|tie)\b", re.IGNORECASE | re.MULTILINE
)
_ALONE = re.compile(r"\W*(A|B|tie)\W*", re.IGNORECASE)
_WORD = re.compile(r"\b(?:(A)|([Bb])|([Tt][Ii][Ee]))\b")


def parse_verdict(text: str) -> Verdict | None:
    """Read the judge's reply: a "Verdict:" line first, else the first A, B or tie.

    A reply that is only the verdict ("b.", "Tie") is read in any case. In a sentence, A
    counts in capitals only (B and "tie" in any case: there is no word "b"), so that the
    article in "It's a tie." or "As a judge: B" is not read as response A, nor "A tie"
    (or "Verdict: a tie") as A. A reasoning judge's thinking (`split_thinking`: a leading
    ``<think>`` block, or text before a lone ``</think>``) is no verdict: its first A or B
    was read; cut off while thinking, it gave none.
    """
    text = split_thinking(text).answer
    lines = _VERDICT_LINE.findall(text)
    if lines:
        return _verdict(lines[-1])  # the last one: a judge may restate the task first
    alone = _ALONE.fullmatch(text.strip())
    if alone:
        return _verdict(alone.group(1))
    match = _WORD.search(re.sub(r"\bA(?=\s+tie\b)", "", text, flags=re.IGNORECASE))
    return _verdict(match.group(0)) if match else None


def _verdict(word: str) -> Verdict:
    word = word.lower()
    return "tie" if word == "tie" else ("A" if word == "a" else "B")


def pair_score(candidate_first: Verdict | None, baseline_first: Verdict | None) -> float:
    """Candidate's score from both orders; an unreadable verdict counts as a tie."""
    first = {"A": 1.0, "B": 0.0, "tie": 0.5, None: 0.5}[candidate_first]
    second = {"A": 0.0, "B": 1.0, "tie": 0.5, None: 0.5}[baseline_first]
    return (first + second) / 2


async def judge_both_orders(
    judge: BaseChatModel,
    instruction: str,
    candidate: str,
    baseline: str,
    cache: CallCache | None = None,
    label: str = "judge",
    name: str | None = None,
) -> tuple[Verdict | None, Verdict | None]:
    """Ask the judge with the candidate first, then with the baseline first.

    With a `cache`, readable verdicts are stored like any other call, so rescoring is free;
    an unreadable one is not (stored, it scored that pair a tie on every rerun, the judge
    never asked again), and one an earlier version stored is asked again. `label` names the
    judge in their key (`run._calls.cache_name`: a local judge with its file's digest). The
    judge is called directly, not as a run's call, so its failure is explained here as a
    call's is (`explain_failure`: a 404, a context overflow, a refused parameter), naming
    the judge's model (`name`, else `label`) and the fix. Awaited, not run in a thread: a
    cancel (a Ctrl-C) cancels the call under way (`ainvoke`: its request is closed) and the
    wait before a retry, and the second order is never asked. In a thread the call under way
    ran to its end, and the event loop's close waited for it: as it still does for a judge
    with only a sync ``_generate``, which LangChain's ``ainvoke`` runs in a thread.
    """
    who = f"the judge {name or label}"

    async def ask(first: str, second: str) -> Verdict | None:
        messages = judge_messages(instruction, first, second)
        key = call_key(model=label, params={}, messages=list(messages), role="judge", sample=0)
        if cache is not None and (hit := cache.get(key)) is not None:
            if (verdict := parse_verdict(hit.text)) is not None:
                return verdict
            refused_hit(cache)  # asked again: a miss
        reply = await _invoke_with_retries(judge, messages, who)
        verdict = parse_verdict(reply.text)
        if cache is not None and verdict is not None:
            cache.put(key, reply)
        return verdict

    return await ask(candidate, baseline), await ask(baseline, candidate)


JUDGE_RETRY = RetrySettings()
"""How often, and after what wait, a judge call is tried again when it fails in a way that
may pass (a 429, a 5xx, a dropped connection): as a run's call is by default. Its client
does not retry (`providers._models`: a run's calls are retried by the graph's policy, and
the judge is called outside any run), so one 429 left a whole system unjudged."""


async def _invoke_with_retries(
    judge: BaseChatModel, messages: Sequence[BaseMessage], label: str
) -> BaseMessage:
    """Call the judge, trying again (as `JUDGE_RETRY` says) a failure that may pass.

    A failure is explained once (`explain_failure`, naming `label`): one that cannot pass (a
    404, a refused parameter) is raised so at once, and so is the last attempt's. One whose
    ``Retry-After`` is longer than a call waits fails as a run's call does
    (`too_long_a_wait`). A cancel ends the call or the wait before a retry at once.
    """
    attempt = 1
    while True:
        try:
            return await judge.ainvoke(messages)
        except Exception as exc:
            explained = explain_failure(exc, label, messages)
            if attempt == JUDGE_RETRY.max_attempts or not is_retryable(explained):
                if explained is exc:
                    raise
                raise explained from exc
            wait = retry_after_s(exc) or JUDGE_RETRY.backoff_s(attempt)
            if (too_long := too_long_a_wait(label, wait)) is not None:
                raise too_long from exc
            await asyncio.sleep(wait)
            attempt += 1


def judge_reliability(
    verdicts: Sequence[tuple[Verdict | None, Verdict | None]],
) -> dict[str, float | int]:
    """How much the verdicts can be trusted: the same winner whichever order, and position bias.

    ``consistent``: items whose two verdicts name the same winner (or both a tie).
    ``first_position``: share of readable verdicts that chose response A; a judge with no
    position bias and no real preference sits near 0.5, one that always says "A" at 1.0.
    ``unreadable``: verdicts that named neither A, B nor tie (counted as ties).
    """
    consistent = sum(
        (first, second) in (("A", "B"), ("B", "A"), ("tie", "tie")) for first, second in verdicts
    )
    readable = [v for pair in verdicts for v in pair if v is not None]
    return {
        "consistent": consistent,
        "first_position": round(sum(v == "A" for v in readable) / len(readable), 3)
        if readable
        else 0.0,
        "unreadable": sum(v is None for pair in verdicts for v in pair),
    }


def win_rate(scores: Sequence[float]) -> float:
    """Mean score in percent."""
    return 100.0 * sum(scores) / len(scores) if scores else float("nan")


def bootstrap_interval(
    scores: Sequence[float], *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the win rate (resampling items, seeded)."""
    low, high = bootstrap_mean_interval(
        scores, resamples=resamples, confidence=confidence, seed=seed
    )
    return 100.0 * low, 100.0 * high
