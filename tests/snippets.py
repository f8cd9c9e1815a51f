"""The ```python blocks of the README and docs/*.md, read as the tests run them.

Kept apart from the tests so that the unit and the integration modules read the same blocks
the same way, and a block added to a page is seen by both (each test module checks that it
runs, or names the reason it cannot, every block this finds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[1]
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>\S*)")
_HEADING = re.compile(r"^(?P<hashes>#{1,6}) ")
PYTHON = {"python", "py", "python3"}  # the names GitHub shows as Python, in any case


@dataclass(frozen=True)
class Snippet:
    """One block: its page, the heading above it, its first line number and its code."""

    page: str
    section: tuple[str, ...]  # the headings above it, outermost first
    line: int
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _blocks(page: Path) -> list[Snippet]:
    """The page's python blocks; a `#` line inside any fenced block is no heading."""
    found: list[Snippet] = []
    section: tuple[str, ...] = ()
    fence, indent, first, body = None, "", 0, []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        match = _FENCE.match(line)
        if fence is None and match:
            fence, indent, first, body = match.group("lang"), match.group("indent"), number, []
        elif fence is not None and match and match.group("lang") == "":
            if fence.lower() in PYTHON:  # a block inside a list item is indented; its code is not
                code = "".join(part.removeprefix(indent) + "\n" for part in body)
                name = page.relative_to(ROOT).as_posix()
                found.append(Snippet(page=name, section=section, line=first, code=code))
            fence = None
        elif fence is not None:
            body.append(line)
        elif heading := _HEADING.match(line):
            level = len(heading.group("hashes"))
            section = (*section[: level - 1], line)
    return found


def snippets() -> list[Snippet]:
    """Every ```python block of the pages, in page order."""
    return [snippet for page in PAGES for snippet in _blocks(page)]


def with_earlier_in_section(snippet: Snippet) -> str:
    """The block joined after the blocks above it under the same heading of its page.

    A block that continues another (uses a name it defines) runs as the reader runs it:
    after the ones above it in its section, never after another section's.
    """
    before = [
        s
        for s in snippets()
        if s.page == snippet.page and s.section == snippet.section and s.line <= snippet.line
    ]
    return "\n".join(s.code for s in before)
