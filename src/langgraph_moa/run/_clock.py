"""The wall clock that layer deadlines are measured on.

A layer's deadline is a point in wall time written into the `Send` payload, so a run resumed
in another process keeps it. Everything that reads that time goes through `now`, one seam
that tests replace to move time forward without waiting for it.

Within one process that time moves with the monotonic clock: the system clock set forward
(an NTP step, ``date -s``) dropped every layer's stragglers at once, and set back held a
layer an hour past its deadline. The process reads the wall time once, when this module is
imported, and counts on from it (`_ticks`).
"""

from __future__ import annotations

import time


def _ticks() -> float:
    """Return seconds on a clock that no one sets and that counts while the machine sleeps.

    That is Linux's boot-time clock: its monotonic clock stops during a suspend, so a
    process counted on by it fell behind the wall time by every suspend since it started,
    and a run it fanned out afterwards, resumed in another process, found its layer
    deadline long passed there. Elsewhere, the monotonic clock.
    """
    return time.monotonic() if _BOOTTIME is None else time.clock_gettime(_BOOTTIME)


_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)
_WALL_AT_START = time.time()
_TICKS_AT_START = _ticks()


def now() -> float:
    """Return the wall time in seconds since the epoch, as this process counts it.

    The wall time at import plus the time since (`_ticks`): a step of the system clock
    while the process runs moves no deadline.
    """
    return _WALL_AT_START + (_ticks() - _TICKS_AT_START)


class Held:
    """The wall time a model call spent held by its reader (`_calls.off_the_clock`).

    A layer's deadline does not count it (`_calls.StopCheck.held`): a served stream's slow
    reader holds every model at its next token, and a call held past its layer's deadline
    was dropped as a straggler, so how fast a client read changed which proposals its answer
    used. Waits may overlap (several of the call's tokens); the time counts once.
    """

    def __init__(self) -> None:
        self.waits = 0
        self.total = 0.0
        self.since = 0.0

    def start(self) -> None:
        """Note that a wait began."""
        if not self.waits:
            self.since = now()
        self.waits += 1

    def stop(self) -> None:
        """Note that a wait ended."""
        self.waits -= 1
        if not self.waits:
            self.total += now() - self.since

    def seconds(self) -> float:
        """Return the time held so far, a wait still going on included."""
        return self.total + (now() - self.since if self.waits else 0.0)
