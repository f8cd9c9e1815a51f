"""Past runs of the web page, kept in SQLite on disk so that they can be reopened and compared.

One row per run: the question, the served model (preset) it ran on, its status, the answer,
and its events compacted (each call's tokens joined into one event), which is all the page
needs to draw the run again. Only the newest `HISTORY_RUNS` runs are kept (`History`'s
``keep``; ``--history-runs`` or ``$MOA_HISTORY_RUNS``): a server that runs for weeks would
otherwise grow the file with every run; ``--history-runs 0`` keeps none (no file is
written), and ``DELETE /v1/moa/runs/{id}`` (`History.delete`) deletes one run. A new file is
readable by its owner alone (`_private`): it holds users' questions and every model's text.
The file is ``$MOA_HISTORY`` if set, else ``history.sqlite3``
in the package's cache folder (`langgraph_moa.local.catalog.cache_root`: ``$LANGGRAPH_MOA_CACHE``,
else the OS's cache folder, ``~/.cache/langgraph-moa`` on Linux or where an earlier version
kept it).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph_moa._forklock import ForkSafeLock
from langgraph_moa._json import dumps
from langgraph_moa._private import create_private
from langgraph_moa._unicode import beginning
from langgraph_moa.errors import LocalModelError, MoAError
from langgraph_moa.graph.streaming import PART_END_FIELDS
from langgraph_moa.local.catalog import NO_HOME, cache_root


def default_history_path() -> Path:
    """Return where the page's history lives unless the operator says otherwise.

    Raises:
        HistoryError: no cache folder is known (no home), and ``MOA_HISTORY`` names no file.
    """
    if env := os.environ.get("MOA_HISTORY"):
        return Path(env)
    try:
        return cache_root() / "history.sqlite3"
    except LocalModelError:
        raise HistoryError(
            f"The page's history has no place: {NO_HOME}; set MOA_HISTORY (or moa ui "
            "--history) to a file, or LANGGRAPH_MOA_CACHE to a writable folder."
        ) from None


class Compactor:
    """Keeps a run's events with each call's consecutive tokens joined into one event.

    Storing every token would make a long run's row megabytes, and holding them all while
    the run goes on would grow with every token; the page only needs each call's text, in
    the order calls started, finished and failed. A call's restart (a retry) starts a new
    token event, as the page starts its text afresh, and so does each part of a chunk-wise
    answer (the page cuts each part's own thinking).

    A call's tokens are kept as parts and joined when `events` is read (the history saves a
    run once): joining its whole text on every token made a long answer's log quadratic.
    """

    def __init__(self) -> None:
        """Start with no events."""
        self._events: list[dict[str, Any]] = []
        self._open: dict[tuple[Any, ...], int] = {}
        self._parts: dict[int, list[str]] = {}  # a token event's texts not joined yet

    def add(self, event: dict[str, Any]) -> None:
        """Append one event, adding a token to its call's open token event."""
        key = (event.get("role"), event.get("layer"), event.get("proposer"), event.get("sample"))
        if event.get("event") == "token":
            at = self._open.get(key)
            if at is not None and self._events[at].get("part") == event.get("part"):
                if (parts := self._parts.get(at)) is None:
                    parts = self._parts[at] = [self._events[at]["text"]]
                parts.append(event["text"])
                # The part's end, which a replay's cut needs.
                self._events[at].update({f: event[f] for f in PART_END_FIELDS if f in event})
                return
            self._open[key] = len(self._events)
        elif event.get("event") == "started":
            self._open.pop(key, None)
        self._events.append(event)

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events so far, each call's tokens joined into its token event."""
        for at, parts in self._parts.items():
            self._events[at] = {**self._events[at], "text": "".join(parts)}
        self._parts.clear()
        return self._events


