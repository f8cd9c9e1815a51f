r"""Untrusted text made safe to show on a terminal: its control characters made visible.

What the `moa` command shows comes from others: a model's answer and proposals, a provider's
error message, a model name a server reports, a dataset's items. Written as is, an ESC in
it is a terminal escape sequence that acts on the user's terminal (clears the screen, sets
its title, hides a link behind other text, or, on some terminals, writes to the clipboard);
a lone carriage return, or a bidi override (U+202E), makes a line show other than it reads.
`for_terminal` spells each such character out (``\x1b``, ``\u202e``), so nothing is lost
and nothing acts. Line breaks and tabs stay; a Windows line end (CRLF) is a line break.

Only what is shown on a terminal or in a log goes through here: machine output (--json, the
API's responses, files) keeps the text exactly as it came. This module imports nothing of
the package, so every layer may use it.
"""

from __future__ import annotations

import re

_BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
"""Embeddings, overrides and isolates: they reorder what follows them on the line. The marks
(U+200E, U+200F) only nudge neutral characters and stay."""
_UNSAFE = re.compile(f"\r\n|[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI_CONTROLS}]")
"""C0 controls but the line feed and tab, DEL, C1 controls (U+009B is a CSI of its own), the
bidi controls; and CRLF, matched first so that its CR is not spelled out."""


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\r\n":
        return "\n"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str) -> str:
    """Return `text` with every character that would act on a terminal spelled out."""
    return _UNSAFE.sub(_visible, text)
