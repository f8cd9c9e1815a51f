"""A small thread-safe map that keeps its most recently used entries.

Several parts keep one value per key that users choose (a chat model's graph per schema, a
config per run context, a run's step per checkpoint, a config's shape digest): each must be
bounded, since a client that sends a new key every time would otherwise grow it for ever.
`functools.lru_cache` does not fit: the values are built outside the lock (compiling a graph
takes a while) and some callers create under it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from langgraph_moa._forklock import ForkSafeLock

K = TypeVar("K")
V = TypeVar("V")


class BoundedLRU(Generic[K, V]):
    """At most `size` entries; the least recently used goes first. Every method takes the lock."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = ForkSafeLock()

    def get(self, key: K) -> V | None:
        """Return the entry of `key` (now the most recent), or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> V:
        """Keep `value` under `key` as the most recent entry, dropping the oldest past `size`."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def pop(self, key: K) -> V | None:
        """Drop the entry of `key`; return it, or None if there was none."""
        with self._lock:
            return self._entries.pop(key, None)

    def setdefault(self, key: K, make: Callable[[], V]) -> V:
        """Return the entry of `key`, created by `make` under the lock if there is none.

        For cheap values only (the lock is held while `make` runs): two threads asking at
        once get the same one.
        """
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                value = self._entries[key] = make()
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
            return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
