r"""Scorers for verifiable answers: exact, normalized, contains, numeric and regex match.

Normalization (for ``normalized`` and ``contains``): lower case, punctuation dropped, the
articles a/an/the dropped, whitespace collapsed, as in the SQuAD evaluation script;
``normalized`` is SQuAD's exact match as such ("-5" equals "5"), while ``contains`` keeps
a number's sign and decimal point ("-5" is no "5", "3.5" no "35").
``numeric`` reads the answer's stated result as the vote key reads it (`concluded_number`),
the last ``\boxed{}`` (MATH-style grading; "\boxed{12} days for the 300-page book" answers
12, and a box that is no number, ``\boxed{2\sqrt{2}}`` or ``\boxed{2x+3}``, none), else the
last GSM8K-style ``#### N``, else the last "the answer is N" ("Answer: $1,250"), else the
last number in the answer (thousands commas between groups of three digits, a sign, a
dollar sign and an exponent, "1e-5", allowed; a hyphen right after a digit, letter or
closing bracket is a range or a difference, no sign), the convention of GSM8K-style
grading, and compares within a relative tolerance.
An answer, or a stated value, that is one fraction of integers ("1/2")
is that fraction; a slash inside prose ("open 24/7") or a date is no fraction, while a LaTeX
``\frac{1}{2}`` is its value anywhere. Typeset marks read as their ASCII (`number_marks`):
a U+2212 minus is "-" and "1 234" (a no-break space) 1234, while a plain space groups
digits only in a value that stands alone ("The answer is 10 000"); a dotted version or
address ("1.2.3", "192.168.100.200") is no number; any Unicode decimal digit is its value.
On an item whose answer is one option letter, the option the vote reads (`chosen_option`:
"the answer is C, not D", "the answer is c") decides, so the two grade one answer alike.
An answer whose conclusion names several options (`hedges`: "\boxed{C, D}", "the answer
is C or D", "either C or D", "C (or D)", "C or quite possibly D"), or the right option's
text "or" another's ("Ankara or Istanbul"), is wrong, whatever its scorers say: the item's
pattern, or a whole-word match, found the right letter in it. The vote never counts one
with C: it reads a stated hedge as no option, and a box of letters as their set ("C, D"),
which is how a question with several right options is answered.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Mapping
from fractions import Fraction

from langgraph_moa.eval.datasets import EvalItem
from langgraph_moa.text._selection import (
    chosen_option,
    concluded_number,
    conclusion,
    hedges,
    normalize_words,
    number_value,
    search_pattern,
)
from langgraph_moa.text._thinking import split_thinking


def normalize(text: str, *, squad: bool = False) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace.

    Full-width letters and digits read as their ASCII (`normalize_words`): U+FF14 is "4".

    Non-ASCII symbols (degree, currency, math signs: Unicode category S) become spaces, so
    "32°F" holds the word "32"; ASCII punctuation is dropped as in SQuAD ("U.S." is "us"),
    but a number keeps its sign and decimal point ("-5" is no "5", "3.5" no "35") unless
    `squad` asks for SQuAD's own rule, which drops them too.
    """
    kept = "" if squad else "\u2212"  # a minus sign, which `contains` keeps
    spaced = "".join(
        " " if ord(ch) > 127 and unicodedata.category(ch).startswith("S") and ch not in kept else ch
        for ch in text
    )
    return normalize_words(spaced, squad=squad)


def exact(answer: str, expected: list[str]) -> bool:
    """Tell whether the answer, stripped, equals one of the expected answers.

    Compared in Unicode's NFC form: a letter with an accent written as one character or as
    a letter and a combining mark ("café" typed on a Mac) is the same text, as a reader sees
    it. Nothing else is folded: a full-width digit is no ASCII one here (`normalized` reads it).
    """
    said = unicodedata.normalize("NFC", answer.strip())
    return said in [unicodedata.normalize("NFC", e.strip()) for e in expected]


def normalized(answer: str, expected: list[str]) -> bool:
    """Tell whether the normalized answer equals a normalized expected answer.

    SQuAD's exact match, reproduced as its script computes it: "-5" equals "5" here.
    """
    return normalize(answer, squad=True) in [normalize(e, squad=True) for e in expected]


def contains(answer: str, expected: list[str]) -> bool:
    """One of the expected answers appears in the answer as whole words (normalized)."""
    text = f" {normalize(answer)} "
    return any(f" {normalize(e)} " in text for e in expected if normalize(e))


def last_number(answer: str) -> float | None:
    """Return the last number written in the answer, or None; "1/2" alone is 0.5."""
    return _as_float(number_value(answer))


