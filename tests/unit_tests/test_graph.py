"""Core orchestration: call counts, layer semantics, references, accounting, entry points."""

import asyncio

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.graph import MessagesState, StateGraph
from langgraph.pregel import Pregel

from langgraph_moa import (
    AGGREGATE_AND_SYNTHESIZE_PROMPT,
    MoAConfig,
    MoAInputError,
    create_moa_graph,
)
from tests.helpers import QUESTION, references_in


@pytest.fixture
def three_layer(fake):
    a, b, c, agg = fake("A"), fake("B"), fake("C"), fake("AGG")
    config = MoAConfig(proposers=[a, b, c], aggregator=agg, layers=3)
    return config, create_moa_graph(config)


def test_compiled_graph_is_a_pregel(three_layer):
    assert isinstance(three_layer[1], Pregel)


def test_call_count_equals_configuration(three_layer, log):
    config, graph = three_layer
    graph.invoke(QUESTION)
    # 2 proposer layers x 3 proposers + 1 aggregator
    assert len(log.calls) == 7 == config.calls_per_run()
    assert [c.label for c in log.calls].count("AGG") == 1


def test_answer_is_appended_as_ai_message(three_layer):
    out = three_layer[1].invoke(QUESTION)
    assert [m.type for m in out["messages"]] == ["human", "ai"]
    assert out["messages"][-1].text == "AGG #1"


def test_aggregator_sees_every_last_layer_proposal_once_in_order(three_layer, log):
    three_layer[1].invoke(QUESTION)
    layer2 = [c for c in log.calls if c.label != "AGG"][3:]
    agg_call = log.by("AGG")[0]
    expected = sorted((c.output for c in layer2), key=lambda o: "ABC".index(o[0]))
    assert references_in(agg_call) == expected
    assert len(set(references_in(agg_call))) == 3


def test_layer_i_sees_only_layer_i_minus_1(three_layer, log):
    three_layer[1].invoke(QUESTION)
    proposer_calls = [c for c in log.calls if c.label != "AGG"]
    first, second = proposer_calls[:3], proposer_calls[3:]
    assert all(not isinstance(c.messages[0], SystemMessage) for c in first)
    first_outputs = sorted(c.output for c in first)
    for call in second:
        assert sorted(references_in(call)) == first_outputs
    # The aggregator reads layer 2, never layer 1.
    assert not set(references_in(log.by("AGG")[0])) & set(first_outputs)


def test_synthesis_message_is_the_paper_prompt_verbatim(fake, log):
    config = MoAConfig(
        proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), reference_format="paper"
    )
    create_moa_graph(config).invoke(QUESTION)
    system = log.by("AGG")[0].messages[0].text
    refs = references_in(log.by("AGG")[0])
    assert system == AGGREGATE_AND_SYNTHESIZE_PROMPT + "".join(
        f"\n{i}. {r}" for i, r in enumerate(refs, 1)
    )


def test_multi_turn_history_reaches_every_call(fake, log):
    graph = create_moa_graph(
        MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=3)
    )
    history = [
        SystemMessage("Be brief."),
        HumanMessage("What is 2+2?"),
        AIMessage("4"),
        HumanMessage("And times 3?"),
    ]
    graph.invoke({"messages": history})
    for call in log.calls:
        turns = [(m.type, m.text) for m in call.messages[1:]]
        assert turns == [("human", "What is 2+2?"), ("ai", "4"), ("human", "And times 3?")]
        assert call.messages[0].text.startswith("Be brief.")
    # Layer 2 and the aggregator get the block appended after a blank line.
    assert (
        log.by("AGG")[0]
        .messages[0]
        .text.startswith("Be brief.\n\n" + AGGREGATE_AND_SYNTHESIZE_PROMPT)
    )


def test_input_conversation_is_not_mutated(three_layer):
    messages = [HumanMessage("Explain X")]
    three_layer[1].invoke({"messages": messages})
    assert [m.text for m in messages] == ["Explain X"]


