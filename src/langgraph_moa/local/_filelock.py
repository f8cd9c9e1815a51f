"""One process at a time over a file of the cache: the OS's lock, waited for a bounded while.

The catalog assembles and verifies a model's file under a lock, and the runtime keeps a
failed server's log and trims the older ones under another. The lock is ``flock``'s,
released when its holder exits, even killed; a holder that is alive but stuck (stopped
with Ctrl-Z, hung on a dead network mount) would block a plain wait forever, so the wait
is a poll with a deadline and the caller decides what a lock not had means. On Windows
(no ``fcntl``) `file_lock` takes ``msvcrt.locking``'s lock on the file's first byte instead,
also released when its holder exits; `hold_for_life` takes none there (see `held`).
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

fcntl: Any = None
with contextlib.suppress(ImportError):  # not on Windows
    import fcntl

msvcrt: Any = None
with contextlib.suppress(ImportError):  # Windows only
    import msvcrt

_TAKEN = (errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK))
"""What ``msvcrt.locking`` raises for a region another handle holds."""

POLL_S = 0.05
"""How often a waiter tries the lock again."""


@contextmanager
def file_lock(path: Path, wait_s: float) -> Iterator[bool]:
    """Hold the OS's lock on `path` (created if missing); yield whether it is held.

    False: another process held it for all of `wait_s` seconds. True also where there is
    no such lock: neither ``fcntl`` nor ``msvcrt``, or a file system that refuses locks
    (``ENOLCK`` on an NFS mount without its lock daemon), as before the lock existed. An
    `OSError` opening the file is the caller's to handle.
    """
    with path.open("ab") as handle:  # bytes: nothing is read or written, no encoding
        held = _acquired(handle, wait_s)
        try:
            yield held
        finally:
            if held and fcntl is None and msvcrt is not None:
                _unlock_first_byte(handle)


def _acquired(handle: Any, wait_s: float) -> bool:
    """Take the exclusive lock on `handle`, trying until `wait_s` seconds have passed."""
    if fcntl is None and msvcrt is None:
        return True
    deadline = time.monotonic() + wait_s
    while True:
        try:
            _try_lock(handle)
            return True
        except BlockingIOError:  # another holds it
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(POLL_S, left))
        except OSError:
            return True  # no locks on this file system


def _try_lock(handle: Any) -> None:
    """Lock `handle` now. Raises BlockingIOError: another holds it; OSError: no locks here."""
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    # Windows locks byte ranges, from the handle's position: every holder takes byte 0
    # (an appending handle starts at the end, which moves). The lock files stay empty, so
    # the lock, which Windows enforces on reads and writes, blocks nothing else.
    handle.seek(0)
    try:
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError as exc:
        if exc.errno in _TAKEN:
            raise BlockingIOError(exc.errno, exc.strerror) from None
        raise


def _unlock_first_byte(handle: Any) -> None:
    """Let go of `_try_lock`'s Windows lock before the file closes, as Windows asks."""
    handle.seek(0)
    with contextlib.suppress(OSError):
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)


_OWN: set[str] = set()
"""The files this process holds (`hold_for_life`), never asked of the lock: on NFS, Linux
emulates ``flock`` with per-process locks, so asking grants this process its own file's lock
(it is held, the answer said not) and closing the asking handle dropped the lock it held."""


def hold_for_life(handle: Any) -> None:
    """Lock the open file `handle` for as long as it, or a process that inherited it, lives.

    A server's log is its stdout: the lock stays while the server or its parent runs, and
    goes with the last of them, killed or not (see `held`). No lock without ``fcntl``, or
    where the file system refuses locks. None with ``msvcrt`` either: Windows enforces it on
    writes, so the server, another process, could not write its log past a locked byte, and
    it ends with its holder only (a server outliving its parent would lose it).
    """
    _OWN.add(str(handle.name))
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def let_go(handle: Any) -> None:
    """Close `handle` of `hold_for_life`, and forget it: a long-running process holds many.

    Its lock goes with it, or stays with a process that inherited the file (a live server).
    """
    handle.close()
    _OWN.discard(str(handle.name))


def own(path: str | Path) -> None:
    """Count `path` as this process's from now on, with no handle held: `held` says so.

    A failed server's log that could not be renamed keeps a running server's kind of name:
    let go, this process's own sweep of dead servers' logs would delete it while a warning
    still names it.
    """
    _OWN.add(str(path))


def held(path: Path) -> bool:
    """Tell whether a live process holds the lock of `hold_for_life` on `path`.

    True also where it cannot be told (no ``fcntl``, as on Windows, a file system without
    locks, a file that cannot be opened): the caller must then leave the file alone.
    """
    if fcntl is None or str(path) in _OWN:
        return True
    try:
        with path.open("rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: another holds it
        return True
    return False
