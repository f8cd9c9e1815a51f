r"""Forms that look like numbers but are ambiguous or none: dotted addresses and versions,
plain-space digit groups, and boxes of several option letters.

Each reader (the scorer, the vote key, the stated value, the GSM8K target) reads them alike.
"""

from fractions import Fraction

import pytest

from langgraph_moa.eval.datasets import gsm8k_final_number
from langgraph_moa.eval.scorers import numeric
from langgraph_moa.text._selection import (
    concluded_number,
    extract_answer,
    number_value,
    written_numbers,
)


@pytest.mark.parametrize(
    "answer",
    [
        "192.168.100.200",
        "The server is at 192.168.100.200",
        "Upgrade to version 1.2.3",
        "The answer is 1.2.3.",
        r"\boxed{1.2.3}",
        "10.0.0.1",
        "100.100.100.100",  # four groups of at most 255: an address, not 100100100100
        # European grouping whose later groups are all 100 to 255 is an address too
        # (ambiguous, documented: write 1,200,200,200).
        "1.200.200.200",
        "1.250.125.200",
    ],
)
def test_a_dotted_address_or_version_is_no_number(answer):
    """ "192.168.100.200" read 192168100200 and "version 1.2.3" read 0.3."""
    assert concluded_number(answer) is None
    assert number_value(answer) is None
    assert written_numbers(answer) == []
    assert not numeric(answer, 192168100200)
    assert not numeric(answer, 0.3)


def test_a_number_before_a_dotted_address_is_still_the_last_number():
    assert concluded_number("The result is 42 (see 10.0.0.1)") == 42
    assert written_numbers("v1.2.3 fixed 5 bugs") == [5]
    assert gsm8k_final_number("Work.\n#### 1.2.3") is None
    assert extract_answer("The answer is 1.2.3") == "1.2.3"  # votes as written


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("1.234.567", 1234567),
        ("1.234.567.890", 1234567890),  # a group past 255: no address
        ("1,200,200,200", 1200200200),  # as docs say to write "1.200.200.200"
        ("It costs 1.234.567,89 euros", 1234567.89),
        ("Pi is about 3.14", 3.14),
    ],
)
def test_european_grouping_and_decimals_stay_numbers(answer, value):
    assert concluded_number(answer) == Fraction(str(value))


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("The answer is 10 000", 10000),
        ("The answer is 10 000 apples.", 10000),
        ("10 000", 10000),
        ("**10 000.**", 10000),
        ("#### 10 000", 10000),
        (r"\boxed{10 000}", 10000),
        (r"\boxed{10 000 cm}", 10000),
        # In math a plain space is not typeset: a box shows its groups apart with LaTeX
        # spacing, which read as no number ("10\ 000", "10~000", "10\;000", "1\:000").
        (r"\boxed{10\ 000}", 10000),
        (r"\boxed{10~000}", 10000),
        (r"\boxed{10\;000}", 10000),
        (r"\boxed{\$1\:000\:000}", 1000000),
        ("The answer is 1 234 567", 1234567),
        ("The answer is 10 100,5", 10100.5),  # French, plain spaces: stated, so one number
        ("10 100,5", 10100.5),
        ("1 234,56", 1234.56),
        ("The answer is 12 345.67", 12345.67),  # SI: spaces group, a point is decimal
        ("12 345.67", 12345.67),
        ("The answer is 5 000 + 5 000 = 10 000", 10000),  # a stated equation's operands too
        ("The answer is 10 000 = 2 \u00d7 5 000", 10000),
        ("The answer is 10 000 - 1 = 9 999", 9999),
    ],
)
def test_plain_spaces_group_a_value_that_stands_alone(answer, value):
    """ "The answer is 10 000" stated 10: a plain space grouped only the French form."""
    assert numeric(answer, value)
    assert Fraction(extract_answer(answer)) == Fraction(str(value))
    if answer.startswith("#"):
        assert gsm8k_final_number(answer) == value


