"""Every Python entrance of the graph refuses unreadable input with `MoAInputError`."""

import pytest
from langchain_core.messages import HumanMessage

from langgraph_moa import MoAConfig, MoAInputError, create_moa_graph
from langgraph_moa.run._inputs import check_messages


@pytest.fixture
def graph(fake):
    return create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2))


BAD_INPUTS = [
    ({"messages": None}, "'messages' must be a list"),
    (5, "must be a dict"),
    ("hello", "must be a dict"),
    ([None], "must be a dict"),
    ({"messages": [None]}, "Message 1 cannot be read"),
    ({"messages": [("user", 5)]}, "Message 1 has content of type int"),
    ({"messages": [{"role": "user", "content": 5}]}, "Message 1 has content of type int"),
    ({"messages": [("user", "hi"), {"role": "user", "content": [1]}]}, "Message 2 has content"),
    ({"messages": [("wizard", "hi")]}, "Message 1 cannot be read"),
    ({"messages": 7}, "'messages' must be a list"),
]


@pytest.mark.parametrize(("value", "fragment"), BAD_INPUTS)
def test_unreadable_input_is_a_moa_input_error_in_one_sentence(graph, log, value, fragment):
    with pytest.raises(MoAInputError) as err:
        graph.invoke(value)
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert log.calls == []


@pytest.mark.parametrize(("value", "fragment"), BAD_INPUTS[:5])
async def test_the_async_and_streaming_entrances_check_too(graph, log, value, fragment):
    with pytest.raises(MoAInputError, match=fragment):
        await graph.ainvoke(value)
    with pytest.raises(MoAInputError, match=fragment):
        list(graph.stream(value))
    with pytest.raises(MoAInputError, match=fragment):
        graph.batch([value])
    assert log.calls == []


def test_readable_shapes_still_run(graph):
    assert graph.invoke({"messages": "hi"})["messages"][-1].text.startswith("AGG #")
    assert graph.invoke({"messages": [HumanMessage("hi")]})["messages"][-1].text
    blocks = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    assert graph.invoke({"messages": [blocks]})["messages"][-1].text


async def test_a_tuple_of_messages_runs_as_the_conversation_it_holds(graph, log):
    """The input's type takes any sequence of messages (a caller's ``tuple(history)``) and
    mypy passed one, but add_messages reads a non-list as one message: the run failed with
    "Message 1 has content of type HumanMessage", the tuple read as a (role, text) pair."""
    history = (HumanMessage("Be brief."), HumanMessage("hi"))
    out = graph.invoke({"messages": history})
    assert [m.text for m in out["messages"][:2]] == ["Be brief.", "hi"]
    assert len((await graph.ainvoke({"messages": (("user", "a"), ("user", "b"))}))["messages"]) == 3
    assert graph.invoke({"messages": ("user", "hi")})["messages"][0].text == "hi"  # a pair
    assert [m.text for m in check_messages(history)] == ["Be brief.", "hi"]


def test_check_messages_returns_the_conversation():
    messages = check_messages([("system", "Be brief."), {"role": "user", "content": "hi"}])
    assert [m.type for m in messages] == ["system", "human"]


async def test_langgraph_servers_path_checks_too(graph, log):
    """LangGraph server copies the graph with its own config, then streams its events."""
    served = graph.copy(update={"config": {"tags": ["assistant"]}})
    with pytest.raises(MoAInputError, match="'messages' must be a list"):
        async for _ in served.astream_events({"messages": None}, version="v2"):
            pass
    events = [e async for e in served.astream_events({"messages": "hi"}, version="v2")]
    assert events and log.by("AGG")


@pytest.mark.parametrize(
    "question",
    ["", "   \n", [{"type": "text", "text": " "}], HumanMessage(""), HumanMessage([])],
)
def test_an_empty_last_user_turn_is_refused_before_any_call(graph, fake, log, question):
    from langgraph_moa import MoAChatModel

    with pytest.raises(MoAInputError, match="The last user message is empty"):
        graph.invoke(
            {"messages": [question if isinstance(question, HumanMessage) else ("user", question)]}
        )
    model = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2))
    if isinstance(question, str):
        with pytest.raises(MoAInputError, match="The last user message is empty"):
            model.invoke(question)
    assert log.calls == []


def test_a_user_turn_with_an_image_and_no_text_is_a_question(graph, log):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    graph.invoke({"messages": [HumanMessage([image])]})
    assert log.calls


def test_a_conversation_ending_with_an_answer_names_openais_role():
    from langchain_core.messages import AIMessage

    from langgraph_moa.run._inputs import validate_conversation

    with pytest.raises(MoAInputError, match="but it is an 'assistant' message"):
        validate_conversation([HumanMessage("q"), AIMessage("a")])


@pytest.mark.parametrize("seed", [True, 7.5, 7.0, "7", 2**63, -(2**63) - 1])
def test_a_seed_that_is_not_a_64_bit_integer_is_refused_before_any_call(fake, log, seed):
    """Each proposal gets the run's seed plus its position, which only a whole number has:
    a float or bool seed went to every proposal as it was (k samples of one model, one
    answer repeated), or to the provider, which refused every call. One sentence instead."""
    from langgraph_moa import MoAChatModel

    graph = create_moa_graph(
        MoAConfig(variant="self-moa", proposers=[{"model": fake("M"), "samples": 3}])
    )
    with pytest.raises(MoAInputError, match=r"seed .*integer") as err:
        graph.invoke({"messages": [("user", "hi")], "call_kwargs": {"seed": seed}})
    assert "\n" not in str(err.value)
    with pytest.raises(MoAInputError, match=r"seed .*integer"):
        MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("B"))).invoke(
            "hi", seed=seed
        )
    assert log.calls == []
    graph.invoke({"messages": [("user", "hi")], "call_kwargs": {"seed": 2**63 - 1}})
