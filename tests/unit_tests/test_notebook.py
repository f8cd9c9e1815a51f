"""Sync entry points called from a notebook cell: a thread whose event loop runs.

A Jupyter kernel runs each cell in the thread of its event loop (top-level ``await`` runs
on it), so a sync call made there finds a running loop, where ``asyncio.run`` is refused.
Each test is a coroutine, as a cell is.
"""

import asyncio
import signal
import threading
import time

import pytest

from langgraph_moa.providers import _models
from tests.fakes import FakeChat

SYSTEM = "single:m@http://upstream.example.test/v1"


@pytest.fixture
def answering(monkeypatch):
    """Every endpoint spec is answered by the model `answering.model` gives (a fake)."""
    made: list[FakeChat] = []

    def build(spec, params, **_):
        made.append(answering.model())
        return made[-1]

    answering.model = lambda: FakeChat(label="m", reply=lambda *_: "alpha1")
    monkeypatch.setattr(_models, "build_model", build)
    yield answering
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

    started, cancelled = threading.Event(), threading.Event()

    class Hanging(FakeChat):
        async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            raise AssertionError("the interrupted example's call ran to its end")

    answering.model = lambda: Hanging(label="m")
    evaluated_in_this_thread(monkeypatch)
    # The kernel's interrupt raises in the cell's thread (asyncio.Runner's handler, which
    # the test's loop installed, would only cancel the test's task).
    signal.signal(signal.SIGINT, signal.default_int_handler)  # restored by conftest
    main = threading.get_ident()

    def interrupt_once_called() -> None:
        if started.wait(30):
            signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt_once_called, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        evaluate_system(SYSTEM, [], cache_dir=tmp_path, upload_results=False, max_concurrency=0)
    deadline = time.monotonic() + 30
    while not cancelled.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cancelled.is_set()
