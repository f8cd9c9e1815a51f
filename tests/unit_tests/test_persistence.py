"""A checkpointed MoA as a LangGraph persistence user sees it: replay, durability modes, a
subgraph between two `interrupt()` nodes, and what its state holds for the serializer."""

import logging
import sqlite3
import threading

import pytest
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, interrupt

from langgraph_moa import MoAConfig, RetrySettings, create_moa_graph
from tests.helpers import QUESTION

DEADLINE_S = 30.0

THREAD = {"configurable": {"thread_id": "t"}}


class Killed(BaseException):
    """Stands for the process dying: no node catches it, nothing after it runs."""


def flaky_config(fake, fail, layers=3, reply=None):
    return MoAConfig(
        proposers=[fake("A", reply=reply), fake("FLAKY", fail=fail)],
        aggregator=fake("AGG"),
        layers=layers,
        retry=RetrySettings(max_attempts=3, initial_interval=0.0, jitter=False),
    )


def three_layers(flaky_attempts):
    """The (model, layer, attempts) of a finished `flaky_config` run, FLAKY's first call
    having made `flaky_attempts`."""
    return [("A", 1, 1), ("FLAKY", 1, flaky_attempts), ("A", 2, 1), ("FLAKY", 2, 1), ("AGG", 3, 1)]


def attempts(out):
    return [(c["configured_model"], c["layer"], c["attempts"]) for c in out["calls"]]


def test_a_replay_before_the_aggregator_asks_only_it_and_counts_each_call_once(fake, log):
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    first = graph.invoke(QUESTION, THREAD)
    before = next(s for s in graph.get_state_history(THREAD) if s.next == ("aggregate",))
    asked = len(log.calls)
    replay = graph.invoke(None, before.config)
    assert [c.label for c in log.calls[asked:]] == ["AGG"]
    assert [m.text for m in replay["messages"]] == ["Explain X", "AGG #2"]
    assert len(replay["calls"]) == 3
    assert replay["usage"]["total"]["calls"] == first["usage"]["total"]["calls"] == 3
    assert replay["messages"][-1].response_metadata["moa"]["usage"] == replay["usage"]


def test_a_replay_of_a_retried_layer_does_not_count_the_first_branchs_attempts(fake, log):
    config = flaky_config(fake, fail=lambda n, m: ConnectionError("reset") if n == 1 else None)
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    first = graph.invoke(QUESTION, THREAD)
    assert ("FLAKY", 1, 2) in attempts(first)
    layer_one = [s for s in graph.get_state_history(THREAD) if s.next == ("propose", "propose")]
    replay = graph.invoke(None, layer_one[-1].config)  # the oldest: layer 1's fan-out
    assert attempts(replay) == three_layers(flaky_attempts=1)
    assert all(c["retried_errors"] == [] for c in replay["calls"])
    assert replay["usage"]["total"]["calls"] == 5


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_run_cut_off_resumes_with_the_same_records_in_every_durability_mode(
    fake, log, durability
):
    # The "dead process" dies once A has answered layer 1: under load, A's answer could come
    # after FLAKY's death, and a resume then asked A again (seen once in a loaded unit run).
    answered = threading.Event()

    def fail(n, messages):
        if n == 2:
            answered.wait(DEADLINE_S)
        return {1: ConnectionError("reset by peer"), 2: Killed()}.get(n)

    def reply(label, n, messages):
        answered.set()
        return f"{label} #{n}"

    config = flaky_config(fake, fail, reply=reply)
    saver = InMemorySaver()
    with pytest.raises(Killed):
        create_moa_graph(config, checkpointer=saver).invoke(QUESTION, THREAD, durability=durability)
    asked = len(log.calls)
    out = create_moa_graph(config, checkpointer=saver).invoke(None, THREAD, durability=durability)
    assert sorted(c.label for c in log.calls[asked:]) == ["A", "AGG", "FLAKY", "FLAKY"]
    # The attempt the "dead process" made is lost with it; the one before it is counted.
    assert attempts(out) == three_layers(flaky_attempts=2)
    assert out["calls"][1]["retried_errors"] == ["ConnectionError: reset by peer"]
    assert out["usage"]["total"]["calls"] == 5
    assert out["messages"][-1].text == "AGG #1"


def test_a_moa_subgraph_between_two_interrupts_is_inspected_edited_and_resumed(fake, log):
    aggregator = fake("AGG", fail=lambda n, m: Killed() if n == 1 else None)
    moa = create_moa_graph(
        MoAConfig(
            proposers=[fake("A"), fake("B")],
            aggregator=aggregator,
            layers=2,
            retry=RetrySettings(max_attempts=1),
        )
    )

    def ask(state):
        return {"messages": [("user", interrupt("question?"))]}

    def review(state):
        return {"messages": [("user", f"review: {interrupt(state['messages'][-1].text)}")]}

    app = (
        StateGraph(MessagesState)
        .add_node("ask", ask)
        .add_node("moa", moa)
        .add_node("review", review)
        .add_edge(START, "ask")
        .add_edge("ask", "moa")
        .add_edge("moa", "review")
        .add_edge("review", END)
        .compile(checkpointer=InMemorySaver())
    )
    assert app.invoke({"messages": []}, THREAD)["__interrupt__"][0].value == "question?"
    with pytest.raises(Killed):  # the aggregator dies inside the subgraph
        app.invoke(Command(resume="Explain X"), THREAD)
    inner = app.get_state(THREAD, subgraphs=True).tasks[0].state
    assert inner.next == ("aggregate",)
    assert [c["output"] for c in inner.values["calls"]] == ["A #1", "B #1"]
    app.update_state(inner.config, {"references": ["the approved proposal"]})
    paused = app.invoke(None, THREAD)
    assert "the approved proposal" in " ".join(m.text for m in log.by("AGG")[-1].messages)
    assert paused["__interrupt__"][0].value == "AGG #2"
    done = app.invoke(Command(resume="fine"), THREAD)
    assert [m.text for m in done["messages"]] == ["Explain X", "AGG #2", "review: fine"]


def plain(value) -> bool:
    """Whether `value` is made only of what the serializer writes without a type of ours."""
    if value is None or isinstance(value, (str, int, float, bool, BaseMessage)):
        return True
    if isinstance(value, list):
        return all(plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    return False


def test_every_checkpointed_value_round_trips_without_pickle_or_warning(fake, caplog):
    config = MoAConfig(
        proposers=[fake("A", logprob=lambda n: -0.5), fake("B", fail=lambda n, m: RuntimeError())],
        aggregator=fake("AGG"),
        layers=3,
        retry=RetrySettings(max_attempts=1),
    )
    saver = SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False))
    graph = create_moa_graph(config, checkpointer=saver)
    serdes = [JsonPlusSerializer(), JsonPlusSerializer(allowed_msgpack_modules=None)]  # strict
    with caplog.at_level(logging.WARNING, logger="langgraph"):
        graph.invoke(QUESTION, THREAD)
        history = list(graph.get_state_history(THREAD))
        for snapshot in history:
            for key, value in snapshot.values.items():
                assert plain(value), key
                for serde in serdes:
                    kind, data = serde.dumps_typed(value)
                    assert kind != "pickle"
                    assert serde.loads_typed((kind, data)) == value
    assert caplog.text == ""
    assert len(history) > 5
