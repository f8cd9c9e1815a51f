r"""Number forms the reader once misread: equation results, mixed and continued fractions,
European decimal commas, Indian grouping by no-break spaces and full-width option letters.

Each reader (the scorer, the vote key, the stated value, the GSM8K target) reads them alike.
"""

from fractions import Fraction

import pytest

from langgraph_moa.eval.datasets import gsm8k_final_number
from langgraph_moa.eval.scorers import contains, normalized, numeric, regex
from langgraph_moa.text._selection import (
    concluded_number,
    extract_answer,
    number_value,
    stated_number,
)

N = 100_000


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("The answer is 20 - 5 = 15.", 15),
        ("The answer is $20 - $5 = $15", 15),
        ("Answer: 3 \u00d7 4 = 12 apples", 12),
        ("The answer is 6 / 2 + 1 = 4", 4),
        ("#### 20-5=15", 15),
    ],
)
def test_a_stated_equation_states_its_result(answer, value):
    """ "The answer is 20 - 5 = 15" stated 20, its first operand."""
    assert numeric(answer, value)
    assert extract_answer(answer) == str(value)
    assert number_value(stated_number(answer)) == value


def test_a_stated_value_without_an_equation_is_read_as_before():
    assert stated_number("The answer is 20. Then 5 = 5") == "20"
    assert stated_number("The answer is 20 - 5") == "20"  # no result: the first value


@pytest.mark.parametrize(
    ("answer", "value", "key"),
    [
        ("3\\frac{1}{2}", 3.5, "3.5"),
        ("So she ran $3\\frac{1}{2}$ miles.", 3.5, "3.5"),
        ("\\boxed{3\\frac{1}{2}}", 3.5, "3.5"),
        ("\\boxed{-2\\dfrac{1}{4}}", -2.25, "-2.25"),
        ("2 \\tfrac12", 2.5, "2.5"),
    ],
)
def test_a_latex_mixed_number_is_its_value(answer, value, key):
    r"""`3\frac{1}{2}` read 0.5, its fraction alone."""
    assert numeric(answer, value)
    assert extract_answer(answer) == key


@pytest.mark.parametrize(
    ("answer", "value", "key"),
    [
        ("\\cfrac{1}{2}", 0.5, "0.5"),
        ("\\boxed{\\cfrac{3}{4}}", 0.75, "0.75"),
        ("#### \\cfrac{1}{4}", 0.25, "0.25"),
    ],
)
def test_a_continued_fraction_command_reads_as_frac_does(answer, value, key):
    r"""`\cfrac{1}{2}` read 2, as prose."""
    assert numeric(answer, value)
    assert extract_answer(answer) == key


@pytest.mark.parametrize(
    ("answer", "value", "key"),
    [
        ("\u20ac1.234,56", 1234.56, "1234.56"),
        ("It costs 12.345.678,9 euros.", 12345678.9, "12345678.9"),
        ("The answer is 1.000,50", 1000.5, "1000.5"),
        ("#### -1.234,5", -1234.5, "-1234.5"),
    ],
)
def test_a_european_grouped_decimal_comma_is_one_number(answer, value, key):
    """ "€1.234,56" read 1.234: dot-grouped thousands, then a comma and one or two digits."""
    assert numeric(answer, value)
    assert extract_answer(answer) == key


@pytest.mark.parametrize(
    ("answer", "last"),
    [
        ("1.234,567", 567),  # three digits after the comma: a list, not a decimal comma
        ("1.2345,6", 6),  # not dot-grouped in threes
        ("1.234.567", 1234567),  # dots between groups of three: thousands (it read 0.567)
        ("1.234.56 or 7", 7),  # a group not of three: a dotted chain, no number (a version)
        ("0.234.567 or 7", 7),  # a leading zero group groups nothing: no number either
        ("1.5,2", 2),
        ("Chapter 1.234,56 pages", 1234.56),
        ("0.123,45", 45),  # a leading zero group groups nothing: it read 123.45
        ("coords 0.125,7", 7),
    ],
)
def test_only_an_unambiguous_european_number_reads_as_one(answer, last):
    assert numeric(answer, last)


@pytest.mark.parametrize(
    "written",
    ["12\u00a034\u00a0567", "12\u202f34\u202f567", "1\u00a023\u00a045\u00a0678"],
)
def test_indian_grouping_by_no_break_spaces_is_one_number_as_with_commas(written):
    """ "12 34 567" (no-break spaces) read 34567, neither the number nor its last group."""
    value = number_value(written.replace("\u00a0", ",").replace("\u202f", ","))
    assert number_value(written) == value
    assert numeric(written, float(value))
    assert extract_answer(written) == str(value)


