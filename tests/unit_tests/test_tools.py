"""Tool calls, stop sequences and per-call options through the graph and MoAChatModel."""

from __future__ import annotations

import datetime
import enum

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel, Field

from langgraph_moa import MoAChatModel, MoAConfig, MoAInputError, create_moa_graph
from langgraph_moa.config.context import apply_context
from langgraph_moa.run._answer import is_degraded
from langgraph_moa.serving._errors import degraded_header
from langgraph_moa.text._selection import Candidate, SelectionConfig, select, tool_calls_key
from tests.fakes import FakeChat


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def calls(*pairs):
    """A FakeChat `tool_calls` rule: call n asks for add(a, b) of pairs[n-1] (None: text)."""

    def rule(label, n, messages, kwargs):
        pair = pairs[(n - 1) % len(pairs)]
        if pair is None:
            return []
        return [{"name": "add", "args": {"a": pair[0], "b": pair[1]}, "id": f"{label}-{n}"}]

    return rule


def never(label, n, messages, kwargs):
    return []


QUESTION = [HumanMessage("What is 1 + 2?")]


def test_bind_tools_reaches_every_call_and_the_aggregator_sees_what_each_proposer_wanted(fake, log):
    config = MoAConfig(
        proposers=[fake("A", tool_calls=calls((1, 2))), fake("B", tool_calls=never)],
        aggregator=fake("AGG", tool_calls=calls((1, 2))),
        layers=2,
    )
    llm = MoAChatModel(config=config).bind_tools([add], tool_choice="auto")
    answer = llm.invoke(QUESTION)
    for label in ("A", "B", "AGG"):
        (call,) = log.by(label)
        assert [t["function"]["name"] for t in call.kwargs["tools"]] == ["add"]
        assert call.kwargs["tool_choice"] == "auto"
    prompt = log.by("AGG")[0].messages[0].text
    assert 'Tool call: add({"a": 1, "b": 2})' in prompt  # A's wish, in its fenced slot
    assert "B #1" in prompt and "reply with only" in prompt
    assert answer.tool_calls == [
        {"name": "add", "args": {"a": 1, "b": 2}, "id": "AGG-1", "type": "tool_call"}
    ]
    assert answer.response_metadata["finish_reason"] == "tool_calls"


def test_tool_calls_stream_as_tool_call_chunks(fake):
    config = MoAConfig(
        proposers=[fake("A")], aggregator=fake("AGG", tool_calls=calls((2, 5))), layers=2
    )
    llm = MoAChatModel(config=config).bind_tools([add])
    chunks = list(llm.stream(QUESTION))
    assert any(c.tool_call_chunks for c in chunks)
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [("add", {"a": 2, "b": 5})]
    assert full.tool_calls[0]["id"]


def test_an_agent_turn_after_a_tool_result_reaches_every_proposer(fake, log):
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2)
    conversation = [
        *QUESTION,
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"}]),
        ToolMessage("3", tool_call_id="c1"),
    ]
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(conversation)
    assert answer.text.startswith("AGG") and not answer.tool_calls
    for label in ("A", "B"):
        assert isinstance(log.by(label)[0].messages[-1], ToolMessage)


def test_select_votes_over_tool_calls_by_name_and_normalized_arguments(fake):
    config = MoAConfig(
        variant="select",
        proposers=[
            fake("A", tool_calls=calls((1, 3))),
            fake("B", tool_calls=calls((1, 2))),
            fake(
                "C", tool_calls=lambda *a: [{"name": "add", "args": {"b": 2.0, "a": 1}, "id": None}]
            ),
        ],
        selection={"method": "vote"},
    )
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    (call,) = answer.tool_calls
    assert call["args"] == {"a": 1, "b": 2} and call["id"] == "B-1"
    provenance = answer.response_metadata["moa"]["selection"]
    top = provenance["tally"][0]
    assert top["proposals"] == [1, 2] and top["answer"].startswith("tool call: add(")
    assert answer.response_metadata["model_name"] == "B"
    assert answer.response_metadata["finish_reason"] == "tool_calls"


def test_a_proposal_without_a_call_id_gets_one(fake):
    config = MoAConfig(
        variant="select",
        proposers=[
            fake("A", tool_calls=lambda *a: [{"name": "add", "args": {"a": 1, "b": 2}, "id": None}])
        ],
        selection={"method": "vote"},
    )
    (call,) = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION).tool_calls
    assert call["id"].startswith("call_")


def test_text_answers_and_tool_calls_never_vote_together(fake):
    config = MoAConfig(
        variant="select",
        proposers=[
            fake("A", tool_calls=calls((1, 2))),
            fake("B", reply=lambda *a: "3", tool_calls=never),
            fake("C", reply=lambda *a: "3", tool_calls=never),
        ],
        selection={"method": "vote"},
    )
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    assert answer.text == "3" and not answer.tool_calls
    assert answer.response_metadata["finish_reason"] == "stop"


def test_a_tool_call_tie_goes_to_the_proposer_with_priority():
    one = tool_calls_key([{"name": "add", "args": {"a": 1, "b": 2}}])
    other = tool_calls_key([{"name": "add", "args": {"a": 2, "b": 2}}])
    assert one != other
    assert one == tool_calls_key([{"name": "add", "args": {"b": 2.0, "a": 1}, "id": None}])
    candidates = [
        Candidate(index=0, model="B", text="", tool_key=one),
        Candidate(index=1, model="A", text="", tool_key=other),
    ]
    decision = select(candidates, SelectionConfig(method="vote"), priority=["A", "B"])
    assert decision.winner == 1 and "tie" in decision.reason


def test_consensus_votes_tool_calls_rather_than_comparing_text(fake):
    config = MoAConfig(
        variant="select",
        proposers=[
            fake("A", tool_calls=calls((1, 2))),
            fake("B", tool_calls=calls((5, 5))),
            fake("C", tool_calls=calls((1, 2))),
        ],
        selection={"method": "consensus"},
    )
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    assert answer.tool_calls[0]["args"] == {"a": 1, "b": 2}
    assert "voted by name and arguments" in answer.response_metadata["moa"]["selection"]["note"]


def test_the_ranker_returns_the_picked_proposal_with_its_tool_calls(fake, log):
    config = MoAConfig(
        variant="ranker",
        proposers=[fake("A", tool_calls=never), fake("B", tool_calls=calls((4, 4)))],
        aggregator=fake("RK", reply=lambda *a: "2"),
    )
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    assert answer.tool_calls[0]["args"] == {"a": 4, "b": 4}
    assert answer.response_metadata["model_name"] == "B"
    assert "tools" not in log.by("RK")[0].kwargs  # the ranker answers with a number
    assert 'Tool call: add({"a": 4, "b": 4})' in log.by("RK")[0].messages[-1].text


def test_stop_goes_to_every_call_whose_text_can_be_the_answer(fake, log):
    moa = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    MoAChatModel(config=moa).invoke(QUESTION, stop=["END"])
    assert "stop" not in log.by("A")[0].kwargs  # a proposal only informs the aggregator
    assert log.by("AGG")[0].kwargs["stop"] == ["END"]
    picked = MoAConfig(variant="select", proposers=[fake("P1"), fake("P2")])
    MoAChatModel(config=picked, stop=["END"]).invoke(QUESTION)
    assert log.by("P1")[0].kwargs["stop"] == ["END"] and log.by("P2")[0].kwargs["stop"]


def test_call_options_do_not_leak_into_the_next_run_of_a_thread(fake, log):
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "t"}}
    schema = {"type": "function", "function": {"name": "add", "parameters": {}}}
    graph.invoke({"messages": QUESTION, "tools": [schema], "stop": ["X"]}, thread)
    graph.invoke({"messages": [HumanMessage("and 2 + 2?")]}, thread)
    assert log.by("AGG")[0].kwargs["tools"] == [schema]
    assert "tools" not in log.by("AGG")[1].kwargs and "stop" not in log.by("AGG")[1].kwargs


