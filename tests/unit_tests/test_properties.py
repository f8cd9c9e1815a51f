"""Properties of the code that reads untrusted text: cuts, answer readers, the synthesis prompt.

Hypothesis draws the inputs (any Unicode, digit strings of any length); the rules of its runs
(few examples, no deadline, no database, fixed on CI) are set in tests/conftest.py. An input
that once broke a property stays as an explicit ``@example``.
"""

import json
import tempfile
import unicodedata
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage, SystemMessage

from langgraph_moa._digits import at_most
from langgraph_moa._redact import clip
from langgraph_moa._unicode import beginning, boundary, ending
from langgraph_moa.config import load_config
from langgraph_moa.config.context import MoAContext, apply_context
from langgraph_moa.errors import MoAConfigError
from langgraph_moa.eval import scorers
from langgraph_moa.eval.datasets import EvalItem
from langgraph_moa.text._prompts import (
    AGGREGATE_AND_SYNTHESIZE_PROMPT,
    SLOT_CLOSE,
    inject_references,
    neutralize_markers,
)
from langgraph_moa.text._selection import (
    _value_key,
    chosen_option,
    concluded_number,
    extract_answer,
    hedges,
    number_value,
    stated_number,
    written_numbers,
)

# --- cuts between whole characters -----------------------------------------------------------

ZWJ = "\u200d"
_JOINING = [
    "\u0301",  # combining acute
    "\u0308",
    "\ufe0f",  # variation selector
    "\U0001f3fd",  # skin tone
    ZWJ,
    "\U000e0067",  # a tag of a subdivision flag
    "\u1161",  # a decomposed Korean syllable's vowel
    "\U0001f1eb",  # regional indicators
    "\U0001f1f7",
    "\U0001f468",  # emoji a joiner joins
    "\U0001f469",
]
DRAWN = st.text(
    alphabet=st.one_of(st.sampled_from(_JOINING), st.sampled_from("ae \n"), st.characters()),
    max_size=24,
)
"""Text dense in what is drawn as one character: marks, joiners, skin tones, flags."""


def _regional(char: str) -> bool:
    return "\U0001f1e6" <= char <= "\U0001f1ff"


def _splits(text: str, cut: int) -> bool:
    """Tell whether a cut falls inside what the package draws as one character.

    Written from `boundary`'s documented rules, not from its code: before a mark, a
    variation selector, a skin tone, a tag or a Korean vowel or final; on either side of a
    joiner; between the two regional indicators of one flag (an odd count before the cut).
    """
    if not 0 < cut < len(text):
        return False
    before, after = text[cut - 1], text[cut]
    if ZWJ in (before, after) or unicodedata.category(after).startswith("M"):
        return True
    if "\U0001f3fb" <= after <= "\U0001f3ff" or "\U000e0020" <= after <= "\U000e007f":
        return True
    if "\u1160" <= after <= "\u11ff" or "\ud7b0" <= after <= "\ud7ff":
        return True
    if _regional(after) and _regional(before):
        run = 0
        while run < cut and _regional(text[cut - 1 - run]):
            run += 1
        return run % 2 == 1
    return False


def _last_whole_cut(text: str, index: int) -> int:
    """Return the last cut at `index` or before it that splits nothing (0 always does)."""
    return max(c for c in range(max(0, min(index, len(text))) + 1) if not _splits(text, c))


@given(DRAWN, st.integers(-2, 30))
@example("x\u200d\U0001f1eb\U0001f1f7", 3)  # a joiner before a flag: the cut stopped after it
def test_a_boundary_is_the_last_cut_at_or_before_the_index_that_splits_nothing(text, index):
    # the last one, not just any: a cut at 0 splits nothing, and keeps nothing
    assert boundary(text, index) == _last_whole_cut(text, index), (text, index)


@given(DRAWN, st.integers(0, 30))
def test_beginning_is_the_longest_prefix_within_the_count_that_splits_nothing(text, count):
    assert beginning(text, count) == text[: _last_whole_cut(text, count)]


