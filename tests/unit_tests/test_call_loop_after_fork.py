"""The call loop in a forked child: the child's reset (`_forget_after_fork`), run directly.

The real fork, with a parent whose call loop must keep working, is in the integration tests
(test_http_transport.py); these are the ways the reset itself could go wrong.
"""

import asyncio
import errno
import os
import selectors
import threading

import pytest

from langgraph_moa.transport import _call_loop


class _NoFdsLeft(selectors.BaseSelector):
    """A selector whose kind cannot be opened again: the child is out of file descriptors."""

    def __init__(self) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    register = unregister = select = get_map = None  # type: ignore[assignment]


class _InheritedLoop:
    def __init__(self) -> None:
        self._selector = object.__new__(_NoFdsLeft)  # the parent's, as the child holds it


def test_a_child_that_cannot_open_a_selector_still_starts_its_own_call_loop(monkeypatch):
    # The child replaced the inherited loop's selector before it forgot the loop: when the
    # new selector could not be opened (no file descriptors left), the handler raised, and
    # the child kept the parent's loop, which no thread of the child runs (its sync runs
    # with a deadline then waited forever), and the lock the parent may have held.
    held = threading.Lock()
    held.acquire()  # another thread of the parent was in call_loop() at the fork
    inherited = _InheritedLoop()
    parents = inherited._selector
    monkeypatch.setattr(_call_loop, "_loop", inherited)
    monkeypatch.setattr(_call_loop, "_lock", held)
    _call_loop._forget_after_fork()
    assert _call_loop._loop is None
    assert _call_loop._lock is not held and not _call_loop._lock.locked()
    assert inherited._selector is not parents  # the parent's epoll is out of the child's reach


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="lists fds through /proc")
def test_the_child_leaves_the_parents_selector_without_opening_a_file_descriptor(monkeypatch):
    # Each forked child opened a new epoll instance for a loop it only tears down.
    loop = asyncio.SelectorEventLoop()
    try:
        monkeypatch.setattr(_call_loop, "_loop", loop)
        before = set(os.listdir("/proc/self/fd"))
        _call_loop._forget_after_fork()
        assert not set(os.listdir("/proc/self/fd")) - before
        assert _call_loop._loop is None
    finally:
        loop.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")
def test_a_forked_child_does_not_report_the_parents_sessions_as_unclosed():
    # A forked child (a gunicorn or multiprocessing worker) printed "Unclosed client
    # session" and "Unclosed connector" as it exited, for aiohttp sessions of its parent's
    # that it had inherited and dropped: they are the parent's to close, and still open there.
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import asyncio, gc, os, sys
        import aiohttp
        from langgraph_moa.transport import _http

        loop = asyncio.new_event_loop()

        async def open_session():
            session = aiohttp.ClientSession()
            _http._close_at_loop_end(session)  # as the package's clients open theirs
            return session

        session = loop.run_until_complete(open_session())
        child = os.fork()
        if child == 0:
            del session
            gc.collect()
            loop.call_exception_handler({"message": "another problem"})  # still said
            sys.exit(0)
        os.waitpid(child, 0)
        loop.run_until_complete(session.close())
        loop.close()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Unclosed" not in done.stderr, done.stderr
    assert "another problem" in done.stderr, done.stderr


def test_a_childs_own_session_at_an_inherited_ones_address_is_still_reported():
    # Inherited sessions were known by id for good: once one was dropped and reported,
    # the child's own session allocated at the same address (CPython reuses it) and left
    # unclosed had its "Unclosed client session" swallowed too. Each inherited object
    # reports once; its id is forgotten then.
    from langgraph_moa.transport import _http

    seen = []
    inherited = object()
    handler = _http._without_reports_of({id(inherited)}, lambda loop, ctx: seen.append(ctx))
    loop = asyncio.new_event_loop()
    try:
        report = {"message": "Unclosed client session", "client_session": inherited}
        handler(loop, report)  # the inherited session, dropped: said nothing
        handler(loop, report)  # stands for the child's own one at the freed address
    finally:
        loop.close()
    assert seen == [report]


def test_the_exit_hook_is_registered_when_the_call_loop_is_first_used_not_on_import():
    # Importing the package registered an atexit hook in every process that imported it,
    # whether or not it ever made a sync call with a deadline.
    import subprocess
    import sys

    probe = (
        "import asyncio, atexit, selectors, threading  # theirs registered first\n"
        "before = atexit._ncallbacks()\n"
        "from langgraph_moa.transport import _call_loop\n"
        "imported = atexit._ncallbacks() - before\n"
        "_call_loop.call_loop(); _call_loop.call_loop()\n"
        "print(imported, atexit._ncallbacks() - before)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1"]


class _CountingLoop(asyncio.SelectorEventLoop):
    """A selector loop that counts how often its selector is replaced."""

    swaps = 0

    def __setattr__(self, name, value):
        if name == "_selector":
            type(self).swaps += 1
        super().__setattr__(name, value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")
def test_a_forked_child_copies_an_idle_loops_selector_once():
    # An idle loop holding both models (`ModelCache`) and HTTP sessions (`_http`) had its
    # selector copied by each fork handler that knew of it: every registration into a new
    # epoll instance twice (and one more file descriptor) in every child.
    import aiohttp

    from langgraph_moa.providers._models import ModelCache
    from langgraph_moa.transport import _http
    from tests.helpers import exit_code

    loop = _CountingLoop()
    cache = ModelCache()

    async def use_the_loop():
        session = aiohttp.ClientSession()
        _http._close_at_loop_end(session)  # as the package's clients open theirs
        return session, cache.get("m@http://127.0.0.1:9/v1", {})

    session, _model = loop.run_until_complete(use_the_loop())
    try:
        _CountingLoop.swaps = 0
        pid = os.fork()
        if pid == 0:  # the fork handlers have run: report how often they swapped it
            os._exit(_CountingLoop.swaps)
        assert exit_code(pid) == 1
    finally:
        loop.run_until_complete(session.close())
        loop.close()