def test_bad_tools_in_the_graph_input_fail_in_one_sentence(fake):
    graph = create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    with pytest.raises(MoAInputError, match="convert_to_openai_tool"):
        graph.invoke({"messages": QUESTION, "tools": ["add"]})


@pytest.mark.parametrize("name", ["get weather", "a" * 65, "lookup.v2", None])
def test_a_tool_name_openai_refuses_is_named_before_any_call(fake, log, name):
    """Only `moa serve` checked OpenAI's name rule: a tool named ``get weather`` given to the
    graph went to every proposer, and the provider refused it after the others were paid."""
    graph = create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    function = {"name": name, "parameters": {"type": "object", "properties": {}}}
    with pytest.raises(MoAInputError, match="letters, digits, '_' and '-'") as refused:
        graph.invoke({"messages": QUESTION, "tools": [{"type": "function", "function": function}]})
    assert "\n" not in str(refused.value) and (name or "has none")[:40] in str(refused.value)
    assert log.calls == []


def test_bind_tools_refuses_a_tool_name_openai_refuses(fake, log):
    @tool("get weather")
    def weather(city: str) -> str:
        """Say the weather in a city."""
        return "sunny"

    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    with pytest.raises(MoAInputError, match=r"'get weather'.*letters, digits, '_' and '-'"):
        llm.bind_tools([weather]).invoke(QUESTION)
    assert log.calls == []


def test_a_model_that_cannot_call_tools_is_named_before_any_call(fake, log):
    from langchain_core.language_models import GenericFakeChatModel

    plain = GenericFakeChatModel(messages=iter(["x"]))
    config = MoAConfig(proposers=[fake("A"), plain], aggregator=fake("AGG"))
    with pytest.raises(MoAInputError, match="cannot call tools"):
        MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    assert log.calls == []


def test_tool_choice_naming_no_bound_tool_is_refused(fake):
    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    with pytest.raises(MoAInputError, match="names no bound tool"):
        llm.bind_tools([add], tool_choice="multiply")
    bound = llm.bind_tools([add], tool_choice="any")
    assert bound.kwargs["tool_choice"] == "any"  # type: ignore[attr-defined]


class AnthropicLike(FakeChat):
    """bind_tools maps tool_choice as langchain_anthropic.ChatAnthropic.bind_tools does."""

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        if isinstance(tool_choice, dict):
            kwargs["tool_choice"] = tool_choice
        elif tool_choice in ("any", "auto"):
            kwargs["tool_choice"] = {"type": tool_choice}
        elif tool_choice:
            kwargs["tool_choice"] = {"type": "tool", "name": tool_choice}
        return self.bind(tools=list(tools), **kwargs)


@pytest.mark.parametrize("choice", ["any", "required", True])
def test_a_forced_tool_call_reaches_a_non_openai_model_as_any(log, choice):
    """'any' is LangChain's cross-provider value; ChatAnthropic reads 'required' as a name."""
    config = MoAConfig(
        proposers=[AnthropicLike(label="A", log=log)],  # its text is a reference
        # The answer calls the tool, as ChatAnthropic does when tool_choice forces a call.
        aggregator=AnthropicLike(label="AGG", log=log, tool_calls=calls((1, 2))),
        layers=2,
    )
    tools = [add, multiply] if choice is True else [add]  # True, one tool: that tool
    MoAChatModel(config=config).bind_tools(tools, tool_choice=choice).invoke("add 1 and 2")
    assert {c.label: c.kwargs.get("tool_choice") for c in log.calls} == {
        "A": {"type": "any"},
        "AGG": {"type": "any"},
    }


# ChatOpenAI probes the socket options it may set (no connection); the unit tests block it.
@pytest.mark.filterwarnings("ignore:A test tried to use socket")
@pytest.mark.parametrize("choice", ["any", "required"])
def test_a_forced_tool_call_reaches_openai_models_as_required(choice):
    from langchain_openai import ChatOpenAI

    from langgraph_moa.run._options import bind_options

    model = ChatOpenAI(model="m", base_url="http://upstream.test/v1", api_key="k")  # type: ignore[arg-type]
    tools = [convert_to_openai_tool(add)]
    bound = bind_options(model, {"tools": tools, "tool_choice": choice}, "A")
    assert bound.kwargs["tool_choice"] == "required"  # type: ignore[attr-defined]


class Answer(BaseModel):
    value: int


def test_structured_output_streams_the_parsed_object(fake):
    config = MoAConfig(
        proposers=[fake("A")], aggregator=fake("AGG", reply=lambda *a: '{"value": 3}'), layers=2
    )
    structured = MoAChatModel(config=config).with_structured_output(Answer)
    assert structured.invoke(QUESTION) == Answer(value=3)
    assert list(structured.stream(QUESTION)) == [Answer(value=3)]
    raw = MoAChatModel(config=config).with_structured_output(Answer, include_raw=True)
    out = raw.invoke(QUESTION)
    assert out["parsed"] == Answer(value=3) and isinstance(out["raw"], AIMessage)


async def test_structured_output_astreams_the_parsed_object(fake):
    config = MoAConfig(
        proposers=[fake("A")], aggregator=fake("AGG", reply=lambda *a: '{"value": 3}'), layers=2
    )
    structured = MoAChatModel(config=config).with_structured_output(Answer)
    assert [x async for x in structured.astream(QUESTION)] == [Answer(value=3)]


def test_select_answers_structured_output_through_a_voted_tool_call(fake, log):
    config = MoAConfig(
        variant="select",
        proposers=[
            fake("A", tool_calls=lambda *a: [{"name": "Answer", "args": {"value": 3}, "id": None}]),
            fake("B", tool_calls=lambda *a: [{"name": "Answer", "args": {"value": 3}, "id": None}]),
        ],
        selection={"method": "vote"},
    )
    structured = MoAChatModel(config=config).with_structured_output(
        Answer, method="function_calling"
    )
    assert structured.invoke(QUESTION) == Answer(value=3)


@pytest.mark.parametrize("include_raw", [False, True])
def test_select_sends_strict_structured_output_to_every_proposer(fake, log, include_raw):
    """``strict=True`` with ``function_calling`` was dropped: the tool went out unstrict."""
    voted = lambda *a: [{"name": "Answer", "args": {"value": 3}, "id": None}]  # noqa: E731
    config = MoAConfig(
        variant="select", proposers=[fake("A", tool_calls=voted), fake("B", tool_calls=voted)]
    )
    structured = MoAChatModel(config=config).with_structured_output(
        Answer, method="function_calling", strict=True, include_raw=include_raw
    )
    answer = structured.invoke(QUESTION)
    assert (answer["parsed"] if include_raw else answer) == Answer(value=3)
    for label in ("A", "B"):
        (tool,) = log.by(label)[0].kwargs["tools"]
        assert tool["function"]["strict"] is True
        assert log.by(label)[0].kwargs["tool_choice"] == "any"


def test_model_override_runs_the_named_preset_or_is_refused(fake, monkeypatch):
    moa = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    assert moa._get_ls_params(model="local-moa")["ls_model_name"] == "local-moa"
    with pytest.raises(MoAInputError, match="neither a preset nor a model spec"):
        moa.invoke(QUESTION, model="gpt-x")
    select = MoAChatModel(config=MoAConfig(variant="select", proposers=[fake("A"), fake("B")]))
    with pytest.raises(MoAInputError, match="has no aggregator"):
        select.invoke(QUESTION, model="gpt-x")


