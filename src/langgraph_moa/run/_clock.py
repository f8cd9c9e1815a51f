"""The wall clock that layer deadlines are measured on.

A layer's deadline is a point in wall time written into the `Send` payload, so a run resumed
in another process keeps it. Everything that reads that time goes through `now`, one seam
that tests replace to move time forward without waiting for it.
"""

from __future__ import annotations

import time


def now() -> float:
    """Return the current wall time in seconds since the epoch (`time.time`)."""
    return time.time()
