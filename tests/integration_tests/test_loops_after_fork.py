"""The parent's event loops after a fork: a child that drops what it inherited leaves them be.

A forked child shares its parent's epoll instances: when it dropped the parent's models and
their HTTP connections (or exited), each connection unregistered itself from the parent's
loop's epoll set, and the parent's next call on a reused keep-alive connection never woke
its loop. These tests fork for real, with a scripted server in this process.
"""

import asyncio
import gc
import os
import threading

import pytest
from langchain_core.messages import HumanMessage

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.testing.scripted_server import ScriptedServer
from tests.helpers import exit_code

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")

WAIT_S = 30.0
"""The guard on the parent's call after the fork: a loop that no longer hears its
connections waits for ever, so reaching it fails the test (no timing is asserted)."""

CHILD_WAIT_S = 60.0
"""The guard on the forked child's run: a child that hangs (a lock another parent thread
held at the fork) is killed and fails the test instead of holding the run for ever."""

QUESTION = {"messages": [HumanMessage("hi there")]}


def _config(url: str) -> MoAConfig:
    return MoAConfig(proposers=[f"a@{url}", f"b@{url}"], aggregator=f"agg@{url}", layers=2)


def _fork_a_child_that_runs(config: MoAConfig, how: str) -> None:
    """Fork a child that runs a graph of its own, drops what it inherited, and exits."""
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's lines are not measured
        code = 1
        try:
            graph = create_moa_graph(config)
            if how == "invoke":
                graph.invoke(QUESTION)
            else:
                asyncio.run(graph.ainvoke(QUESTION))
            del graph
            gc.collect()
            code = 0
        finally:
            os._exit(code)
    assert exit_code(child, CHILD_WAIT_S) == 0


def _answer_of(result: dict) -> str:
    return str(result["messages"][-1].content)


@pytest.mark.parametrize("how", ["ainvoke", "invoke"])
def test_the_parents_loop_in_a_thread_keeps_working_after_a_forked_child_ran(how):
    # The parent runs its graph on a loop of a daemon thread (a server's), forks a worker
    # that makes calls of its own and exits: the parent's next run never returned.
    with ScriptedServer() as server:
        config = _config(server.url)
        graph = create_moa_graph(config)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            first = asyncio.run_coroutine_threadsafe(graph.ainvoke(QUESTION), loop)
            assert _answer_of(first.result(WAIT_S))
            _fork_a_child_that_runs(config, how)
            again = asyncio.run_coroutine_threadsafe(graph.ainvoke(QUESTION), loop)
            try:
                assert _answer_of(again.result(WAIT_S))
            finally:
                again.cancel()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT_S)
            if not thread.is_alive():
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()


def test_the_parents_idle_loop_keeps_working_after_a_forked_child_ran():
    # A loop driven by hand (run_until_complete, kept open between runs) idles at the fork
    # with its keep-alive connections registered: the child took them out of its epoll set.
    with ScriptedServer() as server:
        config = _config(server.url)
        graph = create_moa_graph(config)
        loop = asyncio.new_event_loop()
        try:
            assert _answer_of(loop.run_until_complete(graph.ainvoke(QUESTION)))
            _fork_a_child_that_runs(config, "ainvoke")
            again = asyncio.wait_for(graph.ainvoke(QUESTION), WAIT_S)
            assert _answer_of(loop.run_until_complete(again))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
