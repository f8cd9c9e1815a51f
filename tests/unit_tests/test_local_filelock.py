"""The cache's file lock on Windows (``msvcrt.locking``), through a stand-in for ``msvcrt``.

Only Linux runs these tests; the stand-in behaves as the C runtime's ``_locking`` is documented
to: a region held through another handle refuses ``LK_NBLCK`` with ``EACCES``.
"""

import errno
import os

import pytest

from langgraph_moa.local import _filelock


class FakeMsvcrt:
    """``msvcrt.locking`` over byte regions, per open file, as Windows keeps them."""

    LK_UNLCK, LK_LOCK, LK_NBLCK, LK_RLCK, LK_NBRLCK = range(5)

    def __init__(self, refuse: OSError | None = None) -> None:
        self.held: dict[tuple[int, int], int] = {}  # (file, first byte) -> holding fd
        self.refuse = refuse

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        assert nbytes >= 1
        if self.refuse is not None:
            raise self.refuse
        region = (os.fstat(fd).st_ino, os.lseek(fd, 0, os.SEEK_CUR))
        if mode == self.LK_UNLCK:
            assert self.held.pop(region) == fd, "unlocked a region this handle did not hold"
        elif mode == self.LK_NBLCK:
            if region in self.held:
                raise PermissionError(errno.EACCES, "Permission denied")
            self.held[region] = fd
        else:
            raise AssertionError(f"mode {mode} would block or share the lock")


@pytest.fixture
def windows(monkeypatch):
    msvcrt = FakeMsvcrt()
    monkeypatch.setattr(_filelock, "fcntl", None)
    monkeypatch.setattr(_filelock, "msvcrt", msvcrt, raising=False)
    return msvcrt


def test_on_windows_a_lock_held_by_another_is_waited_for_then_refused(windows, tmp_path):
    # Without fcntl there was no lock at all: two processes preparing one model both held
    # it and wrote the same ".partial" file.
    lock = tmp_path / "model.lock"
    with _filelock.file_lock(lock, 0.0) as first:
        assert first
        with _filelock.file_lock(lock, 0.0) as second:
            assert not second
    with _filelock.file_lock(lock, 0.0) as again:  # the first let go of it
        assert again
    assert windows.held == {}


def test_on_windows_a_file_with_content_is_locked_at_the_same_byte(windows, tmp_path):
    # The lock file is opened to append: its handle starts at its end, which moves as
    # anything is written, so two holders would lock different bytes.
    lock = tmp_path / "model.lock"
    with _filelock.file_lock(lock, 0.0) as first:
        assert first
        lock.write_bytes(b"written by something else")
        with _filelock.file_lock(lock, 0.0) as second:
            assert not second


def test_on_windows_a_file_system_without_locks_goes_on_unlocked(monkeypatch, tmp_path):
    monkeypatch.setattr(_filelock, "fcntl", None)
    monkeypatch.setattr(
        _filelock, "msvcrt", FakeMsvcrt(OSError(errno.EINVAL, "Invalid")), raising=False
    )
    with _filelock.file_lock(tmp_path / "model.lock", 0.0) as held:
        assert held
