"""A reasoning model's inline thinking, told apart from its answer.

Reasoning models served without a reasoning parser (Qwen3 and DeepSeek-R1 on llama.cpp
without ``--reasoning-format``, many vLLM setups) write their thinking into the answer's
text, as ``<think> ... </think>`` before the answer. The Mixture-of-Agents references are
the proposers' *responses*: their thinking, passed on, would fill the aggregator's context
with drafts and wrong turns, and an eval scorer would read a number from a draft. A
server's separate ``reasoning_content`` field never reaches the text: langchain-openai does
not read it.

Only a block that opens the text counts (what these models write); a ``<think>`` tag later
in an answer is the answer's own text (a reply about the tag itself). A chat template that
opens the block in the prompt (DeepSeek-R1's distills, QwQ) leaves the text a lone closing
tag: what comes before it is thinking too, where the text holds no opening tag at all and
the tag starts or ends its line outside a code block (`_LONE_CLOSE`). A
stream cannot tell such thinking until its tag comes (`ThinkingCut` passes it), nor can
anything tell it where ``max_tokens`` cut the model before it closed the block.
"""

from __future__ import annotations

import re
from typing import NamedTuple

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# A closing tag that ends a block the prompt opened starts or ends its line, as these models
# write it ("...\n</think>\n\n12"); one inside a line ("close it with </think> and",
# "`</think>`") or a code block is a reply about the tag (it split such a reply mid-sentence).
_LONE_CLOSE = re.compile(
    r"(?:^|(?<=\n))[ \t]*+" + THINK_CLOSE + "|" + THINK_CLOSE + r"(?=[ \t]*+(?:\n|$))"
)
_FENCE = "```"


class Thinking(NamedTuple):
    """A text split into its leading thinking block and its answer."""

    thinking: str | None
    """The thinking, without its tags; None where the text opens with no think block."""
    answer: str
    """The text after the block, its leading whitespace dropped; empty where the block never
    closed (``max_tokens`` cut the model while it was thinking)."""
    closed: bool
    """False where the block never closed: there is no answer, only thinking."""


def split_thinking(text: str) -> Thinking:
    """Split `text` into the thinking block it opens with, if any, and the answer after it.

    A text with no opening tag and a closing one that starts or ends its line, outside a
    code block, opened its block in the prompt: what comes before that tag is its thinking.
    """
    head = text.lstrip()
    if not head.startswith(THINK_OPEN):
        if THINK_OPEN in text or THINK_CLOSE not in text:  # `in` first: most texts
            return Thinking(None, text, True)
        fences = counted = 0  # the fences before each tag, counted once (linear time)
        for tag in _LONE_CLOSE.finditer(text):
            fences, counted = fences + text.count(_FENCE, counted, tag.start()), tag.start()
            if fences % 2 == 0:
                return Thinking(text[: tag.start()].strip(), text[tag.end() :].lstrip(), True)
        return Thinking(None, text, True)
    inside = head[len(THINK_OPEN) :]
    end = inside.find(THINK_CLOSE)
    if end < 0:
        return Thinking(inside.strip(), "", False)
    return Thinking(inside[:end].strip(), inside[end + len(THINK_CLOSE) :].lstrip(), True)


class ThinkingCut:
    """Drops the leading thinking block from a streamed text, piece by piece.

    Gives out the same text as `split_thinking`'s answer: text that may still be the
    start of ``<think>`` is held, the block is dropped up to its closing tag, and the
    whitespace after the tag with it. Text of a stream with no such block passes as it
    comes (its first piece held only while it could still open one).

    A block that never closed is held whole (`block`): where the model ended the text
    itself (`finish`'s `stopped`), the text is the answer, its ``<think>`` its own, as a
    whole response's is (`run._accounting.without_thinking`).
    """

    def __init__(self) -> None:
        self.pending = ""
        # The text as it came, while it is or may be a block not closed: its pieces, joined
        # only where read (a string added to per piece copies it all again each time).
        self.block: list[str] = []
        self.state = "start"  # then "thinking", "after" (the block closed) or "answer"

    def take(self, text: str) -> str:
        """Return what of `text` belongs to the answer and can go out now."""
        if self.state == "answer" or not text:
            return text
        self.pending += text
        if self.state != "after":
            self.block.append(text)
        if self.state == "start":
            head = self.pending.lstrip()
            if THINK_OPEN.startswith(head) and head != THINK_OPEN:
                self.pending = head  # `block` keeps the whitespace dropped
                return ""  # empty so far, or a part of the tag: it may still open a block
            if not head.startswith(THINK_OPEN):
                self.state = "answer"
                out, self.pending, self.block = "".join(self.block), "", []
                return out
            self.state, self.pending = "thinking", head[len(THINK_OPEN) :]
        if self.state == "thinking":
            end = self.pending.find(THINK_CLOSE)
            if end < 0:  # keep only what may be the closing tag's start
                self.pending = self.pending[-(len(THINK_CLOSE) - 1) :]
                return ""
            self.state, self.pending = "after", self.pending[end + len(THINK_CLOSE) :]
            self.block = []
        out = self.pending.lstrip()
        if out:
            self.state = "answer"
        self.pending = ""  # whitespace only, where nothing went out: dropped with the tag
        return out

    def finish(self, stopped: bool = False) -> str:
        """Return held text the stream's end releases: a short answer that was held.

        Where `stopped` (the provider said the model ended the text itself), a block that
        never closed goes out whole too; cut off, such a block is no answer.
        """
        if self.state == "start" or (stopped and self.state == "thinking"):
            out = "".join(self.block)
        else:
            out = ""
        self.pending, self.block = "", []
        return out