@given(DRAWN, st.integers(0, 30))
def test_ending_is_the_longest_suffix_within_the_count_that_splits_nothing(text, count):
    first = max(0, len(text) - count)
    start = min(c for c in range(first, len(text) + 1) if not _splits(text, c))
    assert ending(text, count) == text[start:]


@given(DRAWN, st.integers(1, 30))
def test_a_clipped_text_is_a_marked_prefix_within_the_limit(text, limit):
    out = clip(text, limit)
    assert len(out) <= limit
    if out == text:
        return
    body = out.removesuffix("…")
    assert out.endswith("…") and text.startswith(body)
    # the kept text ends between whole characters, or where white space was stripped after
    assert not _splits(text, len(body)) or text[len(body)].isspace()


# --- answer readers ------------------------------------------------------------------------

ANSWERS = st.lists(
    st.one_of(
        st.characters(),
        st.sampled_from("0123456789.,-/$ eE{}\\\n#ABCD():"),
        st.sampled_from(["\\boxed{", "\\frac{", "The answer is ", "#### ", "\u2212", "\uff10"]),
    ),
    max_size=40,
).map("".join)
"""Model answers: any text, dense in what the readers look for (digits, boxes, options)."""

_READERS = (
    number_value,
    written_numbers,
    concluded_number,
    chosen_option,
    stated_number,
    extract_answer,
    scorers.last_number,
    scorers.normalize,
)


@given(ANSWERS)
def test_every_reader_takes_any_text_and_reads_it_the_same_each_time(answer):
    for read in _READERS:
        assert read(answer) == read(answer), read.__name__
    for check in (scorers.exact, scorers.normalized, scorers.contains):
        assert check(answer, ["C", answer]) == check(answer, ["C", answer])
    # an answer matches itself; `contains` only where words are left to match
    assert scorers.exact(answer, [answer]) and scorers.normalized(answer, [answer])
    assert scorers.contains(answer, [answer]) == bool(scorers.normalize(answer))
    assert scorers.numeric(answer, 42.0) in (True, False)


@given(
    st.integers(0, 6)
    .flatmap(lambda places: st.decimals(-(10**20), 10**20, places=places))
    .map(lambda d: format(d, "f"))
)
def test_a_plain_decimal_reads_as_its_value_and_its_key_reads_back(written):
    value = Fraction(Decimal(written))
    assert number_value(written) == value
    assert number_value(f"The answer is {written}") == value
    key = _value_key(value)
    assert number_value(key) == value
    assert _value_key(number_value(key)) == key


BIG_DIGITS = st.builds(
    lambda head, digits, sep, tail: f"{head}{digits}{sep}{digits}{tail}",
    st.sampled_from(["", "-", "$", "\\boxed{", "The answer is ", "#### ", "1/", "\\frac{1}{"]),
    st.integers(1001, 6000).map(lambda n: "7" * n),
    st.sampled_from(["", ".", ",", "e", "e-", "/", " ", "}{"]),
    st.sampled_from(["", "}", ".", " (B)", "}}"]),
)
"""Digit strings past what `int()` reads (4,300 digits) and past `_MAX_DIGITS`."""


@given(BIG_DIGITS)
def test_a_huge_number_is_refused_not_raised(answer):
    for read in _READERS:
        read(answer)  # no ValueError from int() or Decimal, no overflow
    assert not scorers.numeric(answer, 7.0)
    value = number_value(answer)
    assert value is None or len(str(value.numerator)) <= 2100, "a huge number was read"


CJK_NUMERALS = st.builds(
    lambda head, numeral, tail: f"{head}{numeral}{tail}",
    st.sampled_from(["答案是", "答え\uff1a", "The answer is "]),
    st.one_of(
        st.text(alphabet="零〇一二两三四五六七八九十百千", max_size=12),
        st.integers(4301, 6000).map(lambda n: "一" * n),  # past the digits int() reads
    ),
    st.sampled_from(["", "\u3002", "です", " 42"]),
)
"""Stated numerals in CJK characters, of any length: digits alone, units, and both mixed."""