def test_token_totals_equal_the_sum_of_calls(three_layer, log):
    out = three_layer[1].invoke(QUESTION)
    calls = out["calls"]
    assert len(calls) == 7
    total = out["usage"]["total"]
    assert total["prompt_tokens"] == sum(c["prompt_tokens"] for c in calls) > 0
    assert total["completion_tokens"] == sum(c["completion_tokens"] for c in calls) == 14
    per_layer = out["usage"]["layers"]
    assert [layer["layer"] for layer in per_layer] == [1, 2, 3]
    assert sum(layer["total_tokens"] for layer in per_layer) == total["total_tokens"]
    answer = out["messages"][-1]
    assert answer.usage_metadata["input_tokens"] == total["prompt_tokens"]
    assert answer.usage_metadata["output_tokens"] == total["completion_tokens"]
    assert answer.response_metadata["moa"]["calls"] == calls


def test_call_records_carry_provenance(three_layer):
    out = three_layer[1].invoke(QUESTION)
    keys = [(c["role"], c["layer"], c["proposer"], c["sample"]) for c in out["calls"]]
    assert keys == [
        ("proposer", 1, 0, 0),
        ("proposer", 1, 1, 0),
        ("proposer", 1, 2, 0),
        ("proposer", 2, 0, 0),
        ("proposer", 2, 1, 0),
        ("proposer", 2, 2, 0),
        ("aggregator", 3, -1, 0),
    ]
    assert all(c["status"] == "ok" and c["latency_s"] >= 0 for c in out["calls"])
    assert [c["configured_model"] for c in out["calls"]][:3] == ["A", "B", "C"]


def test_model_that_answered_is_reported_not_the_configured_one(fake):
    routed = fake("gpt-x", reported_model="gpt-x-fallback-2024")
    out = create_moa_graph(MoAConfig(proposers=[routed, fake("B")], aggregator=fake("AGG"))).invoke(
        QUESTION
    )
    record = out["calls"][0]
    assert record["configured_model"] == "gpt-x"
    assert record["model"] == "gpt-x-fallback-2024"


@pytest.mark.parametrize("messages", [[], [("user", "hi"), ("ai", "hello")]])
def test_bad_conversation_is_refused_before_any_call(fake, log, messages):
    graph = create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    with pytest.raises(MoAInputError) as err:
        graph.invoke({"messages": messages})
    assert "user" in str(err.value)
    assert log.calls == []


async def test_ainvoke_astream_and_batch(three_layer, log):
    _, graph = three_layer
    out = await graph.ainvoke(QUESTION)
    assert out["messages"][-1].text.startswith("AGG #")
    chunks = [c async for c in graph.astream(QUESTION, stream_mode="updates")]
    assert {next(iter(c)) for c in chunks} >= {"prepare", "propose", "join_layer", "aggregate"}
    assert len(log.calls) == 14


def test_stream_and_batch_keep_runs_apart(fake, log):
    echo = lambda label, n, msgs: f"{label} saw {msgs[-1].text}"  # noqa: E731
    graph = create_moa_graph(
        MoAConfig(
            proposers=[fake("A", reply=echo), fake("B", reply=echo)],
            aggregator=fake("AGG", reply=echo),
            layers=2,
        )
    )
    questions = [{"messages": [("user", f"q{i}")]} for i in range(6)]
    outs = graph.batch(questions)
    assert [o["messages"][-1].text for o in outs] == [f"AGG saw q{i}" for i in range(6)]
    for out, q in zip(outs, questions, strict=True):
        assert [m.text for m in out["messages"][:-1]] == [q["messages"][0][1]]
    streamed = list(graph.stream(questions[0], stream_mode="values"))
    assert streamed[-1]["messages"][-1].text == "AGG saw q0"


