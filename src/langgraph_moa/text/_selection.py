"""Pick a proposal instead of writing a new one: vote, confidence, consensus and MUX selection.

Small models adopt whatever answer their context shows them last, so a 0.5B aggregator loses
right answers that its proposers had (SLM-MUX, arXiv 2510.05077). Selection makes no extra
model call and returns one proposal verbatim:

- ``vote``: self-consistency (arXiv 2203.11171), a majority over extracted answers;
- ``confidence``: votes weighted by each answer's own token probability (CISC, arXiv
  2502.06233); falls back to plain votes when a proposal has no logprobs;
- ``consensus``: minimum-Bayes-risk selection for free-form answers, the proposal most similar
  to the others (lexical similarity from rapidfuzz);
- ``mux``: SLM-MUX, the answer of the model whose own samples agree most, ties broken by the
  models' measured accuracy (a calibration file that `moa eval` writes).

Every function here is pure: the graph's ``select`` node feeds it the layer's call records,
and the adaptive sampling router asks it how strongly the answers agree so far.
"""

from __future__ import annotations

import json
import math
import re
import string
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from langgraph_moa._redact import clip
from langgraph_moa._settings_bytes import read_settings_bytes
from langgraph_moa.text._prompts import neutralize_markers
from langgraph_moa.text._words import words

Method = Literal["vote", "confidence", "consensus", "mux"]
Extractor = Literal["auto", "last-number", "short-span", "choice-letter", "regex", "text"]

# Typeset math writes its minus as U+2212 (full-width text as U+FF0D), not "-";
# `number_marks` reads both as "-". Arabic and Persian text write a decimal point as U+066B
# (12.5 in Arabic-Indic digits has it) and a thousands separator as U+066C: read as "." and
# ",", by the rules of those (it read the digits after the last separator, 5 of 12.5), as
# are full-width text's point and comma (U+FF0E, U+FF0C: "\uff11\uff12\uff0e\uff15" is 12.5).
_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
"""Full-width ASCII (U+FF01 to U+FF5E) as ASCII, for the words answers are compared by."""


def _full_width_of(ascii_chars: str) -> dict[int, int]:
    """Return the part of `_FULL_WIDTH` that reads as one of `ascii_chars`."""
    return {code: plain for code, plain in _FULL_WIDTH.items() if chr(plain) in ascii_chars}