def test_model_override_on_an_endpoint_asks_that_server_for_the_model(fake):
    from langgraph_moa.chat_model import model_override

    cfg = MoAConfig(proposers=[fake("A")], aggregator="agg@http://127.0.0.1:9/v1")
    preset, context = model_override(cfg, "other")
    assert preset is None and context is not None
    assert context.aggregator == "other@http://127.0.0.1:9/v1"
    assert model_override(cfg, "local-moa") == ("local-moa", None)


@pytest.mark.parametrize("variant", ["select", "ranker"])
def test_model_name_and_finish_reason_name_the_proposal_that_answers(fake, variant):
    config = MoAConfig(
        variant=variant,
        proposers=[fake("A", cut_off=lambda n: False), fake("B", cut_off=lambda n: False)],
        aggregator=fake("RK", reply=lambda *a: "2") if variant == "ranker" else None,
        selection={"method": "vote"} if variant == "select" else None,
    )
    answer = MoAChatModel(config=config).invoke(QUESTION)
    assert answer.response_metadata["model_name"] in ("A", "B")
    assert answer.response_metadata["finish_reason"] == "stop"
    streamed = list(MoAChatModel(config=config).stream(QUESTION))
    assert streamed[-1].response_metadata["model_name"] in ("A", "B")


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "add", "arguments": {"a": 1, "b": 2}}',
        '```json\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n```',
        '<tool_call>\n{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}\n</tool_call>',
    ],
)
def test_a_tool_call_written_as_text_is_read_as_one(fake, text):
    config = MoAConfig(
        variant="select",
        proposers=[fake("A", reply=lambda *a: text), fake("B", reply=lambda *a: text)],
        selection={"method": "vote"},
    )
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [("add", {"a": 1, "b": 2})]
    assert answer.text == ""
    records = answer.response_metadata["moa"]["calls"]
    assert all(r["tool_calls_from_text"] for r in records)


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "multiply", "arguments": {"a": 1}}',  # no such tool
        'The call is {"name": "add", "arguments": {"a": 1, "b": 2}}',  # not the whole answer
        '{"answer": 3}',
    ],
)
def test_text_that_is_not_exactly_a_bound_tool_call_stays_text(fake, text):
    config = MoAConfig(
        variant="select", proposers=[fake("A", reply=lambda *a: text)], selection={"method": "vote"}
    )
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    assert answer.text == text and not answer.tool_calls
    # Without tools, even a perfect call stays text.
    plain = MoAConfig(
        variant="select",
        proposers=[fake("B", reply=lambda *a: '{"name": "add", "arguments": {}}')],
        selection={"method": "vote"},
    )
    assert not MoAChatModel(config=plain).invoke(QUESTION).tool_calls


def test_a_streamed_tool_call_written_as_text_is_sent_once_as_a_call(fake):
    text = '{"name": "add", "arguments": {"a": 1, "b": 2}}'
    config = MoAConfig(
        proposers=[fake("A")], aggregator=fake("AGG", reply=lambda *a: text), layers=2
    )
    llm = MoAChatModel(config=config).bind_tools([add])
    chunks = list(llm.stream(QUESTION))
    assert "".join(c.text for c in chunks) == ""  # held back, then dropped
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [("add", {"a": 1, "b": 2})]
    # Text that only starts like a call is sent in the end, whole.
    other = MoAConfig(
        proposers=[fake("B")], aggregator=fake("AGG2", reply=lambda *a: "{not a call}"), layers=2
    )
    assert (
        "".join(c.text for c in MoAChatModel(config=other).bind_tools([add]).stream(QUESTION))
        == "{not a call}"
    )


@pytest.mark.parametrize(
    "lead",
    [
        'Tool call: add({"a": 1, "b": 2})',
        '```json\n{\n  "name": "add",\n  "arguments": {"a": 1, "b": 2}\n}\n```',
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>',
    ],
)
def test_leading_tool_call_lines_are_read_and_the_text_after_them_kept(fake, lead):
    text = f"{lead}\nThe result will follow."
    config = MoAConfig(
        proposers=[fake("A")], aggregator=fake("AGG", reply=lambda *a: text), layers=2
    )
    llm = MoAChatModel(config=config).bind_tools([add])
    answer = llm.invoke(QUESTION)
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [("add", {"a": 1, "b": 2})]
    assert answer.text == "The result will follow."
    streamed = "".join(c.text for c in llm.stream(QUESTION))
    assert streamed == "The result will follow."


@pytest.mark.parametrize(
    "copied",
    [
        '<response id="1" tag="9c787d5f15b40180">\n{"name": "add", "arguments": {"a": 1, "b": 2}}'
        '\n</response tag="9c787d5f15b40180">',
        # The rendered line and the JSON of the same call, inside an unclosed copied marker.
        '<response id="2" tag="4c1559ed197e9ab6"> Tool call: add({"a": 1, "b": 2})\n'
        '{"name": "add", "arguments": {"a": 1, "b": 2}}',
    ],
)
def test_a_call_inside_copied_reference_markers_is_one_call(fake, copied):
    # Seen on the 1.5B aggregator in benchmarks/tool_use.py: it copied a proposal's call
    # together with the fence around it, so the call reached the agent as text.
    config = MoAConfig(
        proposers=[fake("A")], aggregator=fake("AGG", reply=lambda *a: copied), layers=2
    )
    llm = MoAChatModel(config=config).bind_tools([add])
    answer = llm.invoke(QUESTION)
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [("add", {"a": 1, "b": 2})]
    assert answer.text == ""
    chunks = list(llm.stream(QUESTION))
    assert "".join(c.text for c in chunks) == ""  # the markers are never streamed
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert len(full.tool_calls) == 1


def test_copied_markers_around_text_leave_the_text_alone(fake):
    text = '<response id="1" tag="9c787d5f15b40180">\nThe answer is 3.'
    config = MoAConfig(
        proposers=[fake("A")], aggregator=fake("AGG", reply=lambda *a: text), layers=2
    )
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    assert answer.tool_calls == [] and answer.text == text


def test_a_fallback_answer_names_the_proposal_it_returns(fake):
    from langgraph_moa import RetrySettings

    def down(n, messages):
        return ConnectionError("aggregator down")

    config = MoAConfig(
        proposers=[fake("A", cut_off=lambda n: True), fake("B")],
        aggregator=fake("AGG", fail=down),
        layers=2,
        retry=RetrySettings(max_attempts=1, initial_interval=0.0, jitter=False),
    )
    answer = MoAChatModel(config=config).invoke(QUESTION)
    assert answer.response_metadata["moa"]["fallback"] == "best_proposal"
    # A's proposal was cut by its max_tokens: the finished one, B's, answers, and says so.
    assert answer.response_metadata["model_name"] == "B"
    assert answer.response_metadata["finish_reason"] == "stop"  # what B's call said


@pytest.mark.parametrize(
    "choice",
    [
        "multiply",
        {"type": "function", "function": {"name": "multiply"}},
        {"type": "tool", "name": "multiply"},
    ],
)
def test_a_tool_choice_naming_no_bound_tool_is_refused_at_the_graph_input(fake, log, choice):
    # docs/failure-semantics.md promises it; it reached every model, whose provider would
    # refuse each call (OpenAI: 400), so the run failed only after paying for the others.
    graph = create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    tools = [convert_to_openai_tool(add)]
    with pytest.raises(MoAInputError, match=r"names no bound tool.*one of add"):
        graph.invoke({"messages": QUESTION, "tools": tools, "tool_choice": choice})
    assert log.calls == []


@pytest.mark.parametrize("choice", [5, ["add"], {"type": "function", "function": {"name": 5}}])
def test_a_tool_choice_that_is_no_choice_is_refused(fake, log, choice):
    graph = create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    tools = [convert_to_openai_tool(add)]
    with pytest.raises(MoAInputError, match="tool_choice must be"):
        graph.invoke({"messages": QUESTION, "tools": tools, "tool_choice": choice})
    assert log.calls == []