def compact(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return `events` with each call's consecutive tokens joined (see `Compactor`)."""
    compactor = Compactor()
    for event in events:
        compactor.add(event)
    return compactor.events


@dataclass
class RunRecord:
    """One run as the history keeps it."""

    id: str
    model: str
    question: str
    created: float = field(default_factory=time.time)
    status: str = "running"
    answer: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Return the fields the history list shows (no events)."""
        return {
            "id": self.id,
            "model": self.model,
            "question": self.question,
            "created": self.created,
            "status": self.status,
            "answer": beginning(self.answer, 200),  # no half an emoji
        }


HISTORY_FORMAT = 1
"""The format of a history file, kept in its SQLite ``user_version``: the ``runs`` table of
`History`, a run's events compacted JSON. Files written before the mark (user_version 0) are
this format. A change to the table or to what a row means takes the next number, so that a
version that cannot read a file says so instead of showing, or pruning, its runs."""

HISTORY_RUNS = 1000
"""Runs the history keeps by default; saving another deletes the one saved longest ago."""
MAX_HISTORY_RUNS = 1_000_000
"""The most runs an operator may keep (``--history-runs``): a run's row can be megabytes.
The fewest is 0, which keeps no history (`serving._server._open_history`)."""


class HistoryError(MoAError):
    """The history file cannot be opened or written."""


IN_MEMORY = ":memory:"
"""The path that means SQLite's in-memory database, as `sqlite3.connect` reads it: no file,
the runs gone when the history is closed (a test, an embedding that keeps nothing)."""


class History:
    """The runs table in one SQLite file (or in memory: `IN_MEMORY`); safe across threads."""

    def __init__(self, path: str | Path, keep: int = HISTORY_RUNS) -> None:
        """Open (or create) the history at `path`, creating its folder; keep `keep` runs.

        A `path` of ``":memory:"`` (`IN_MEMORY`) keeps the runs in memory, in no file.

        Raises:
            HistoryError: the file cannot be opened as a SQLite database, its format is
                neither `HISTORY_FORMAT` nor unmarked, or `keep` is below 1.
        """
        if keep < 1:
            raise HistoryError(f"The history must keep at least 1 run, not {keep}.")
        self.keep = keep
        self.path = Path(path)
        # Built before a fork (``gunicorn --preload`` builds `create_app`'s history), a plain
        # lock a parent thread held went to the worker taken, and its first run hung.
        self._lock = ForkSafeLock()
        self._unerased = False  # a deleted run's pages may be in the write-ahead log still
        in_memory = str(path) == IN_MEMORY
        db = None
        try:
            if not in_memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                create_private(self.path)  # SQLite gives its WAL and shm files the file's mode
            self._db = db = sqlite3.connect(self.path, check_same_thread=False)  # ":memory:" too
            found = self._db.execute("PRAGMA user_version").fetchone()[0]
            # 0 is unmarked (every earlier version), as a rows file without "format" is.
            known = found in (0, HISTORY_FORMAT)
            if known:  # any other is left as it was, refused below
                # A history, not a ledger: a crash may lose the last run, never corrupt it.
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                # A deleted or pruned run's text is overwritten, not left in free pages.
                self._db.execute("PRAGMA secure_delete=ON")
                with self._db:
                    self._db.execute(
                        "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, created REAL, "
                        "model TEXT, question TEXT, status TEXT, answer TEXT, events TEXT)"
                    )
                    self._db.execute(f"PRAGMA user_version = {HISTORY_FORMAT}")
                    self._prune()  # a file kept by a larger cap shrinks to this one
        except (OSError, sqlite3.Error) as exc:
            if db is not None:  # closed now: the caller has no history to close
                db.close()
            raise HistoryError(
                f"Cannot open the run history at {self.path} ({exc}); set MOA_HISTORY to a "
                "writable file."
            ) from None
        if not known:
            self._db.close()
            raise HistoryError(
                f"The run history at {self.path} has format {found}, which this version of "
                f"langgraph-moa does not read (it reads {HISTORY_FORMAT}): run the version "
                "that wrote it, or set MOA_HISTORY to another file."
            )

    def save(self, run: RunRecord) -> None:
        """Insert or replace one run; the oldest runs past `keep` are deleted.

        Raises:
            HistoryError: the file cannot be written (the disk is full, another server
                held it locked past SQLite's wait).
        """
        row = (
            run.id,
            run.created,
            run.model,
            run.question,
            run.status,
            run.answer,
            dumps(compact(run.events)),  # a no-op on a compacted log
        )
        try:
            with self._lock:
                with self._db:
                    sql = "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)"
                    self._db.execute(sql, row)
                    self._prune()
                if self._unerased:
                    self._erase_log()
        except sqlite3.Error as exc:
            raise HistoryError(
                f"Cannot keep run {run.id} in the history at {self.path} ({exc})."
            ) from None

    def delete(self, run_id: str) -> bool:
        """Delete one run; return whether the history held it.

        Its text is overwritten in the file (``secure_delete``), and the write-ahead log,
        which still held the pages it was saved in, is written into the file and emptied:
        a run deleted at its user's request leaves no copy on the disk that SQLite keeps.
        While another connection reads the file (another server on it) the log cannot be
        emptied: it is then emptied at the next save or delete, and the log says so.

        Raises:
            HistoryError: the file cannot be written.
        """
        try:
            with self._lock:
                with self._db:
                    sql = "DELETE FROM runs WHERE id = ?"
                    found = self._db.execute(sql, (run_id,)).rowcount > 0
                if found or self._unerased:
                    self._erase_log()
                return found
        except sqlite3.Error as exc:
            raise HistoryError(
                f"Cannot delete run {run_id} from the history at {self.path} ({exc})."
            ) from None

    def _erase_log(self) -> None:
        """Write the write-ahead log into the file and empty it (the caller holds the lock).

        A reader of the file keeps SQLite from emptying it: a deleted run's pages stay in it
        until `_unerased` is cleared by a later call.
        """
        busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy and not self._unerased:
            logging.getLogger(__name__).warning(
                "The write-ahead log of the history at %s still holds a deleted run's text: "
                "another connection is reading the file; it is emptied at the next save.",
                self.path,
            )
        self._unerased = bool(busy)

    def _prune(self) -> None:
        """Delete the runs saved before the newest `keep` (the caller holds the transaction).

        By save order (a saved row takes the next rowid, a re-saved one too), not by start
        time: a run is saved when it ends, and a long run that `keep` shorter ones overtook
        was the oldest by start, so its own save deleted it as the page watched it end.
        """
        self._db.execute(
            "DELETE FROM runs WHERE rowid NOT IN "
            "(SELECT rowid FROM runs ORDER BY rowid DESC LIMIT ?)",
            (self.keep,),
        )

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        """Return the newest runs first, without their events.

        Raises:
            HistoryError: the file cannot be read (see `_read`).
        """
        rows = self._read(
            "SELECT id, created, model, question, status, answer FROM runs "
            "ORDER BY created DESC LIMIT ?",
            (limit,),
        )
        return [
            RunRecord(i, m, q, created=c, status=s, answer=a or "").summary()
            for i, c, m, q, s, a in rows
        ]

    def get(self, run_id: str) -> RunRecord | None:
        """Return one run with its events, or None.

        Raises:
            HistoryError: the file cannot be read (see `_read`), or the run's events are
                not JSON.
        """
        rows = self._read(
            "SELECT id, created, model, question, status, answer, events FROM runs WHERE id = ?",
            (run_id,),
        )
        if not rows:
            return None
        i, c, m, q, s, a, e = rows[0]
        try:
            events = json.loads(e)
        except (TypeError, ValueError) as exc:  # a row written by hand, or cut by the disk
            raise HistoryError(
                f"Cannot read run {i} of the run history at {self.path} (its events: {exc})."
            ) from None
        return RunRecord(i, m, q, created=c, status=s, answer=a or "", events=events)

    def _read(self, query: str, args: tuple[Any, ...]) -> Sequence[Any]:
        """Run one read; SQLite's refusal becomes one `HistoryError` sentence.

        A read fails when another server holds the file locked past SQLite's wait, the
        disk fails, or the file was changed under the server: raised bare, the error left
        the routes as a traceback in the log and a plain "Internal Server Error" to the page.
        """
        try:
            with self._lock:
                return self._db.execute(query, args).fetchall()
        except sqlite3.Error as exc:
            raise HistoryError(f"Cannot read the run history at {self.path} ({exc}).") from None

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