_NUMBER_SIGNS = str.maketrans({"\u2212": "-", "\u066b": ".", "\u066c": ","} | _full_width_of("-.,"))
# A no-break, narrow no-break or thin space between digit groups of three separates
# thousands as a comma does (SI and French style, "1\u00a0234\u00a0567"); `number_marks`
# writes it as ",", so the comma's rule decides: "3\u00a04" stays 3 and 4, and
# "1\u00a0234,567" is 1234567 as "1,234,567" is (ambiguous: SI and French writing mean
# 1234.567; documented). A plain space groups only a value that stands alone (`_SPACED`).
# Before two digits and another such space ("12\u00a034\u00a0567", Indian grouping) it is a
# comma too, and the comma's Indian rule decides: read by threes alone it was 34567.
_THIN_GROUP = re.compile(r"(?<=\d)[\u00a0\u202f\u2009](?=\d{3}(?!\d)|\d{2}[\u00a0\u202f\u2009]\d)")
# French grouping, "1\u00a0234,56": no-break, narrow no-break or thin spaces between
# groups of three, then a comma and one or two decimals, is one number, 1234.56 (it read
# 1,234 and 56). `number_marks` writes its spaces as points, the European form that
# `_EUROPEAN` reads. Only that form: "1\u00a0234,567" and "0\u00a0234,56" read as before.
# It starts only at a number's first group, so a long run of groups is read once (linear
# time). Plain spaces group only a value that stands alone (`_SPACED`).
_GROUP_SPACE = r"[\u00a0\u202f\u2009]"
_FRENCH = re.compile(
    r"(?<![\d,.])(?<!\d" + _GROUP_SPACE + r")(?!0)\d{1,3}(?:" + _GROUP_SPACE + r"\d{3})++"
    r",\d{1,2}(?!\d|[.,]\d)"
)
# A minus sign may come before a dollar sign ("-$5" is -5); `number_text` drops the "$". A
# hyphen right after a digit, a letter or a closing bracket subtracts or spans a range, so it
# is no sign: "10-15 minutes", "x = 20-15" and "(2 + 3)-1" end in 15, 15 and 1.
_SIGN = r"(?<![\w)\]}])-"
# A comma groups thousands only between groups of exactly three digits: "12,345,678" is one
# number; a lone "3,4" or "1,23" is none of it (`_LONE_COMMA`). A number in scientific notation,
# "1e-5" or "2.5E+3", is one number; an "e" without digits after it is a word ("3eggs": 3).
# Indian grouping, "12,34,567" (two-digit groups before the last three), is one number too:
# read by threes alone it was 34567, neither the number nor a list's last entry. It starts
# only where no digit or comma precedes: tried inside a long "12,12,12,..." from every
# place, it took time quadratic in the length. A grouped number takes an exponent too:
# "2,500e3" is 2500000 (it read 3).
# A LaTeX fraction of integers, "\frac{1}{2}" (or \dfrac, \tfrac), is one number, its value,
# wherever it stands: unlike a slash, it is never a date or "24/7" (it read 2).
# Any Unicode decimal digit (category Nd: "٤٢", full-width digits) is its value, as `\d`,
# `Decimal` and `float` all read it; a superscript is no digit ("25 m²" is 25).
# LaTeX's thin space, "1\,000" (as math-tuned models write), groups threes as a comma does.
# A point that ends an ellipsis or a range ("The answer is...42", "1..5") is no decimal
# point: it read 0.42 and 0.5.
_EXPONENT = r"(?:[eE][+-]?\d+)?"
# LaTeX's shorthand takes one digit for a brace-less argument: "\frac12" is \frac{1}{2}.
# A whole number right before the fraction makes a mixed number: "3\frac{1}{2}" is 3.5 (it
# read 0.5). \cfrac (a continued fraction's command) is \frac too.
# The whole number stands alone: after an exponent's caret, an index's underscore, a letter
# or a decimal point ("x^2\frac{1}{2}", "x_1\frac12") it is no whole part (it read 2.5).
# Nor is it one before a negative numerator: "3\frac{-1}{2}" is 3 and -1/2 (it read 2.5).
_TEX_FRACTION = (
    r"(?:(?<![\w^.])\d++[ \t]*+(?=\\[cdt]?frac\s*+(?:\{\s*+\d|\d)))?"
    r"\\[cdt]?frac\s*+(?:\{\s*+-?\s*+\d++\s*+\}|\d)\s*+(?:\{\s*+\d++\s*+\}|\d)"
)
# European grouping, "1.234,56" (points group thousands by threes, a comma then one or two
# decimals), is one number, 1234.56: it read 1.234. So are points alone between three or
# more groups, "1.234.567" (1234567: it read 0.567). Only those unambiguous forms:
# "1.234,567" (a list) and "1.234.56" read as before.
# No leading zero group: "0.123,45" is a decimal and another number, never 123.45.
_EUROPEAN = r"(?<!\d)(?!0)\d{1,3}(?:(?:\.\d{3})++,\d{1,2}|(?:\.\d{3}){2,}+)(?!\d|[.,]\d)"
# Digits joined by points more than once that are no European grouping, a version "1.2.3"
# or an address "10.0.0.1", are no number (they read 0.3 and 0.1), and neither is an IPv4
# address of groups of three, "192.168.100.200" (it read 192168100200): four groups of at
# most 255. European grouping with a group past 255 ("1.234.567.890") is no address, but
# one whose groups after the first are all 100 to 255 is ambiguous and reads as an address,
# no number: "1.200.200.200" (documented; "1,200,200,200" is the number). `_DOTTED` matches
# them whole, so no part of them is read; `_numbers` leaves them out.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = _OCTET + r"(?:\." + _OCTET + r"){3}(?!\.?\d)"
_DOTTED = r"(?<!\d)(?<!\d\.)\d++(?:\.\d++){2,}+(?!\.?\d)"
_ADDRESS = re.compile(r"-?\$?(?:" + _IPV4 + r"|(?!" + _EUROPEAN + r"$)" + _DOTTED + r")")
# A lone comma that groups no thousands (one comma, then a group of other than three digits:
# "3,5", "1,2345") is a decimal comma or a pair; `_written_value` tells which (see
# `_DECIMAL_COMMA`). It read as two numbers, so "the answer is 3,5" stated 3 and "3,5" was 5.
_LONE_COMMA = r"(?<![\d,.])\d++,(?!\d{3}(?!\d))\d++(?!\d|[.,]\d)"
_MAGNITUDE = (
    _TEX_FRACTION  # first: "3\frac12" must not stop at the 3
    + r"|(?!"
    + _IPV4
    + r")"
    + _EUROPEAN
    + r"|"
    + _DOTTED
    + r"|(?<![\d,])\d{1,2}(?:,\d{2}(?=,))+,\d{3}(?!\d)(?:\.\d+)?"
    + _EXPONENT
    + r"|"
    + _LONE_COMMA
    + r"|\d{1,3}(?:(?:,|\\,)\d{3})+(?!\d)(?:\.\d+)?"
    + _EXPONENT
    + r"|\d+(?:\.\d+)?"
    + _EXPONENT
    + r"|(?<!\.)\.\d+"  # not an ellipsis' last dot: "is...42" is 42
    + _EXPONENT
)
# Its parts: a minus before \frac, a whole number, one minus inside the numerator (both
# minuses: a plus), then the numerator and the denominator, each braced or one bare digit.
_TEX_FRACTION_PARTS = re.compile(
    r"(-?)\s*(?:(\d+)[ \t]*)?\\[cdt]?frac\s*(?:\{\s*(-?)\s*(\d+)\s*\}|(\d))\s*"
    r"(?:\{\s*(\d+)\s*\}|(\d))"
)
_NUMBER = re.compile(r"(?:" + _SIGN + r"\$?)?(?:" + _MAGNITUDE + r")")
# A fraction of integers is read only where it is the whole answer or the whole stated
# value ("1/2", "The answer is 3/8.", "\boxed{1/2}"), never inside prose, where "24/7" and
# "3/4 of the 8 slices" keep the last-number rule, nor in a slash chain ("12/25/2024").
# A whole number before it makes a mixed number: "The answer is 3 1/2" states 3.5 (it
# stated 3), and "3 1/2" alone is 3.5.
# Where a value stands alone (the whole answer, a stated or a boxed value), a lone comma then
# one or two digits is a decimal comma, "3,5" is 3.5: a comma groups only threes, and no one
# states a pair as "the answer". `number_marks` writes it as a point. Anywhere else, and with
# four or more digits after it ("1,2345"), a lone comma is ambiguous (a pair "3,4", a
# decimal, a mistyped 12345), and no number is read there rather than a wrong one.
_DECIMAL_COMMA = re.compile(
    r"[\s*_]*+-?\$?(?P<number>(?<![\d,.])\d++,\d{1,2}(?!\d|[.,]\d))[\s*_]*+[.!]?[\s*_]*+"
)
_AMBIGUOUS_COMMA = re.compile(r"-?\$?" + _LONE_COMMA)
# Not in brackets, though: a stated "(3,4)" or "[2,5]" is a point or an interval, and a box
# of one, "\boxed{0,5}" or "\boxed{-2,3}", lists roots as often as it writes a decimal
# comma. They read 3.4, 2.5, 0.5 and -2.3; they vote as written, no number.
_PAIR_OPEN = re.compile(r"[(\[][\s$]*+-?\$?\s*+$")
# Nor where more of a list follows it: "The answer is 3,4 and 7" (or "3,4, 7") does not state
# a value that stands alone, so the comma is as ambiguous as in "The points are 3,4". It read
# 3.4; the list votes as written, no number. A sentence's end ends the value ("3,4. And 7").
# A Chinese or Japanese "or" or "and" joins it as the English word does ("答案是 3,4 或 5").
_COMMA_LIST = re.compile(
    r"-?\$?"
    + _LONE_COMMA
    + r"(?:(?:[ \t]*+,[ \t]*+(?:(?i:and|or)[ \t]++)?|[ \t]++(?:(?i:and|or)|&)[ \t]++"
    + r"|[ \t]*+[,\uff0c]?[ \t]*+(?:或者?|还是|還是|または|和|与|與|及|と)[ \t]*+)-?\$?(?:"
    + _MAGNITUDE
    + r"))++"
)
_FRACTION = r"-?(?:\d++[ \t]++)?\d+/\d+(?![\d/]|[.,]\d)"
_LONE_FRACTION = re.compile(
    r"[\s*_$]*(-?)\$?(?:(\d+)[ \t]+)?(\d+)/(\d+)[\s*_$]*[.!]?[\s*_$]*"  # "**1/2**"
)
# An exponent past this is no answer anyone means; its exact digits would be a huge string.
_MAX_EXPONENT = 1000
# Nor is a number written with more digits than this; building its exact value takes time
# that grows faster than its length (a 200,000-digit answer took seconds to read).
_MAX_DIGITS = 1000
# Half-width katakana and its marks (U+FF61 to U+FF9F), which NFKC folds into the
# full-width forms ("ｶﾞ" is "ガ"): one word, one key. Only these: NFKC on all text would
# also fold "²" into "2" and "ﬁ" into "fi".
_HALF_WIDTH_KANA = re.compile(r"[\uff61-\uff9f]+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# The marks that make a number another one: a sign ("-5", "-\sqrt{2}", as `_SIGN` tells
# one from a hyphen) and a decimal point between digits ("3.5"). Text keys keep them, but
# not a zero's sign: "-0" and "-0.0" are 0.
_NUMBER_MARK = re.compile(_SIGN + r"(?=\.?\d|\\)(?![0.]*+(?![\d,]))|(?<=\d)\.(?=\d)")
# Runs of \W are possessive (`*+`) wherever what follows cannot start with one: a model's
# answer is untrusted, and "!!!...x" (or a long "----" rule) made the nested `\W*`s try
# every split of the run, seconds for 4,000 characters and hours for 100,000.
# A letter, a point and another letter with its point is an abbreviation, no label: "e.g. D"
# read as the option E.
_CHOICE = re.compile(
    r"^\W*+(?:(?:answer|option|choice)\W*+)?(?:is\W*+)?\(?([A-Ha-h])\)?"
    r"(?:[):\]]|\.(?![^\W\d_]\.)|\W*$)"
)
# A stated conclusion: LaTeX's \boxed{...} (how Qwen and most math-tuned models end), or an
# option letter stated as the answer: "the answer is C", "Answer: (C)", "... is B) 3/4". The
# letter must end there: "the answer is E. coli", "the best option is C++" and "the answer
# is A lot" name no option, and "option B is wrong" states nothing.
_BOXED_START = re.compile(r"\\boxed\s*\{")
# A box of several option letters, "\boxed{A, C}" (a question with more than one right
# option), votes as those letters, sorted: it voted "c", the "A" dropped as an article.
# Capitals only, apart: "AC" and "a, c" may be a word or variables. A serial comma ("A, C,
# and D") and LaTeX spacing ("A,\,C", read as a space by `_conclusion`) separate them too:
# they voted "c and d" and "A,C".
_OPTION = r"\(?[A-H]\)?"
_OPTIONS = re.compile(
    _OPTION + r"(?:(?:\s*+(?:,(?:\s*+and\b)?|;|&|\band\b)\s*+|\s++)" + _OPTION + r")++"
)
_OPTION_KEY = re.compile(r"[A-H]")  # a vote key that is one option (text keys are lower case)
_BRACE = re.compile(r"[{}]")
_LATEX_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
# Marks that decorate a boxed number without changing it: a degree sign ("45^\circ") and
# \displaystyle. The box is its number (it voted "45circ", an expression).
_LATEX_DECORATION = re.compile(r"\^\s*+(?:\\circ\b|\{\s*+\\circ\s*+\})|\\degree\b|\\displaystyle\b")
# A box holds math (`_expression_key`) when it has a digit, a command or an operator (a
# hyphen between two letters is a word's: "well-known").
_MATH_MARK = re.compile(r"[\d\\^_+*/=<>()\[\]{}|]|(?<![^\W\d_])[-\u2212]|[-\u2212](?![^\W\d_])")
_LATEX_SPACING = re.compile(r"\\(?:left|right)\b|\\[,;:! ]|~")
# In math a plain space is not typeset, so a box shows digit groups apart with LaTeX spacing
# ("10\ 000", "10~000"): a plain space there, which groups a boxed value (`_SPACED`); such a
# box was no number. "\," groups as a comma does (`_MAGNITUDE`).
_LATEX_DIGIT_SPACE = re.compile(r"(?<=\d)(?:\\[ ;:]|~)(?=\d)")
_LATEX_FRAC = re.compile(r"\\[dt]frac\b")
# LaTeX reads a one-character argument with or without its braces: "\frac{x}2" is
# "\frac x2" and "\sqrt{2}" is "\sqrt2".
_ONE_CHARACTER_GROUP = re.compile(r"\{\s*+([^{}\s\\])\s*+\}")
_SPACE_IN_MATH = re.compile(r"(?<=\d)(\s+)(?=\d)|\s+")
# A letter that "and" (or ", and") follows ends there too, and `_lists_options` tells a
# remark ("the answer is C, and D fails the test": C) from a list ("C and D"), as `hedges`
# does: the vote read the remark as the text "c and d fails test", while the scorer said C.
# So does one that "not" follows: "The answer is C, not D" and "C (not D)" state C (the
# vote read the text "c not d", while the scorer said C), and one that "though" or "but"
# follows: "C, though many might pick D" (`_HEDGED` tells "C, but maybe D" apart).
_LETTER_END = (
    r"(?:\)|\]|[.,;:!]?(?=\s*(?:$|\n))"
    r"|[.,;:!]?\s+(?=because|since|as\b|which)|[.,;:!]\s+(?=[A-Z])|,?\s+(?=and\b)"
    r"|[,;]?\s+\(?(?=(?i:not)\b)|[,;]?\s+(?=(?:though|but|although|yet)\b))"
)
# A Chinese or Japanese conclusion, "答案是 C", "答案: 42", "正解は B" (the answer is; a
# full-width colon reads as ":" where a letter is read), states as "the answer is" does.
_CJK_STATED = r"(?:答案|正解|答え)\s*+(?:是|为|為|は|:|\uff1a)"
# A lower-case letter ("the answer is c") is an option where it ends its line, or where a
# capital one ends before "because", "since", a new sentence, "not" or "but" ("the answer
# is c because ..." voted as text). A word that runs on makes it an article or a word: "the
# answer is a lot", "a mammal, not a fish" and "c and d" name none. So does "not", "yet" or
# "though" with no comma before it, as an article takes them ("a not-so-simple number",
# "a yet unknown one" read A), unless "not" goes on to another letter ("c not d").
_LOWER_LETTER_END = (
    r"\)?[.!]?(?=[ \t]*$)|\)|[.,;:!]?\s+(?=(?:because|since)\b)|[.,;:!]\s+(?=[A-Z])"
    r"|[,;]\s+\(?(?=(?i:not)\b)|\s+(?=(?i:not)\s+\(?[A-Ha-h]\b)"
    r"|[,;]?\s+(?=(?:but|although)\b)|[,;]\s+(?=(?:though|yet)\b)"
)
_STATED_CHOICE = re.compile(
    r"(?i:answer|option|choice)\s*(?:(?i:is)|:|=)\W{0,3}(?:(?i:option)\W{0,3})?\(?([A-H])"
    + _LETTER_END
    + r"|\b(?i:is)\s+\(?([A-H])\)"
    + r"|"
    + _CJK_STATED
    + r"\s*+\(?([A-H])(?![A-Za-z])"
    + r"|(?i:answer|option|choice)\s*(?:(?i:is)|:|=)\W{0,3}\(?([a-h])(?:"
    + _LOWER_LETTER_END
    + r")",
    re.MULTILINE,
)
# Full-width Latin letters, parentheses and colons (as CJK text writes an option, U+FF21)
# read as their ASCII, one character for one, wherever an option letter is read.
_FULL_WIDTH_LETTERS = _full_width_of(string.ascii_letters + "():.")
# Several option letters, capitals, joined: "C, D", "C or D", "(C) and (D)", "C/D", and as
# hedges are worded: "either C or D", "Option C or Option D", "C (or D)", "C or possibly D"
# (these were no list, so they scored right on an item whose answer is C).
_OR = r"(?i:or)\b(?:\s++(?i:maybe|possibly|perhaps)\b)?"
_LISTED_OPTION = r"(?:(?i:option)\s*+)?\(?[A-H]\)?"
_OPTION_LIST = (
    r"(?:(?i:either)\s++)?"
    + _LISTED_OPTION
    + r"(?:\s*+(?:,\s*+(?:"
    + _OR
    + r"|(?i:and)\b)|,|/|&|;|\(\s*+"
    + _OR
    + r"|\b(?:(?i:and/or)\b|"
    + _OR
    + r"|(?i:and)\b))\s*+"
    + _LISTED_OPTION
    + r")++"
)
# A stated conclusion, as the vote's reader and the shipped items' patterns take it.
_STATED = re.compile(
    r"(?:\b(?i:answer|option|choice)\s*+(?:(?i:is)|:|=)|"
    + _CJK_STATED
    + r")\W{0,3}(?:(?i:option)\W{0,3})?"
)
# A list that ends there: "the answer is C and D is wrong" states C, with a remark on D.
_STATED_LIST = re.compile(_OPTION_LIST + r"(?![\w'+#])(?!\s+(?i:is|are|was|were)\b)")
# A list joined by "or" (or "/", "&") offers its options whatever follows it; one joined by
# commas, semicolons or "and" that a lower-case word follows began a clause about the next
# option: "the answer is C, D does not fit", "C; B would need more energy" state C.
_ALTERNATIVES = re.compile(r"\b(?i:or)\b|[/&]")
_CLAUSE_GOES_ON = re.compile(r"[ \t]+[a-z]")  # on its line: "C, D\nbecause" hedges
# An option that "or" follows with another option a few words on, or a clause that goes on
# to "possibly" another: "C or quite possibly D", "C or, less likely, D", "C, though it
# could possibly be D" (the listed adverbs alone were read, so these scored right on C).
# "Might" or "could" offers the option only as what it may "be": "C, though many might
# pick D" is a remark on a distractor (it was read as a hedge, and a firm C scored wrong).
# The option "or" or "maybe" offers is in its sentence: "C. Or maybe not. A careful check
# ..." and "C, but maybe not. A careful check ..." read the next sentence's article "A" as
# one (a hedge, so a stated C picked none); "C. Or maybe D." still hedges, as "C or... D"
# does (an ellipsis ends no sentence).
_IN_SENTENCE = r"(?:(?!(?<!\.)\.\s|[!?]\s)\W)++"
_HEDGED = re.compile(
    _LISTED_OPTION
    + r"(?:\W*+(?i:or)\b(?:"
    + _IN_SENTENCE
    + r"\w++){0,2}?"
    + r"|[,;]?\s++(?i:though|but|although|yet)\b"
    + r"[^.\n]{0,40}?(?:\b(?i:possibly|perhaps|maybe)\b(?:"
    + _IN_SENTENCE
    + r"\w++){0,2}?"
    + r"|\b(?i:might|could)\b(?:"
    + _IN_SENTENCE
    + r"\w++)??"
    + _IN_SENTENCE
    + r"(?i:be)\b))"
    + _IN_SENTENCE
    + _LISTED_OPTION
    + r"(?![\w'+#])"
)
# An option that "or not" doubts in its sentence ("C or maybe not."), or that another one
# "also" right follows ("C, but D is also correct": two answers): no one option is stated
# (the first scored right on C, the second read C). So does a Chinese or Japanese "or"
# between two options ("答案是 C 或 D" read C once "答案是" stated as "the answer is"), a
# CJK comma before it or not ("C\uff0c或 D" read C), but not a word the letter starts
# ("C 或 DNA"). A semicolon joins the two as a "but" does ("C; D is also correct" read C).
# A CJK "and" (和, 与, 及, と) or enumeration comma (、) between two options lists them, as
# "C and D" does, and so does an option that "also" right follows ("C, D也正确": D is also
# correct, "C、Dも正しい"): these read C.
_DOUBTED = re.compile(
    _LISTED_OPTION
    + r"(?:(?:[\s,\uff0c\u3001]*+(?:或者?|还是|還是|または|もしくは|か|和|与|與|及|と)|\s*+\u3001)"
    + r"\s*+"
    + _LISTED_OPTION
    + r"(?![A-Za-z])"
    + r"|[\s,;\uff0c\uff1b\u3001]*+"
    + _LISTED_OPTION
    + r"\s*+(?:[也亦]是?(?:正确|正確|对|對|可以)|も(?:正しい|正解))"
    + r"|[,;]?\s*+(?i:or)\s++(?:(?i:maybe|possibly|perhaps)\s++)?(?i:not)\b"
    + r"|(?:[,;]?\s++(?i:but|though|although|yet|and)\s++|;\s*+)"
    + _LISTED_OPTION
    + r"\s++(?:(?i:is|are|was|seems|would|could|might)\s++)?(?i:also|equally)\s++"
    + r"(?:(?i:be)\s++)?(?:(?i:a\s++)?(?i:correct|right|true|valid|acceptable|possible)\b"
    + r"|(?i:works?|fits?)\b))"
)
_WHOLE_LIST = re.compile(r"[\W_]*" + _OPTION_LIST + r"[\W_]*")
_OPENING_CHOICE = re.compile(r"^\W*\(?([A-H])(?:\)|[.:]?\s*$)")
# Another option's label after an opening one: "A) Dolphin\nB) Shark ..." echoes the
# options, and picks none (as the items' patterns read it; it voted A).
_LABEL = re.compile(r"(?<!\w)\(?([A-H])\)")
# A stated numeric result, as worked solutions end: GSM8K's "#### 18", or "The answer is
# $1,250." / "Final answer: 42". "answer" must be followed by "is", ":" or "=", so "answer 20
# questions" states nothing.
# A plain space groups digits only in a value that stands alone: a stated one, a boxed one,
# or the whole answer (`_ALONE_SPACED`). There "10 000" is 10000 (it was 10) and "10 100,5"
# French grouping, 10100.5; in prose a plain space separates numbers, as in a list ("4 10
# 100,5" ends in 5), and "She counted 3 000 apples" ends in 0. Groups after the first are of
# exactly three digits, and a decimal comma takes one or two, as `_FRENCH`; a decimal point
# any number (SI's "12 345.67"). A hyphenated word after the last group takes that group
# for its own: "The answer is 5 100-meter dashes" states 5 (it stated 5100).
_SPACED = r"(?<![\d,.])(?!0)\d{1,3}(?: \d{3})++(?:,\d{1,2}|\.\d++)?(?!\d|[.,]\d| \d|-\w)"
_ALONE_SPACED = re.compile(r"[\s*_]*+-?\$?(?P<number>" + _SPACED + r")[\s*_]*+[.!]?[\s*_]*+")
_VALUE = r"(" + _FRACTION + r"|-?(?:" + _SPACED + r"|" + _MAGNITUDE + r"))"  # "7," is 7
# The sign is captured on its own, before or after a dollar sign ("-$5", "$-5"), and the
# punctuation skipped after "is" or ":" never includes it: "The answer is -3." states -3.
# Markdown bold marks count as one mark each: "**The answer is:** **42**" states 42.
# A dash with a space after it is a list's bullet ("Answer:\n- 18"), no sign.
# Nor is a point before a digit skipped: "The answer is .5" states 0.5 (it stated 5),
# unless it ends an ellipsis: "The answer is...42" states 42.
_SIGNED_VALUE = r"(-(?=\$?\.?\d)|)\$?\s*+" + _VALUE  # a value never starts with a space
# A box holds a number when that number is all it holds, besides a variable it equals
# ("x = 2"), a sign, a currency, percent or degree sign, a unit ("€5", "5 cm", "25 m^2",
# "5°C"), a worded aside ("18 (apples)") and Markdown bold. Anything else is an expression,
# no number, as "2\sqrt{2}" is: "\boxed{2x+3}", "\boxed{2^{10}}" and "\boxed{(1, -2)}"
# concluded their last number, so they were right on 3, 10 and -2.
_CURRENCY = r"[$\u00a2-\u00a5\u20a0-\u20cf]"
_CURRENCY_MARK = re.compile(_CURRENCY + r"\s*+")  # `number_value` reads only "$"
_LATEX_SPACE = r"(?:\s|\\[,;: ]|~)*+"
_BOXED_NUMBER = re.compile(
    r"[*_]*+(?:[^\W\d_]\w*+\s*+=\s*+)?\+?(?P<number>-?(?:"
    + _CURRENCY
    + r"\s*+)?"
    + _VALUE
    + r")"
    + _LATEX_SPACE
    + r"(?:[%\u2030\u00b0]|"
    + _CURRENCY
    + r")?(?:"
    + _LATEX_SPACE
    + r"(?:/?[^\W\d_]++\.?(?:\^\{?\d\}?)?|\([^\W\d_][^()\d]*+\)))*+[\s*_]*+\.?"
)
_STATED_NUMBER = (
    re.compile(r"####\s*+" + _SIGNED_VALUE),
    re.compile(
        r"(?:\banswer\b\W{0,3}(?:is|:|=)|"
        + _CJK_STATED
        + r")(?:\*\*|__|(?!(?<!\.)\$?\.\d)[^\w-]){0,4}"
        + _SIGNED_VALUE,
        re.IGNORECASE,
    ),
)
# A stated value that opens an equation states its result: "The answer is 20 - 5 = 15" states
# 15 (it stated 20). The operands are plain numbers; a result that an operator follows is a
# decomposition, not the result: "The answer is 15 = 3 x 5" states 15, as do "15 = 3 * 5.0"
# and "25 = 5^2" (a power, or "**"). The result is never cut short to the digits before
# such an operand: "3 = 1.5 * 2" stated 1. Operands that lead to another "=" continue the
# chain: "The answer is 20 - 5 = 15 - 3 = 12" states 12.
# "x" multiplies where a number follows it: "3 x 5 = 15" states 15, "3 xylophones" 3.
# A link needs an operator: a value that another merely equals ("The answer is 2 = 2.5
# rounded") states the value (it stated 2.5).
_OPERATOR = (
    r"[ \t]*+(?:[-+*/\u00d7\u00f7\u00b7\u22c5]|\\times|\\cdot|\\div|[xX](?=[ \t]*+\$?\.?\d))"
    r"[ \t]*+"
)
_OPERANDS = r"(?:" + _OPERATOR + r"\$?(?:" + _SPACED + r"|" + _MAGNITUDE + r"))"  # as `_VALUE`
# A link whose result operands and another "=" follow is a step on the way: it counts only
# once a later link ends the chain ("12 = 3 * 4 = 2 * 6" states 12, never the factor 3).
_CHAIN_GOES_ON = re.compile(_OPERANDS + r"++[ \t]*+=")
_EQUATION_RESULT = re.compile(
    _OPERANDS
    + r"++[ \t]*+=[ \t]*+"
    + _SIGNED_VALUE
    + r"(?!\d|[.,]\d|[ \t]*+(?:\^|\*\*)|"
    + _OPERANDS
    + r"++(?![ \t]*+=))"
)
# A number is a stated result when little text follows it ("... = 62.", "62 apples").
_TRAILING_WORDS = 3
_LEAD_IN = re.compile(
    r"^\s*(?:final answer|the answer is|answer|the result is|result)\s*[:\-]?\s*", re.IGNORECASE
)


class SelectionConfig(BaseModel):
    """How the ``select`` step picks the final answer among the proposals."""

    model_config = ConfigDict(extra="forbid")

    method: Method = "vote"
    extractor: Extractor = Field(
        default="auto",
        description="How an answer is read out of a proposal before votes are counted: "
        "auto (a lone choice letter, else the last number written, else the first "
        "sentence), last-number, "
        "short-span, choice-letter, regex (the pattern's first group, or its whole match), "
        "or text (the whole normalized proposal).",
    )
    pattern: str | None = Field(default=None, description="Regex for extractor 'regex'.")
    priority: list[str] = Field(
        default_factory=list,
        description="Model labels in the order that wins a tie; default: the proposer order.",
    )
    stop_agreement: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Adaptive early stop: draw samples in rounds and stop once the leading "
        "answer's share (its model's self-agreement for mux) reaches this value.",
    )
    round_size: int = Field(
        default=2, ge=1, le=64, description="Samples per proposer in each adaptive round."
    )
    calibration: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=dict,
        description="Per-model accuracy (model label -> 0..1), for mux ties.",
    )
    calibration_file: str | None = Field(
        default=None, description="A JSON file of per-model accuracy, as `moa eval` writes it."
    )
    show_tally: bool = Field(
        default=False,
        description="For synthesizing variants: show the aggregator the vote tally of the "
        "proposals it reads.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.extractor == "regex":
            if not self.pattern:
                raise ValueError("extractor 'regex' needs `pattern`, a regular expression")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        if self.stop_agreement is not None and self.method == "consensus":
            raise ValueError(
                "adaptive early stop (stop_agreement) works with vote, confidence and mux, "
                "not consensus: remove stop_agreement or choose another method"
            )
        if self.calibration_file:
            self.calibration = {**load_calibration(self.calibration_file), **self.calibration}
        return self


def load_calibration(path: str | Path) -> dict[str, float]:
    """Read a calibration file: a JSON object of model label -> accuracy in 0..1.

    Errors name the file by its full path: a relative one is read from the working folder
    (from a config file's folder when the config file names it), and "'cal.json' does not
    exist" left the reader to guess which folder was looked in. The path is in double
    quotes: a config error clips a long word in single quotes (a client's input, repeated).
    """
    shown = f'"{Path(path).absolute()}"'
    try:  # as large as a config file may be, and no larger (it was read whole)
        raw = read_settings_bytes(Path(path), f"calibration file {shown}")
    except FileNotFoundError:
        raise ValueError(f"calibration file {shown} does not exist: check the path") from None
    except OSError as exc:
        raise ValueError(f"calibration file {shown} cannot be read ({exc.strerror})") from None
    try:
        data = json.loads(raw.decode("utf-8-sig"))  # a byte order mark, as a config file's
    except RecursionError:  # a bare RecursionError escaped the config's validation
        raise ValueError(
            f"calibration file {shown} cannot be read as JSON: it is nested too deeply"
        ) from None
    except ValueError as exc:  # a decode error, a 5,000-digit number
        raise ValueError(f"calibration file {shown} cannot be read as JSON: {exc}") from None
    accuracy = data.get("accuracy", data) if isinstance(data, dict) else None
    if not isinstance(accuracy, dict) or not all(
        isinstance(v, int | float) and 0 <= v <= 1 for v in accuracy.values()
    ):
        raise ValueError(
            f"calibration file {shown} must map model labels to accuracies in 0..1, "
            'for example {"accuracy": {"local:qwen2.5-coder-1.5b": 0.8}}'
        )
    return {str(k): float(v) for k, v in accuracy.items()}


# --- reading answers out of proposals ------------------------------------------------------


def normalize_words(text: str, *, squad: bool = False) -> str:
    """Case-fold, drop punctuation and the articles, collapse whitespace (as SQuAD).

    Vote keys and the eval's text scorers compare answers in this form. Unicode-aware, so
    that answers not in English agree as "Paris." and "paris" do: one text composed or
    decomposed (NFC, NFD) is one key, "Straße" is "STRASSE", and punctuation of any script
    ("。", "«»", "¡") is dropped as ASCII punctuation is. Full-width letters and digits, as
    CJK text writes them, are their ASCII (`_FULL_WIDTH`), and half-width katakana its
    full-width form (`_HALF_WIDTH_KANA`): one answer, one key.

    A number keeps its sign and its decimal point (`_NUMBER_MARK`): "-5" is not "5", nor
    "3.5" "35". `squad` drops them too, as SQuAD's own script does, for the scorer that
    reproduces its exact match.
    """
    text = _HALF_WIDTH_KANA.sub(lambda kana: unicodedata.normalize("NFKC", kana[0]), text)
    text = unicodedata.normalize("NFC", text).translate(_FULL_WIDTH).casefold()
    if not squad:
        text = text.translate(_NUMBER_SIGNS)  # a U+2212 minus is "-", U+066B a point
    kept = set() if squad else {m.start() for m in _NUMBER_MARK.finditer(text)}
    text = "".join(ch for i, ch in enumerate(text) if i in kept or not _is_punctuation(ch))
    return " ".join(_ARTICLES.sub(" ", text).split())


def search_pattern(pattern: str, text: str) -> re.Match[str] | None:
    """Search an answer for a regex (case-insensitive), full-width letters read as ASCII.

    An option letter written full width (U+FF23, as CJK text writes it) is the letter to the
    built-in reader, so it is to a dataset's or a selection's pattern too; a pattern that
    names the full-width letters itself still finds them.
    """
    flags = re.IGNORECASE | re.DOTALL
    folded = text.translate(_FULL_WIDTH_LETTERS)
    return re.search(pattern, folded, flags) or (
        re.search(pattern, text, flags) if folded != text else None
    )


def _is_punctuation(char: str) -> bool:
    """ASCII punctuation (symbols such as "$" and "+" included, as SQuAD), or any script's."""
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def _number_key(text: str) -> str | None:
    """Return the last number's value as exact text (`_value_key`); None when none."""
    value = number_value(text)
    return None if value is None else _value_key(value)


def _value_key(value: Fraction) -> str:
    """Return a number as exact text: "1,250.50" is "1250.5", "-0" is "0".

    Exact, not rounded to a few digits: 1234567 and 1234568 are two answers. A value with a
    finite decimal expansion is written as a decimal ("1/2" and "5e-1" are "0.5"), any other
    fraction as its lowest terms ("2/6" is "1/3").
    """
    places = _decimal_places(value.denominator)
    if places is None:
        return f"{Decimal(value.numerator):f}/{Decimal(value.denominator):f}"  # any length
    sign, digits, _ = Decimal(value.numerator * 10**places // value.denominator).as_tuple()
    written = format(Decimal((sign, digits, -places)), "f")  # exact, whatever its length
    return written.rstrip("0").rstrip(".") if "." in written else written


def _decimal_places(denominator: int) -> int | None:
    """Return how many decimals 1/denominator takes; None when its expansion never ends.

    It ends when only 2s and 5s divide the denominator, after as many places as the more
    frequent of the two (1/8: 3, 1/20: 2), so one factor count answers both questions.
    """
    counts = []
    for prime in (2, 5):
        count = 0
        while denominator % prime == 0:
            denominator //= prime
            count += 1
        counts.append(count)
    return max(counts) if denominator == 1 else None


def number_value(text: str) -> Fraction | None:
    """Return the number `text` ends with, exactly; None when it holds no number.

    `text` that is one fraction of integers ("1/2", "-3/4.") is that fraction; otherwise the
    last number written counts (see `_NUMBER`). A zero denominator, an exponent past 1000
    or more than 1000 digits (`_MAX_DIGITS`) is no number.
    """
    text = number_marks(text)
    if lone := _LONE_FRACTION.fullmatch(text):
        sign, whole, top, bottom = lone.groups()
        value = _fraction(top, bottom, negative=False)
        if value is None or len(whole or "") > _MAX_DIGITS:
            return None
        value += Fraction(Decimal(whole or 0))
        return -value if sign else value
    matches = _numbers(text)
    return _written_value(matches[-1][0]) if matches else None


def _numbers(marked: str) -> list[re.Match[str]]:
    """Return every `_NUMBER` in marked text but dotted addresses and versions (`_ADDRESS`)."""
    return [match for match in _NUMBER.finditer(marked) if not _ADDRESS.fullmatch(match[0])]


def _written_value(match: str) -> Fraction | None:
    """Return the value of one `_NUMBER` match in marked text; None when it is no number.

    `written_numbers` reads each match with it, not through `number_value`, which would mark
    and match the text again.
    """
    if _AMBIGUOUS_COMMA.fullmatch(match):  # "3,4" in prose: see `_DECIMAL_COMMA`
        return None
    written = number_text(match)
    if parts := _tex_fraction(written):
        negative, top, bottom = parts
        return _fraction(top, bottom, negative=negative)
    if sum(ch.isdigit() for ch in re.split("[eE]", written)[0]) > _MAX_DIGITS:
        return None
    try:
        value = Decimal(written)
    except InvalidOperation:
        return None
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int) or abs(exponent) > _MAX_EXPONENT:
        return None
    return Fraction(value)


def _tex_fraction(text: str) -> tuple[bool, str, str] | None:
    r"""Split text that is one LaTeX fraction of integers: (negative, numerator, denominator).

    A minus before \frac and one inside the numerator cancel: "-\frac{-1}{2}" is 1/2. A
    mixed number's whole part joins the numerator: "3\frac{1}{2}" is 7/2.
    """
    if not (tex := _TEX_FRACTION_PARTS.fullmatch(text)):
        return None
    outer, whole, inner, top, top_digit, bottom, bottom_digit = tex.groups()
    top, bottom = top or top_digit, bottom or bottom_digit
    if not whole:
        return bool(outer) != bool(inner), top, bottom
    if inner:  # "3\frac{-1}{2}": no mixed number (see `_TEX_FRACTION`)
        return None
    if max(len(whole), len(top), len(bottom)) > _MAX_DIGITS:
        return False, whole + top, bottom  # past the limit: `_fraction` refuses it
    numerator = int(whole) * int(bottom) + (-int(top) if inner else int(top))
    return bool(outer) != (numerator < 0), str(abs(numerator)), bottom


def _fraction(top: str, bottom: str, *, negative: bool) -> Fraction | None:
    """Return top/bottom, or None for a zero denominator or past `_MAX_DIGITS` digits."""
    if not bottom.strip("0") or max(len(top), len(bottom)) > _MAX_DIGITS:
        return None
    # Through Decimal: int() refuses a string of over 4,300 digits.
    return Fraction(Decimal(top)) / Fraction(Decimal(bottom)) * (-1 if negative else 1)


def written_numbers(text: str) -> list[Fraction]:
    """Return every number written in `text`, in order, each read as `number_value` reads it.

    Text that is one fraction of integers ("1/5") is that one number, as the scorer reads it.
    """
    text = number_marks(text)
    if _LONE_FRACTION.fullmatch(text):
        return [] if (value := number_value(text)) is None else [value]
    values = (_written_value(match[0]) for match in _numbers(text))
    return [value for value in values if value is not None]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s|(?<=[\u3002\uff01\uff1f\uff61])")
"""Where a sentence ends: ". ", "! ", "? ", or a CJK full stop (full or half width),
exclamation or question mark, which no space follows ("东京。因为…")."""


def _first_sentence(text: str) -> str:
    line = next((part for part in text.strip().splitlines() if part.strip()), "")
    line = _LEAD_IN.sub("", line)
    return _SENTENCE_END.split(line, maxsplit=1)[0]


def extract_answer(text: str, extractor: Extractor = "auto", pattern: str | None = None) -> str:
    """Read the answer that votes are counted on; '' when nothing can be read.

    Answers are normalized (lower case, no punctuation or articles), so "Paris." and
    "paris" count as one answer; numbers compare by value, so "1,000" and "1000.0" do too.
    """
    return _read(text, extractor, pattern)[0]


def _read(text: str, extractor: Extractor, pattern: str | None) -> tuple[str, bool]:
    """Return the answer's key, and whether it is a short value (a number or an option).

    Only free-form answers fall back to consensus when no two agree: three different values
    are a tie, which the greedy answer wins.
    """
    if extractor == "last-number":
        return _number_key(text) or "", True
    if extractor == "choice-letter":
        match = _CHOICE.match(text.translate(_FULL_WIDTH_LETTERS).strip())
        return (match.group(1).upper() if match else ""), True
    if extractor == "regex":
        match = search_pattern(pattern or "", text)
        if not match:
            return "", True
        return normalize_words(match.group(1) if match.groups() else match.group(0)), True
    if extractor == "text":
        return normalize_words(text), False
    if extractor == "short-span":
        return normalize_words(_first_sentence(text)), False
    return _auto(text)[:2]


class _Reading(NamedTuple):
    key: str
    """What the answer votes as (`extract_answer`)."""
    value: bool
    """The answer is a short value, a number or an option, not free-form text."""
    number: Fraction | None = None
    """The number the key stands for; None when the answer concludes no number."""


def _auto(text: str) -> _Reading:
    r"""Read what the answer states as its conclusion, for a vote and for the numeric scorer.

    The last \boxed{}, else the last "the answer is C", else the last "#### 18" or "the
    answer is 18", else a lone or opening choice letter ("C", "C) Pentagon"), else the last
    number written (worked answers end with their result, as GSM8K-style grading assumes),
    else the first sentence's words. A conclusion that is no number (``\boxed{2\sqrt{2}}``,
    "The answer is 1/0") ends the reading: no number written before or after it counts.
    """
    letters = text.translate(_FULL_WIDTH_LETTERS)  # where an option letter is read
    if boxed := boxed_answers(text):
        return _conclusion(boxed[-1])
    # A hedge ("the answer is C, D.", "is (C) or (D)") states no option: it votes for none.
    if stated := [
        match[group]
        for match in _STATED_CHOICE.finditer(letters)
        for group in (1, 2, 3, 4)
        if match[group] and not _lists_options(letters, match.start(group))
    ]:
        return _Reading(stated[-1].upper(), True)
    if (number := stated_number(text)) is not None:
        return _number_reading(number)
    if (match := _CHOICE.match(letters.strip())) and len(text.strip()) <= 3:
        return _Reading(match.group(1).upper(), True)
    if (
        (match := _OPENING_CHOICE.match(letters))
        and not _WHOLE_LIST.fullmatch(letters)  # "(C) or (D)", a hedge, opens with none
        and not any(label[1] != match[1] for label in _LABEL.finditer(letters, match.end()))
    ):
        return _Reading(match.group(1), True)
    marked = number_marks(text)  # one character for one: a match's places are the text's
    if _LONE_FRACTION.fullmatch(marked):  # "1/2": its value; "1/0": as written
        return _number_reading(text)
    numbers = _numbers(marked)
    if numbers and (value := _written_value(numbers[-1][0])) is not None:
        trailing = len(text[numbers[-1].end() :].split())
        return _Reading(_value_key(value), trailing <= _TRAILING_WORDS, value)
    span = _first_sentence(text)
    return _Reading(normalize_words(span) or normalize_words(text), False)


def _number_reading(written: str) -> _Reading:
    """Read a stated number; one that is no number ("1/0") votes as written."""
    if _COMMA_LIST.fullmatch(written) or (value := number_value(written)) is None:
        return _Reading(" ".join(written.split()), True)
    return _Reading(_value_key(value), True, value)


def concluded_number(text: str) -> Fraction | None:
    """Return the number an answer concludes, exactly as its vote key reads it; None if none.

    The eval's numeric scorer grades by it, so answers that vote together are graded alike.
    """
    return _auto(text).number


def chosen_option(text: str) -> str | None:
    """Return the option letter an answer picks, exactly as its vote reads it; None if none.

    The eval's scorer grades a multiple-choice item by it, so an answer that votes as C is
    graded as C: the two read "The answer is C, not D" and "the answer is c" alike. A hedge
    (`hedges`) picks none, and a box of several letters ("C, D") is no one option.
    """
    key = _auto(text).key
    return key if _OPTION_KEY.fullmatch(key) else None


def stated_number(text: str) -> str | None:
    """Return the number a worked solution states as its result, as written; None if none.

    The last GSM8K-style ``#### N`` wins, else the last "the answer is N" (or "Answer: N"),
    so numbers restated after the conclusion ("The answer is 18. She sold 9 eggs at $2")
    do not count; an equation stated there states its result ("20 - 5 = 15": 15). Typeset
    marks come back as `number_marks` writes them: a U+2212 minus as "-".
    """
    text = _cjk_numerals_as_digits(number_marks(text))
    for stated in _STATED_NUMBER:
        last = None
        for last in stated.finditer(text):  # noqa: B007 - the last one counts
            pass
        if last is None:
            continue
        position = last.end()
        while result := _EQUATION_RESULT.match(text, position):
            position = result.end()
            if not _CHAIN_GOES_ON.match(text, position):
                last = result
        sign, value = last.groups()
        if _AMBIGUOUS_COMMA.fullmatch(value) and (
            pair := _PAIR_OPEN.search(text, last.start(), last.start(2))
        ):
            closed = text[last.end(2) : last.end(2) + 1] in {")", "]"}
            return text[pair.start() : last.end(2) + closed]
        if listed := _COMMA_LIST.match(text, last.start(2)):
            value = listed[0]
        return value if value.startswith("-") else sign + value
    return None


_CJK_DIGITS = dict(
    zip("零〇一二两兩三四五六七八九", (0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9), strict=True)
)
_CJK_UNITS = {"十": 10, "百": 100, "千": 1000}
# A numeral in Chinese or Japanese characters that a conclusion states ("答案是三十五", "the
# answer is 三十五") is its value, up to 9,999: it voted as text. One that goes on into
# larger units ("三千万") is read as none, never as its first part. So is one that a word
# goes on from, on its line (a Japanese "です" or "だ" after it ends a sentence): these
# characters start words, and "答案是一个数字\uff1a42" (a number: 42), "答えは一つ\uff1a7" (one
# thing) and "答案是三角形的面积" (a triangle's area) stated 1, 1 and 3.
_CJK_NUMERAL = re.compile(
    r"((?:\banswer\b\W{0,3}(?:is|:|=)|" + _CJK_STATED + r")\s*+)"
    r"([零〇一二两兩三四五六七八九十百千]++)"
    r"(?![ \t\u3000]*+(?:(?:です|である|だ)[ \t\u3000]*+)?+\w)",
    re.IGNORECASE,
)
# Digits alone ("二〇二四") are read up to four: more is past 9,999, and thousands of them
# raised ValueError (the digits int() reads) from the vote and every reader.
_CJK_MOST_DIGITS = 4


def cjk_numeral_value(numeral: str) -> int | None:
    """Return the value of a numeral in CJK characters up to 9,999; None for no such number.

    Digits alone are positional ("二〇二四" is 2024); otherwise each unit (十, 百, 千) takes
    the digit before it (one if none: "十五" is 15), in falling order, and 零 marks a gap
    ("一百零五" is 105). A last digit right after 百 or 千 is the next unit down, as it is
    said: "一千二" is 1200 and "一百五" 150 (they read 1002 and 105). Two digits in a row,
    units out of order, or any other character ("一万") are no number.
    """
    if not numeral or any(c not in _CJK_DIGITS and c not in _CJK_UNITS for c in numeral):
        return None
    if all(char in _CJK_DIGITS for char in numeral):
        if len(numeral) > _CJK_MOST_DIGITS:
            return None
        return int("".join(str(_CJK_DIGITS[char]) for char in numeral))
    total, digit, last_unit, gap = 0, None, 10_000, False
    for char in numeral:
        if (unit := _CJK_UNITS.get(char)) is not None:
            if unit >= last_unit:
                return None
            total, digit, last_unit = total + (1 if digit is None else digit) * unit, None, unit
        elif _CJK_DIGITS[char]:
            if digit is not None:
                return None
            digit = _CJK_DIGITS[char]
        else:
            gap = True
    if digit is not None and not gap and last_unit > 10:
        return total + digit * last_unit // 10
    return total + (digit or 0)


def _cjk_numerals_as_digits(text: str) -> str:
    """Write each stated CJK numeral (`_CJK_NUMERAL`) in digits; leave one that is none."""

    def digits(stated: re.Match[str]) -> str:
        value = cjk_numeral_value(stated[2])
        return stated[0] if value is None else stated[1] + str(value)

    return _CJK_NUMERAL.sub(digits, text)


def number_marks(text: str) -> str:
    """Write the marks numbers are typeset with as the reader's ASCII, one character for one.

    A U+2212 (or full-width) minus sign becomes "-", so it reads as a sign, and an Arabic
    decimal or thousands separator "." or ","; the spaces of
    a French number ("1 234,56") become points, so it reads as European grouping; a
    no-break or thin space between groups of three digits becomes ",", so it groups
    thousands. A value that the text is all of may group by plain spaces (`_SPACED`): they
    become points in the French form ("10 100,5"), else commas ("10 000").
    """
    text = text.translate(_NUMBER_SIGNS)
    if alone := _ALONE_SPACED.fullmatch(text):
        number = alone["number"]
        spaces = number.replace(" ", "." if "," in number else ",")
        text = text[: alone.start("number")] + spaces + text[alone.end("number") :]
    elif decimal := _DECIMAL_COMMA.fullmatch(text):
        point = decimal["number"].replace(",", ".")
        text = text[: decimal.start("number")] + point + text[decimal.end("number") :]
    text = _FRENCH.sub(_french_as_european, text)
    return _THIN_GROUP.sub(",", text)


def _french_as_european(number: re.Match[str]) -> str:
    return re.sub(_GROUP_SPACE, ".", number[0])


def number_text(written: str) -> str:
    r"""Return a number as `float` reads it: thousands commas (or LaTeX's ``\,``) dropped.

    A dollar sign is dropped too, and European grouping ("1.234,56", "1.234.567") is
    written as 1234.56 and 1234567.
    """
    if written.count(".") > 1 or written.rfind(",") > written.rfind(".") > -1:
        written = written.replace(".", "").replace(",", ".")
    return written.replace("\\,", "").replace(",", "").replace("$", "")


def boxed_answers(text: str) -> list[str]:
    r"""Return the contents of every ``\boxed{...}`` in `text`, in order, braces balanced.

    ``\text{C}`` and its kin are unwrapped, ``1{,}250`` reads as ``1,250``, ``\$18`` as
    ``$18`` and a box of only ``\frac{1}{2}`` as ``1/2``; an unclosed box is ignored.
    """
    starts = list(_BOXED_START.finditer(text))
    if not starts:  # most answers: no pass over the braces
        return []
    found = []
    closing = _closing_braces(text, starts[0].start())
    for start in starts:
        if (end := closing.get(start.end() - 1)) is None:
            continue
        content = text[start.end() : end].replace("{,}", ",")
        content = _LATEX_DIGIT_SPACE.sub(" ", content)
        content = content.replace("\\$", "$").replace("\\%", "%")  # \boxed{\$18}: a number
        while (unwrapped := _LATEX_WRAPPER.sub(r"\1", content)) != content:
            content = unwrapped
        content = _LATEX_DECORATION.sub("", content)
        # A box of only \frac{a}{b} of integers is the fraction a/b (`_LONE_FRACTION`).
        content = content.strip()
        if parts := _tex_fraction(content):
            negative, top, bottom = parts
            content = f"{'-' if negative else ''}{top}/{bottom}"
        found.append(content)
    return found


def hedges(answer: str) -> bool:
    r"""Tell whether the answer's conclusion names several options ("C or D").

    The conclusion is the last ``\boxed{}``, else the last "the answer is ...", else the
    whole answer. A hedge picks no option: the eval's scorer counts it wrong on an item
    whose answer is one option, even when it names that one. The vote (`_auto`) reads a
    stated hedge as no option and a box as the set of its letters ("C, D"), never as C.
    An earlier hedge that a later conclusion settles ("... C or D. So the answer is C.") is
    none, nor is a stated letter whose next clause is about another option ("C, D does not
    fit").
    """
    answer = answer.translate(_FULL_WIDTH_LETTERS)  # "\uff23" is C, as the vote reads it
    if boxed := boxed_answers(answer):
        return _WHOLE_LIST.fullmatch(boxed[-1]) is not None
    if stated := list(_STATED.finditer(answer)):
        return _lists_options(answer, stated[-1].end())
    return _WHOLE_LIST.fullmatch(answer) is not None


def conclusion(answer: str) -> str:
    r"""Return what an answer concludes with, as `hedges` reads it.

    That is the last ``\boxed{}``, else the text after the last "the answer is", else the
    whole answer. The eval's scorer reads a hedge between options' texts there: "Shark or
    Dolphin? The answer is Dolphin." settles the question it asked, as "C or D? The answer
    is C." does.
    """
    if boxed := boxed_answers(answer):
        return boxed[-1]
    if stated := list(_STATED.finditer(answer)):
        return answer[stated[-1].end() :]
    return answer


def _lists_options(text: str, position: int) -> bool:
    """Tell whether several options are stated at `position`, the text after "answer is"."""
    if _HEDGED.match(text, position) or _DOUBTED.match(text, position):
        return True
    listed = _STATED_LIST.match(text, position)
    return listed is not None and (
        _ALTERNATIVES.search(listed[0]) is not None or not _CLAUSE_GOES_ON.match(text, listed.end())
    )


def _closing_braces(text: str, begin: int) -> dict[int, int]:
    """Map each "{" from `begin` on that is closed to the place of its "}", in one pass.

    Scanning forward from each box instead took time quadratic in the answer's length
    when its boxes were left open (a model's runaway output). Braces before `begin` (the
    first box) cannot change how a later "{" pairs.
    """
    opened: list[int] = []
    closing = {}
    for brace in _BRACE.finditer(text, begin):
        if brace.group() == "{":
            opened.append(brace.start())
        elif opened:
            closing[opened.pop()] = brace.start()
    return closing


def _conclusion(boxed: str) -> _Reading:
    """Read a boxed conclusion: an option letter, a number, else the expression's text.

    A number is one that is all the box holds (`_BOXED_NUMBER`).
    """
    if re.fullmatch(r"\(?[A-Ha-h]\)?", letter := boxed.translate(_FULL_WIDTH_LETTERS)):
        return _Reading(letter.strip("()").upper(), True)
    if _OPTIONS.fullmatch(_LATEX_SPACING.sub(" ", letter)):
        return _Reading(", ".join(sorted(set(re.findall("[A-H]", letter)))), True)
    if re.search(r"\\[A-Za-z]", boxed) or _DECIMAL_COMMA.fullmatch(boxed.translate(_NUMBER_SIGNS)):
        # 2\sqrt{2}, \frac{x}{2}, "0,5" (`_PAIR_OPEN`): compared as written
        return _Reading(_expression_key(boxed), True)
    number = _BOXED_NUMBER.fullmatch(number_marks(boxed))
    if number and (value := number_value(_CURRENCY_MARK.sub("", number["number"]))) is not None:
        return _Reading(_value_key(value), True, value)
    if _LONE_FRACTION.fullmatch(number_marks(boxed)):  # "1/0": as written, never "10"
        return _number_reading(boxed)
    return _Reading(_expression_key(boxed), True)


def _expression_key(boxed: str) -> str:
    r"""Key a boxed expression by what it writes: its operators, signs and points kept.

    Words alone ("\text{New York}") compare as text (`normalize_words`). Math compares as
    written (case kept: \Delta is no \delta), with only its spacing dropped, ``\left``/
    ``\right`` and ``\dfrac``/``\tfrac`` read as ``\frac``, and one character's braces
    dropped as LaTeX reads them ("\frac{x}2" is "\frac x2"). The text key dropped
    operators, so "1+\sqrt{2}" and "1-\sqrt{2}" voted as one answer, as did "2^{10}" and
    210. A space between two digits stays.
    """
    if not _MATH_MARK.search(boxed):
        return normalize_words(boxed)
    math = _LATEX_SPACING.sub(" ", unicodedata.normalize("NFC", boxed).translate(_NUMBER_SIGNS))
    math = _ONE_CHARACTER_GROUP.sub(r"\1", _LATEX_FRAC.sub(r"\\frac", math))
    return _SPACE_IN_MATH.sub(lambda space: " " if space[1] else "", math)


# --- tool calls as answers -----------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """Normalize an argument value: whole floats as ints, strings stripped, keys sorted."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return " ".join(value.split())
    return value


def tool_calls_key(tool_calls: Sequence[Mapping[str, Any]] | None) -> str | None:
    """Return the key that proposals asking for the same tool calls share; None for none.

    Two proposals agree when they call the same tools with the same arguments after
    normalization (`_canonical`: ``3`` and ``3.0`` are one number, key order and spacing do
    not matter); the order of parallel calls does not matter either. The key reads as the
    calls (``tool call: name({...})``) and, holding punctuation, never equals the key of a
    text answer, which is normalized without any: text and tool calls never vote together.
    """
    if not tool_calls:
        return None
    calls = sorted(
        f"{call['name']}({json.dumps(_canonical(call.get('args') or {}), sort_keys=True)})"
        for call in tool_calls
    )
    return "tool call: " + "; ".join(calls)


# --- the candidates and the decision -------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One successful proposal, as selection sees it."""

    index: int
    """Position among the layer's successful proposals (0-based)."""
    model: str
    """The configured model label: votes of one model's samples are grouped by it (mux)."""
    text: str
    mean_logprob: float | None = None
    cut_off: bool = False
    """`max_tokens` ended the answer early: what it would have concluded is unknown."""
    tool_key: str | None = None
    """The tool calls the proposal asked for, as one comparable key (`tool_calls_key`);
    None for a text answer."""
    incomplete: bool = False
    """A tool call's arguments break its tool's schema (one left out, a wrong type, ...):
    the agent cannot run it."""

    @property
    def demoted(self) -> bool:
        """Votes and answers only where no other proposal can: cut off, or incomplete."""
        return self.cut_off or self.incomplete


@dataclass
class Group:
    """All candidates that gave one answer."""

    answer: str
    members: list[int] = field(default_factory=list)
    weight: float = 0.0


@dataclass
class Selection:
    """The decision and the evidence for it, for provenance."""

    method: Method
    winner: int
    """Index of the chosen candidate."""
    agreement: float
    """How strongly the answers back the winner (0..1): the adaptive stop compares it."""
    reason: str
    tally: list[dict[str, Any]]
    weights: list[float] | None = None
    note: str | None = None
    """What fell back, if anything (no logprobs, no readable answer)."""
    quote: tuple[int, int] | None = None
    """Where `reason` quotes a proposal's answer ([start, end) in code points): model text in
    any script inside an English sentence, which a page isolates from the words around it."""

    def as_dict(self) -> dict[str, Any]:
        """Return the provenance record kept in the answer's metadata."""
        out: dict[str, Any] = {
            "method": self.method,
            "winner": self.winner,
            "agreement": round(self.agreement, 4),
            "reason": self.reason,
            "tally": self.tally,
        }
        if self.weights is not None:
            out["weights"] = [round(w, 6) for w in self.weights]
        if self.note:
            out["note"] = self.note
        if self.quote:
            out["quote"] = list(self.quote)
        return out


def _votes_of_complete(
    candidates: Sequence[Candidate], answers: Sequence[str]
) -> tuple[list[str], str | None]:
    """Blank the answers of demoted proposals, unless no other proposal has an answer.

    A worked answer stopped by `max_tokens` ends mid-calculation: its last number is a step,
    not a result, and two cut-off samples often stop at the same step and outvote a finished
    answer. So did two tool calls leaving out a required argument (or giving a word for an
    integer), which the agent cannot run, outvote a whole call. Blanked answers still count
    in the total that agreement is measured against, so they weigh as dissent: the adaptive
    stop never ends on fewer votes.
    """
    demoted = [c for c in candidates if c.demoted]
    kept_answer = any(a and not c.demoted for c, a in zip(candidates, answers, strict=True))
    if not demoted or not kept_answer:
        return list(answers), None
    kept = ["" if c.demoted else a for c, a in zip(candidates, answers, strict=True)]
    cut = [c.index for c in demoted if c.cut_off]
    incomplete = [c.index for c in demoted if c.incomplete and not c.cut_off]
    return kept, _join_notes(
        _did_not_vote(cut, "cut off by max_tokens"),
        _did_not_vote(incomplete, "calling a tool with arguments its schema refuses"),
    )


def _did_not_vote(indices: list[int], why: str) -> str | None:
    """Say which proposals did not vote and why; None for none.

    `why` follows "was" or "were" (a participle or an adjective: "cut off by max_tokens",
    "missing ..."), for one proposal or several alike.
    """
    if not indices:
        return None
    which = ", ".join(str(i + 1) for i in indices)
    if len(indices) == 1:
        return f"proposal {which} was {why} and did not vote"
    return f"proposals {which} were {why} and did not vote"


class _Votes(NamedTuple):
    answers: list[str]
    """Each candidate's answer key; '' for unreadable and blanked cut-off answers."""
    note: str | None
    """Which answers were cut off and did not vote, if any."""
    all_values: bool
    """Every voting answer is a short value (see `_read`), not free-form text."""


def _votes(candidates: Sequence[Candidate], config: SelectionConfig) -> _Votes:
    """Read each candidate's answer once, blanking those cut off (see `_votes_of_complete`)."""
    readings = [
        (c.tool_key, True) if c.tool_key else _read(c.text, config.extractor, config.pattern)
        for c in candidates
    ]
    answers, note = _votes_of_complete(candidates, [key for key, _ in readings])
    values = all(value for (_, value), answer in zip(readings, answers, strict=True) if answer)
    return _Votes(answers, note, values)


def _finished(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Return the candidates neither cut off nor incomplete (all of them if none is)."""
    return [c for c in candidates if not c.demoted] or list(candidates)


def _join_notes(*notes: str | None) -> str | None:
    return "; ".join(n for n in notes if n) or None


def _rank_of(model: str, priority: Sequence[str]) -> int:
    return priority.index(model) if model in priority else len(priority)


def _groups(
    candidates: Sequence[Candidate], answers: Sequence[str], weights: Sequence[float]
) -> list[Group]:
    """Group candidates by answer; unreadable answers ('') never form a group."""
    by_answer: dict[str, Group] = {}
    for cand, answer, weight in zip(candidates, answers, weights, strict=True):
        if not answer:
            continue
        group = by_answer.setdefault(answer, Group(answer))
        group.members.append(cand.index)
        group.weight += weight
    return list(by_answer.values())


def _best_group(
    groups: list[Group], candidates: Sequence[Candidate], priority: Sequence[str]
) -> Group:
    """Return the heaviest group; a tie goes to the group holding the highest-priority model."""
    models = {c.index: c.model for c in candidates}

    def key(group: Group) -> tuple[float, int, int]:
        best_rank = min(_rank_of(models[i], priority) for i in group.members)
        return (-round(group.weight, 9), best_rank, min(group.members))

    return min(groups, key=key)


def _representative(group: Group, candidates: Sequence[Candidate], weights: Sequence[float]) -> int:
    """Return the member that answers for its group: the most confident, then the first."""
    position = {c.index: k for k, c in enumerate(candidates)}
    return max(group.members, key=lambda i: (weights[position[i]], -i))


def _tally(groups: list[Group]) -> list[dict[str, Any]]:
    ordered = sorted(groups, key=lambda g: (-g.weight, min(g.members)))
    return [
        {
            "answer": g.answer,
            "votes": len(g.members),
            "weight": round(g.weight, 6),
            "proposals": g.members,
        }
        for g in ordered
    ]


def select(
    candidates: Sequence[Candidate],
    config: SelectionConfig,
    priority: Sequence[str] = (),
) -> Selection:
    """Choose one candidate by `config.method`; see the module docstring.

    Args:
        candidates: The layer's successful proposals, in proposer order.
        config: The method, extractor and tie-breaking settings.
        priority: Model labels in tie-breaking order, after `config.priority`.

    Raises:
        ValueError: no candidates.
    """
    if not candidates:
        raise ValueError("selection needs at least one proposal")
    order = [*config.priority, *(p for p in priority if p not in config.priority)]
    if config.method == "consensus" and any(c.tool_key for c in candidates):
        # Tool calls are compared by name and arguments, not by text similarity.
        decision = select(candidates, config.model_copy(update={"method": "vote"}), priority)
        decision.note = _join_notes(decision.note, "tool calls were voted by name and arguments")
        return decision
    if config.method == "consensus":
        # A cut-off answer is a prefix of a finished one, which token-set similarity scores
        # as a perfect match: left in, it would win.
        return _consensus(_finished(candidates))
    votes = _votes(candidates, config)
    answers, cut_note = votes.answers, votes.note
    if config.method == "mux":
        decision = _mux(candidates, answers, config, order)
        decision.note = _join_notes(cut_note, decision.note)
        return decision
    weights = [1.0] * len(candidates)
    note = None
    method: Method = config.method
    if method == "confidence":
        if all(c.mean_logprob is not None for c in candidates):
            weights = [math.exp(c.mean_logprob or 0.0) for c in candidates]
        else:
            note = "confidence fell back to plain votes: some proposals came without logprobs"
    groups = _groups(candidates, answers, weights)
    if not groups:
        return Selection(
            method,
            _finished(candidates)[0].index,
            0.0,
            "no answer could be read from any proposal: the first finished proposal answers",
            [],
            weights,
            note=_join_notes(cut_note, "no readable answer"),
        )
    best = _best_group(groups, candidates, order)
    voters = [c for c, a in zip(candidates, answers, strict=True) if a]
    if len(voters) >= 3 and not votes.all_values and all(len(g.members) == 1 for g in groups):
        # No two free-form proposals agree (open questions): a vote says nothing, so the
        # proposal closest to all others answers (self-consistency's free-form case). Three
        # different numbers or letters stay a tie, broken by priority: the greedy answer,
        # the model's most likely, beats a worked answer that merely reads like the others.
        fallback = _consensus(_finished(candidates))
        fallback.method, fallback.tally = method, [*_tally(groups), *fallback.tally]
        fallback.note = _join_notes(
            cut_note, "no two answers agree: the most central proposal (consensus) answers"
        )
        # Agreement is the share of votes behind the answer (one), not the text similarity
        # consensus measured: worked answers that differ only in their result are 95%
        # similar, and the adaptive stop must not read that as agreement.
        at = next(k for k, c in enumerate(candidates) if c.index == fallback.winner)
        fallback.agreement = weights[at] / sum(weights)
        return fallback
    # Everyone counts in the total, cut-off and unreadable proposals too: they did not back
    # the winner, and a stop on "1 of 1 votes" after two cut-off samples would be premature.
    total = sum(weights)
    winner = _representative(best, candidates, weights)
    runner_up = max((g.weight for g in groups if g is not best), default=0.0)
    tie = ""
    if math.isclose(runner_up, best.weight):
        ranks = {_rank_of(c.model, order) for c in candidates}
        tie = " (a tie, broken by " + ("model priority)" if len(ranks) > 1 else "proposer order)")
    what = "votes" if method == "vote" or note else "confidence-weighted votes"
    quoted = repr(best.answer)
    reason = (
        f"{quoted} has {best.weight:.3g} of {total:.3g} {what} from "
        f"{len(best.members)} of {len(candidates)} proposals{tie}"
    )
    return Selection(
        method,
        winner,
        best.weight / total,
        reason,
        _tally(groups),
        weights if method == "confidence" and note is None else None,
        _join_notes(cut_note, note),
        quote=(0, len(quoted)),
    )


def _mux(
    candidates: Sequence[Candidate],
    answers: Sequence[str],
    config: SelectionConfig,
    order: Sequence[str],
) -> Selection:
    """SLM-MUX: trust the model whose own samples agree most on their top answer."""
    models = list(dict.fromkeys(c.model for c in candidates))
    per_model = []
    for model in models:
        mine = [k for k, c in enumerate(candidates) if c.model == model]
        groups = _groups(
            [candidates[k] for k in mine], [answers[k] for k in mine], [1.0] * len(mine)
        )
        if not groups:
            continue
        best = _best_group(groups, candidates, order)
        per_model.append((model, best.weight / len(mine), best, len(mine)))
    if not per_model:
        return Selection(
            "mux",
            candidates[0].index,
            0.0,
            "no answer could be read from any proposal: the first proposal answers",
            [],
            note="no readable answer",
        )

    def key(entry: tuple[str, float, Group, int]) -> tuple[float, float, int]:
        model, agreement, _, _ = entry
        return (-round(agreement, 9), -config.calibration.get(model, -1.0), _rank_of(model, order))

    model, agreement, best, n = min(per_model, key=key)
    tied = [m for m, a, _, _ in per_model if math.isclose(a, agreement) and m != model]
    why_tie = ""
    if tied:
        known = model in config.calibration
        why_tie = f"; tied with {', '.join(tied)}, broken by " + (
            "calibrated accuracy" if known else "model priority"
        )
    tally = [
        {
            "model": m,
            "answer": g.answer,
            "agreement": round(a, 4),
            "samples": k,
            "proposals": g.members,
            "accuracy": config.calibration.get(m),
        }
        for m, a, g, k in per_model
    ]
    said = f"{model}'s samples agree most: {len(best.members)} of {n} answered "
    quoted = repr(best.answer)
    reason = said + quoted + why_tie
    quote = (len(said), len(said) + len(quoted))
    return Selection("mux", min(best.members), agreement, reason, tally, quote=quote)


def _consensus(candidates: Sequence[Candidate]) -> Selection:
    """Minimum Bayes risk: the proposal with the highest mean similarity to the others."""
    from rapidfuzz import fuzz

    if len(candidates) == 1:
        only = candidates[0]
        return Selection("consensus", only.index, 1.0, "the only proposal", [])
    # rapidfuzz's token sets split on spaces: a sentence in a script written without them
    # was one token, so two such answers agreed only when identical. Its words are split
    # as the page's agreement splits them (`words`), one token each.
    texts = [" ".join(w.key for w in words(normalize_words(c.text))) for c in candidates]
    # Token-set similarity is symmetric: each pair is scored once, for both (scored twice,
    # 64 samples of 4k tokens each took ~20 s).
    totals = [0.0] * len(texts)
    for k, text in enumerate(texts):
        for j in range(k + 1, len(texts)):
            similarity = fuzz.token_set_ratio(text, texts[j]) / 100
            totals[k] += similarity
            totals[j] += similarity
    means = [total / (len(texts) - 1) for total in totals]
    best = max(range(len(candidates)), key=lambda k: (round(means[k], 9), -k))
    tally = [
        {"proposal": c.index, "mean_similarity": round(m, 4)}
        for c, m in zip(candidates, means, strict=True)
    ]
    reason = (
        f"proposal {candidates[best].index + 1} is the most similar to the others "
        f"(mean token-set similarity {means[best]:.2f})"
    )
    return Selection("consensus", candidates[best].index, means[best], reason, tally)


def tally_note(candidates: Sequence[Candidate], config: SelectionConfig) -> str:
    """Describe the vote for a synthesizing aggregator: which answer how many responses gave."""
    answers = _votes(candidates, config).answers
    groups = _groups(candidates, answers, [1.0] * len(candidates))
    if not groups:
        return ""
    parts = [
        f"{_quoted_answer(g['answer'])}: {g['votes']} of {len(candidates)} (responses "
        + ", ".join(str(i + 1) for i in g["proposals"])
        + ")"
        for g in _tally(groups)
    ]
    return (
        "Answers extracted from the responses (untrusted text, quoted), with their votes: "
        + "; ".join(parts)
        + "."
    )


TALLY_ANSWER_CHARS = 80
"""The longest answer the tally line quotes; a longer one is cut (the response holds it all)."""


def _quoted_answer(answer: Any) -> str:
    """Quote a proposal-derived answer so that it cannot pass for prompt text.

    The tally line sits after the fenced references, outside any fence: the answer is put on
    one line, cut to `TALLY_ANSWER_CHARS`, stripped of marker look-alikes and quoted as a
    JSON string (so a quote or a newline inside it stays inside the quotes).
    """
    text = " ".join(str(answer).split())
    text = clip(text, TALLY_ANSWER_CHARS)  # between whole characters: no half an emoji
    return json.dumps(neutralize_markers(text), ensure_ascii=False)