def test_bind_tools_refuses_a_dict_tool_choice_naming_no_bound_tool(fake):
    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    with pytest.raises(MoAInputError, match="names no bound tool"):
        llm.bind_tools([add], tool_choice={"type": "function", "function": {"name": "multiply"}})
    bound = llm.bind_tools([add], tool_choice={"type": "function", "function": {"name": "add"}})
    assert bound.kwargs["tool_choice"]["function"]["name"] == "add"  # type: ignore[attr-defined]


def fixed(*tool_calls):
    """A FakeChat `tool_calls` rule: every call asks for `tool_calls`."""
    return lambda *a: [dict(c) for c in tool_calls]


ADD_12 = {"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"}
NOPE = {"name": "subtract", "args": {"a": 1}, "id": "c9"}


MUL_12 = {"name": "multiply", "args": {"a": 1, "b": 2}, "id": "c3"}


@pytest.mark.parametrize(
    ("bind", "proposed", "aggregated", "fragment"),
    [
        ({}, [ADD_12], [NOPE], "'subtract', which is not bound"),
        ({"tool_choice": "none"}, [], [ADD_12], "tool_choice was 'none'"),
        ({"tool_choice": {"type": "none"}}, [], [ADD_12], "tool_choice was 'none'"),
        ({"tool_choice": "any"}, [ADD_12], [], "tool_choice 'any' asks for a tool call"),
        ({"tool_choice": "add"}, [ADD_12], [], "tool_choice 'add' asks for a tool call"),
        ({"tool_choice": "multiply"}, [MUL_12], [ADD_12], "tool_choice 'multiply' asks"),
        ({"parallel_tool_calls": False}, [ADD_12], [ADD_12, {**ADD_12, "id": "c2"}], "2 tool"),
    ],
)
def test_an_aggregator_answer_that_breaks_the_tools_is_refused_not_passed_on(
    fake, bind, proposed, aggregated, fragment
):
    # Before, the answer went to the agent as it was: a call its ToolNode cannot run, or a
    # text answer where the caller forced a tool call, with nothing saying so.
    from langgraph_moa import RetrySettings

    config = MoAConfig(
        proposers=[fake("A", tool_calls=fixed(*proposed))],
        aggregator=fake("AGG", tool_calls=fixed(*aggregated)),
        layers=2,
        retry=RetrySettings(max_attempts=1),
    )
    answer = MoAChatModel(config=config).bind_tools([add, multiply], **bind).invoke(QUESTION)
    moa = answer.response_metadata["moa"]
    assert moa.get("fallback") == "best_proposal"  # the proposal, which kept to the tools
    assert [c["name"] for c in answer.tool_calls] == [c["name"] for c in proposed]
    (agg,) = [c for c in moa["calls"] if c["role"] == "aggregator"]
    assert agg["status"] == "failed" and fragment in agg["error"]
    assert agg["total_tokens"] > 0  # the refused answer was paid for, and counts


HALF_ADD = {"name": "add", "args": {"a": 1}, "id": "h1"}
HALF_AGAIN = "'add' without its required argument 'b'"


def _two_against_a_whole_call(fake, broken, method="vote"):
    """Run `select` where proposers A and B make `broken`, and C the whole ADD_12."""
    config = MoAConfig(
        variant="select",
        proposers=[
            fake("A", tool_calls=fixed(broken)),
            fake("B", tool_calls=fixed(broken)),
            fake("C", tool_calls=fixed(ADD_12)),
        ],
        selection={"method": method},
    )
    return MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)


def test_a_proposal_calling_a_tool_no_one_can_run_is_never_the_selected_answer(fake):
    answer = _two_against_a_whole_call(fake, NOPE)
    assert [c["args"] for c in answer.tool_calls] == [ADD_12["args"]]
    failed = [c for c in answer.response_metadata["moa"]["calls"] if c["status"] == "failed"]
    assert [c["configured_model"] for c in failed] == ["A", "B"]
    assert "'subtract', which is not bound" in failed[0]["error"]


@pytest.mark.parametrize("method", ["vote", "consensus", "mux", "confidence"])
def test_two_incomplete_calls_do_not_outvote_a_whole_one(fake, method):
    # Two calls without the required `b` outvoted the whole one: the agent's ToolNode could
    # not run the selected call, and the agent paid for another turn.
    answer = _two_against_a_whole_call(fake, HALF_ADD, method)
    assert [c["args"] for c in answer.tool_calls] == [ADD_12["args"]]
    a, b, c = _records(answer, "proposer")
    assert a["status"] == b["status"] == c["status"] == "ok"  # references, and recorded so
    assert HALF_AGAIN in a["incomplete_call"] and "incomplete_call" not in c
    note = answer.response_metadata["moa"]["selection"]["note"]
    assert note.startswith(
        "proposals 1, 2 were calling a tool with arguments its schema refuses and did not vote"
    )


@pytest.mark.parametrize(
    ("variant", "final"),
    [("select", {}), ("ranker", {"aggregator": "RK"}), ("moa", {"aggregator": "AGG", "layers": 2})],
)
def test_an_incomplete_call_is_passed_on_where_no_whole_one_exists(fake, variant, final):
    # Refused, every candidate leaving out an argument ended the run in an error; passed on,
    # the agent's ToolNode answers it with the validation error and the model tries again.
    if "aggregator" in final:
        last = fake(final["aggregator"], reply=lambda *a: "1", tool_calls=fixed(HALF_ADD))
        final = {**final, "aggregator": last}
    config = MoAConfig(
        variant=variant,
        proposers=[fake("A", tool_calls=fixed(HALF_ADD)), fake("B", tool_calls=fixed(HALF_ADD))],
        **final,
    )
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    assert [c["args"] for c in answer.tool_calls] == [HALF_ADD["args"]]
    moa = answer.response_metadata["moa"]
    assert "fallback" not in moa
    assert all(c["status"] == "ok" for c in moa["calls"])
    assert all(HALF_AGAIN in c["incomplete_call"] for c in _records(answer, "proposer"))
    # The answer is one the agent's tools cannot run: degraded, and said so where a
    # fallback is (its provenance, `moa run`'s exit code, `moa serve`'s header).
    assert HALF_AGAIN in moa["incomplete_call"]
    assert is_degraded(moa)
    assert degraded_header(moa) == "incomplete-call"


def test_a_whole_answer_is_not_marked_incomplete(fake):
    answer = _two_against_a_whole_call(fake, HALF_ADD)
    moa = answer.response_metadata["moa"]
    assert "incomplete_call" not in moa and not is_degraded(moa)


ADD_ONE = {"name": "add", "args": {"a": "one", "b": 2}, "id": "w1"}


def test_two_calls_of_a_wrong_argument_type_do_not_outvote_a_whole_one(fake):
    # Only the required keys were checked: two calls with a word for an integer outvoted
    # the call the agent's ToolNode can run, and the ToolNode answered with an error.
    answer = _two_against_a_whole_call(fake, ADD_ONE)
    assert [c["args"] for c in answer.tool_calls] == [ADD_12["args"]]
    a, _, c = _records(answer, "proposer")
    assert "'a' = \"one\", which its schema does not take" in a["incomplete_call"]
    assert "incomplete_call" not in c


def test_a_call_its_schema_refuses_is_passed_on_marked_where_none_passes(fake):
    config = MoAConfig(variant="select", proposers=[fake("A", tool_calls=fixed(ADD_ONE))])
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    assert [c["args"] for c in answer.tool_calls] == [ADD_ONE["args"]]
    assert "'a'" in answer.response_metadata["moa"]["incomplete_call"]


LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up.",
        "parameters": {
            "type": "object",
            "properties": {
                "word": {"type": "string"},
                "lang": {"type": "string", "enum": ["en", "fr"]},
                "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["word"],
            "additionalProperties": False,
        },
    },
}


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"word": "a", "lang": "en", "limit": None, "tags": ["x"]}, None),
        ({"word": "a", "limit": "3"}, None),  # the tool's pydantic model reads "3" as 3
        ({"lang": "en"}, "without its required argument 'word'"),
        ({"word": 5}, "'word' = 5, which its schema does not take"),
        ({"word": "a", "lang": "de"}, "'lang' = \"de\", which its schema does not take"),
        ({"word": "a", "limit": "many"}, "'limit' = \"many\""),
        ({"word": "a", "tags": ["x", 2]}, "'tags[1]' = 2"),
        ({"word": "a", "page": 2}, "'page', which its schema does not take"),
    ],
)
def test_tool_arguments_are_checked_against_the_simple_parts_of_the_schema(args, problem):
    from langgraph_moa.run._options import check_tool_calls

    response = AIMessage("", tool_calls=[{"name": "lookup", "args": args, "id": "l1"}])
    checked = check_tool_calls(response, {"tools": [LOOKUP]}, "P")
    found = checked.response_metadata.get("moa_incomplete_call")
    if problem is None:
        assert found is None
    else:
        assert found.startswith("called 'lookup' ") and problem in found


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = 2


class Order(BaseModel):
    size: Size
    count: float
    note: str | None = None


class Alarm(BaseModel):
    at: datetime.datetime
    snooze: datetime.timedelta


def test_a_formatted_string_is_not_judged_by_its_type():
    # A datetime's schema says "string" (format date-time), yet its model reads a Unix
    # time as one, and a timedelta a number of seconds: such a call was marked.
    from langgraph_moa.run._tool_args import argument_problem

    args = {"at": 1700000000, "snooze": 300.5}
    Alarm.model_validate(args)  # the tool accepts it
    schema = convert_to_openai_tool(Alarm)["function"]["parameters"]
    assert argument_problem(args, schema) is None
    assert argument_problem({"at": [1], "snooze": 1}, schema) is None  # format: not judged


@pytest.mark.parametrize(
    "args",
    [
        {"size": "2", "count": 3},  # an IntEnum reads "2" as LARGE
        {"size": 2.0, "count": "3.5"},
        {"size": True, "count": True, "note": None},
    ],
)
def test_a_call_the_tools_model_accepts_is_never_marked(args):
    # The enum was checked by equality only: "2" is not 2, yet the tool's model takes it,
    # and the call the agent can run lost to one that merely spelled the size as a number.
    from langgraph_moa.run._tool_args import argument_problem

    Order.model_validate(args)  # the tool accepts it
    schema = convert_to_openai_tool(Order)["function"]["parameters"]
    assert argument_problem(args, schema) is None


@pytest.mark.parametrize(
    "schema",
    [
        {"required": 5},
        {"required": "abc"},
        {"required": [["a"]], "properties": {"a": {"type": "integer"}}},
        {"properties": {1: {"type": "integer"}}},
        {"properties": {"a": {"enum": 3, "type": 7, "items": 2, "anyOf": "x"}}},
        {"properties": {"a": {"type": ["integer", "null", {"x": 1}]}}},
    ],
)
def test_an_odd_schema_never_raises_nor_marks_a_call(schema):
    # A required that was not a list raised TypeError (an int), or was read one character
    # at a time (a string); a key that was not a string raised on joining its path.
    from langgraph_moa.run._tool_args import argument_problem

    for args in ({"a": 1}, {1: 1}):
        assert argument_problem(args, schema) is None


def test_a_self_referring_schema_never_raises():
    from langgraph_moa.run._tool_args import argument_problem

    node: dict = {"type": "array"}
    node["items"] = node
    value: list = []
    for _ in range(3000):
        value = [value]
    assert argument_problem({"a": value}, {"properties": {"a": node}}) is None


@pytest.mark.parametrize(("choice", "wins"), [("auto", "text"), ("required", "call")])
def test_select_between_a_text_answer_and_an_incomplete_call(fake, choice, wins):
    # Under "auto" a text answer is a whole answer the agent can end on, and the call is one
    # its ToolNode cannot run: the text wins, as a whole call would. Where a call is forced,
    # the text may not be the answer at all, and the incomplete call is passed on, degraded.
    config = MoAConfig(
        variant="select",
        proposers=[
            fake("A", tool_calls=fixed(HALF_ADD)),
            fake("B", reply=lambda *a: "3", tool_calls=never),
        ],
        selection={"method": "vote"},
    )
    llm = MoAChatModel(config=config).bind_tools([add], tool_choice=choice)
    answer = llm.invoke(QUESTION)
    moa = answer.response_metadata["moa"]
    if wins == "text":
        assert answer.text == "3" and not answer.tool_calls and "incomplete_call" not in moa
    else:
        assert [c["args"] for c in answer.tool_calls] == [HALF_ADD["args"]]
        assert HALF_AGAIN in moa["incomplete_call"]


def test_the_ranker_picks_among_whole_calls_where_there_are_any(fake, log):
    config = MoAConfig(
        variant="ranker",
        proposers=[fake("A", tool_calls=fixed(HALF_ADD)), fake("B", tool_calls=fixed(ADD_12))],
        aggregator=fake("RK", reply=lambda *a: "1"),
    )
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    assert [c["args"] for c in answer.tool_calls] == [ADD_12["args"]]
    shown = log.by("RK")[0].messages[-1].text
    assert 'add({"a": 1, "b": 2})' in shown and 'add({"a": 1})' not in shown


def test_the_served_answer_names_the_proposal_the_ranker_picked_among_whole_calls(fake):
    # The ranker numbers only the whole proposals; the page's answer event read its choice
    # against every proposal, so it named the incomplete call A as the pick where B answered.
    from langgraph_moa.graph.streaming import RunEvents
    from langgraph_moa.serving._events import answer_event

    config = MoAConfig(
        variant="ranker",
        proposers=[fake("A", tool_calls=fixed(HALF_ADD)), fake("B", tool_calls=fixed(ADD_12))],
        aggregator=fake("RK", reply=lambda *a: "1"),
    )
    question = {"messages": QUESTION, "tools": [convert_to_openai_tool(add)]}
    events = RunEvents(create_moa_graph(config), question)
    list(events)
    assert [c["args"] for c in events.answer.tool_calls] == [ADD_12["args"]]
    assert answer_event(events.final)["ranker"]["call"] == ["proposer", 1, 1, 0]


def test_an_incomplete_aggregator_call_gives_way_to_the_next_aggregator(fake):
    config = MoAConfig(
        proposers=[fake("A", tool_calls=fixed(HALF_ADD))],
        aggregator=fake("AGG", tool_calls=fixed(HALF_ADD)),
        aggregator_fallbacks=[fake("AGG2", tool_calls=fixed(ADD_12))],
        layers=2,
    )
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    assert [c["args"] for c in answer.tool_calls] == [ADD_12["args"]]
    assert answer.response_metadata["model_name"] == "AGG2"
    agg, agg2 = _records(answer, "aggregator")
    assert agg["status"] == "ok" and HALF_AGAIN in agg["incomplete_call"]
    assert "incomplete_call" not in agg2


@pytest.mark.parametrize("failing", ["AGG", "AGG2"])
def test_a_fallback_after_a_failed_and_an_incomplete_aggregator_says_what_each_did(fake, failing):
    # The reason named one aggregator and left the other an empty entry ("every aggregator
    # failed: ; ..."), or said every aggregator left out an argument where one had failed.
    def agg(label):
        if label == failing:
            return fake(label, fail=lambda n, m: ValueError("boom"))
        return fake(label, tool_calls=fixed(HALF_ADD))

    config = MoAConfig(
        proposers=[fake("A", tool_calls=fixed(ADD_12))],
        aggregator=agg("AGG"),
        aggregator_fallbacks=[agg("AGG2")],
        retry={"max_attempts": 1},
    )
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    moa = answer.response_metadata["moa"]
    assert [c["args"] for c in answer.tool_calls] == [ADD_12["args"]]
    assert moa["fallback"] == "best_proposal"
    reason = moa["fallback_reason"]
    assert "boom" in reason and HALF_AGAIN in reason
    assert ": ;" not in reason
    assert not reason.startswith(("every aggregator failed:", "every aggregator's tool call"))


