"""Properties of the code that reads untrusted text: cuts, answer readers, the synthesis prompt.

Hypothesis draws the inputs (any Unicode, digit strings of any length); the rules of its runs
(few examples, no deadline, no database, fixed on CI) are set in tests/conftest.py. An input
that once broke a property stays as an explicit ``@example``.
"""

import unicodedata

from hypothesis import example, given
from hypothesis import strategies as st

from langgraph_moa._redact import clip
from langgraph_moa._unicode import beginning, boundary, ending

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


@given(DRAWN, st.integers(-2, 30))
@example("x\u200d\U0001f1eb\U0001f1f7", 3)  # a joiner before a flag: the cut stopped after it
def test_a_boundary_is_at_or_before_the_index_and_splits_nothing(text, index):
    cut = boundary(text, index)
    assert 0 <= cut <= max(0, min(index, len(text)))
    assert not _splits(text, cut), (text, index, cut)


@given(DRAWN, st.integers(0, 30))
def test_beginning_is_a_prefix_within_the_count_ending_where_no_character_splits(text, count):
    kept = beginning(text, count)
    assert text.startswith(kept) and len(kept) <= count
    assert not _splits(text, len(kept))


@given(DRAWN, st.integers(0, 30))
def test_ending_is_a_suffix_within_the_count_starting_where_no_character_splits(text, count):
    kept = ending(text, count)
    assert text.endswith(kept) and len(kept) <= count
    assert not _splits(text, len(text) - len(kept))


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