@given(CJK_NUMERALS)
@example("答案是" + "一" * 4301)  # digits alone were read at any length: ValueError from int()
def test_a_stated_cjk_numeral_reads_as_at_most_9999_and_raises_nothing(answer):
    for read in _READERS:
        read(answer)
    value = concluded_number(answer)
    assert value is None or value == 42 or 0 <= value <= 9999


@given(st.text(alphabet="0123456789", max_size=40), st.integers(0, 10**12))
def test_at_most_reads_small_numbers_and_refuses_the_rest(digits, most):
    value = int(digits) if digits else 0
    assert at_most(digits, most) == (value if value <= most else None)
    assert at_most(digits.encode(), most) == at_most(digits, most)


@given(st.integers(4301, 20000), st.integers(0, 10**6))
def test_at_most_refuses_more_digits_than_int_reads(length, most):
    assert at_most("9" * length, most) is None
    assert at_most("0" * length + "5", most) == (5 if most >= 5 else None)


# --- the synthesis prompt ----------------------------------------------------------------------

PROPOSALS = st.lists(
    st.lists(
        st.one_of(
            st.characters(exclude_categories=["Cs"]),
            st.sampled_from(["\n", "Responses from models:", "\n1. ", "2. ", "<response", "</"]),
        ),
        max_size=20,
    ).map("".join),
    min_size=1,
    max_size=6,
)
"""Proposals in any Unicode, including what looks like the prompt's own heading and numbering."""


@pytest.mark.parametrize("system", [None, "Be brief."])
@given(proposals=PROPOSALS)
def test_each_proposal_appears_verbatim_and_in_order_numbered_from_one(system, proposals):
    conversation = (
        [HumanMessage("q")] if system is None else [SystemMessage(system), HumanMessage("q")]
    )
    out = inject_references(conversation, proposals)
    assert out[1:] == conversation[1:] if system else out[1:] == conversation
    block = "".join(f"\n{i}. {text}" for i, text in enumerate(proposals, start=1))
    head = "" if system is None else f"{system}\n\n"
    assert out[0].content == head + AGGREGATE_AND_SYNTHESIZE_PROMPT + block


@given(proposals=PROPOSALS)
def test_a_fenced_proposal_keeps_its_text_and_cannot_close_its_slot(proposals):
    out = inject_references([HumanMessage("q")], proposals, reference_format="fenced")
    content = out[0].content
    assert content.startswith(AGGREGATE_AND_SYNTHESIZE_PROMPT)
    assert len(SLOT_CLOSE.findall(content)) == len(proposals)
    position = 0
    for i, text in enumerate(proposals, start=1):
        kept = neutralize_markers(text)
        if "<" not in unicodedata.normalize("NFKC", text):
            assert kept == text
        found = content.find(f'<response id="{i}" tag=', position)
        assert found >= position
        position = content.index(f">\n{kept}\n</response tag=", found)


# --- config documents ------------------------------------------------------------------------