def test_a_self_moa_seq_fallback_reason_names_only_the_last_windows_aggregators(fake):
    # The first window's synthesis left out `b` (a reference, not a failure of the answer);
    # the reason of the last window's fallback listed it beside that window's own error.
    from langgraph_moa.config._schema import SelfMoASeqConfig

    syntheses = []

    def aggregating(messages):
        return len(messages) > len(QUESTION)  # the references come as a system message

    def calls(label, n, messages, kwargs):
        return [dict(HALF_ADD)] if aggregating(messages) else [dict(ADD_12)]

    def fail(n, messages):
        if aggregating(messages):
            syntheses.append(n)
            return ValueError("boom") if len(syntheses) == 2 else None
        return None

    config = MoAConfig(
        variant="self-moa-seq",
        proposers=[{"model": fake("M", tool_calls=calls, fail=fail), "samples": 6}],
        seq=SelfMoASeqConfig(window_size=4),
        retry={"max_attempts": 1},
    )
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    moa = answer.response_metadata["moa"]
    assert len(syntheses) == 2 and [c["args"] for c in answer.tool_calls] == [ADD_12["args"]]
    assert moa["fallback"] == "best_proposal"
    assert moa["fallback_reason"] == "every aggregator failed: ValueError: boom"


def test_a_text_proposal_is_not_selected_when_a_tool_call_is_required(fake):
    config = MoAConfig(
        variant="select",
        proposers=[
            fake("A", reply=lambda *a: "3", tool_calls=never),
            fake("B", reply=lambda *a: "3", tool_calls=never),
            fake("C", tool_calls=fixed(ADD_12)),
        ],
        selection={"method": "vote"},
    )
    answer = MoAChatModel(config=config).bind_tools([add], tool_choice="required").invoke(QUESTION)
    assert answer.tool_calls and answer.text == ""


class _Malformed(FakeChat):
    """Answers with a tool call whose arguments are cut-off JSON (an invalid tool call)."""

    text: str = ""

    def _answer(self, messages, n=None, kwargs=None):
        message = super()._answer(messages, n, kwargs)
        return message.model_copy(
            update={
                "content": self.text,
                "invalid_tool_calls": [
                    {
                        "name": "add",
                        "args": '{"a": 1, "b":',
                        "id": "bad",
                        "error": None,
                        "type": "invalid_tool_call",
                    }
                ],
            }
        )


def _nested_args(levels):
    """Arguments of add whose dicts and lists nest `levels` deep (the arguments' dict is 1)."""
    value = 1
    for _ in range(levels - 1):
        value = [value]
    return {"a": 1, "b": 2, "c": value}


def _nested_args_json(levels):
    """`_nested_args` as JSON text, written without a parser's recursion."""
    return '{"a": 1, "b": 2, "c": ' + "[" * (levels - 1) + "1" + "]" * (levels - 1) + "}"


@pytest.mark.parametrize("over", [1, 4900], ids=["one level over", "thousands over"])
def test_a_call_whose_arguments_nest_past_the_bound_loses_to_a_whole_call(fake, over):
    # Arguments nested thousands deep (Python 3.13's JSON reader takes 5,000 levels, 3.11's
    # stops near 1,000) crashed the run with a RecursionError where the references were
    # written; one level past the package's own bound (`MAX_NESTING`, that of a request's
    # content and tools) outvoted a whole call. Such a call is refused as one no tool can run.
    from langgraph_moa.run._inputs import MAX_NESTING

    deep = {"name": "add", "args": _nested_args(MAX_NESTING + over), "id": "d1"}
    answer = _two_against_a_whole_call(fake, deep)
    assert [c["args"] for c in answer.tool_calls] == [ADD_12["args"]]
    a, b, c = _records(answer, "proposer")
    assert a["status"] == b["status"] == "failed" and c["status"] == "ok"
    assert a["error"] == (
        f"ToolCallError: A called 'add' with arguments nested more than {MAX_NESTING} levels "
        "deep (dicts and lists within each other), so it was refused."
    )


def test_a_call_whose_arguments_nest_as_deep_as_the_bound_is_taken(fake):
    from langgraph_moa.run._inputs import MAX_NESTING

    deep = {"name": "add", "args": _nested_args(MAX_NESTING), "id": "d1"}
    answer = _two_against_a_whole_call(fake, deep)  # two calls outvote one, as any would
    assert [c["args"] for c in answer.tool_calls] == [deep["args"]]


@pytest.mark.parametrize("over", [1, 4900], ids=["one level over", "thousands over"])
def test_a_call_written_as_text_nested_past_the_bound_is_not_read_as_a_call(fake, over):
    # Python 3.11's JSON reader raised a RecursionError past ~1,000 levels (the run crashed)
    # where 3.13's read the call: past the package's bound, neither reads it as a call.
    from langgraph_moa.run._inputs import MAX_NESTING

    text = f"Tool call: add({_nested_args_json(MAX_NESTING + over)})"
    config = MoAConfig(variant="select", proposers=[fake("A", reply=lambda *_: text)])
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    assert answer.tool_calls == [] and answer.text == text


@pytest.mark.parametrize("text", ["", "Let me add them."])
def test_a_tool_call_with_malformed_arguments_is_refused_not_dropped(fake, log, text):
    from langgraph_moa import RetrySettings

    config = MoAConfig(
        proposers=[fake("A")],
        aggregator=_Malformed(label="AGG", log=log, text=text),
        layers=2,
        retry=RetrySettings(max_attempts=1),
    )
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    moa = answer.response_metadata["moa"]
    assert moa.get("fallback") == "best_proposal" and answer.text == "A #1"
    (agg,) = [c for c in moa["calls"] if c["role"] == "aggregator"]
    assert "arguments that are not a JSON object" in agg["error"]


def test_repeated_tool_call_ids_in_one_answer_are_made_unique(fake):
    # An agent answers each call with a ToolMessage by its id: two calls with one id get
    # two results no model can tell apart, and OpenAI refuses the next turn.
    twice = [ADD_12, {**ADD_12, "args": {"a": 3, "b": 4}}]
    config = MoAConfig(
        proposers=[fake("A")], aggregator=fake("AGG", tool_calls=fixed(*twice)), layers=2
    )
    llm = MoAChatModel(config=config).bind_tools([add])
    for answer in (llm.invoke(QUESTION), _joined(llm.stream(QUESTION))):
        ids = [c["id"] for c in answer.tool_calls]
        assert ids[0] == "c1" and len(set(ids)) == 2
        assert [c["args"]["a"] for c in answer.tool_calls] == [1, 3]


def _joined(chunks):
    chunks = list(chunks)
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    return full


def test_a_forced_call_answered_in_text_streams_the_fallback_not_a_broken_stream(fake):
    # Where tool_choice forces a call, answer text can only be refused (ToolCallError), so
    # it is held back: streamed at once, the refusal broke the stream (StreamBrokenError)
    # although a fallback answer that keeps to the tools was at hand.
    from langgraph_moa import RetrySettings

    config = MoAConfig(
        proposers=[fake("A", tool_calls=calls((1, 2)))],
        aggregator=fake("AGG", reply=lambda *a: "three is the answer"),
        layers=2,
        retry=RetrySettings(max_attempts=1),
    )
    llm = MoAChatModel(config=config).bind_tools([add], tool_choice="any")
    full = _joined(llm.stream(QUESTION))
    assert full.text == "" and [c["name"] for c in full.tool_calls] == ["add"]
    assert full.response_metadata["moa"]["fallback"] == "best_proposal"


