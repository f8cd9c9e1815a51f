"""Turns of one checkpointed thread: each run's accounting is its own, never its last turn's.

A follow-up question on a `thread_id` starts a fresh run (`prepare` resets the run's data);
what a run shows before it ends, or leaves behind when it fails, must not be the turn before.
"""

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, Send, StateUpdate
from pydantic import BaseModel

from langgraph_moa import (
    AllProposersFailedError,
    MoAConfig,
    MoAInputError,
    RetrySettings,
    create_moa_graph,
)
from tests.helpers import QUESTION

THREAD = {"configurable": {"thread_id": "t"}}
FOLLOW_UP = {"messages": [("user", "And Y?")]}


class Verdict(BaseModel):
    """A `response_format` model, as a user's application defines it."""

    city: str


def test_a_follow_up_stopped_before_its_aggregator_shows_no_usage_of_the_turn_before(fake):
    """`usage` was written only at a run's end and never reset: a second turn stopped at
    `interrupt_before=["aggregate"]` returned (and its state held) the first turn's totals
    beside its own calls, 3 calls summed where 2 were made."""
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    first = graph.invoke(QUESTION, THREAD, interrupt_before=["aggregate"])
    graph.invoke(None, THREAD)
    second = graph.invoke(FOLLOW_UP, THREAD, interrupt_before=["aggregate"])
    assert len(second["calls"]) == 2
    assert first.get("usage") is None
    assert second.get("usage") is None
    assert graph.get_state(THREAD).values.get("usage") is None
    done = graph.invoke(None, THREAD)
    assert done["usage"]["total"]["calls"] == 3  # the second turn's own, once it ends


def test_a_failed_follow_up_leaves_no_answer_or_usage_of_the_turn_before(fake):
    """A second turn that failed left the thread with the first turn's
    `structured_response` and `usage` beside its own failed calls: `get_state` read as if
    the failed question had been answered, with the first answer."""
    agg = fake("AGG", reply=lambda label, n, msgs: '{"city": "Paris"}')
    proposer = fake("A", fail=lambda n, m: RuntimeError("down") if n > 1 else None)
    config = MoAConfig(
        proposers=[proposer], aggregator=agg, layers=2, retry=RetrySettings(max_attempts=1)
    )
    graph = create_moa_graph(config, checkpointer=InMemorySaver(), response_format=Verdict)
    assert graph.invoke(QUESTION, THREAD)["structured_response"] == Verdict(city="Paris")
    with pytest.raises(AllProposersFailedError):
        graph.invoke(FOLLOW_UP, THREAD)
    state = graph.get_state(THREAD).values
    assert [c["status"] for c in state["calls"]] == ["failed"]
    assert state.get("structured_response") is None
    assert state.get("usage") is None


@pytest.mark.parametrize("bulk", [False, True])
async def test_a_question_put_in_as_start_runs_without_the_turn_befores_call_options(
    fake, log, bulk
):
    """A new question given by `update_state(..., as_node="__start__")` (the documented way
    in by an edit, the LangGraph server's `threads.update_state`) ran with the stop
    sequences, seed and tools of the turn before: only `invoke`'s input reset them."""
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    graph.invoke({**QUESTION, "stop": ["STOP"], "call_kwargs": {"seed": 7}}, THREAD)
    assert log.by("AGG")[0].kwargs == {"seed": 7, "stop": ["STOP"]}
    if bulk:
        update = StateUpdate({"messages": [("user", "And Y?")]}, "__start__")
        await graph.abulk_update_state(THREAD, [[update]])
    else:
        graph.update_state(THREAD, {"messages": [("user", "And Y?")]}, as_node="__start__")
    graph.invoke(None, THREAD)
    assert [c.kwargs for c in log.calls[2:]] == [{}, {}]


def answered_thread(fake):
    """A thread whose first turn ran with stop sequences and a seed."""
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    graph.invoke({**QUESTION, "stop": ["STOP"], "call_kwargs": {"seed": 7}}, THREAD)
    return graph


def test_a_question_put_in_as_start_by_a_plain_tuple_is_applied(fake, log):
    """`bulk_update_state` takes each update as a `(values, as_node, task_id)` tuple, as
    LangGraph documents it; reading `.as_node` off it failed such an edit with
    AttributeError."""
    graph = answered_thread(fake)
    graph.bulk_update_state(THREAD, [[({"messages": [("user", "And Y?")]}, "__start__", None)]])
    out = graph.invoke(None, THREAD)
    assert [c.kwargs for c in log.calls[2:]] == [{}, {}]
    assert [m.text for m in out["messages"]][-2:] == ["And Y?", "AGG #2"]


@pytest.mark.parametrize(
    "edit",
    [
        lambda g, question: g.update_state(THREAD, question, as_node="__input__"),
        lambda g, question: g.update_state(THREAD, [(question, "__start__")], as_node="__copy__"),
    ],
    ids=["as-input", "in-a-copy"],
)
def test_a_question_put_in_as_input_runs_without_the_turn_befores_call_options(fake, log, edit):
    """LangGraph's other edits that write a run's input (``as_node="__input__"``, and a
    ``__copy__`` whose update is as ``__start__``) left the first turn's stop sequences and
    seed in the state, and the next question was sent them."""
    graph = answered_thread(fake)
    edit(graph, {"messages": [("user", "And Y?")]})
    graph.invoke(None, THREAD)
    assert [c.kwargs for c in log.calls[2:]] == [{}, {}]


