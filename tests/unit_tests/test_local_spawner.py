"""Servers start from the one long-lived spawner thread, without starting a model server.

Linux ties ``PR_SET_PDEATHSIG`` to the thread that forked the child: a server started from a
worker thread would be killed when that thread ended (`_spawner`'s docstring).
"""

import queue
import subprocess
import sys
import threading

from langgraph_moa.local import _spawner


class PopenRecorder:
    """Stands in for `subprocess.Popen`: notes the thread each call ran on, raises if told."""

    def __init__(self, *errors: BaseException):
        self.threads: list[threading.Thread] = []
        self.errors = list(errors)

    def __call__(self, args, **kwargs):
        self.threads.append(threading.current_thread())
        if self.errors:
            raise self.errors.pop(0)
        return ("started", args, kwargs)


def _popen_from_a_thread_that_ends(args):
    """Call `_spawner.popen` from a short-lived thread; return what it returned or raised."""
    outcome = []

    def call():
        try:
            outcome.append(_spawner.popen(args, stdin=subprocess.DEVNULL))
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, name="short-lived caller")
    caller.start()
    caller.join(60)
    assert not caller.is_alive(), "the call to the spawner never returned"
    (result,) = outcome
    return result


def test_a_server_is_started_from_the_spawner_thread_which_outlives_its_caller(monkeypatch):
    recorder = PopenRecorder()
    monkeypatch.setattr(subprocess, "Popen", recorder)

    result = _popen_from_a_thread_that_ends(["server", "--flag"])

    assert result == ("started", ["server", "--flag"], {"stdin": subprocess.DEVNULL})
    (thread,) = recorder.threads
    assert thread.name == "moa spawner"
    assert thread.is_alive(), "the thread that started the server ended, and the kernel kills it"


def test_a_popen_error_reaches_the_caller_and_the_spawner_goes_on(monkeypatch):
    error = FileNotFoundError(2, "No such file or directory", "server")
    recorder = PopenRecorder(error)
    monkeypatch.setattr(subprocess, "Popen", recorder)

    raised = _popen_from_a_thread_that_ends(["server"])
    assert type(raised) is FileNotFoundError
    assert str(raised) == "[Errno 2] No such file or directory: 'server'"

    assert _popen_from_a_thread_that_ends(["server"]) == (
        "started",
        ["server"],
        {"stdin": subprocess.DEVNULL},
    )
    assert [thread.name for thread in recorder.threads] == ["moa spawner"] * 2
    assert recorder.threads[0] is recorder.threads[1] and recorder.threads[1].is_alive()