def _as_float(value: Fraction | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except OverflowError:  # 1e400: past any float, so equal to no target
        return math.inf if value > 0 else -math.inf


def numeric(answer: str, target: float, rel_tol: float = 1e-9) -> bool:
    r"""Tell whether the answer's result equals `target` (relative tolerance).

    The result is the number the answer concludes, read as its vote key reads it
    (`concluded_number`): the last ``\boxed{}``, else the last ``#### N`` or "the answer is
    N", else the last number; a conclusion that is no number (``\boxed{2\sqrt{2}}``, "the
    answer is C") is wrong on any target. The tolerance absorbs float rounding only: at
    1e-6, 1234568 counted right on 1234567.
    """
    value = _as_float(concluded_number(answer))
    return value is not None and math.isclose(value, target, rel_tol=rel_tol, abs_tol=1e-9)


def regex(answer: str, pattern: str) -> bool:
    """Tell whether the pattern matches somewhere in the answer (case-insensitive).

    Full-width letters ("\uff23") read as ASCII, as the vote's reader reads them.
    """
    return search_pattern(pattern, answer) is not None


_LONE_OPTION = re.compile(r"\s*[A-H]\s*")
_OPTION_LINE = re.compile(r"^[ \t]*\(?([A-H])[).:][ \t]*(\S[^\n]*)", re.MULTILINE)


def score(item: EvalItem, answer: str) -> dict[str, bool]:
    """Every scorer that applies to the item; ``correct`` is the one that decides.

    ``correct`` uses, in order of preference, the numeric target, the regex, or a whole-word
    match of an expected answer; on an item whose answer is one option letter, the option
    the vote reads decides (`chosen_option`), and where it reads none, a hedge between
    options (`hedges`, `_hedges_between_texts`) is wrong whatever that scorer says.
    A reasoning model's leading ``<think>`` block is a draft, not the answer
    (`split_thinking`): an answer the graph returned has none left, but a row scored from
    elsewhere (a file of answers) may.
    A block that never closed is the answer's own text: the graph fails a call cut off
    while thinking, and gives whole one the model ended itself (a reply about the tag),
    which scored as empty.
    """
    split = split_thinking(answer)
    answer = split.answer if split.closed else answer
    scores: dict[str, bool] = {}
    if item.expected:
        scores["exact"] = exact(answer, item.expected)
        scores["normalized"] = normalized(answer, item.expected)
        scores["contains"] = contains(answer, item.expected)
    if item.numeric is not None:
        scores["numeric"] = numeric(answer, item.numeric)
    if item.pattern is not None:
        scores["regex"] = regex(answer, item.pattern)
    for decisive in ("numeric", "regex", "contains"):
        if decisive in scores:
            scores["correct"] = scores[decisive]
            break
    letters = [e.strip() for e in item.expected if _LONE_OPTION.fullmatch(e)]
    if "correct" not in scores or not letters:
        return scores
    if (option := chosen_option(answer)) is not None:  # as the vote reads it
        scores["correct"] = option in letters
    elif scores["correct"] and (hedges(answer) or _hedges_between_texts(item, answer, letters)):
        scores["correct"] = False
    return scores


@functools.lru_cache(maxsize=256)
def _options_of(question: str) -> tuple[Mapping[str, str], re.Pattern[str] | None]:
    """Return a question's options (letter to normalized text) and its "X or Y" pattern.

    None for the pattern where fewer than two options have a text. Kept per question (the
    most recent 256): an item is scored once per system, sample and rescore, and each
    score read the option lines and compiled the pattern again.
    """
    options = {letter: normalize(text) for letter, text in _OPTION_LINE.findall(question)}
    texts = sorted({t for t in options.values() if t}, key=len, reverse=True)
    if len(texts) < 2:
        return options, None
    either = "|".join(re.escape(t) for t in texts)
    return options, re.compile(rf"(?<!\bnot )\b({either}) or (?:\w+ ){{0,2}}?({either})\b")


def _hedges_between_texts(item: EvalItem, answer: str, letters: list[str]) -> bool:
    """Tell whether the answer offers the right option's text "or" another's.

    "Ankara or Istanbul" names the right option's text, which the item's pattern accepts,
    but picks no option. The options are the lines "C) Ankara" of the item's first turn;
    a pair after "not" ("Ankara, not Istanbul or Izmir") is none, nor one without the
    right option, nor one that a later conclusion settles ("Istanbul or Ankara? The answer
    is Ankara.": it was wrong, while "C or D? The answer is C." was right).
    """
    options, pair = _options_of(item.turns[0])
    right = {options[letter] for letter in letters if options.get(letter)}
    if not right or pair is None:
        return False
    words = normalize(conclusion(answer))
    return any(
        first != second and right & {first, second}
        for first, second in (m.groups() for m in pair.finditer(words))
    )