def test_two_digit_groups_by_no_break_spaces_without_a_last_three_stay_apart():
    assert number_value("1\u00a023\u00a045") == 45
    assert number_value("3\u00a04") == 4


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("\uff21", "A"),
        ("(\uff22)", "B"),
        ("\uff08\uff23\uff09", "C"),
        ("The answer is \uff24.", "D"),
        ("\\boxed{\uff25}", "E"),
        ("\uff21) Paris", "A"),
    ],
)
def test_a_full_width_option_letter_is_its_letter(answer, letter):
    """Full-width letters (U+FF21 on), as CJK text writes options, were no option."""
    assert extract_answer(answer) == letter


@pytest.mark.parametrize(("answer", "letter"), [("\uff21", "A"), ("(\uff42)", "B")])
def test_the_choice_letter_extractor_reads_full_width_letters(answer, letter):
    assert extract_answer(answer, "choice-letter") == letter


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "unit",
    [
        "1\\frac",
        "1 \\cfrac{1}",
        "1.234,",
        "1.234.",
        "12\u00a034\u00a0",
        "answer is 1 - 2 ",
        "answer is 1 = ",
        "(\uff21",
        "x^1\\frac",
    ],
)
def test_the_new_forms_are_read_in_linear_time(unit):
    text = unit * (N // len(unit)) + "7"
    assert isinstance(extract_answer(text), str)
    assert isinstance(extract_answer(text, "choice-letter"), str)
    assert isinstance(numeric(text, 7.0), bool)
    stated_number(text)
    number_value(text)
    gsm8k_final_number("#### " + text)


def test_the_gsm8k_target_reads_the_new_forms_as_the_scorer_does():
    for written, value in [("3\\frac{1}{2}", 3.5), ("1.234,5", 1234.5), ("\\cfrac12", 0.5)]:
        assert gsm8k_final_number(f"#### {written}") == value
        assert Fraction(extract_answer(f"Work.\n#### {written}")) == Fraction(value)


@pytest.mark.parametrize(
    ("answer", "last"), [("42 dollars and 50 cents", 50), ("3:30", 30), ("10^3", 3)]
)
def test_a_value_in_two_parts_or_a_power_reads_its_last_number_as_documented(answer, last):
    """Amounts in two units, clock times and powers are no one value (docs/evaluation.md)."""
    assert numeric(answer, last)
    assert extract_answer(answer) == str(last)


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("The answer is 15 = 3 x 5", 15),  # "x" multiplies: a decomposition
        ("The answer is 3 = 1.5 * 2", 3),  # the result was cut to "1" before ".5 * 2"
        ("The answer is 6 = 12 / 2.0", 6),
        ("The answer is 25 = 5^2", 25),  # a power is a decomposition too
        ("The answer is 4 = 2 ** 2", 4),
        ("The answer is 20 - 5 = 15 - 3 = 12", 12),  # it stated 1, a digit of 15
        # A chain of decompositions states its first value, not a factor on the way.
        ("The answer is 12 = 3 \u00d7 4 = 2 \u00d7 6", 12),  # it stated 3
        ("The answer is 2 = 4 / 2 = 1 + 1", 2),  # it stated 4
        # "x" multiplies before "=" as after it.
        ("The answer is 3 x 5 = 15", 15),  # it stated 3
        ("The answer is 10 + 5 = 15 x 2 = 30", 30),  # it stated 10
        ("The answer is 3 xylophones", 3),
    ],
)
def test_a_result_that_an_operator_follows_is_never_cut_short(answer, value):
    """The stated result took only the digits before an operator's operand: "1" of "1.5 * 2"."""
    assert stated_number(answer) is not None
    assert number_value(stated_number(answer)) == value
    assert extract_answer(answer) == str(value)
    assert numeric(answer, value)


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("x^2\\frac{1}{2}", Fraction(1, 2)),  # x squared times a half, no 2 1/2
        ("2^3\\frac12", Fraction(1, 2)),
        ("x_1\\frac{1}{2}", Fraction(1, 2)),
        ("a1\\frac12", Fraction(1, 2)),
        ("1.5\\frac{1}{2}", Fraction(1, 2)),
    ],
)
def test_an_exponent_index_or_decimal_before_frac_makes_no_mixed_number(answer, value):
    """ "x^2\\frac{1}{2}" read 2.5: an exponent's digit was taken as a whole part."""
    assert number_value(answer) == value
    assert extract_answer(answer) == str(float(value))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chain", [" - 1", " - 1 = 1", " * 1.5"])
