"""Sync entry points called from a notebook cell: a thread whose event loop runs.

A Jupyter kernel runs each cell in the thread of its event loop (top-level ``await`` runs
on it), so a sync call made there finds a running loop, where ``asyncio.run`` is refused.
Each test is a coroutine, as a cell is.
"""

import asyncio
import signal
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from langgraph_moa.providers import _models
from tests.fakes import FakeChat

ENDPOINT = "m@http://upstream.example.test/v1"
SYSTEM = f"single:{ENDPOINT}"


@pytest.fixture
def answering(monkeypatch):
    """Every endpoint spec is answered by the fake that `.model()` makes (a test may swap it)."""
    made: list[FakeChat] = []
    given = SimpleNamespace(model=lambda: FakeChat(label="m", reply=lambda *_: "alpha1"))

    def build(spec, params, **_):
        made.append(given.model())
        return made[-1]

    monkeypatch.setattr(_models, "build_model", build)
    yield given
    for model in made:
        model.release()


def evaluated_in_this_thread(monkeypatch, question: str = "Say alpha1.") -> list:
    """Make LangSmith's `evaluate` call the target here, as its ``max_concurrency=0`` does."""
    import langsmith

    outputs: list = []
    monkeypatch.setattr(
        langsmith, "evaluate", lambda target, **_: outputs.append(target({"question": question}))
    )
    return outputs


IPYKERNELS_HANDLER = (
    "ipykernel.ipkernel",
    "IPythonKernel._cancel_on_sigint.<locals>.handle_sigint",
)
"""Where ipykernel (6.3 to 7.4) defines the SIGINT handler of a cell with a top-level await."""


def kernels_handler(on_interrupt: Any = None) -> Any:
    """Return a handler known as ipykernel's, which cancels the running task (the cell's).

    It bears the module and name of ipykernel's, the only way the package tells it from a
    host's handler of its own (which it leaves alone). `on_interrupt` replaces what it does.
    """
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None

    def handle_sigint(*_: Any) -> None:
        if on_interrupt is None:
            loop.call_soon_threadsafe(task.cancel)
        else:
            on_interrupt()

    handle_sigint.__module__, handle_sigint.__qualname__ = IPYKERNELS_HANDLER
    return handle_sigint


def interrupt_the_cell_once(when: threading.Event, *, awaiting: bool = False) -> Any:
    """Interrupt the kernel, as its button does, once `when` is set.

    The kernel's interrupt raises KeyboardInterrupt in the cell's thread (this one); the
    handler of the test's loop (asyncio.Runner's) would only cancel the test's task. In a
    cell with a top-level ``await`` (`awaiting`), which the kernel runs as a task of its
    loop, ipykernel's handler instead schedules that task's cancellation on the loop, which
    a sync call blocking the cell keeps from running. Returns the handler installed.
    """
    if awaiting:
        handler = kernels_handler()
    else:
        handler = signal.default_int_handler
    signal.signal(signal.SIGINT, handler)  # conftest restores it
    cell = threading.get_ident()

    def interrupt() -> None:
        if when.wait(30):
            signal.pthread_kill(cell, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    return handler


async def test_a_langsmith_experiment_run_from_a_notebook_cell_answers(
    answering, monkeypatch, tmp_path
):
    # LangSmith's evaluate() calls the target in the caller's thread with max_concurrency=0
    # (its own default): from a cell, the target's asyncio.run was refused ("cannot be
    # called from a running event loop") and every example failed.
    from langgraph_moa.eval.langsmith_eval import evaluate_system

    outputs = evaluated_in_this_thread(monkeypatch)
    evaluate_system(SYSTEM, [], cache_dir=tmp_path, upload_results=False, max_concurrency=0)
    assert [o["answer"] for o in outputs] == ["alpha1"]
    assert outputs[0]["calls"] == 1


async def test_interrupting_a_cell_running_a_langsmith_experiment_cancels_its_example(
    answering, monkeypatch, tmp_path
):
    # The kernel's interrupt (KeyboardInterrupt in the cell's thread) while an example runs
    # apart from the cell's loop: its model call is cancelled, not left to run (and be paid
    # for) after the cell ended.
    from langgraph_moa.eval.langsmith_eval import evaluate_system

    started, cancelled = hanging(answering)
    evaluated_in_this_thread(monkeypatch)
    interrupt_the_cell_once(started)
    with pytest.raises(KeyboardInterrupt):
        evaluate_system(SYSTEM, [], cache_dir=tmp_path, upload_results=False, max_concurrency=0)
    assert cancelled.wait(30)


async def test_an_interrupt_while_the_examples_thread_starts_still_cancels_it(
    answering, monkeypatch, tmp_path
):
    # Thread.start waits for the new thread to begin: the kernel's interrupt may land in that
    # wait, after the thread was made. It was raised outside the guarded wait, and the
    # example ran on (and was paid for) after the cell ended.
    from langgraph_moa.eval.langsmith_eval import evaluate_system

    hanging(answering)
    evaluated_in_this_thread(monkeypatch)
    start, examples = threading.Thread.start, []

    def start_then_interrupted(thread):
        start(thread)
        if thread.name == "moa example":
            examples.append(thread)
            raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", start_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_system(SYSTEM, [], cache_dir=tmp_path, upload_results=False, max_concurrency=0)
    examples[0].join(30)  # cancelled before or during its call, which hangs until cancelled
    assert not examples[0].is_alive()


HANG_S = 30.0
"""How long a hanging fake call waits to be cancelled (a test that fails does not hang)."""


def hanging(answering) -> tuple[threading.Event, threading.Event]:
    """Make every model a fake whose call hangs until cancelled; return (called, cancelled)."""
    started, cancelled = threading.Event(), threading.Event()

    class Hanging(FakeChat):
        async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
            started.set()
            try:
                await asyncio.sleep(HANG_S)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    answering.model = lambda: Hanging(label="m")
    return started, cancelled


@pytest.fixture
def serving(monkeypatch, tmp_path):
    """`.serve()` serves as `serve` does, up to uvicorn's `Server.run`: `.run(server)` then."""
    import uvicorn

    from langgraph_moa import MoAConfig
    from langgraph_moa.serving import _server

    given = SimpleNamespace()
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: given.run(server))
    monkeypatch.setattr(_server, "_check_port", lambda host, port: None)
    monkeypatch.setenv(_server.GC_FREEZE_ENV, "0")
    config = MoAConfig(proposers=["p@http://127.0.0.1:9/v1"], aggregator="a@http://127.0.0.1:9/v1")
    given.serve = lambda: _server.serve({"fake": config}, history_path=tmp_path / "h.db", log=print)
    return given


