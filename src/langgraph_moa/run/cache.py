"""A disk cache of model calls, so reruns and added systems cost no repeated generation.

Keyed by the model, its call parameters, the exact messages, the role and the sample index:
n samples of one model stay n distinct calls, and any change to a prompt is a miss. Pass it
to `create_moa_graph(config, call_cache=SQLiteCallCache("calls.db"))`. A new cache file is
readable by its owner alone (`_private`): its replies are every model's answers.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Protocol

from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from langgraph_moa._forklock import ForkSafeLock
from langgraph_moa._private import create_private
from langgraph_moa.errors import MoAConfigError

CACHE_FORMAT = 1
"""The format of a cache file, kept in its SQLite ``user_version``: the ``calls`` table of
key, reply (LangChain's message dict as JSON) and time stored. Files written before the mark
(user_version 0) are this format. A change to the table or to what a stored reply means
takes the next number, so that a version that cannot read a file says so instead of serving
its rows."""


class CallCache(Protocol):
    """What the graph needs from a cache."""

    def get(self, key: str) -> BaseMessage | None:
        """Return the stored reply for `key`, or None."""

    def put(self, key: str, message: BaseMessage) -> None:
        """Store the reply for `key`."""


def refused_hit(cache: CallCache) -> None:
    """Tell `cache` that the reply its `get` just returned was refused and the model asked again.

    A reply an earlier version stored that is no answer (`run._calls.cached_call`), or a
    judge's unreadable verdict, is a miss, as the call's record says (``cached: false``): the
    cache had counted it a hit. A cache that counts nothing (the `CallCache` protocol asks
    only `get` and `put`) is told nothing.
    """
    if (refused := getattr(cache, "refused_hit", None)) is not None:
        refused()


def call_key(
    *, model: str, params: dict[str, Any], messages: list[BaseMessage], role: str, sample: int
) -> str:
    """Return a stable digest of everything that determines a call's answer.

    `model` is the model's identity (`run._calls.cache_name`: its spec, or an instance's
    model name with its role's name), not a role's display name alone.
    """
    payload = {
        "model": model,
        "params": params,
        "messages": [_message_key(m) for m in messages],
        "role": role,
        "sample": sample,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _message_key(message: BaseMessage) -> dict[str, Any]:
    """Return what the model reads of one message, for the key.

    The message's own id is left out: LangGraph assigns a new one on every run. The tool
    calls an AI message made (name, arguments, id), the call a tool message answers and the
    provider's extra fields are in, or two conversations that differ only in a tool's
    arguments would share an answer. They are added only when present, so the key of a
    plain message (and every cache written before) stays the same.
    """
    entry: dict[str, Any] = {"type": message.type, "content": message.content, "name": message.name}
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        entry["tool_calls"] = [
            {"name": c.get("name"), "args": c.get("args"), "id": c.get("id")} for c in tool_calls
        ]
    tool_call_id = getattr(message, "tool_call_id", None)
    if tool_call_id:
        entry["tool_call_id"] = tool_call_id
    if message.additional_kwargs:
        entry["additional_kwargs"] = message.additional_kwargs
    return entry


class SQLiteCallCache:
    """The default `CallCache`: one SQLite file, safe to share between threads."""

    busy_s = 5.0
    """How long opening waits for another process's lock on the file (SQLite's timeout)."""

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the cache file; a damaged one is one sentence naming it."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        create_private(self.path)  # its keys are digests, but its replies are the answers
        self._conn = sqlite3.connect(self.path, timeout=self.busy_s, check_same_thread=False)
        self._lock = ForkSafeLock()
        try:
            with self._lock:
                # Checked first: a later format may keep its replies elsewhere, and this
                # version must write nothing into a file it refuses.
                _check_format(self._conn, "main", self.path)
                self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS calls "
                    "(key TEXT PRIMARY KEY, message TEXT, stored REAL)"
                )
                self._conn.commit()
                if _format(self._conn, "main") == 0:
                    _mark(self._conn)
        except MoAConfigError:
            self._conn.close()
            raise
        except sqlite3.OperationalError as exc:
            # Locked by another run, or a folder it may not write: the file itself may be
            # sound, so deleting it (and the paid-for answers it holds) is not the advice.
            self._conn.close()
            raise MoAConfigError(
                f"The call cache {self.path} cannot be opened ({exc}): if another run uses "
                "it, wait for that run to end or give this one its own cache; otherwise "
                "check that the file and its folder may be written."
            ) from None
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            # The file is left as it is: it may be the only copy of many paid-for answers.
            raise MoAConfigError(
                f"The call cache {self.path} cannot be read ({exc}): move it aside or delete it "
                "to start a new cache (the calls it held are then made again)."
            ) from None
        self.hits = 0
        self.misses = 0
        self._closed = False

    def get(self, key: str) -> BaseMessage | None:
        """Return the stored reply for `key`, or None (also once the cache is closed)."""
        with self._lock:
            if self._closed:
                return None
            row = self._conn.execute("SELECT message FROM calls WHERE key = ?", (key,)).fetchone()
        message: BaseMessage | None = None
        if row is not None:
            try:
                message = messages_from_dict([json.loads(row[0])])[0]
            except (ValueError, TypeError, KeyError, IndexError):
                # A reply stored damaged (a disk fault, a hand edit) is a miss, never a
                # failure of the call: the call is made again, and `put` stores its answer
                # over it.
                pass
        with self._lock:
            if message is None:
                self.misses += 1
            else:
                self.hits += 1
        return message

    def refused_hit(self) -> None:
        """Count the reply `get` just returned as a miss: its caller refused it (`refused_hit`)."""
        with self._lock:
            self.hits -= 1
            self.misses += 1

    def put(self, key: str, message: BaseMessage) -> None:
        """Store the reply for `key`; once the cache is closed, store nothing (see `close`)."""
        data = json.dumps(message_to_dict(message), default=str)
        with self._lock:
            if self._closed:
                return
            self._conn.execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?)", (key, data, time.time())
            )
            self._conn.commit()

    def merge(self, other: str | Path) -> int:
        """Copy in the calls another cache file holds and this one lacks; return how many.

        Two evaluations that make some of the same calls (the same model, settings, messages
        and sample) can then share them instead of generating them twice, also after either
        has run. A call both hold keeps this cache's reply.
        """
        if not Path(other).is_file():
            raise FileNotFoundError(f"No call cache at {other}: give the calls.db of a run.")
        with self._lock:
            try:
                self._conn.execute("ATTACH DATABASE ? AS other", (str(other),))
            except sqlite3.DatabaseError as exc:
                raise _unmergeable(other, exc) from None
            try:
                _check_format(self._conn, "other", Path(other))
                before = self._conn.total_changes
                self._conn.execute("INSERT OR IGNORE INTO calls SELECT * FROM other.calls")
                self._conn.commit()
                return self._conn.total_changes - before
            except sqlite3.DatabaseError as exc:  # damaged, or some other SQLite file
                self._conn.rollback()
                raise _unmergeable(other, exc) from None
            finally:
                self._conn.execute("DETACH DATABASE other")

    @property
    def closed(self) -> bool:
        """Whether `close` was called: the cache serves and stores nothing more."""
        return self._closed

    def close(self) -> None:
        """Close the file, once the reads and writes other threads are making are done.

        A call answered after (a run still going when its owner closed the cache) is neither
        served nor stored: failing it would lose an answer already paid for.
        """
        with self._lock:
            self._closed = True
            self._conn.close()


def _format(conn: sqlite3.Connection, schema: str) -> int:
    """Return the `CACHE_FORMAT` mark of the database attached as `schema` (0: none)."""
    return int(conn.execute(f"PRAGMA {schema}.user_version").fetchone()[0])


def _mark(conn: sqlite3.Connection) -> None:
    """Write `CACHE_FORMAT` into an unmarked file, where this process may write it.

    Unmarked is the format this version reads, so a file it may only read (a copy of an
    earlier run's cache on a read-only mount, another user's) is served unmarked, as it was
    before the mark: whoever may write it marks it. The write needs the file's lock too, and
    a file busy past `busy_s` is marked by a later open.
    """
    try:
        conn.execute(f"PRAGMA user_version = {CACHE_FORMAT}")
        conn.commit()
    except sqlite3.OperationalError:
        conn.rollback()


def _unmergeable(other: str | Path, exc: sqlite3.DatabaseError) -> MoAConfigError:
    """Say in one sentence that `other` cannot be merged, and what to give instead."""
    return MoAConfigError(
        f"The call cache {other} cannot be merged ({exc}): give the calls.db of a run, one no "
        "other run is writing."
    )


def _check_format(conn: sqlite3.Connection, schema: str, path: Path) -> None:
    """Refuse a file of any mark but `CACHE_FORMAT` or none (0, every earlier version).

    Its rows may not mean what this version reads. Only a later mark was refused: a file
    marked -1 was served as this format. The history (`serving._history.History`) and the
    rows files (`eval.runner._RowStore`) refuse any mark they do not know alike.
    """
    if (found := _format(conn, schema)) not in (0, CACHE_FORMAT):
        raise MoAConfigError(
            f"The call cache {path} has format {found}, which this version of langgraph-moa "
            f"does not read (it reads {CACHE_FORMAT}; a newer version writes a later one): "
            "run the version that wrote it, or give this run another cache (its calls are "
            "then made again)."
        )