def test_a_long_operand_chain_after_a_stated_result_is_read_in_linear_time(chain):
    text = "The answer is 1 = 1" + chain * (N // len(chain))
    assert stated_number(text) in {"1", "1.5"}
    assert isinstance(numeric(text, 1.0), bool)


@pytest.mark.parametrize(
    ("answer", "target"),
    [
        ("So x = 2 and \\boxed{2\\sqrt{2}}", 2),  # the scorer read the box's 2, the vote "2sqrt2"
        ("\\boxed{12} is wrong; it is \\boxed{\\sqrt{3}}", 12),
        ("The answer is 1/0. So 5 apples.", 5),  # stated no number: the vote read the 5
        ("\\boxed{1/0}", 10),  # the vote read "10"
    ],
)
def test_the_scorer_and_the_vote_read_a_conclusion_that_is_no_number_alike(answer, target):
    """A box or a stated value that is no number was a number to one reader and not the other."""
    assert not numeric(answer, target)
    assert extract_answer(answer) != extract_answer(f"#### {target}")


@pytest.mark.parametrize(
    ("answer", "value"),
    [("\\boxed{45^\\circ}", 45), ("\\boxed{45^{\\circ}}", 45), ("\\boxed{\\displaystyle 7}", 7)],
)
def test_a_boxed_number_with_a_degree_mark_is_its_number_to_both_readers(answer, value):
    assert numeric(answer, value)
    assert extract_answer(answer) == str(value)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("\\boxed{-\\sqrt{2}}", "\\boxed{\\sqrt{2}}"),
        ("\\boxed{2.5\\sqrt{2}}", "\\boxed{25\\sqrt{2}}"),
    ],
)
def test_expressions_that_differ_in_a_sign_or_a_point_vote_apart(one, other):
    """The expression key dropped a number's sign and point: -sqrt2 voted with sqrt2."""
    assert extract_answer(one) != extract_answer(other)


@pytest.mark.parametrize("extractor", ["short-span", "text"])
def test_text_keys_keep_a_numbers_sign_and_point(extractor):
    assert extract_answer("It is -5 degrees.", extractor) != extract_answer(
        "It is 5 degrees.", extractor
    )
    assert extract_answer("About 3.5 km.", extractor) != extract_answer("About 35 km.", extractor)
    assert extract_answer("Paris.", extractor) == extract_answer("paris", extractor)


def test_the_regex_extractor_keeps_a_numbers_sign():
    pattern = r"answer: (\S+)"
    assert extract_answer("answer: -5", "regex", pattern) != extract_answer(
        "answer: 5", "regex", pattern
    )


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("The answer is 5.", "-5"), ("It is 35 km", "3.5"), ("It is -5 km", "5")],
)
def test_the_contains_scorer_tells_a_numbers_sign_and_point(answer, expected):
    """SQuAD's rule made "-5" equal "5" and "3.5" equal "35"."""
    assert not contains(answer, [expected])


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("The answer is -5.", "-5"), ("It is 3.5 km.", "3.5"), ("the U.S.", "US")],
)
def test_the_contains_scorer_still_finds_numbers_and_words(answer, expected):
    assert contains(answer, [expected])


def test_the_normalized_scorer_is_squads_exact_match():
    """SQuAD's own normalization, reproduced as such: "-5" is "5" there."""
    assert normalized("-5", ["5"])


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("1.234.567", 1234567),
        ("It costs 12.345.678 euros.", 12345678),
        ("1\u00a0234,56", 1234.56),
        ("1\u202f234,56 \u20ac", 1234.56),
        ("1 234,56", 1234.56),
        ("The answer is 1 234 567,5", 1234567.5),
    ],
)
def test_dot_grouped_and_french_numbers_are_one_number(answer, value):
    """ "1.234.567" read 0.567 and "1 234,56" read 56."""
    assert numeric(answer, value)
    assert Fraction(extract_answer(answer)) == Fraction(str(value))
    assert gsm8k_final_number(f"#### {answer}") in {value, None}


