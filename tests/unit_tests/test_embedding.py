"""The MoA graph as a compiled-subgraph node of a user's checkpointed LangGraph app.

An app on `MessagesState` adds the MoA as a node and shares only `messages` with it; the
app's checkpointer, streams, interrupts, time travel, durability and recursion limit
then reach into the MoA. These tests pin that the MoA behaves as any LangGraph node does
there: its model calls are made once per run of the node, never again on a resume or a
replay past it, and its state stays its own.
"""

import asyncio
import contextlib
import gc
import logging
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.errors import GraphRecursionError
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, interrupt
from pydantic import BaseModel

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.errors import MoAError
from langgraph_moa.run._answer import final_answer_only
from tests.fakes import WordStreamer

QUESTION = {"messages": [("user", "hi")]}


def thread(name: str) -> dict:
    return {"configurable": {"thread_id": name}}


def last_words(label: str, n: int, messages: list[BaseMessage]) -> str:
    """Answer with the last word the model was shown, so a test can tell whose turn it was."""
    return f"{label} saw {messages[-1].text.split()[-1]}"


@pytest.fixture
def moa(fake):
    """Two proposers, one layer of proposals, an aggregator: three calls a run."""
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2)
    assert config.calls_per_run() == 3
    return create_moa_graph(config)


def ask(state: MessagesState) -> dict:
    return {"messages": [HumanMessage("Explain X")]}


def sign(state: MessagesState) -> dict:
    return {"messages": [AIMessage(state["messages"][-1].text + " (signed)")]}


def app_around(moa, saver):
    """ask -> moa -> sign, the MoA a compiled-subgraph node of the app."""
    builder = StateGraph(MessagesState).add_node("ask", ask).add_node("moa", moa)
    builder.add_node("sign", sign).add_edge(START, "ask").add_edge("ask", "moa")
    builder.add_edge("moa", "sign").add_edge("sign", END)
    return builder.compile(checkpointer=saver)


def memory_saver(tmp_path) -> Callable[[], InMemorySaver]:
    saver = InMemorySaver()
    return lambda: saver


def sqlite_saver(tmp_path) -> Callable[[], SqliteSaver]:
    """Each call opens the database anew, as a second process would."""
    path = tmp_path / "checkpoints.db"
    return lambda: SqliteSaver(sqlite3.connect(path, check_same_thread=False))


SAVERS = pytest.mark.parametrize("savers", [memory_saver, sqlite_saver], ids=["memory", "sqlite"])


@SAVERS
def test_two_turns_on_one_thread_share_only_messages(moa, log, savers, tmp_path):
    saver = savers(tmp_path)
    first = app_around(moa, saver()).invoke(QUESTION, thread("t"))
    assert [m.text for m in first["messages"]] == ["hi", "Explain X", "AGG #1", "AGG #1 (signed)"]
    assert len(log.calls) == 3

    app = app_around(moa, saver())
    second = app.invoke({"messages": [("user", "again")]}, thread("t"))
    assert [m.text for m in second["messages"]][4:] == [
        "again",
        "Explain X",
        "AGG #2",
        "AGG #2 (signed)",
    ]
    assert len(log.calls) == 6  # three more, none repeated from the first turn
    # The second turn's models saw the whole conversation, the first answer included.
    seen = [m.text for m in log.by("AGG")[1].messages]
    assert "AGG #1 (signed)" in seen and "again" in seen
    state = app.get_state(thread("t"), subgraphs=True)
    assert list(state.values) == ["messages"] and not state.next
    assert state.values["messages"][-1].text == "AGG #2 (signed)"


