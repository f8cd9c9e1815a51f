"""Naming the choice a misspelt name was meant to be.

A typo in a setting, a preset, a variant or a label is the most common config error; an
error that lists every choice leaves the reader to find the one meant, so the closest is
named instead when there is one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: object, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """Return "did you mean 'x'?" for the choice closest to `name`, or None if none is close.

    `cutoff` is difflib's similarity floor: a stricter one where a name that is not a typo
    is also likely (a provider's own call option beside this package's few names).
    """
    close = closest(name, choices, cutoff)
    return f"did you mean {close!r}?" if close else None


def closest(name: object, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """Return the choice closest to `name` (difflib's similarity of at least `cutoff`)."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None