@pytest.mark.parametrize(
    ("answer", "last"),
    [
        ("1 234,567", 234567),  # three decimals: no decimal comma (a plain space never groups)
        # A lone comma in prose reads no number (it read the digits after it).
        ("0 234,56", None),  # a leading zero group groups nothing
        ("1 23,45", None),  # a group not of three
        ("items 1, 234,56", None),
    ],
)
def test_only_an_unambiguous_french_number_reads_as_one(answer, last):
    assert numeric(answer, last) if last is not None else concluded_number(answer) is None


def test_a_gsm8k_target_reads_dot_and_french_grouping_as_the_scorer_does():
    assert gsm8k_final_number("Work.\n#### 1.234.567") == 1234567
    assert gsm8k_final_number("Work.\n#### 1\u00a0234,5") == 1234.5


@pytest.mark.parametrize(
    ("answer", "pattern"),
    [
        ("The answer is \uff23.", r"answer is \(?C\b"),
        ("\uff08\uff23\uff09", r"^\W*\(?[Cc]\)?\W*$"),
    ],
)
def test_a_datasets_pattern_reads_full_width_letters_as_the_reader_does(answer, pattern):
    """A full-width option letter was C to the vote and no match to the item's regex."""
    assert extract_answer(answer) == "C"
    assert regex(answer, pattern)
    assert extract_answer(answer, "regex", pattern.replace("C", "(C)", 1)) == "c"


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("3\\frac{-1}{2}", Fraction(-1, 2)),
        ("\\boxed{3\\frac{-1}{2}}", None),
    ],
)
def test_a_negative_numerator_after_a_whole_number_makes_no_mixed_number(answer, value):
    """ "3\\frac{-1}{2}" read 2.5, a mixed number nobody writes."""
    assert not numeric(answer, 2.5)
    assert extract_answer(answer) != "2.5"
    if value is not None:
        assert number_value(answer) == value


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("The answer is 2 = 2.5 rounded", 2),
        ("The answer is 3 1/2", 3.5),
        ("The answer is 3 1/2 cups.", 3.5),
        ("#### -2 3/4", -2.75),
        ("3 1/2", 3.5),
    ],
)
def test_a_stated_value_equal_to_another_or_a_mixed_fraction_is_read_as_written(answer, value):
    """ "2 = 2.5 rounded" stated 2.5 and "3 1/2" stated 3."""
    assert numeric(answer, value)
    assert Fraction(extract_answer(answer)) == Fraction(str(value))


def test_a_date_or_a_slash_chain_after_a_stated_number_is_no_mixed_fraction():
    assert stated_number("The answer is 5 12/25/2024") == "5"
    assert not numeric("The answer is 5 1/2/2024", 5.5)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "unit", ["1.234", "1 234", "1\u00a0234", "answer is 1 = ", "answer is 3 1/", "3\\frac{-"]
)
def test_dot_french_and_mixed_forms_are_read_in_linear_time(unit):
    text = unit * (N // len(unit)) + ",56"
    assert isinstance(extract_answer(text), str)
    assert isinstance(numeric(text, 7.0), bool)
    assert isinstance(contains(text, ["-7.5"]), bool)
    assert isinstance(regex(text, "C"), bool)
    stated_number(text)
    number_value(text)
    gsm8k_final_number("#### " + text)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("\u22125", "-5"), ("\u22125", "5"), ("x \u2212 y", "x y")],
)
def test_the_normalized_scorer_still_reads_a_unicode_minus_as_a_symbol(answer, expected):
    """`normalized` turns a non-ASCII symbol into a space, U+2212 too: "\\u22125" is "5" there.

    Keeping U+2212 for `contains` kept it in the SQuAD score as well, as a word of its own.
    """
    assert normalized(answer, [expected])


@pytest.mark.parametrize(
    ("answer", "wrong"),
    [
        ("\\boxed{2x+3}", 3),
        ("\\boxed{x^2-1}", 1),
        ("\\boxed{2^{10}}", 10),
        ("\\boxed{(1, -2)}", -2),
        ("\\boxed{2 \\text{ or } 3}", 3),
        ("The answer is 17. \\boxed{x+1}", 1),
    ],
)
def test_a_box_of_an_expression_without_a_command_is_no_number(answer, wrong):
    """Such a box concluded its last number: "\\boxed{2x+3}" was right on 3 and voted "3"."""
    assert not numeric(answer, wrong)
    assert extract_answer(answer) != extract_answer(f"#### {wrong}")


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("x = 2, so \\boxed{x = 2}", 2),
        ("\\boxed{5\\text{ cm}}", 5),
        ("\\boxed{5\\,\\text{cm}}", 5),
        ("\\boxed{25 \\text{ m}^2}", 25),
        ("\\boxed{\\$5}", 5),
        ("\\boxed{50\\%}", 50),
        ("\\boxed{-0}", 0),
        ("\\boxed{\\$1{,}250.50}", 1250.5),
        ("\\boxed{3 1/2}", 3.5),
        ("\\boxed{5.}", 5),
        ("\\boxed{1/2}", 0.5),
        ("\\boxed{+5}", 5),
    ],
)
def test_a_box_of_one_number_with_its_marks_and_unit_is_that_number(answer, value):
    assert numeric(answer, value)
    assert Fraction(extract_answer(answer)) == Fraction(str(value))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("unit", [" cm", "1", "x = 1", " m^2/", "5 or ", " (ab", "**"])
