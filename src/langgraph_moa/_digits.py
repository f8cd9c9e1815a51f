"""A number written by someone else, read only when it is small enough to matter.

``int()`` refuses a string of over 4,300 digits (ValueError), so a client's header, an
environment variable or a model's reply of that many digits failed where it was read. Such
a number is measured by its length first: one longer than the largest value taken is
refused unread.
"""

from __future__ import annotations


def at_most(digits: str | bytes, most: int) -> int | None:
    """Return the value of the decimal `digits` when it is at most `most`, else None.

    `digits`: decimal digits only (the caller has checked them: ``isdecimal()`` for a
    text, ``isdigit()`` for bytes), leading zeros allowed; the empty string is 0.
    """
    if isinstance(digits, bytes):
        digits = digits.decode("ascii")  # a header's: isdigit() took ASCII digits only
    significant = digits.lstrip("0")
    if len(significant) > len(str(most)):
        return None
    value = int(significant) if significant else 0
    return value if value <= most else None
