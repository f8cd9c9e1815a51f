"""A number of thousands of digits is refused by its length, never handed to int()."""

import pytest

from langgraph_moa._digits import at_most


@pytest.mark.parametrize(
    ("digits", "most", "value"),
    [
        ("42", 100, 42),
        ("0042", 100, 42),  # leading zeros do not make it longer
        ("100", 100, 100),
        ("101", 100, None),
        ("1000", 100, None),
        ("0", 5, 0),
        ("000", 5, 0),
        ("", 5, 0),
        (b"1024", 2048, 1024),  # a header's bytes
        (b"0" * 5000 + b"7", 10, 7),
        ("\u0664\u0662", 100, 42),  # Arabic-Indic digits, which isdecimal() takes
    ],
)
def test_a_number_is_read_when_it_is_small_enough(digits, most, value):
    assert at_most(digits, most) == value


@pytest.mark.parametrize("digits", ["9" * 5000, b"9" * 5000])
def test_a_number_of_more_digits_than_int_reads_is_refused_not_raised(digits):
    assert at_most(digits, 10**6) is None
