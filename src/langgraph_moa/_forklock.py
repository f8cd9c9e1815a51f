"""A lock that a forked child gets unlocked.

A child forked while another thread of the parent held a lock (a module's, or that of an
object built before the fork: an app preloaded by ``gunicorn --preload``) inherits it taken,
with no thread of its own to release it: its first use of what the lock guards waits for
ever (a worker process of a pool, `multiprocessing` under the fork start method). Each
`ForkSafeLock` is replaced in the child by a new one, so that modules and classes need no
fork handler of their own for a plain lock; where a module keeps more state a fork leaves
stale (a thread, a queue), its own handler resets that too.
"""

from __future__ import annotations

import os
import threading
import weakref
from operator import attrgetter

_LOCKS: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


class ForkSafeLock:
    """A `threading.Lock` (``with``, `acquire`, `release`) that a forked child gets unlocked.

    What it guards is the child's as it was at the fork: a module that holds it only across
    changes made in one step leaves nothing half-made to the child.
    """

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        """Create the lock, unlocked, and renew it in every child forked from now on."""
        self._lock = threading.Lock()
        _LOCKS.add(self)

    # The inner lock's own methods, fetched by C code (`property` over `attrgetter`): taken
    # on every model call (the run ledger, the caches), the lock costs no Python call more
    # than a plain one would.
    acquire = property(attrgetter("_lock.acquire"), doc="`threading.Lock.acquire`.")
    release = property(attrgetter("_lock.release"), doc="`threading.Lock.release`.")
    __enter__ = property(attrgetter("_lock.__enter__"))
    __exit__ = property(attrgetter("_lock.__exit__"))


def _renew_after_fork() -> None:
    for lock in list(_LOCKS):
        lock._lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_after_fork)