@SAVERS
def test_replay_before_the_moa_calls_it_again_and_after_it_calls_nothing(
    moa, log, savers, tmp_path
):
    app = app_around(moa, savers(tmp_path)())
    app.invoke(QUESTION, thread("t"))
    history = list(app.get_state_history(thread("t")))
    before = next(h for h in history if h.next == ("moa",))
    after = next(h for h in history if h.next == ("sign",))
    log.calls.clear()

    replayed = app.invoke(None, before.config)
    assert len(log.calls) == 3 and replayed["messages"][-1].text == "AGG #2 (signed)"
    log.calls.clear()
    replayed = app.invoke(None, after.config)
    assert log.calls == [] and replayed["messages"][-1].text == "AGG #1 (signed)"

    forked = app.update_state(before.config, {"messages": [HumanMessage("Explain Y instead")]})
    out = app.invoke(None, forked)
    assert len(log.calls) == 3 and out["messages"][-1].text == "AGG #3 (signed)"
    assert {c.messages[-1].text for c in log.calls if c.label != "AGG"} == {"Explain Y instead"}
    # The fork is the thread's newest state; the run it forked from is still in its history.
    assert app.get_state(thread("t")).values["messages"][-1].text == "AGG #3 (signed)"
    kept = [
        h.values["messages"][-1].text
        for h in app.get_state_history(thread("t"))
        if h.values["messages"]
    ]
    assert "AGG #1 (signed)" in kept


async def test_a_parents_stream_carries_the_moas_events_under_its_namespace_once(fake, log):
    says = lambda label, n, messages: f"{label} says one two three"  # noqa: E731
    config = MoAConfig(
        proposers=[fake("A", reply=says), fake("B", reply=says)],
        aggregator=fake("AGG", reply=says),
        layers=2,
    )
    builder = StateGraph(MessagesState).add_node("ask", ask)
    builder.add_node("moa", create_moa_graph(config))
    app = builder.add_edge(START, "ask").add_edge("ask", "moa").add_edge("moa", END)
    app = app.compile(checkpointer=InMemorySaver())
    modes = ["updates", "messages", "custom", "values"]
    items = [i async for i in app.astream(QUESTION, thread("s"), stream_mode=modes, subgraphs=True)]

    def inside(ns: tuple[str, ...]) -> bool:
        return len(ns) == 1 and ns[0].startswith("moa:")

    parent_updates = [list(chunk) for ns, mode, chunk in items if mode == "updates" and not ns]
    assert parent_updates == [["ask"], ["moa"]]
    moa_updates = {
        k for ns, mode, chunk in items if mode == "updates" and inside(ns) for k in chunk
    }
    assert {"prepare", "propose", "aggregate"} <= moa_updates
    custom = [(ns, chunk["event"]) for ns, mode, chunk in items if mode == "custom"]
    assert [e for _, e in custom].count("started") == 3 and all(inside(ns) for ns, _ in custom)

    messages = [(ns, chunk) for ns, mode, chunk in items if mode == "messages"]
    answer = [(ns, m.text) for ns, (m, meta) in messages if final_answer_only(meta)]
    assert "".join(text for _, text in answer) == "AGG says one two three"
    assert len(answer) >= 5 and all(inside(ns) for ns, _ in answer)  # token by token
    # Its tokens once: no whole copy of the answer from the parent or the proposers' text.
    others = [m.text for ns, (m, meta) in messages if not final_answer_only(meta)]
    assert others == ["Explain X"]
    values = [chunk for ns, mode, chunk in items if mode == "values" and not ns]
    assert values[-1]["messages"][-1].text == "AGG says one two three"
    assert len(log.calls) == 3


@pytest.fixture
def strict_msgpack(monkeypatch):
    """LangGraph reads LANGGRAPH_STRICT_MSGPACK once, at import: into the serializer's
    flag, then the savers' default serializer (a class attribute built at import), and the
    compiler's flag (an allowlist from each graph's schemas). Set them all as a process
    started with the variable would have them, before the graphs and the saver are built."""
    from langgraph._internal import _serde
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.checkpoint.serde import _msgpack
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    monkeypatch.setenv("LANGGRAPH_STRICT_MSGPACK", "true")
    monkeypatch.setattr(_msgpack, "STRICT_MSGPACK_ENABLED", True)
    monkeypatch.setattr(_serde, "STRICT_MSGPACK_ENABLED", True)
    monkeypatch.setattr(BaseCheckpointSaver, "serde", JsonPlusSerializer())