class _RefusesForcedCalls(FakeChat):
    """bind_tools refuses a forced call, as some integrations refuse a tool_choice."""

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        if tool_choice == "any":
            raise ValueError("tool_choice='any' is not supported by this model")
        return super().bind_tools(tools, tool_choice=tool_choice, **kwargs)


def test_a_model_refusing_the_tools_is_named_before_any_call(fake, log):
    # Before, the integration's bare ValueError came out of the run, naming no model.
    config = MoAConfig(
        proposers=[fake("A"), _RefusesForcedCalls(label="B", log=log)], aggregator=fake("AGG")
    )
    llm = MoAChatModel(config=config).bind_tools([add], tool_choice="any")
    with pytest.raises(MoAInputError, match=r"^B cannot take these tools.*not supported"):
        llm.invoke(QUESTION)
    assert log.calls == []


@pytest.mark.parametrize("variant", ["self-moa", "self-moa-seq"])
def test_model_override_of_a_self_moa_variant_replaces_its_one_model(variant):
    """Self-MoA-Seq, like Self-MoA, aggregates with its proposer's model: `model=` moves both."""
    from langgraph_moa.chat_model import model_override

    cfg = MoAConfig(variant=variant, proposers=[{"model": "a@http://127.0.0.1:9/v1", "samples": 3}])
    preset, context = model_override(cfg, "other@http://127.0.0.1:9/v1")
    assert preset is None and context is not None
    overridden = apply_context(cfg, context)
    assert overridden.proposers[0].label == overridden.final.label == "other@http://127.0.0.1:9/v1"


# --- a proposal is a reference first: only what can become the answer must keep to it -----


def _records(answer, role):
    return [c for c in answer.response_metadata["moa"]["calls"] if c["role"] == role]


@pytest.mark.parametrize(
    ("bind", "proposed"),
    [
        ({"tool_choice": "any"}, []),  # text where a call was forced
        ({"tool_choice": "required"}, []),
        ({"tool_choice": "multiply"}, [ADD_12]),  # another bound tool than the named one
        ({"parallel_tool_calls": False}, [ADD_12, {**ADD_12, "id": "c2"}]),  # two calls
    ],
)
def test_a_proposal_that_only_the_answer_could_not_be_is_still_a_reference(
    fake, log, bind, proposed
):
    # Before, every proposer answering so was refused (ToolCallError): with small local
    # models all of them often do, and the run ended in AllProposersFailedError although
    # each proposal was a usable reference for the aggregator, which alone answers.
    wanted = MUL_12 if bind.get("tool_choice") == "multiply" else ADD_12
    config = MoAConfig(
        proposers=[fake("A", tool_calls=fixed(*proposed)), fake("B", tool_calls=fixed(*proposed))],
        aggregator=fake("AGG", tool_calls=fixed(wanted)),
        layers=2,
    )
    answer = MoAChatModel(config=config).bind_tools([add, multiply], **bind).invoke(QUESTION)
    assert [c["name"] for c in answer.tool_calls] == [wanted["name"]]
    assert "fallback" not in answer.response_metadata["moa"]
    proposals = _records(answer, "proposer")
    assert [c["status"] for c in proposals] == ["ok", "ok"]
    assert all(
        "asks for" in c["reference_only"] or "parallel" in c["reference_only"] for c in proposals
    )
    prompt = log.by("AGG")[0].messages[0].text
    assert ("A #1" in prompt) if not proposed else ("Tool call: add(" in prompt)


def test_a_reference_only_proposal_is_never_the_fallback_answer(fake):
    # The labelled fallback returns a proposal as the answer, so it must be one that keeps
    # to what the answer must: here B's call, not A's text (the first proposal).
    from langgraph_moa import AggregatorFailedError, RetrySettings

    def config(b_calls):
        return MoAConfig(
            proposers=[fake("A"), fake("B", tool_calls=fixed(*b_calls))],
            aggregator=fake("AGG", reply=lambda *a: "three"),
            layers=2,
            retry=RetrySettings(max_attempts=1),
        )

    llm = MoAChatModel(config=config([ADD_12])).bind_tools([add], tool_choice="any")
    answer = llm.invoke(QUESTION)
    assert answer.response_metadata["moa"]["fallback"] == "best_proposal"
    assert [c["name"] for c in answer.tool_calls] == ["add"] and answer.text == ""
    streamed = _joined(llm.stream(QUESTION))
    assert [c["name"] for c in streamed.tool_calls] == ["add"] and streamed.text == ""
    # With only text proposals there is no answer that keeps to the tools: an error, not text.
    llm = MoAChatModel(config=config([])).bind_tools([add], tool_choice="any")
    with pytest.raises(AggregatorFailedError, match="asks for a tool call"):
        llm.invoke(QUESTION)


def test_a_text_proposal_under_a_forced_call_feeds_the_next_layer(fake, log):
    config = MoAConfig(
        proposers=[fake("A", tool_calls=never), fake("B", tool_calls=never)],
        aggregator=fake("AGG", tool_calls=fixed(ADD_12)),
        layers=3,
    )
    answer = MoAChatModel(config=config).bind_tools([add], tool_choice="any").invoke(QUESTION)
    assert [c["name"] for c in answer.tool_calls] == ["add"]
    assert len(log.by("A")) == 2 and "B #1" in log.by("A")[1].messages[0].text


@pytest.mark.parametrize(
    ("bind", "proposed", "fragment"),
    [
        ({}, [NOPE], "'subtract', which is not bound"),
        ({"tool_choice": "none"}, [ADD_12], "tool_choice was 'none'"),
        ({"tool_choice": {"type": "none"}}, [ADD_12], "tool_choice was 'none'"),
    ],
)
def test_a_proposal_with_a_call_no_one_may_run_is_still_refused(fake, bind, proposed, fragment):
    # Shown to the aggregator as 'Tool call: ...', such a call invites a copy that no tool
    # can run, so it is no reference; the proposal kept to the tools answers.
    config = MoAConfig(
        proposers=[fake("A", tool_calls=fixed(*proposed)), fake("B")],
        aggregator=fake("AGG"),
        layers=2,
    )
    answer = MoAChatModel(config=config).bind_tools([add], **bind).invoke(QUESTION)
    a, b = _records(answer, "proposer")
    assert a["status"] == "failed" and fragment in a["error"]
    assert b["status"] == "ok" and "reference_only" not in b


def test_a_text_proposal_is_not_returned_verbatim_where_a_call_is_forced(fake):
    # select returns a proposal as the answer: every proposal keeps the answer's rules.
    config = MoAConfig(
        variant="select",
        proposers=[fake("A", tool_calls=never), fake("B", tool_calls=never)],
        selection={"method": "vote"},
    )
    llm = MoAChatModel(config=config).bind_tools([add], tool_choice="any")
    from langgraph_moa import AllProposersFailedError

    with pytest.raises(AllProposersFailedError):
        llm.invoke(QUESTION)


@pytest.mark.parametrize(
    "choice",
    ["any", "required", True, {"type": "any"}, {"type": "function", "function": {"name": "add"}}],
)
def test_a_forced_tool_call_without_tools_is_refused(fake, log, choice):
    # Before, bind_tools([], tool_choice="any") was taken, and the run went on with no tools
    # at all: the call the caller forced was silently never asked for.
    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    with pytest.raises(MoAInputError, match=r"no tools are bound|names no bound tool") as e:
        llm.bind_tools([], tool_choice=choice)
    assert choice is not True or str(e.value).startswith("tool_choice True forces")
    graph = create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    for tools in (None, []):
        with pytest.raises(MoAInputError, match=r"no tools are bound|names no bound tool"):
            graph.invoke({"messages": QUESTION, "tools": tools, "tool_choice": choice})
    assert log.calls == []
    assert llm.bind_tools([], tool_choice="auto") is not None  # nothing forced: taken