@pytest.mark.parametrize(
    ("answer", "last"),
    [
        ("She counted 3 000 apples", 0),  # in prose a plain space separates numbers
        # A lone comma in prose ends in no number (`_DECIMAL_COMMA`): 100.5 or 100 and 5,
        # never 10100.5 (and 5, or 56, was a wrong reading either way).
        ("The sizes are 4 10 100,5", None),
        ("It costs 1 234,56 in all", None),
        ("The answer is 10 00", 10),  # a group not of three
        ("The answer is 2019 100", 2019),  # a first group longer than three
        ("The answer is 0 100", 0),  # a leading zero group
        ("1 234,567", 234567),  # three decimals: no French form
        ("The answer is 5 100-meter dashes", 5),  # before a hyphenated word: no group
    ],
)
def test_plain_spaces_separate_numbers_anywhere_else(answer, last):
    assert concluded_number(answer) == last


def test_no_break_spaces_then_a_comma_of_three_read_as_thousands_as_documented():
    """Ambiguous (SI and French would read 1234.567): read as "1,234,567", as documented."""
    assert concluded_number("1\u00a0234,567") == 1234567
    assert concluded_number("It costs 1\u00a0234,56 in all") == Fraction("1234.56")


@pytest.mark.parametrize(
    ("answer", "key"),
    [
        (r"\boxed{A, C}", "A, C"),
        (r"\boxed{C,A}", "A, C"),
        (r"\boxed{A and C}", "A, C"),
        (r"\boxed{(B), (D)}", "B, D"),
        (r"\boxed{\text{A, C}}", "A, C"),
        (r"\boxed{A, C, and D}", "A, C, D"),  # a serial comma: it voted "c and d"
        (r"\boxed{A,\,C}", "A, C"),  # LaTeX spacing after the comma: it voted "A,C"
        (r"\boxed{A,~C}", "A, C"),  # it voted "ac"
    ],
)
def test_a_box_of_several_option_letters_votes_as_those_letters(answer, key):
    r"""`\boxed{A, C}` voted "c": the article "a" was dropped as a word."""
    assert extract_answer(answer) == key
    assert concluded_number(answer) is None


def test_a_box_of_words_still_votes_as_its_words():
    assert extract_answer(r"\boxed{\text{A cat}}") == "cat"


@pytest.mark.parametrize(
    ("answer", "key", "number"),
    [
        ("The answer is (C) 5", "C", None),  # the option, labelled first: its text follows
        ("The answer is C) 5", "C", None),
        ("The answer is 5 (C)", "5", 5),  # the value first: the label is an aside
    ],
)
def test_what_a_conclusion_names_first_is_what_it_states(answer, key, number):
    assert extract_answer(answer) == key
    assert concluded_number(answer) == number


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "unit",
    [
        "1.2",
        "192.168.",
        "answer is 10 000",
        "#### 1 000",
        " + 1 000 = 2 000",
        "\\boxed{A, ",
        "(A) and ",
        "A, and ",
        "10\\ 000\\,",
        "3,4 and ",
    ],
)
def test_addresses_spaced_groups_and_letter_boxes_are_read_in_linear_time(unit):
    text = unit * (100_000 // len(unit))
    for answer in (text, f"\\boxed{{{text}}}", f"The answer is {text}"):
        assert isinstance(extract_answer(answer), str)
        concluded_number(answer)
        written_numbers(answer)
        gsm8k_final_number("#### " + answer)


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("The answer is 3,5", Fraction("3.5")),  # it read 3
        ("the answer is 3,5.", Fraction("3.5")),
        ("3,5", Fraction("3.5")),  # it read 5
        ("#### 12,75", Fraction("12.75")),
        ("The answer is 1,234", 1234),  # three digits after the comma: thousands
        ("The answer is 3,4", Fraction("3.4")),  # the end of the text ends the value
        ("The answer is 3,4 and that is all", Fraction("3.4")),  # words, not more values
        # "The answer is 3,4 and 7" was pinned here as 3.4: a list goes on from it, so the
        # value does not stand alone (see the test below)
    ],
)
def test_a_lone_decimal_comma_in_a_value_that_stands_alone_is_a_decimal(answer, value):
    """ "the answer is 3,5" read 3 and "3,5" alone 5: a comma then one or two digits is no
    thousands separator, so where the value stands alone it is a decimal comma."""
    assert concluded_number(answer) == value
    assert numeric(answer, float(value))
    assert not numeric(answer, 3) and not numeric(answer, 5) and not numeric(answer, 35)