def test_a_boxed_number_with_a_long_unit_is_read_in_linear_time(unit):
    text = "\\boxed{5" + unit * (N // len(unit)) + " 7}"
    assert isinstance(extract_answer(text), str)
    assert isinstance(numeric(text, 7.0), bool)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("\\boxed{1+\\sqrt{2}}", "\\boxed{1-\\sqrt{2}}"),  # both voted "1sqrt2"
        ("\\boxed{3+2\\sqrt{2}}", "\\boxed{32\\sqrt{2}}"),
        ("\\boxed{2^{10}}", "\\boxed{210}"),
        ("\\boxed{x+1}", "\\boxed{x-1}"),
        ("\\boxed{\\sqrt{2}/2}", "\\boxed{\\sqrt{22}}"),
    ],
)
def test_boxed_expressions_that_differ_in_an_operator_vote_apart(one, other):
    """An expression's key dropped its operators, so different answers voted as one."""
    assert extract_answer(one) != extract_answer(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("\\boxed{1 - \\sqrt{2}}", "\\boxed{1-\\sqrt{2}}"),
        ("\\boxed{\\left(1, -2\\right)}", "\\boxed{(1,-2)}"),
        ("\\boxed{\\dfrac{x}{2}}", "\\boxed{\\frac{x}{2}}"),
        ("\\boxed{\\text{New York}}", "\\boxed{new york.}"),
    ],
)
def test_boxed_expressions_written_apart_only_in_spacing_vote_together(one, other):
    assert extract_answer(one) == extract_answer(other)


def test_a_boxed_word_keeps_its_hyphen_rule_and_math_its_case():
    assert extract_answer("\\boxed{well-known}") == extract_answer("\\boxed{wellknown}")
    assert extract_answer("\\boxed{\\Delta x}") != extract_answer("\\boxed{\\delta x}")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("\\boxed{\\frac{x}2}", "\\boxed{\\frac{x}{2}}"),
        ("\\boxed{2\\sqrt2}", "\\boxed{2\\sqrt{2}}"),
    ],
)
def test_a_boxed_expressions_braces_around_one_character_change_nothing(one, other):
    assert extract_answer(one) == extract_answer(other)


@pytest.mark.parametrize("answer", ["The answer is -0.", "It is \u22120.0 degrees", "x = -0"])
def test_a_negative_zero_is_zero_to_contains_and_the_text_keys(answer):
    """Keeping a number's sign made "-0" another number than "0"."""
    assert contains(answer, ["0"]) or contains(answer, ["0.0"])
    for extractor in ("short-span", "text"):
        assert extract_answer(answer, extractor) == extract_answer(
            answer.replace("-", "").replace("\u2212", ""), extractor
        )


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("\\boxed{45\u00b0}", 45),
        ("\\boxed{5\u00b0C}", 5),
        ("\\boxed{\u20ac5}", 5),
        ("\\boxed{-\u20ac5}", -5),
        ("\\boxed{5\u20ac}", 5),
        ("\\boxed{\u00a31,200}", 1200),
        ("\\boxed{5\\ \\%}", 5),
    ],
)
def test_a_boxed_number_with_a_currency_or_degree_sign_is_its_number(answer, value):
    assert numeric(answer, value)
    assert Fraction(extract_answer(answer)) == value


@pytest.mark.parametrize(
    "answer",
    ["\\boxed{**18**}", "\\boxed{18 \\text{ (apples)}}", "\\boxed{x = 18\\text{ (sold)}.}"],
)
def test_a_boxed_number_in_bold_or_with_a_worded_aside_is_its_number(answer):
    """Before the box had to be one number, these read 18; a worded aside adds no number."""
    assert numeric(answer, 18)
    assert extract_answer(answer) == "18"