_SETTINGS = [
    "preset",
    "variant",
    "proposers",
    "aggregator",
    "layers",
    "synthesis_prompt",
    "reference_order",
    "shuffle_seed",
    "seq",
    "reference_format",
    "selection",
    "aggregator_fallbacks",
    "on_aggregator_failure",
    "retry",
    "call_timeout_s",
    "layer_deadline_s",
    "min_proposers",
    "aggregation",
    "name",
    "budget",
    "model",
    "samples",
    "temperature",
    "max_tokens",
    "window_size",
    "base_url",
]
SPECS = st.lists(
    st.one_of(
        st.sampled_from(["@", "http://", "HTTPS://", ":", "openai", "local", "/v1", "?key=", "#"]),
        st.sampled_from(["[", "]", "%", "moa", "qwen2.5-0.5b", "localhost", ":8080", " ", "\t"]),
        st.characters(),
    ),
    max_size=12,
).map("".join)
"""Model spec strings: ``provider:model``, ``model@url`` and what is neither."""
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.sampled_from(["", "moa", "local-moa", "fenced", "paper", "vote", "self-moa"]),
    SPECS,
)
DOCUMENTS = st.dictionaries(
    st.one_of(st.sampled_from(_SETTINGS), st.text(max_size=8), st.integers(0, 2)),
    st.recursive(
        _SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(
                st.one_of(st.sampled_from(_SETTINGS), st.text(max_size=8)), inner, max_size=4
            ),
        ),
        max_leaves=12,
    ),
    max_size=5,
)
"""Settings documents: the real setting names and others (a number too), holding any JSON-like
values."""


def _loads_or_says_why(source: object) -> None:
    try:
        load_config(source)  # type: ignore[arg-type]
    except MoAConfigError as exc:
        _assert_one_line(exc)


def _assert_one_line(refusal: MoAConfigError) -> None:
    message = str(refusal)
    assert message and "Traceback" not in message, message
    # one line, and nothing a terminal acts on (a new line, an escape sequence)
    assert not any(unicodedata.category(char) == "Cc" for char in message), message


@given(DOCUMENTS)
@example({"\n": None})  # a key's new line was written into the one-line message
@example({"proposers": ["m@http://h/v1"], "aggregator": {"model": "x", "\x1b[2J": 1}})
def test_any_settings_mapping_loads_or_is_refused_in_one_line(document):
    _loads_or_says_why(document)


@given(DOCUMENTS, st.sampled_from([".json", ".yaml"]))
@example({"\n": None}, ".json")
def test_any_settings_file_loads_or_is_refused_in_one_line(document, suffix):
    text = json.dumps(document) if suffix == ".json" else yaml.safe_dump(document)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"moa{suffix}"
        path.write_text(text, encoding="utf-8")
        _loads_or_says_why(path)


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=60))
def test_any_yaml_text_loads_or_is_refused_in_one_line(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "moa.yaml"
        path.write_text(text, encoding="utf-8")
        _loads_or_says_why(path)


@given(SPECS)
def test_any_model_spec_is_taken_or_refused_in_one_line(spec):
    _loads_or_says_why({"proposers": [spec, spec], "aggregator": spec, "layers": 2})


_CONTEXT_SETTINGS = ["samples", "temperature", "max_tokens", "aggregator_max_tokens"]


@given(
    st.dictionaries(
        st.one_of(st.sampled_from(_SETTINGS + _CONTEXT_SETTINGS), st.text(max_size=8)),
        DOCUMENTS.flatmap(lambda document: st.sampled_from([*document.values(), None])),
        max_size=4,
    )
)
@example({"\x1b[2J": 1})  # a client's key reached the terminal as an escape sequence
def test_any_run_context_applies_or_is_refused_in_one_line(context):
    try:
        apply_context(load_config("moa"), MoAContext.coerce(context))
    except MoAConfigError as exc:
        _assert_one_line(exc)


_QUESTION = "Which one?\nA) red\nB) green\nC) blue\nD) 42"


@given(ANSWERS, st.sampled_from("ABCD"), st.sampled_from("ABCD"))
def test_a_multiple_choice_answer_is_scored_by_the_letter_it_states(noise, right, stated):
    item = EvalItem(id="q", turns=[_QUESTION], expected=[right], category="mcq")
    scores = scorers.score(item, noise)  # any text is scored, never raised on
    assert scores["correct"] in (True, False)
    assert chosen_option(f"The answer is {stated}.") == stated
    if "boxed" in noise:  # a box is the conclusion, wherever it stands
        return
    assert scorers.score(item, f"{noise}\n\nThe answer is {stated}.")["correct"] == (
        stated == right
    ) or hedges(noise)
