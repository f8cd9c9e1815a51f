"""Agreement made visible: which proposals a selection grouped, what a synthesis drew on.

For a synthesis, the answer's spans that share a run of `N` words with a reference are the
places where the aggregator (very likely) drew on it: a plain word n-gram overlap, cheap and
easy to check by eye, not a claim of causality. For a selection, the tally's groups are
mapped from proposal positions to the calls that wrote them, so the page can mark the cards
that voted together.
"""

from __future__ import annotations

import unicodedata
from typing import Any, NamedTuple

from langgraph_moa.run.state import CallRecord

N = 4
"""Words in a shared run: short enough to catch a reused phrase, long enough to skip
"of the" coincidences."""


class _Word(NamedTuple):
    start: int
    end: int
    key: str
    """The word as compared: NFC-normalized and case-folded."""


def _is_ideograph(char: str) -> bool:
    """Tell a letter of a script written without spaces (Han, kana, Hangul): a word alone."""
    wide = unicodedata.east_asian_width(char) in ("W", "F")
    return wide and unicodedata.category(char) == "Lo"


def _words(text: str) -> list[_Word]:
    """Split `text` into words, each with its character span and the key it is compared by.

    A word is a run of letters, digits and "_" with the combining marks that follow them
    (a regular expression's word cut "café" written decomposed in two), and each CJK
    character is a word of its own (a sentence written without spaces was one "word").
    """
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for i, char in enumerate(text):
        mark = start is not None and unicodedata.category(char).startswith("M")
        ideograph = _is_ideograph(char)
        if (char.isalnum() or char == "_" or mark) and not ideograph:
            start = i if start is None else start
            continue
        if start is not None:
            spans.append((start, i))
            start = None
        if ideograph:
            spans.append((i, i + 1))
    if start is not None:
        spans.append((start, len(text)))
    return [_Word(a, b, unicodedata.normalize("NFC", text[a:b]).casefold()) for a, b in spans]


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