@pytest.mark.parametrize(
    "question",
    [
        {"messages": 5},
        {"messages": [("user", "And Y?")], "tools": [{"name": "lookup"}]},
    ],
    ids=["messages", "tools"],
)
def test_a_question_put_in_as_start_is_checked_as_a_runs_input_is(fake, log, question):
    """An edit as ``__start__`` is the run's input, but was not checked as one: messages
    that are not a conversation failed in LangChain's coercion (NotImplementedError), and
    a malformed tool failed every proposer call as if the provider had."""
    graph = answered_thread(fake)
    with pytest.raises(MoAInputError):
        graph.update_state(THREAD, question, as_node="__start__")
    assert graph.get_state(THREAD).next == ()
    assert len(log.calls) == 2


def test_a_run_without_a_response_format_has_no_structured_response_key(fake):
    """Resetting the turn before's answer wrote `structured_response: None` into every run,
    so a graph built without a `response_format` answered with that key too (in `invoke`'s
    output and the LangGraph server's thread values), which only a structured answer had."""
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    assert "structured_response" not in graph.invoke(QUESTION, THREAD)
    assert "structured_response" not in graph.invoke(FOLLOW_UP, THREAD)
    assert "structured_response" not in graph.get_state(THREAD).values


@pytest.mark.parametrize(
    "update",
    [
        {"messages": 5},
        {"messages": [("user", "And Y?")], "tools": [{"name": "lookup"}]},
        [("messages", 5)],
    ],
    ids=["messages", "tools", "as-pairs"],
)
def test_a_commands_update_is_checked_as_a_runs_input_is(fake, log, update):
    """A `Command` given as a run's input passed unchecked: messages that are not a
    conversation failed in LangChain's coercion, and a malformed tool failed every proposer
    call as if the provider had."""
    graph = answered_thread(fake)
    with pytest.raises(MoAInputError):
        graph.invoke(Command(update=update, goto="prepare"), THREAD)
    assert len(log.calls) == 2


@pytest.mark.parametrize(
    "update",
    [
        {"messages": [("user", "And Y?")]},
        [("messages", [("user", "And")]), ("messages", [("user", "And Y?")])],
    ],
    ids=["dict", "pairs-giving-messages-twice"],
)
def test_a_command_to_prepare_is_a_new_turn_without_the_turn_befores_call_options(
    fake, log, update
):
    """`Command(update={"messages": ...}, goto="prepare")` starts a new run (`prepare` resets
    the run's data) but kept the first turn's stop sequences and seed: only a dict input and
    an input edit reset them."""
    graph = answered_thread(fake)
    out = graph.invoke(Command(update=update, goto="prepare"), THREAD)
    assert [c.kwargs for c in log.calls[2:]] == [{}, {}]
    assert [m.text for m in out["messages"]][-2:] == ["And Y?", "AGG #2"]


def test_a_command_within_a_run_keeps_its_call_options(fake, log):
    """A `Command` that goes on with a run (here, past its interrupt, adding a message) is
    no new turn: the run's call options stay the ones its input gave."""
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    graph.invoke({**QUESTION, "stop": ["STOP"]}, THREAD, interrupt_before=["aggregate"])
    graph.invoke(Command(update={"messages": [("user", "Briefly, please.")]}), THREAD)
    assert log.by("AGG")[0].kwargs == {"stop": ["STOP"]}


LOOKUP = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
}


def stopped_with_tools(fake):
    """A thread whose run, given a tool, stopped before its aggregator."""
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    graph.invoke({**QUESTION, "tools": [LOOKUP]}, THREAD, interrupt_before=["aggregate"])
    return graph


def test_a_command_within_a_run_may_choose_a_tool_the_run_has(fake, log):
    """A `Command` that goes on with a run keeps the run's tools, but its `tool_choice` was
    checked against the tools its own update gave (none): naming the run's own tool was
    refused as if no tools were bound."""
    graph = stopped_with_tools(fake)
    update = {"messages": [("user", "Use the lookup.")], "tool_choice": "lookup"}
    graph.invoke(Command(update=update), THREAD)
    assert len(log.by("AGG")) == 1
    assert graph.get_state(THREAD).values["tool_choice"] == "lookup"


@pytest.mark.parametrize(
    "command",
    [
        Command(update={"tools": [{"name": "lookup"}]}),
        Command(update={"tool_choice": "other", "tools": [LOOKUP]}),
        Command(update={"call_kwargs": {"seed": 1.5}}),
    ],
    ids=["malformed-tool", "choice-of-no-given-tool", "seed"],
)
def test_a_command_within_a_run_has_its_call_options_checked(fake, log, command):
    """A `Command`'s call options were checked only beside new messages: a malformed tool
    given on its own went on to every remaining call of the run."""
    graph = stopped_with_tools(fake)
    with pytest.raises(MoAInputError):
        graph.invoke(command, THREAD)
    assert len(log.calls) == 1


def test_a_send_to_prepare_has_its_input_checked(fake, log):
    """`Command(goto=Send("prepare", input))` gives `prepare` that input as its state, which
    went unchecked: messages that are not a conversation failed inside the node with a
    TypeError."""
    graph = answered_thread(fake)
    with pytest.raises(MoAInputError):
        graph.invoke(Command(goto=Send("prepare", {"messages": 5})), THREAD)
    assert len(log.calls) == 2


def test_a_command_to_prepare_on_a_thread_stopped_mid_run_drops_the_run_before(fake, log):
    """A new turn given as a `Command` kept the stopped run's next node: its aggregator ran
    beside `prepare`, on the new question, paid for and answering it into the history ahead
    of the new turn's own answer. A dict input drops the stopped run, as this does now."""
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    graph.invoke(QUESTION, THREAD, interrupt_before=["aggregate"])
    out = graph.invoke(Command(update={"messages": [("user", "And Y?")]}, goto="prepare"), THREAD)
    assert [m.text for m in out["messages"]] == ["Explain X", "And Y?", "AGG #1"]
    assert [c.label for c in log.calls] == ["A", "A", "AGG"]
