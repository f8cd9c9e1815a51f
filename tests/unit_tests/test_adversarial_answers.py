"""Reading an answer out of a model's text takes time in proportion to the text, never more.

A model's answer is untrusted, and several patterns tried every split of a long run of
punctuation, spaces or digits: 4,000 "!" took a second in the select step (on the server's
event loop), 100,000 took hours. Each case here is 100,000 characters.
"""

import pytest

from langgraph_moa.eval.datasets import gsm8k_final_number
from langgraph_moa.eval.judge import parse_verdict
from langgraph_moa.eval.scorers import numeric
from langgraph_moa.text._selection import (
    extract_answer,
    number_value,
    stated_number,
    written_numbers,
)

N = 100_000


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("text", "extractor", "expected"),
    [
        ("!" * N + "x", "auto", "x"),
        ("-" * N, "auto", ""),
        ("!" * N + "x", "choice-letter", ""),
        ("!" * N + "(c)", "choice-letter", "C"),
        ("####" + " " * N + "x", "auto", "x"),
        ("####" + " " * N + "42", "auto", "42"),
    ],
)
def test_a_long_run_of_punctuation_or_spaces_is_read_in_linear_time(text, extractor, expected):
    assert extract_answer(text, extractor) == expected


@pytest.mark.timeout(60)
def test_a_judges_long_reply_is_read_in_linear_time():
    assert parse_verdict("\n" * N + "Verdict: B") == "B"
    assert parse_verdict("verdict" + " " * N + "x") is None
    assert parse_verdict("Verdict:" + " " * N + "A") == "A"


@pytest.mark.timeout(60)
def test_a_long_boxed_or_stated_number_is_scored_in_linear_time():
    assert not numeric("\\boxed{" + "1" * N + "x}", 1.0)
    # The last box concludes, for the scorer as for the vote: one that is no number is wrong.
    assert not numeric("\\boxed{" + "1" * N + "x} so the answer is 1", 1.0)
    assert numeric("\\boxed{" + "1" * N + "} so the answer is 1", 1.0) is False
    assert numeric("The answer is " + "1" * N + "x, or \\boxed{1}", 1.0)
    assert not numeric("####" + " " * N + "x", 1.0)
    assert stated_number("####" + " " * N + "-$5") == "-5"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(C)", "C"),
        ("  answer: (b)", "B"),
        ("  Answer: (b)", ""),  # case counts: "Answer" is no lead-in here
        ("The answer is C.", ""),  # not a lone letter: choice-letter reads only the opening
        ("answer is d", "D"),
        ("option: E)", "E"),
        ("a)", "A"),
    ],
)
def test_the_choice_letter_reads_what_it_read_before(text, expected):
    assert extract_answer(text, "choice-letter") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#### 18", "18"),
        ("####   -$5", "-5"),
        ("#### $-5", "-5"),
        ("The answer is $1,250.", "1,250"),
        ("Answer:    7", "7"),
    ],
)
def test_a_stated_number_is_read_as_before(text, expected):
    assert stated_number(text) == expected


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\frac{" + " " * N + "1}{2}", "0.5"),
        ("\\frac{1}" * N, "1"),
        ("\\frac{1}{ " * N, "1"),
        ("\\frac{-" * N + "3}{4}", "0.75"),  # the last: -\frac{-3}{4}
        ("\\frac1" * N, "1"),  # no denominator: the digits alone
        ("\\frac " * N + "12", "0.5"),
        ("1\u00a0" * N, "1"),  # no-break spaces, no group of three
        ("1\u00a0234\u00a0" * N, "1234"),
        ("1,000e " * N, "1000"),
        ("1,000e- " * N, "1000"),
        ("1\\,000\\, " * N, "1000"),  # LaTeX thin spaces
    ],
)
def test_latex_fractions_exponents_and_thin_spaces_are_read_in_linear_time(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.timeout(60)
def test_a_long_run_of_groups_joined_by_no_break_spaces_reads_as_the_commas_would():
    """One number of 300,000 digits, past the reader's limit, as "123,123,..." is."""
    text = "123\u00a0" * N
    assert number_value(text) is None
    assert number_value(text.replace("\u00a0", ",")) is None


MB = 1_000_000


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "unit",
    [
        "\\frac",
        "-\\frac{-1}{ ",
        "\\frac1",
        "1\\,",
        "1\u00a0",
        "1\u202f234\u2009",
        "2,500e",
        "The answer is .",
        "answer is...",
        "\u2212\uff0d",
    ],
)
def test_every_number_reader_takes_linear_time_on_a_long_run_of_one_mark(unit):
    """The rules for fractions, exponents, thin spaces and points, on hostile text.

    Each reader (vote key, scorer, stated value, GSM8K target, tool_use's reader) must
    finish within the timeout; what it reads there matters less than that it ends.
    """
    # A quarter megabyte: a quadratic reading of it is tens of billions of steps, far past
    # the timeout, while the linear one takes a second or two on the shared cores.
    text = unit * (MB // 4 // len(unit)) + "7"
    assert isinstance(extract_answer(text), str)
    assert isinstance(numeric(text, 7.0), bool)
    stated_number(text)
    number_value(text)
    written_numbers(text)
    gsm8k_final_number("#### " + text)
