"""MoAChatModel as the model of a LangChain 1.x agent (`langchain.agents.create_agent`)."""

from __future__ import annotations

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import (
    LLMToolSelectorMiddleware,
    ModelFallbackMiddleware,
    wrap_model_call,
)
from langchain.agents.structured_output import ProviderStrategy, ToolStrategy
from langchain_core.messages import AIMessageChunk, SystemMessage, ToolMessage
from pydantic import BaseModel

from langgraph_moa import (
    AggregatorFailedError,
    AllProposersFailedError,
    MoAChatModel,
    MoAConfig,
    RetrySettings,
)
from tests.unit_tests.test_tools import add, multiply


class Total(BaseModel):
    value: int


def answered(messages) -> bool:
    return any(isinstance(m, ToolMessage) for m in messages)


def call_then_text(*tool_calls):
    """A FakeChat rule: `tool_calls` until a tool result is in the conversation, then text."""
    return lambda label, n, messages, kwargs: (
        [] if answered(messages) else [dict(c) for c in tool_calls]
    )


ADD_12 = {"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"}
ADD_34 = {"name": "add", "args": {"a": 3, "b": 4}, "id": "c1"}
USER = {"messages": [("user", "What is 1 + 2 and 3 + 4?")]}


def _moa(fake, proposals, aggregated, **config):
    return MoAConfig(
        proposers=[fake("A", tool_calls=proposals), fake("B", tool_calls=proposals)],
        aggregator=fake("AGG", tool_calls=aggregated),
        layers=2,
        **config,
    )


def test_a_tool_loop_runs_the_aggregators_parallel_calls_with_unique_ids(fake, log):
    config = _moa(fake, call_then_text(ADD_12), call_then_text(ADD_12, ADD_34))
    out = create_agent(MoAChatModel(config=config), [add]).invoke(USER)
    first, tools, final = out["messages"][1], out["messages"][2:4], out["messages"][4]
    assert [c["args"] for c in first.tool_calls] == [ADD_12["args"], ADD_34["args"]]
    ids = [c["id"] for c in first.tool_calls]
    assert ids[0] == "c1" and len(set(ids)) == 2  # the repeated id made unique
    assert [(t.tool_call_id, t.text) for t in tools] == [(ids[0], "3"), (ids[1], "7")]
    assert final.text == "AGG #2" and not final.tool_calls
    # The second turn: every proposer and the aggregator saw both tool results.
    for label in ("A", "B", "AGG"):
        assert [
            m.tool_call_id for m in log.by(label)[1].messages if isinstance(m, ToolMessage)
        ] == ids


def test_agent_streams_tool_call_chunks_and_the_runs_usage_once(fake, log):
    config = _moa(fake, call_then_text(ADD_12), call_then_text(ADD_12))
    agent = create_agent(MoAChatModel(config=config), [add])
    chunks = [
        m for m, _ in agent.stream(USER, stream_mode="messages") if isinstance(m, AIMessageChunk)
    ]
    end = next(i for i, c in enumerate(chunks) if c.usage_metadata)
    full = chunks[0]
    for chunk in chunks[1 : end + 1]:
        full += chunk
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [("add", {"a": 1, "b": 2})]
    # No proposer's chunk reaches the agent's stream, and each turn's usage comes once:
    # the whole run's, every inner call summed.
    usages = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert len(usages) == 2
    first_turn = log.calls[:3]
    assert usages[0]["input_tokens"] == sum(
        sum(len(m.text.split()) for m in c.messages) for c in first_turn
    )
    assert not any(c.text.startswith(("A #", "B #")) for c in chunks)