def test_under_strict_msgpack_every_checkpoint_reads_back_without_a_blocked_type(
    strict_msgpack, fake, tmp_path, caplog
):
    from langgraph.checkpoint.serde.event_hooks import register_serde_event_listener

    events: list[dict] = []
    stop_listening = register_serde_event_listener(events.append)
    try:
        config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2)
        connection = sqlite3.connect(tmp_path / "strict.db", check_same_thread=False)
        saver = SqliteSaver(connection)
        app = app_around(create_moa_graph(config), saver)
        with caplog.at_level(logging.WARNING), no_warnings():
            app.invoke(QUESTION, thread("t"))
            out = app.invoke({"messages": [("user", "again")]}, thread("t"))
            stored = list(saver.list(None))
            state = app.get_state(thread("t"), subgraphs=True)
        assert out["messages"][-1].text == "AGG #2 (signed)"
        namespaces = {t.config["configurable"]["checkpoint_ns"] for t in stored}
        assert any(ns.startswith("moa:") for ns in namespaces)  # the MoA's own checkpoints too
        for saved in stored:
            for message in saved.checkpoint["channel_values"].get("messages", []):
                assert isinstance(message, BaseMessage), message
            for record in saved.checkpoint["channel_values"].get("calls", []):
                assert isinstance(record, dict) and record["status"] == "ok"
        assert all(isinstance(m, BaseMessage) for m in state.values["messages"])
        assert events == []
        assert [r.getMessage() for r in caplog.records if r.name.startswith("langgraph")] == []

        # The listener does see a type the strict reader blocks: the check above can fail.
        saver.serde.loads_typed(saver.serde.dumps_typed(Unlisted()))
        assert [e["kind"] for e in events] == ["msgpack_blocked"]
    finally:
        stop_listening()


@dataclass
class Unlisted:
    """A type no strict allowlist holds."""

    x: int = 1


@contextlib.contextmanager
def no_warnings() -> Iterator[None]:
    """Fail if a Python warning is raised inside the block."""
    # Earlier tests' garbage is collected first: a SQLite connection one left open warns as
    # it is collected on Python 3.13 ("unclosed database"), in whatever block that happens.
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert [str(w.message) for w in caught] == []


def test_interrupts_before_and_after_the_moa_call_its_models_once(moa, log):
    def gate(state: MessagesState) -> dict:
        return {"messages": [HumanMessage(f"go {interrupt('ok?')}")]}

    def review(state: MessagesState) -> dict:
        return {"messages": [AIMessage(f"{state['messages'][-1].text} {interrupt('post?')}")]}

    builder = StateGraph(MessagesState).add_node("gate", gate).add_node("moa", moa)
    builder.add_node("review", review).add_edge(START, "gate").add_edge("gate", "moa")
    app = builder.add_edge("moa", "review").add_edge("review", END)
    app = app.compile(checkpointer=InMemorySaver())

    paused = app.invoke(QUESTION, thread("i"))
    assert [i.value for i in paused["__interrupt__"]] == ["ok?"] and log.calls == []
    paused = app.invoke(Command(resume="yes"), thread("i"))
    assert [i.value for i in paused["__interrupt__"]] == ["post?"] and len(log.calls) == 3
    assert {c.messages[-1].text for c in log.calls if c.label != "AGG"} == {"go yes"}
    done = app.invoke(Command(resume="fine"), thread("i"))
    assert "__interrupt__" not in done and len(log.calls) == 3
    assert [m.text for m in done["messages"]] == ["hi", "go yes", "AGG #1", "AGG #1 fine"]