@pytest.mark.parametrize("choice", ["none", {"type": "none"}])
def test_text_like_a_call_under_tool_choice_none_stays_text(fake, choice):
    # Under Anthropic's {'type': 'none'} such text was read as a call (as under 'auto'),
    # then refused as a call made under 'none': the aggregator's answer was lost.
    text = '{"name": "add", "arguments": {"a": 1, "b": 2}}'
    config = MoAConfig(
        proposers=[fake("A")], aggregator=fake("AGG", reply=lambda *a: text), layers=2
    )
    answer = MoAChatModel(config=config).bind_tools([add], tool_choice=choice).invoke(QUESTION)
    assert answer.text == text and answer.tool_calls == []
    assert "fallback" not in answer.response_metadata["moa"]


class _TextAndCall(FakeChat):
    """Writes `text`, then calls `call` (streamed: the text's words, then the call)."""

    text: str = ""
    call: dict = Field(default_factory=dict)

    def _answer(self, messages, n=None, kwargs=None):
        message = super()._answer(messages, n, kwargs)
        return message.model_copy(update={"content": self.text, "tool_calls": [self.call]})


def test_held_text_of_a_refused_answer_is_never_streamed(fake, log):
    # With tools, text that starts like a call is held until the answer is known. Here the
    # aggregator wrote such text beside a call to an unbound tool and was refused; the held
    # text went out anyway, then the fallback (A's text) broke the stream.
    from langgraph_moa import RetrySettings

    config = MoAConfig(
        proposers=[fake("A")],
        aggregator=_TextAndCall(label="AGG", log=log, text='{"note": 1}', call=NOPE),
        layers=2,
        retry=RetrySettings(max_attempts=1),
    )
    llm = MoAChatModel(config=config).bind_tools([add])
    full = _joined(llm.stream(QUESTION))
    assert full.text == "A #1" and full.response_metadata["moa"]["fallback"] == "best_proposal"


@pytest.mark.parametrize("bad", [42, "add", {"bad": 1}, {"type": "object"}])
def test_bind_tools_refuses_what_is_no_tool_in_one_sentence(fake, bad):
    """LangChain's conversion error was several lines, quoting the object between them."""
    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    with pytest.raises(MoAInputError, match=r"^Tool 2 of 2 \(.*\) is no tool: ") as e:
        llm.bind_tools([add, bad])
    assert "\n" not in str(e.value)


PARAMS = {"type": "object", "properties": {"a": {"type": "integer"}}}


@pytest.mark.parametrize(
    "tool_",
    [
        {"name": "f", "parameters": PARAMS, "strict": False},  # its own strict says otherwise
        {"name": "f"},  # no parameters to hold to
    ],
)
def test_bind_tools_names_a_tool_that_cannot_be_strict_not_as_no_tool(fake, tool_):
    """A tool LangChain could not make strict was refused as "no tool", which it is."""
    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    llm.bind_tools([add, tool_])  # a tool without strict=
    with pytest.raises(MoAInputError, match=r"^Tool 2 of 2 \(.*\) cannot be made strict") as e:
        llm.bind_tools([add, tool_], strict=True)
    assert "\n" not in str(e.value) and "is no tool" not in str(e.value)


@pytest.mark.parametrize("builtin", [{"type": "web_search_preview"}, {"type": "code_interpreter"}])
def test_a_providers_built_in_tool_is_refused_in_one_sentence(fake, builtin):
    """A built-in tool dict (no 'function') ended bind_tools in a bare KeyError: 'function'."""
    llm = MoAChatModel(config=MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    with pytest.raises(MoAInputError, match=r"^Tool 2 of 2 \(.*\) is a provider's built-in") as e:
        llm.bind_tools([add, builtin])
    assert "\n" not in str(e.value)


def test_select_structured_output_with_only_incomplete_calls_is_a_parsing_error(fake):
    # Refused, the call left no proposal and the run raised; passed on, `include_raw` gives
    # the parse failure as it does for any answer that does not fit the schema.
    class Total(BaseModel):
        value: int

    half = {"name": "Total", "args": {}, "id": "t1"}
    config = MoAConfig(variant="select", proposers=[fake("A", tool_calls=fixed(half)), fake("B")])
    llm = MoAChatModel(config=config).with_structured_output(
        Total, method="function_calling", include_raw=True
    )
    out = llm.invoke(QUESTION)
    assert out["parsed"] is None and out["parsing_error"] is not None
    assert out["raw"].tool_calls[0]["args"] == {}


def test_an_answer_with_more_tool_calls_than_the_bound_is_refused(fake, log):
    """An answer of 10^5 tool calls within the 32 MiB bound on a body was taken whole: every
    one recorded, voted on and sent back to the agent. One answer may make at most
    `MAX_TOOL_CALLS`: past it the call fails with one sentence that says so."""
    from langgraph_moa.run._options import MAX_TOOL_CALLS

    def flood(label, n, messages, kwargs):
        if label != "FLOOD":
            return []
        count = MAX_TOOL_CALLS + 1
        return [{"name": "add", "args": {"a": i, "b": 1}, "id": f"c{i}"} for i in range(count)]

    config = MoAConfig(
        proposers=[fake("FLOOD", tool_calls=flood), fake("B", tool_calls=calls((1, 2)))],
        aggregator=fake("AGG", tool_calls=calls((1, 2))),
        layers=2,
    )
    answer = MoAChatModel(config=config).bind_tools([add]).invoke(QUESTION)
    [record] = [
        c for c in answer.response_metadata["moa"]["calls"] if c["configured_model"] == "FLOOD"
    ]
    assert record["status"] == "failed"
    assert record["error"] == (
        f"ToolCallError: FLOOD made {MAX_TOOL_CALLS + 1} tool calls in one answer, more than "
        f"the {MAX_TOOL_CALLS} an answer may make, so it was refused."
    )
    assert len(answer.tool_calls) == 1


def test_a_structured_answer_with_more_tool_calls_than_the_bound_is_refused(log):
    """A function-calling structured answer carries its tool calls in its raw message, which
    `check_tool_calls` never saw: 10^5 calls were taken whole and handed to the caller with
    the raw answer. The bound holds for it too."""
    from langchain_core.runnables import RunnableLambda

    from langgraph_moa import AggregatorFailedError
    from langgraph_moa.run._options import MAX_TOOL_CALLS

    answer = {"city": "Paris"}

    class Flooding(FakeChat):
        """Answers its structure in MAX_TOOL_CALLS + 1 tool calls and no text."""

        def with_structured_output(self, schema, *, include_raw=False, **kwargs):
            def parse(messages):
                count = MAX_TOOL_CALLS + 1
                made = [{"name": "City", "args": answer, "id": f"c{i}"} for i in range(count)]
                raw = self.invoke(messages).model_copy(update={"content": "", "tool_calls": made})
                return {"raw": raw, "parsed": answer, "parsing_error": None}

            return RunnableLambda(parse)

    config = MoAConfig(
        proposers=[FakeChat(label="A", log=log)], aggregator=Flooding(label="AGG", log=log)
    )
    schema = {"title": "City", "type": "object", "properties": {"city": {"type": "string"}}}
    with pytest.raises(AggregatorFailedError) as raised:
        MoAChatModel(config=config).with_structured_output(schema, include_raw=True).invoke("q")
    assert raised.value.summary.endswith(
        f"ToolCallError: AGG made {MAX_TOOL_CALLS + 1} tool calls in one answer, more than "
        f"the {MAX_TOOL_CALLS} an answer may make, so it was refused."
    )
