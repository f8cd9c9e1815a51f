"""Module locks in a forked child: a lock another parent thread held at the fork is free.

The child inherits a held lock taken, with no thread of its own to release it, so its first
use of what the lock guards waited for ever (a worker forked by a pool while the parent's
other thread registered a secret or fitted a length-controlled win rate).
"""

import pytest

from langgraph_moa import _lru, _redact
from langgraph_moa.eval import length_control
from langgraph_moa.local import runtime
from langgraph_moa.run import _busy, _ledger, cache
from langgraph_moa.serving import _history
from tests.helpers import fork_while_held

LOCKS = {
    "redact": lambda: _redact._lock,
    "length-control": lambda: length_control._LOCK,
    "busy-threads": lambda: _busy._lock,
    "local-client": lambda: runtime._CLIENT_LOCK,
    "local-default": lambda: runtime.LocalRuntime._default_lock,
}


@pytest.mark.parametrize("lock", LOCKS.values(), ids=LOCKS.keys())
def test_a_module_lock_held_at_a_fork_is_free_in_the_child(lock):
    def child() -> bool:
        if not lock().acquire(blocking=False):
            return False
        lock().release()
        return True

    assert fork_while_held(lock(), child) == 0


OBJECTS = {
    "bounded-lru": lambda _: _lru.BoundedLRU(4),
    "run-step": lambda _: _ledger.Step(),
    "run-ledger": lambda _: _ledger.Ledger(),
    "call-cache": lambda tmp_path: cache.SQLiteCallCache(tmp_path / "calls.sqlite"),
    "page-history": lambda tmp_path: _history.History(tmp_path / "history.sqlite3"),
}


@pytest.mark.parametrize("make", OBJECTS.values(), ids=OBJECTS.keys())
def test_an_objects_lock_held_at_a_fork_is_free_in_the_child(make, tmp_path):
    """An object built before the fork (a server's app under ``gunicorn --preload``: a chat
    model's graphs, the run ledger taken every step, the call cache, the page's history)
    went to the child with its lock taken when a parent thread was using it, so the child's
    first use hung."""
    built = make(tmp_path)

    def child() -> bool:
        if not built._lock.acquire(blocking=False):
            return False
        built._lock.release()
        return True

    assert fork_while_held(built._lock, child) == 0


def test_a_secret_is_registered_in_a_child_forked_while_another_thread_registered_one():
    def child() -> bool:
        _redact.register_secret("sk-forked-child-secret-0123456789")
        return "sk-forked-child-secret-0123456789" not in _redact.redact(
            "key sk-forked-child-secret-0123456789"
        )

    assert fork_while_held(_redact._lock, child) == 0


def test_a_child_forked_while_a_local_model_was_in_use_gets_a_runtime_of_its_own(monkeypatch):
    """The process's local runtime went to a forked child as the parent's threads left it:
    its lock taken (a thread starting a server), its core room holding another model's calls,
    so the child's first local call waited for ever. The parent's servers are not the
    child's processes (it cannot wait for them), so it starts its own anyway."""
    parent = runtime.LocalRuntime()
    monkeypatch.setattr(runtime.LocalRuntime, "_default", parent)
    parent.room.enter("parents-model")
    try:

        def child() -> bool:
            if not parent._lock.acquire(blocking=False):  # the child's exit stops its servers
                return False
            own = runtime.LocalRuntime.default()
            if own is parent or not own._lock.acquire(blocking=False):
                return False
            own.room.enter("childs-model")  # waits for ever behind the parent's model
            return True

        assert fork_while_held(parent._lock, child) == 0
    finally:
        parent.room.leave()


def test_a_child_forked_during_a_run_may_run_that_thread():
    """A forked child inherited the parent's claims on the threads it was running: the run
    is not the child's, and no thread of the child's ends it, so each run the child made on
    such a thread was refused as busy for ever."""
    key = (0, "forked-thread", "")
    _busy._claim(key)
    try:

        def child() -> bool:
            return _busy._try_claim(key)

        assert fork_while_held(_busy._lock, child) == 0
    finally:
        _busy._release(key)