@pytest.mark.parametrize("durability", ["exit", "async", "sync"])
async def test_every_durability_makes_the_same_calls_and_keeps_the_answer(moa, log, durability):
    app = app_around(moa, InMemorySaver())
    out = await app.ainvoke(QUESTION, thread("d"), durability=durability)
    assert len(log.calls) == 3 and out["messages"][-1].text == "AGG #1 (signed)"
    saved = await app.aget_state(thread("d"))
    assert saved.values["messages"][-1].text == "AGG #1 (signed)" and not saved.next


async def test_a_small_recursion_limit_fails_as_langgraphs_own_error(moa, log):
    app = app_around(moa, InMemorySaver())
    limited = {**thread("r"), "recursion_limit": 3}
    with pytest.raises(GraphRecursionError) as failed:
        await app.ainvoke(QUESTION, limited)
    assert not isinstance(failed.value, MoAError)
    assert "recursion_limit" in str(failed.value)
    assert [c.label for c in log.calls if c.label == "AGG"] == []  # stopped before its answer


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_concurrent_threads_through_one_moa_each_get_their_own_answer(fake, log, mode):
    config = MoAConfig(
        proposers=[
            fake("A", reply=last_words, delay=lambda n: 0.01 * (n % 3)),
            fake("B", reply=last_words, delay=lambda n: 0.01 * (n % 4)),
        ],
        aggregator=fake("AGG", reply=last_words),
        layers=2,
    )
    builder = StateGraph(MessagesState).add_node("moa", create_moa_graph(config))
    app = builder.add_edge(START, "moa").compile(checkpointer=InMemorySaver())
    questions = [{"messages": [("user", f"q{i}")]} for i in range(8)]
    threads = [thread(f"c{i}") for i in range(8)]
    if mode == "async":
        runs = (app.ainvoke(q, t) for q, t in zip(questions, threads, strict=True))
        outs = await asyncio.gather(*runs)
    else:  # batch runs each input in a thread of its own
        outs = await asyncio.to_thread(app.batch, questions, threads)
    assert [o["messages"][-1].text for o in outs] == [f"AGG saw q{i}" for i in range(8)]
    for i in range(8):
        state = await app.aget_state(thread(f"c{i}"))
        assert [m.text for m in state.values["messages"]] == [f"q{i}", f"AGG saw q{i}"]
    proposals = sorted(c.output for c in log.calls if c.label != "AGG")
    assert proposals == sorted(f"{p} saw q{i}" for p in "AB" for i in range(8))


class _Hung(WordStreamer):
    """A model that takes 5 s to answer, streamed (chunk-wise runs) or not, and records
    in `state` that its call started and that it was cancelled."""

    async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[override]
        self.state["calls"] = self.state.get("calls", 0) + 1
        try:
            await asyncio.sleep(self.first)
        except asyncio.CancelledError:
            self.state["cancelled_at"] = asyncio.get_running_loop().time()
            raise
        raise AssertionError("a hung call was never meant to answer")


def _slow_proposers(start: str) -> tuple[MoAConfig, list[WordStreamer]]:
    """Three proposers that take 5 s to their first word, behind each way a layer can end."""
    proposers: list[WordStreamer] = [_Hung(label=p, first=5.0) for p in "ABC"]
    aggregation = {
        "all": {},
        "quorum": {"start": "quorum", "quorum": 2},
        "chunks": {"start": "chunks", "chunk_tokens": 2},
    }[start]
    config = MoAConfig(
        proposers=proposers,
        aggregator=WordStreamer(label="AGG"),
        layers=2,
        aggregation=aggregation,
    )
    return config, proposers


