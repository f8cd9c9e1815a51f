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

from typing import Any


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
