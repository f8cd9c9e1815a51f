"""Text that can be written out: no lone UTF-16 surrogates in what a model answered.

A JSON reply may spell a lone surrogate (a backslash-u escape of D800 to DFFF), and JSON
parsers, Python's included, read it into a `str` that no UTF-8 encoder accepts: a server
that cuts an emoji's surrogate pair between two stream chunks sends two. Such a text made
the run fail where it was encoded (the prompt's hash, the message model, the server's
reply), losing every answer already computed. Answers are made well-formed where a call's
text is recorded and where the final answer is streamed: a pair split across chunks is
joined again, a lone half becomes U+FFFD.
"""

from __future__ import annotations

import unicodedata
from typing import Any

_ZWJ = "\u200d"
_REGIONAL = ("\U0001f1e6", "\U0001f1ff")
"""Regional indicators: a flag is two of them, so a cut between a pair's two is another flag."""


def well_formed(text: str) -> str:
    """Return `text` with surrogate pairs joined and every lone surrogate as U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # rare, so the re-coding is paid only then
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def well_formed_content(content: Any) -> Any:
    """Return a message's content with its text well-formed: a string, or each text block.

    An answer in content blocks (a list of strings and ``{"type": "text", ...}`` dicts, as
    Anthropic's models write) keeps its blocks; a pair is joined within a block, where a
    streamed block's chunks were concatenated.
    """
    if isinstance(content, str):
        return well_formed(content)
    if not isinstance(content, list):
        return content
    return [_well_formed_block(block) for block in content]


def _well_formed_block(block: Any) -> Any:
    if isinstance(block, str):
        return well_formed(block)
    if isinstance(block, dict) and isinstance(text := block.get("text"), str):
        return {**block, "text": well_formed(text)}
    return block


def boundary(text: str, index: int) -> int:
    """Return where to cut `text` at `index` or before it, between whole characters as seen.

    A cut by characters may fall inside what is drawn as one character: before a combining
    mark ("e" and its accent), a variation selector, a skin tone or a decomposed Korean
    syllable's vowel or final, on either side of a zero-width joiner (an emoji family),
    between a flag's two regional indicators or a surrogate pair's halves. The cut moves
    back to where that sequence begins: a clipped label or preview ends in whole
    characters, never "cafe" for "café" or a lone joiner.
    """
    size = len(text)
    if index >= size:
        return size
    if index <= 0:
        return 0
    if text[index - 1 : index + 1].isascii():  # two ASCII characters never join: most cuts
        return index
    while 0 < index < size and _inside(text, index):
        index -= 1
    return index


def beginning(text: str, count: int) -> str:
    """Return the first `count` characters of `text` or fewer, ending between whole ones.

    A client's or a model's text shown short (a log field, an error's quote) is cut here,
    never by ``text[:count]``, which can end it in half a flag or an emoji family's joiner.
    """
    return text[: boundary(text, count)]


def ending(text: str, count: int) -> str:
    """Return the last `count` characters of `text` or fewer, starting between whole ones.

    The cut at `count` from the end moves forward past what `boundary` would not cut (a
    mark, a joiner, a flag's second half): a preview that shows where a stream's kept end
    begins starts on a whole character, and every flag after it keeps its own pair.
    """
    start = max(0, len(text) - count)
    # not `boundary` at each step: it walks back to where a joined sequence begins, the
    # text's start in flags joined by joiners, where every cut splits a character
    while 0 < start < len(text) and _inside(text, start):
        start += 1
    return text[start:]


def _inside(text: str, index: int) -> bool:
    """Say whether a cut at `index` (0 < index < len) falls inside one character as drawn.

    Only a flag looks back further than one character: a cut between two regional
    indicators splits one where an odd number of them come before it.
    """
    if _joined(text[index - 1], text[index]):
        return True
    if not (_regional(text[index]) and _regional(text[index - 1])):
        return False
    start = index - 1
    while start > 0 and _regional(text[start - 1]):
        start -= 1
    return (index - start) % 2 == 1


def _joined(before: str, after: str) -> bool:
    """Say whether `after` belongs to the character drawn with `before`."""
    return (
        before == _ZWJ
        or after == _ZWJ
        or unicodedata.category(after) in ("Mn", "Mc", "Me")  # marks, variation selectors
        or "\U0001f3fb" <= after <= "\U0001f3ff"  # skin tones
        or "\U000e0020" <= after <= "\U000e007f"  # tags (the flags of England, Scotland)
        or "\u1160" <= after <= "\u11ff"  # a Korean syllable's vowel or final, decomposed
        or "\ud7b0" <= after <= "\ud7ff"  # (NFD), and their extensions
        or ("\ud800" <= before <= "\udbff" and "\udc00" <= after <= "\udfff")
    )


def _regional(char: str) -> bool:
    return _REGIONAL[0] <= char <= _REGIONAL[1]