@pytest.mark.parametrize("start", ["all", "quorum", "chunks"])
async def test_cancelling_the_parent_mid_proposal_leaves_no_task_behind(start, caplog):
    config, proposers = _slow_proposers(start)
    builder = StateGraph(MessagesState).add_node("moa", create_moa_graph(config))
    app = builder.add_edge(START, "moa").compile(checkpointer=InMemorySaver())
    before = asyncio.all_tasks()

    def in_flight() -> int:
        return sum(p.state.get("calls", 0) for p in proposers)

    with caplog.at_level(logging.WARNING), no_warnings():
        task = asyncio.create_task(app.ainvoke(QUESTION, thread("x")))
        for _ in range(300):
            if in_flight() == 3:
                break
            await asyncio.sleep(0.01)
        assert in_flight() == 3  # every proposer is waiting for its first word
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        left = asyncio.all_tasks() - before - {asyncio.current_task()}
        assert left == set()
        gc.collect()
    assert all("cancelled_at" in p.state for p in proposers)  # each call was stopped
    destroyed = [r.getMessage() for r in caplog.records if "destroyed" in r.getMessage()]
    assert destroyed == []


async def test_a_thread_cancelled_mid_proposal_resumes_with_each_call_made_once(fake, log):
    hung = {"now": True}
    wait = lambda n: 5.0 if hung["now"] else 0.0  # noqa: E731
    config = MoAConfig(
        proposers=[fake("A", delay=wait), fake("B", delay=wait)], aggregator=fake("AGG"), layers=3
    )
    builder = StateGraph(MessagesState).add_node("moa", create_moa_graph(config))
    app = builder.add_edge(START, "moa").compile(checkpointer=InMemorySaver())
    task = asyncio.create_task(app.ainvoke(QUESTION, thread("x")))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log.calls == [] and (await app.aget_state(thread("x"))).next == ("moa",)

    hung["now"] = False
    out = await app.ainvoke(None, thread("x"))
    assert [m.text for m in out["messages"]] == ["hi", "AGG #1"]
    assert sorted(c.label for c in log.calls) == ["A", "A", "AGG", "B", "B"]
    assert not (await app.aget_state(thread("x"))).next


class Verdict(BaseModel):
    """A `response_format` model, as a user's application defines it."""

    city: str


def test_under_strict_msgpack_a_pydantic_answer_reads_back_as_its_type(
    strict_msgpack, fake, tmp_path
):
    # LangGraph's strict reader allows the types of the graph's schemas, and the MoA's
    # `structured_response` is typed Any: the response_format's model came back as a dict
    # from the checkpoint (its `city` attribute gone) unless the user built a serializer.
    agg = fake("AGG", reply=lambda label, n, msgs: '{"city": "Paris"}')
    config = MoAConfig(proposers=[fake("A")], aggregator=agg)
    connection = sqlite3.connect(tmp_path / "strict.db", check_same_thread=False)
    graph = create_moa_graph(config, checkpointer=SqliteSaver(connection), response_format=Verdict)
    assert graph.invoke(QUESTION, thread("t"))["structured_response"] == Verdict(city="Paris")
    assert graph.get_state(thread("t")).values["structured_response"] == Verdict(city="Paris")


def test_under_strict_msgpack_a_moa_subgraphs_pydantic_answer_reads_back_as_its_type(
    strict_msgpack, fake, tmp_path
):
    # Compiled with no saver, the MoA runs on its parent's: LangGraph reads the subgraph's
    # state through a copy allowing the subgraph's own types, which did not hold the model.
    agg = fake("AGG", reply=lambda label, n, msgs: '{"city": "Paris"}')
    config = MoAConfig(proposers=[fake("A")], aggregator=agg)
    connection = sqlite3.connect(tmp_path / "strict.db", check_same_thread=False)
    saver = SqliteSaver(connection)
    app = app_around(create_moa_graph(config, response_format=Verdict), saver)
    app.invoke(QUESTION, thread("t"))
    [namespace] = {
        t.config["configurable"]["checkpoint_ns"]
        for t in saver.list(None)
        if t.config["configurable"]["checkpoint_ns"].startswith("moa:")
    }
    moa_thread = {"configurable": {"thread_id": "t", "checkpoint_ns": namespace}}
    assert app.get_state(moa_thread).values["structured_response"] == Verdict(city="Paris")