@pytest.mark.parametrize(
    ("answer", "key"),
    [
        ("The answer is 3,4 and 7", "3,4 and 7"),  # it read 3.4
        ("The answer is 3,4, 7", "3,4, 7"),
        ("The answer is 3,4, and 7.", "3,4, and 7"),
        ("The answer is 3,4 or 5,6", "3,4 or 5,6"),
        ("#### 3,4 & 7", "3,4 & 7"),
        # a Chinese or Japanese "or" or "and" joins a list as the English one does: the first
        # four concluded 3.4
        ("答案是 3,4 或 5", "3,4 或 5"),
        ("答案是3,4或者5", "3,4或者5"),
        ("答案是 3,4 还是 5", "3,4 还是 5"),
        ("答えは 3,4 または 5", "3,4 または 5"),
        ("答案是 3,4 和 7", "3,4 和 7"),
    ],
)
def test_a_stated_lone_comma_that_a_list_goes_on_from_reads_no_number(answer, key):
    """ "The answer is 3,4 and 7" concluded 3.4: a value that more of a list follows does not
    stand alone, so its comma is as ambiguous as in "The points are 3,4". It votes as
    written, no number, and no number of the list is read as the answer."""
    assert concluded_number(answer) is None
    assert extract_answer(answer) == key
    for wrong in (3.4, 3, 4, 34, 7, 5.6, 6):
        assert not numeric(answer, wrong)


@pytest.mark.parametrize(
    ("answer", "value"),
    [("The answer is 1,234 and 7", 1234), ("The answer is 3,4. And 7 more", Fraction("3.4"))],
)
def test_a_list_after_a_thousands_comma_or_after_the_sentence_leaves_the_value(answer, value):
    assert concluded_number(answer) == value


@pytest.mark.parametrize(
    "answer",
    [
        "The points are 3,5",  # a pair, or 3.5: in prose no one can tell
        "so the result is 3,5",
        "The answer is 1,2345",  # four digits after the comma: no grouping, no decimal
        "1,2345",
        r"\boxed{1,2345}",
    ],
)
def test_an_ambiguous_comma_reads_no_number_rather_than_a_wrong_one(answer):
    """ "The points are 3,5" ended in 5 and "The answer is 1,2345" stated 1."""
    assert concluded_number(answer) is None
    for wrong in (1, 3, 5, 35, 2345, 12345, 3.5, 1.2345):
        assert not numeric(answer, wrong)
    assert gsm8k_final_number(f"Work.\n#### {answer.split()[-1]}") in {None, 3.5}


@pytest.mark.parametrize(
    ("answer", "key"),
    [
        ("The answer is (3,4)", "(3,4)"),  # a point, as written: it read 3.4
        ("Answer: [2,5].", "[2,5]"),
        ("The answer is $(-1,5)$", "(-1,5)"),
        (r"\boxed{0,5}", "0,5"),  # the roots of x(x - 5) = 0, or 0.5: as written
        (r"\boxed{-2,3}", "-2,3"),  # it read -2.3
    ],
)
def test_a_bracketed_or_boxed_pair_reads_no_decimal_comma(answer, key):
    """A pair in brackets, or a list of roots in a box, read as a decimal: "The answer is
    (3,4)" and "\\boxed{-2,3}" concluded 3.4 and -2.3. They vote as written, no number."""
    assert concluded_number(answer) is None
    assert extract_answer(answer) == key
    for wrong in (3.4, 2.5, -1.5, 0.5, -2.3, 0, 3, 4, 5):
        assert not numeric(answer, wrong)