async def test_serve_called_from_a_notebook_cell_serves(serving):
    # uvicorn runs its server with asyncio.run: from a cell it was refused ("Cannot run the
    # event loop while another loop is running") after every check had passed.
    served = []

    def run(server):  # as uvicorn's: a loop of its own, for as long as it serves
        served.append(asyncio.run(asyncio.sleep(0, result=server.config.app)))

    serving.run = run
    serving.serve()
    assert served and served[0] is not None


async def test_interrupting_a_cell_that_serves_stops_the_server(serving):
    # The kernel's interrupt reaches the cell's thread, not the server's: it is told to
    # stop there (drained as on Ctrl-C), and the cell then sees the interrupt.
    stopped = threading.Event()
    serving_now = threading.Event()

    def run(server):
        async def serve():
            serving_now.set()
            while not server.should_exit:
                await asyncio.sleep(0.01)
            stopped.set()

        asyncio.run(serve())

    serving.run = run
    interrupt_the_cell_once(serving_now)
    with pytest.raises(KeyboardInterrupt):
        serving.serve()
    assert stopped.is_set()  # stopped before the interrupt reached the cell


async def test_interrupting_a_cell_with_an_await_stops_its_sync_run(answering):
    # ipykernel runs a cell with a top-level await as a task of its loop, and its interrupt
    # only schedules that task's cancellation there: a sync run blocking the cell never let
    # the loop run, so the interrupt did not reach it and its calls ran to their end.
    from langgraph_moa import MoAConfig, create_moa_graph

    started, cancelled = hanging(answering)
    graph = create_moa_graph(MoAConfig(proposers=[ENDPOINT], aggregator=ENDPOINT))
    await asyncio.sleep(0)  # the cell's top-level await
    kernels = interrupt_the_cell_once(started, awaiting=True)
    with pytest.raises(KeyboardInterrupt):
        graph.invoke({"messages": [("user", "Say alpha1.")]})
    assert cancelled.wait(30)
    assert signal.getsignal(signal.SIGINT) is kernels  # the kernel's handler is back


async def test_interrupting_a_serving_cell_with_an_await_stops_the_server(serving):
    # The same interrupt, in a cell with a top-level await, left the server serving and the
    # kernel busy: a second interrupt did not reach it either, only a restart did.
    stopped, serving_now = threading.Event(), threading.Event()

    def run(server):
        async def serve():
            serving_now.set()
            for _ in range(int(HANG_S / 0.01)):  # stops by itself where the test fails
                if server.should_exit:
                    stopped.set()
                    return
                await asyncio.sleep(0.01)

        asyncio.run(serve())

    serving.run = run
    await asyncio.sleep(0)  # the cell's top-level await
    interrupt_the_cell_once(serving_now, awaiting=True)
    with pytest.raises(KeyboardInterrupt):
        serving.serve()
    assert stopped.is_set()