def test_graph_works_as_a_node_inside_a_messages_app(three_layer):
    graph = three_layer[1]

    def greet(state: MessagesState):
        return {"messages": [AIMessage("Let me ask the experts.")]}

    def ask(state: MessagesState):
        return {"messages": [HumanMessage("Explain X")]}

    parent = (
        StateGraph(MessagesState)
        .add_node("greet", greet)
        .add_node("ask", ask)
        .add_node("moa", graph)
        .add_edge("__start__", "greet")
        .add_edge("greet", "ask")
        .add_edge("ask", "moa")
        .compile()
    )
    out = parent.invoke({"messages": [("user", "hi")]})
    texts = [m.text for m in out["messages"]]
    assert texts[:3] == ["hi", "Let me ask the experts.", "Explain X"]
    assert texts[3].startswith("AGG #") and len(texts) == 4


def test_as_a_subgraph_of_an_app_with_its_own_context_the_error_names_the_fix(three_layer):
    """LangGraph hands the app's context to the subgraph; it is no MoA setting, and the
    refusal said only what a context must be, not how such an app runs the MoA."""
    from dataclasses import dataclass

    from langgraph_moa import MoAConfigError, MoAContext

    @dataclass
    class App:
        user_id: str = "u"

    graph = three_layer[1]

    def build(node):
        builder = StateGraph(MessagesState, context_schema=App).add_node("moa", node)
        return builder.add_edge("__start__", "moa").compile()

    with pytest.raises(MoAConfigError) as refused:
        build(graph).invoke({"messages": [("user", "hi")]}, context=App("bob"))
    message = str(refused.value)
    assert "App(user_id='bob')" in message and "\n" not in message
    assert "context=MoAContext()" in message
    # The fix it names works.
    out = build(lambda state: graph.invoke(state, context=MoAContext())).invoke(
        {"messages": [("user", "hi")]}, context=App("bob")
    )
    assert out["messages"][-1].text.startswith("AGG #")


def test_as_a_subgraph_of_an_app_with_a_typeddict_context_the_error_names_the_fix(three_layer):
    """Most apps type their context as a TypedDict and pass a dict, which LangGraph hands
    the subgraph as it is: it was read as MoA settings and refused as an unknown setting
    of the run context, with no word of the fix (run the MoA with a context of its own)."""
    from typing import TypedDict

    from langgraph_moa import MoAConfigError, MoAContext

    class App(TypedDict):
        user_id: str

    graph = three_layer[1]

    def build(node):
        builder = StateGraph(MessagesState, context_schema=App).add_node("moa", node)
        return builder.add_edge("__start__", "moa").compile()

    with pytest.raises(MoAConfigError) as refused:
        build(graph).invoke({"messages": [("user", "hi")]}, context={"user_id": "bob"})
    message = str(refused.value)
    assert "user_id" in message and "\n" not in message
    assert "context=MoAContext()" in message
    out = build(lambda state: graph.invoke(state, context=MoAContext())).invoke(
        {"messages": [("user", "hi")]}, context={"user_id": "bob"}
    )
    assert out["messages"][-1].text.startswith("AGG #")


