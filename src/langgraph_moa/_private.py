"""Files that hold users' text are created readable and writable by their owner alone.

The page's run history, an evaluation's rows and call cache and a chat's ``/save`` hold
questions, answers and every model's proposals, which may be personal data. Created with
the process's umask (``0644`` on most systems), any other account on the machine could read
them. A file that exists already keeps the mode its owner gave it.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_MODE = 0o600
"""The mode of a new file that holds users' text: its owner may read and write it."""
PRIVATE_FOLDER = 0o700
"""The mode of a new folder of such files (an evaluation's output): its owner's alone."""


def create_private(path: str | Path) -> None:
    """Create `path` empty with `PRIVATE_MODE` unless it exists (then it is left as it is).

    For a file another library opens afterwards (SQLite, which gives its journal and WAL
    files the database's mode).

    Raises:
        OSError: the file cannot be created (its folder is missing or not writable).
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:
        pass


def write_private(path: str | Path, data: bytes) -> None:
    """Write `data` to `path`, replacing its content; a new file gets `PRIVATE_MODE`.

    Raises:
        OSError: the file cannot be written.
    """
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE), "wb") as file:
        file.write(data)