async def test_interrupting_a_cell_with_an_await_cancels_its_langsmith_example(
    answering, monkeypatch, tmp_path
):
    from langgraph_moa.eval.langsmith_eval import evaluate_system

    started, cancelled = hanging(answering)
    evaluated_in_this_thread(monkeypatch)
    await asyncio.sleep(0)  # the cell's top-level await
    interrupt_the_cell_once(started, awaiting=True)
    with pytest.raises(KeyboardInterrupt):
        evaluate_system(SYSTEM, [], cache_dir=tmp_path, upload_results=False, max_concurrency=0)
    assert cancelled.wait(30)


async def test_a_second_interrupt_in_a_cell_with_an_await_leaves_a_run_that_closes():
    # An interrupted sync run is closed once the step under way ends (a Retry-After's wait
    # of up to a minute), and a second interrupt is the way out. In a cell with a top-level
    # await that wait had the kernel's handler back: the second interrupt did not reach it.
    from langgraph_moa.run._interrupt import interruptible

    stepping, released, left = threading.Event(), threading.Event(), threading.Event()

    def run():
        stepping.set()
        released.wait(HANG_S)  # a step that does not end soon
        yield "never"

    await asyncio.sleep(0)  # the cell's top-level await
    kernels = kernels_handler()
    signal.signal(signal.SIGINT, kernels)  # conftest restores it
    cell = threading.get_ident()

    def interrupt_until_left() -> None:
        if stepping.wait(30):
            while not left.wait(0.05):
                signal.pthread_kill(cell, signal.SIGINT)

    threading.Thread(target=interrupt_until_left, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            list(interruptible(run()))
    finally:
        left.set()
        released.set()
    assert isinstance(raised.value.__context__, KeyboardInterrupt)  # a second one, closing
    assert signal.getsignal(signal.SIGINT) is kernels


async def test_an_interrupt_as_a_sync_call_ends_leaves_the_kernels_handler(monkeypatch):
    # `signal.signal` runs a pending handler before it changes it: an interrupt that came as
    # the kernel's handler was put back ran the one raising KeyboardInterrupt, which cut the
    # putting back short and stayed the handler for the rest of the cell.
    from langgraph_moa.transport._call_loop import interrupts_raised_here

    kernels = kernels_handler(on_interrupt=lambda: None)
    signal.signal(signal.SIGINT, kernels)  # conftest restores it
    put, came = signal.signal, threading.Event()

    def interrupted_as_put_back(signum, handler):
        if handler is kernels and not came.is_set():
            came.set()
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # comes now
        return put(signum, handler)

    monkeypatch.setattr(signal, "signal", interrupted_as_put_back)
    with pytest.raises(KeyboardInterrupt), interrupts_raised_here():
        pass
    assert came.is_set()
    assert signal.getsignal(signal.SIGINT) is kernels


async def test_serve_from_a_notebook_cell_serves_in_the_cells_context(serving):
    # Outside a notebook uvicorn's asyncio.run serves in a copy of the caller's context, so
    # `with tracing_context(enabled=False): serve(...)` keeps the served runs untraced; from
    # a cell the server's thread started with an empty context, and they were traced.
    from langsmith import tracing_context
    from langsmith.run_helpers import get_tracing_context

    seen = []

    def run(server):
        async def serve():
            seen.append(get_tracing_context()["enabled"])

        asyncio.run(serve())

    serving.run = run
    with tracing_context(enabled=False):
        serving.serve()
    assert seen == [False]


@pytest.mark.parametrize("keep_waiting", [False, True])
def test_run_apart_stops_its_work_on_an_interrupt_in_its_threads_start(monkeypatch, keep_waiting):
    # The one helper of `serve` and `moa eval` from a cell: an interrupt while the thread
    # starts stops the work; it is raised at once, or once the work ended (a server's drain).
    from langgraph_moa.transport._call_loop import run_apart

    release, ended = threading.Event(), threading.Event()
    start = threading.Thread.start

    def start_then_interrupted(thread):
        start(thread)
        if thread.name == "apart":
            raise KeyboardInterrupt

    def work() -> None:
        release.wait(30)
        ended.set()

    monkeypatch.setattr(threading.Thread, "start", start_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_apart(work, release.set, keep_waiting=keep_waiting, name="apart")
    assert release.is_set()
    assert ended.wait(30)


def test_run_apart_returns_what_its_work_returns_in_the_callers_context():
    import contextvars

    from langgraph_moa.transport._call_loop import run_apart

    seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="")
    seen.set("the caller's")
    assert run_apart(seen.get, lambda: None, keep_waiting=False, name="apart") == "the caller's"