class _ModelRuns(BaseCallbackHandler):
    """Records each chat-model run's name, MoA tags and metadata, as a tracer sees them."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, list[str], dict]] = []

    def on_chat_model_start(self, serialized, messages, *, tags=None, metadata=None, **kw):
        mine = sorted(t for t in tags or [] if t.startswith("moa:") or t == "nostream")
        keys = ("langgraph_node", "moa_role", "moa_layer", "moa_proposer", "moa_variant")
        self.runs.append((kw.get("name"), mine, {k: (metadata or {}).get(k) for k in keys}))


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("variant", ["moa", "ranker"])
def test_every_model_call_is_traced_with_its_name_tags_and_metadata(fake, mode, variant):
    agg = fake("AGG")
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=agg, layers=2, variant=variant)
    graph, seen = create_moa_graph(config), _ModelRuns()
    if mode == "sync":
        graph.invoke(QUESTION, {"callbacks": [seen]})
    else:
        asyncio.run(graph.ainvoke(QUESTION, {"callbacks": [seen]}))
    final = (
        ("layer 2 / aggregator / AGG", ["moa:final"], "aggregate", "aggregator")
        if variant == "moa"
        else ("layer 2 / ranker / AGG", ["moa:intermediate", "nostream"], "rank", "ranker")
    )
    name, tags, node, role = final
    # The runs hang under the graph's nodes (langgraph_node is inherited from the node's run).
    assert sorted(seen.runs) == [
        (
            f"layer 1 / proposer {i + 1} / {label}",
            ["moa:proposer", "nostream"],
            {
                "langgraph_node": "propose",
                "moa_role": "proposer",
                "moa_layer": 1,
                "moa_proposer": i,
                "moa_variant": variant,
            },
        )
        for i, label in enumerate("AB")
    ] + [
        (
            name,
            tags,
            {
                "langgraph_node": node,
                "moa_role": role,
                "moa_layer": 2,
                "moa_proposer": -1,
                "moa_variant": variant,
            },
        )
    ]


class _Arrivals(BaseCallbackHandler):
    """Notes, in one shared list, which handler saw each chat-model run start, with its tags."""

    # Called in the run's own task, in turn: langchain-core runs a sync handler that is not
    # inline in the loop's executor, all of them at once, and on Python 3.13 those threads
    # note their arrivals in any order (3.11's happened to keep the order they were given).
    run_inline = True

    def __init__(self, name: str, seen: list[tuple[str, list[str]]]) -> None:
        self.name, self.seen = name, seen

    def on_chat_model_start(self, serialized, messages, *, tags=None, **kw):
        self.seen.append((self.name, list(tags or [])))


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("tools", [False, True], ids=["bare", "tools bound"])
def test_handlers_and_tags_reach_every_call_in_the_order_they_were_given(fake, mode, tools):
    # A model with options bound is a binding: the trace must not be merged with the run's
    # callbacks twice, which would put handlers and tags in set order (random per process).
    graph = create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2))
    seen: list[tuple[str, list[str]]] = []
    names = [f"h{i}" for i in range(6)]
    config = {"tags": ["user-1", "user-2"], "callbacks": [_Arrivals(n, seen) for n in names]}
    run_input = {**QUESTION}
    if tools:
        run_input["tools"] = [{"type": "function", "function": {"name": "add", "parameters": {}}}]
    if mode == "sync":
        graph.invoke(run_input, config)
    else:
        asyncio.run(graph.ainvoke(run_input, config))
    assert [name for name, _ in seen] == names * 2  # the proposer's call, then the aggregator's
    tags = [t for _, t in seen]
    assert (
        tags[: len(names)] == [["user-1", "user-2", "seq:step:1", "moa:proposer", "nostream"]] * 6
    )
    assert tags[len(names) :] == [["user-1", "user-2", "seq:step:1", "moa:final"]] * 6


@pytest.mark.parametrize("value", [1, {"ended": 0}, "tally"])
def test_a_callers_configurable_call_tally_that_is_no_tally_leaves_the_run_as_it_is(
    three_layer, value
):
    """``moa_call_tally`` is an in-process hook, but a LangGraph server client sets any
    ``configurable`` key: counting into its JSON value raised in every node, which the retry
    policy retried with backoff for minutes (20 attempts) before the run failed."""
    import threading

    graph = three_layer[1]
    out: dict = {}
    run = threading.Thread(
        target=lambda: out.update(
            graph.invoke(QUESTION, {"configurable": {"moa_call_tally": value}})
        ),
        daemon=True,
    )
    run.start()
    run.join(timeout=20)
    assert not run.is_alive(), "the run was still retrying"
    assert out["messages"][-1].text.startswith("AGG #")
