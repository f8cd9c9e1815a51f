"""Agreement made visible: which proposals a selection grouped, what a synthesis drew on.

For a synthesis, the answer's spans that share a run of `N` words with a reference are the
places where the aggregator (very likely) drew on it: a plain word n-gram overlap, cheap and
easy to check by eye, not a claim of causality. For a selection, the tally's groups are
mapped from proposal positions to the calls that wrote them, so the page can mark the cards
that voted together.
"""

from __future__ import annotations

from typing import Any

from langgraph_moa.run.state import CallRecord
from langgraph_moa.text._words import Word as _Word
from langgraph_moa.text._words import words as _words

N = 4
"""Words in a shared run: short enough to catch a reused phrase, long enough to skip
"of the" coincidences."""


def overlap(answer: str, reference: str, n: int = N) -> tuple[float, list[list[int]]]:
    """Return the share of the answer's words inside runs shared with `reference`, and spans.

    Spans are ``[start, end)`` character offsets into `answer`, merged and in order.
    """
    return _overlap(answer, _words(answer), reference, n)


def _overlap(
    answer: str, words: list[_Word], reference: str, n: int = N
) -> tuple[float, list[list[int]]]:
    """`overlap` of the answer already split into `words`: one split serves every reference."""
    ref = [w.key for w in _words(reference)]
    grams = {tuple(ref[i : i + n]) for i in range(len(ref) - n + 1)}
    covered = [False] * len(words)
    keys = [w.key for w in words]
    for i in range(len(words) - n + 1):
        if tuple(keys[i : i + n]) in grams:
            for k in range(i, i + n):
                covered[k] = True
    spans: list[list[int]] = []
    for w, hit in zip(words, covered, strict=True):
        if not hit:
            continue
        if spans and not answer[spans[-1][1] : w.start].strip(" \t"):
            spans[-1][1] = w.end  # only spaces between: one span
        else:
            spans.append([w.start, w.end])
    share = sum(covered) / len(words) if words else 0.0
    return round(share, 4), spans


def call_key(record: CallRecord | dict[str, Any]) -> list[Any]:
    """Name a call as the page's cards do: role, layer, proposer, sample."""
    return [record["role"], record["layer"], record["proposer"], record["sample"]]


def synthesis_agreement(answer: str, references: list[CallRecord]) -> list[dict[str, Any]]:
    """Return each reference's overlap with the answer (share and spans), by call."""
    out = []
    words = _words(answer)  # a long answer's split is its cost: once, not per reference
    for record in references:
        share, spans = _overlap(answer, words, record.get("output") or "")
        out.append({"call": call_key(record), "share": share, "spans": spans})
    return out


def selection_groups(selection: dict[str, Any], answered: list[CallRecord]) -> list[dict[str, Any]]:
    """Return the selection's tally with each entry's proposals named by their calls."""
    groups = []
    for entry in selection.get("tally") or []:
        members = entry.get("proposals")
        if members is None and "proposal" in entry:
            members = [entry["proposal"]]
        calls = [call_key(answered[i]) for i in members or [] if 0 <= i < len(answered)]
        groups.append({**entry, "calls": calls})
    return groups