def test_middleware_tools_choice_prompt_and_settings_reach_every_call(fake, log):
    @wrap_model_call
    def narrow(request, handler):
        if answered(request.messages):
            return handler(request)
        return handler(
            request.override(
                tools=[t for t in request.tools if t.name == "multiply"],
                tool_choice="multiply",
                system_prompt="Be terse.",
                model_settings={"temperature": 0.25, "max_tokens": 33, "seed": 7},
            )
        )

    mul = {"name": "multiply", "args": {"a": 2, "b": 3}, "id": "m1"}
    config = _moa(fake, call_then_text(mul), call_then_text(mul))
    agent = create_agent(MoAChatModel(config=config), [add, multiply], middleware=[narrow])
    out = agent.invoke({"messages": [("user", "2 * 3?")]})
    assert out["messages"][2].text == "6"
    for label in ("A", "B", "AGG"):
        call = log.by(label)[0]
        assert [t["function"]["name"] for t in call.kwargs["tools"]] == ["multiply"]
        assert call.kwargs["tool_choice"] == "multiply"
        system = call.messages[0]
        assert isinstance(system, SystemMessage) and system.text.startswith("Be terse.")
    # The fields' meaning: the proposers' temperature, the answer's cap, a seed per proposal.
    assert [log.by(x)[0].temperature for x in ("A", "B")] == [0.25, 0.25]
    assert log.by("AGG")[0].max_tokens == 33
    assert sorted(log.by(x)[0].kwargs["seed"] for x in ("A", "B")) == [7, 8]


@pytest.mark.parametrize("variant", ["moa", "select"])
def test_tool_strategy_answers_through_the_agent(fake, log, variant):
    def rule(label, n, messages, kwargs):
        if answered(messages):
            return [{"name": "Total", "args": {"value": 3}, "id": f"{label}-{n}"}]
        return [dict(ADD_12, id=f"{label}-{n}")]

    proposers = [fake("A", tool_calls=rule), fake("B", tool_calls=rule)]
    config = (
        MoAConfig(variant="select", proposers=proposers)
        if variant == "select"
        else MoAConfig(proposers=proposers, aggregator=fake("AGG", tool_calls=rule), layers=2)
    )
    agent = create_agent(MoAChatModel(config=config), [add], response_format=ToolStrategy(Total))
    out = agent.invoke({"messages": [("user", "1 + 2?")]})
    assert out["structured_response"] == Total(value=3)
    for call in log.calls:  # the agent forces a call: a tool's or the answer's
        assert call.kwargs["tool_choice"] == "any"
        assert [t["function"]["name"] for t in call.kwargs["tools"]] == ["add", "Total"]


@pytest.mark.parametrize("variant", ["moa", "select"])
def test_provider_strategy_sends_the_response_format_to_what_answers(fake, log, variant):
    def reply(label, n, messages):
        return '{"value": 3}'

    proposers = [fake("A", reply=reply), fake("B", reply=reply)]
    config = (
        MoAConfig(variant="select", proposers=proposers)
        if variant == "select"
        else MoAConfig(proposers=proposers, aggregator=fake("AGG", reply=reply), layers=2)
    )
    agent = create_agent(MoAChatModel(config=config), [], response_format=ProviderStrategy(Total))
    out = agent.invoke({"messages": [("user", "1 + 2?")]})
    assert out["structured_response"] == Total(value=3)
    answering = {"A", "B"} if variant == "select" else {"AGG"}
    for call in log.calls:
        sent = call.kwargs.get("response_format")
        assert (sent is not None) == (call.label in answering)
        if sent is not None:
            assert sent["json_schema"]["name"] == "Total"


def no_response_format(n, messages):
    # What Anthropic's and Ollama's clients raise for an argument they do not take.
    return TypeError("Messages.create() got an unexpected keyword argument 'response_format'")


@pytest.mark.parametrize("variant", ["moa", "select"])
def test_provider_strategy_on_a_model_without_response_format_names_tool_strategy(fake, variant):
    # The error repeated the client's TypeError, which says nothing of ProviderStrategy.
    if variant == "select":
        config = MoAConfig(variant="select", proposers=[fake("A", fail=no_response_format)])
        error: type[Exception] = AllProposersFailedError
    else:
        config = MoAConfig(
            proposers=[fake("A")], aggregator=fake("AGG", fail=no_response_format), layers=2
        )
        error = AggregatorFailedError
    agent = create_agent(MoAChatModel(config=config), [], response_format=ProviderStrategy(Total))
    with pytest.raises(error) as caught:
        agent.invoke({"messages": [("user", "1 + 2?")]})
    said = str(caught.value)
    assert "does not take OpenAI's response_format" in said
    assert "use ToolStrategy" in said


