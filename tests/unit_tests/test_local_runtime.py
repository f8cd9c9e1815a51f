"""The local runtime's bookkeeping, without starting a model server."""

import threading

import pytest
from langchain_core.messages import AIMessage

from langgraph_moa.local.runtime import LocalRuntime, _port_was_taken
from langgraph_moa.run._accounting import finish_reason, ok_record, token_logprobs


class FakeServer:
    def __init__(self):
        self.terminated = False

    def terminate(self):
        self.terminated = True


def test_ctrl_c_kills_servers_even_while_the_runtime_lock_is_held():
    # The Ctrl-C handler runs in the main thread, which may hold the lock while it spawns a
    # server: waiting for the lock there would hang forever (a run once did not stop in 60 s).
    runtime = LocalRuntime(threads=1, slots=1)
    server = FakeServer()
    runtime._servers["m"] = server
    with runtime._lock:
        done = threading.Event()
        worker = threading.Thread(target=lambda: (runtime.kill_now(), done.set()), daemon=True)
        worker.start()
        assert done.wait(10.0), "kill_now waited for the runtime lock"
    assert server.terminated


def test_a_bind_failure_in_the_server_log_means_the_port_was_taken():
    log = "E srv  start: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 33045"
    assert _port_was_taken(log)
    assert not _port_was_taken("E srv  load_model: failed to load model")


def test_token_logprobs_give_each_record_its_mean_confidence():
    response = AIMessage(
        content="Paris",
        response_metadata={
            "logprobs": {
                "content": [{"token": "Par", "logprob": -0.5}, {"token": "is", "logprob": -0.1}]
            }
        },
    )
    assert token_logprobs(response) == [-0.5, -0.1]
    record = ok_record(
        role="proposer",
        layer=1,
        proposer=0,
        sample=0,
        configured_model="m",
        response=response,
        latency_s=0.1,
    )
    assert record["mean_logprob"] == -0.3 and record["logprob_tokens"] == 2
    bare = ok_record(
        role="proposer",
        layer=1,
        proposer=0,
        sample=0,
        configured_model="m",
        response=AIMessage(content="Paris"),
        latency_s=0.1,
    )
    assert bare["mean_logprob"] is None and bare["logprob_tokens"] == 0
    assert bare["finish_reason"] is None
    stopped = AIMessage(content="Par", response_metadata={"finish_reason": "length"})
    assert finish_reason(stopped) == "length"


def test_the_core_room_lets_one_model_in_at_a_time_with_all_its_calls():
    from langgraph_moa.local.runtime import CoreRoom

    room = CoreRoom(shared=False)
    room.enter("big")
    room.enter("big")  # a second call of the same model joins its batch at once
    entered = threading.Event()
    waiter = threading.Thread(target=lambda: (room.enter("small"), entered.set()), daemon=True)
    waiter.start()
    assert not entered.wait(0.2), "another model got in while the room was busy"
    room.leave()
    assert not entered.wait(0.2), "another model got in before the last call left"
    room.leave()
    assert entered.wait(10.0)
    room.leave()


async def test_an_async_call_cancelled_while_waiting_gives_its_place_back():
    import asyncio

    from langgraph_moa.local.runtime import CoreRoom

    room = CoreRoom(shared=False)
    room.enter("big")

    async def small_call():
        async with room.aheld("small"):
            await asyncio.sleep(0)

    task = asyncio.create_task(small_call())
    await asyncio.sleep(0.1)
    task.cancel()
    room.leave()
    await asyncio.sleep(0.3)  # the waiting thread gets in, then leaves at once
    async with room.aheld("big"):
        pass  # the room is free again: this would hang if the cancelled call kept its place
    assert room._inside == 0


def test_shared_cores_let_every_model_in():
    from langgraph_moa.local.runtime import CoreRoom

    room = CoreRoom(shared=True)
    room.enter("big")
    room.enter("small")  # returns at once
    room.leave()
    room.leave()


def test_the_local_runtime_does_not_import_the_model_resolution_it_serves():
    # models.py builds local models through the runtime; the runtime importing models back
    # was an import cycle. Both share the HTTP client from a module of its own.
    import ast
    from pathlib import Path

    import langgraph_moa.local.runtime as runtime

    tree = ast.parse(Path(runtime.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "langgraph_moa.providers._models" not in imported


@pytest.mark.parametrize("name", ["LANGGRAPH_MOA_THREADS", "LANGGRAPH_MOA_SLOTS"])
@pytest.mark.parametrize("value", ["four", "2.5", "0", "-1", "1e3", "²"])
def test_a_bad_thread_or_slot_count_is_refused_naming_the_variable(monkeypatch, name, value):
    """int("four") raised a bare ValueError, and 0 or -1 reached llama.cpp."""
    from langgraph_moa.errors import MoAConfigError

    monkeypatch.setenv(name, value)
    with pytest.raises(MoAConfigError, match=f"^{name} must be a whole number of at least 1"):
        LocalRuntime()


def test_thread_and_slot_counts_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("LANGGRAPH_MOA_THREADS", " 3 ")
    monkeypatch.setenv("LANGGRAPH_MOA_SLOTS", "2")
    runtime = LocalRuntime()
    assert (runtime.threads, runtime.slots) == (3, 2)
    monkeypatch.setenv("LANGGRAPH_MOA_SLOTS", "")
    assert LocalRuntime().slots == 4  # unset or empty: the default
