"""What a word is, for every comparison of answers by their words.

The page's agreement (shared runs of words) and the consensus selection (similar sets of
words) split answers alike, so a sentence in a script written without spaces agrees with
another as much in one as in the other.
"""

from __future__ import annotations

import unicodedata
from typing import NamedTuple


class Word(NamedTuple):
    start: int
    end: int
    key: str
    """The word as compared: NFC-normalized and case-folded."""


def is_ideograph(char: str) -> bool:
    """Tell a letter of a script written without spaces (Han, kana, Hangul): a word alone."""
    wide = unicodedata.east_asian_width(char) in ("W", "F")
    return wide and unicodedata.category(char) == "Lo"


def words(text: str) -> list[Word]:
    """Split `text` into words, each with its character span and the key it is compared by.

    A word is a run of letters, digits and "_" with the combining marks that follow them
    (a regular expression's word cut "café" written decomposed in two), and each CJK
    character is a word of its own (a sentence written without spaces was one "word").
    """
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for i, char in enumerate(text):
        mark = start is not None and unicodedata.category(char).startswith("M")
        ideograph = is_ideograph(char)
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
    return [Word(a, b, unicodedata.normalize("NFC", text[a:b]).casefold()) for a, b in spans]