def test_bound_tools_survive_with_config_retry_and_fallbacks(fake, log):
    config = _moa(fake, call_then_text(ADD_12), call_then_text(ADD_12))
    llm = MoAChatModel(config=config).bind_tools([add], tool_choice="any")
    for wrapped in (llm.with_config(tags=["t"]), llm.with_retry(), llm.with_fallbacks([llm])):
        log.calls.clear()
        assert wrapped.invoke("1 + 2?").tool_calls[0]["args"] == ADD_12["args"]
        assert [c.kwargs["tool_choice"] for c in log.calls] == ["any"] * 3


HALF_ADD = {"name": "add", "args": {"a": 1}, "id": "h1"}


def test_an_aggregator_call_missing_a_required_argument_gives_way_to_a_whole_one(fake):
    config = _moa(
        fake,
        call_then_text(ADD_12),
        call_then_text(HALF_ADD),
        retry=RetrySettings(max_attempts=1),
    )
    out = create_agent(MoAChatModel(config=config), [add]).invoke(USER)
    first = out["messages"][1]
    assert first.response_metadata["moa"]["fallback"] == "best_proposal"
    assert [c["args"] for c in first.tool_calls] == [ADD_12["args"]]
    assert out["messages"][2].text == "3"


def test_an_incomplete_call_with_no_whole_one_reaches_the_tool_node_for_a_retry(fake, log):
    # Where every candidate leaves out a required argument, the call is passed on (recorded
    # as incomplete): the ToolNode answers with the validation error and the model retries.
    def half_then_whole(label, n, messages, kwargs):
        results = [m.status for m in messages if isinstance(m, ToolMessage)]
        if "success" in results:
            return []
        return [dict(ADD_12)] if results else [dict(HALF_ADD)]

    config = _moa(fake, half_then_whole, half_then_whole)
    out = create_agent(MoAChatModel(config=config), [add]).invoke(USER)
    first, refused = out["messages"][1], out["messages"][2]
    assert [c["args"] for c in first.tool_calls] == [HALF_ADD["args"]]
    agg = [c for c in first.response_metadata["moa"]["calls"] if c["role"] == "aggregator"]
    assert "without its required argument 'b'" in agg[0]["incomplete_call"]
    # the call's record says so; the answer's metadata carries no internal mark of the call
    assert [k for k in first.response_metadata if k.startswith("moa_")] == []
    assert isinstance(refused, ToolMessage) and refused.status == "error"
    assert out["messages"][4].text == "3"


def test_a_wrong_argument_type_reaches_the_agents_tool_node_as_an_error(fake, log):
    # Where every call gives a wrong type, the call is passed on, marked: the ToolNode
    # answers it with its validation error, which every call of the next turn reads.
    bad = {"name": "add", "args": {"a": "one", "b": 2}, "id": "w1"}
    config = _moa(fake, call_then_text(bad), call_then_text(bad))
    out = create_agent(MoAChatModel(config=config), [add]).invoke(USER)
    result = out["messages"][2]
    assert "'a' = \"one\"" in out["messages"][1].response_metadata["moa"]["incomplete_call"]
    assert isinstance(result, ToolMessage) and result.status == "error"
    for label in ("A", "B", "AGG"):
        assert log.by(label)[1].messages[-1].status == "error"


def test_built_in_middleware_takes_a_moa_as_its_model(fake, log):
    def picks_multiply(label, n, messages):
        return '{"tools": ["multiply"]}'

    selector = MoAConfig(
        proposers=[fake("S", reply=picks_multiply)],
        aggregator=fake("SAGG", reply=picks_multiply),
        layers=2,
    )
    down = MoAConfig(
        proposers=[fake("X", fail=lambda n, m: RuntimeError("down"))],
        aggregator=fake("XAGG", fail=lambda n, m: RuntimeError("down")),
        layers=2,
        retry=RetrySettings(max_attempts=1),
    )
    agent = create_agent(
        MoAChatModel(config=down),
        [add, multiply],
        middleware=[
            LLMToolSelectorMiddleware(model=MoAChatModel(config=selector), max_tools=1),
            ModelFallbackMiddleware(MoAChatModel(config=_moa(fake, None, None))),
        ],
    )
    out = agent.invoke(USER)
    assert out["messages"][-1].text == "AGG #1"  # the fallback MoA answered
    (call,) = log.by("AGG")
    assert [t["function"]["name"] for t in call.kwargs["tools"]] == ["multiply"]