def test_the_server_module_imports_nothing_heavy():
    # A server watches its parent only once `_serve` is imported and running: importing
    # langchain or the HTTP clients there took seconds in which a killed parent left an orphan.
    heavy = ("langchain_core", "httpx", "pydantic", "openai")
    probe = (
        f"import sys, langgraph_moa.local._serve; print([m for m in {heavy} if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_spawner_thread_that_died_is_replaced(monkeypatch):
    # The spawner thread was started once and trusted for good: had it died (an error
    # outside its job's try), every later start queued a job nobody took and waited forever.
    recorder = PopenRecorder()
    monkeypatch.setattr(subprocess, "Popen", recorder)
    dead = threading.Thread(target=lambda: None, name="moa spawner")
    dead.start()
    dead.join()
    monkeypatch.setattr(_spawner, "_thread", dead)
    monkeypatch.setattr(_spawner, "_jobs", type(_spawner._jobs)())  # the dead one's queue

    assert _popen_from_a_thread_that_ends(["server"])[0] == "started"
    (thread,) = recorder.threads
    assert thread is not dead and thread.is_alive()


class FakeProcess:
    def __init__(self) -> None:
        self.killed = threading.Event()

    def kill(self) -> None:
        self.killed.set()

    def wait(self, timeout=None) -> int:
        return -9


class InterruptedWait(_spawner.Future):
    """The caller's wait for the spawner ends in Ctrl-C once `arrives` is set."""

    arrives = threading.Event()
    waited = False

    def result(self, timeout=None):
        if self.waited:  # not the caller's wait: the result as it is
            return super().result(timeout)
        self.waited = True
        assert type(self).arrives.wait(60), "the test never let Ctrl-C arrive"
        raise KeyboardInterrupt


def test_ctrl_c_while_the_spawner_starts_a_server_kills_that_server(monkeypatch):
    # The caller's wait ended in KeyboardInterrupt while the spawner thread was in Popen: the
    # server it then started was nobody's, and ran (loading a model) until this process exited.
    process = FakeProcess()
    in_popen, go_on = threading.Event(), threading.Event()

    def slow_popen(args, **kwargs):
        in_popen.set()
        assert go_on.wait(60)
        return process

    monkeypatch.setattr(subprocess, "Popen", slow_popen)
    monkeypatch.setattr(_spawner, "Future", InterruptedWait)
    monkeypatch.setattr(InterruptedWait, "arrives", in_popen)

    raised = _popen_from_a_thread_that_ends(["server"])
    assert type(raised) is KeyboardInterrupt
    go_on.set()  # the spawner's Popen returns only now, after the caller has gone
    assert process.killed.wait(60), "the server started for an interrupted caller still runs"


def test_ctrl_c_before_the_spawner_took_the_start_never_starts_the_server(monkeypatch):
    # Interrupted while an earlier start held the spawner: the queued start still ran later.
    busy, go_on = threading.Event(), threading.Event()
    started = []

    def popen(args, **kwargs):
        started.append(args)
        if args == ["first"]:
            busy.set()
            assert go_on.wait(60)
        return FakeProcess()

    monkeypatch.setattr(subprocess, "Popen", popen)
    first = threading.Thread(target=_spawner.popen, args=(["first"],))
    first.start()
    assert busy.wait(60)
    monkeypatch.setattr(_spawner, "Future", InterruptedWait)
    monkeypatch.setattr(InterruptedWait, "arrives", busy)
    assert type(_popen_from_a_thread_that_ends(["second"])) is KeyboardInterrupt
    monkeypatch.setattr(_spawner, "Future", InterruptedWait.__mro__[1])  # waits as usual
    go_on.set()
    first.join(60)
    assert isinstance(_popen_from_a_thread_that_ends(["third"]), FakeProcess)
    assert started == [["first"], ["third"]]


def test_ctrl_c_just_after_the_start_was_queued_never_starts_the_server(monkeypatch):
    # Ctrl-C that arrived after the start was queued but before the wait began (as the lock
    # was let go) was not the wait's: nothing cancelled the start, and the server it started
    # ran for nobody until this process exited.
    class InterruptedAfterPut(queue.SimpleQueue):
        interrupt = True

        def put(self, item, block=True, timeout=None):
            super().put(item)
            if self.interrupt:
                self.interrupt = False
                raise KeyboardInterrupt

    recorder = PopenRecorder()
    monkeypatch.setattr(subprocess, "Popen", recorder)
    monkeypatch.setattr(_spawner, "_jobs", InterruptedAfterPut())
    monkeypatch.setattr(_spawner, "_thread", None)  # one that takes from the queue above

    assert type(_popen_from_a_thread_that_ends(["interrupted"])) is KeyboardInterrupt
    assert _popen_from_a_thread_that_ends(["next"])[1] == ["next"]  # taken after the first
    assert len(recorder.threads) == 1, "the interrupted start still started a server"


def test_a_holder_that_raises_leaves_no_server_running():
    """`hold` is given the process after it started: one that raised reached the caller as
    the start's error, and the server it was handed ran on with no handle anywhere."""
    started = []

    def hold(process):
        started.append(process)
        raise MemoryError

    try:
        raised = None
        try:
            _spawner.popen([sys.executable, "-c", "import time; time.sleep(60)"], hold=hold)
        except MemoryError as exc:
            raised = exc
        assert raised is not None
        (process,) = started
        assert process.poll() is not None, "the server the holder was handed ran on"
    finally:
        for process in started:
            process.kill()
            process.wait()
