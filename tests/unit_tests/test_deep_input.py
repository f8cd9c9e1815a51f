"""Input nested past any real schema or content is refused in one sentence, not a RecursionError."""

import json

import pytest
from fastapi.testclient import TestClient
from langchain_core.messages import AIMessage, ToolMessage

from langgraph_moa import MoAChatModel, MoAConfig, MoAInputError, create_moa_graph
from langgraph_moa.run._inputs import MAX_NESTING
from langgraph_moa.serving._app import create_app


def nested(depth):
    """A dict nested `depth` levels deep: {"a": {"a": ... {} ...}}."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _schema(depth):
    return {"title": "deep", "type": "object", "properties": {"x": nested(depth)}}


def _tool(parameters):
    return {
        "type": "function",
        "function": {"name": "f", "description": "d", "parameters": parameters},
    }


@pytest.fixture
def config(fake):
    return MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2, name="m")


FRAGMENT = f"nested more than {MAX_NESTING} levels deep"


@pytest.mark.parametrize("depth", [MAX_NESTING + 5, 10_000])
def test_a_deep_structured_output_schema_is_refused_in_one_sentence(config, depth):
    with pytest.raises(MoAInputError, match=FRAGMENT) as info:
        MoAChatModel(config=config).with_structured_output(_schema(depth)).invoke("hi")
    assert "\n" not in str(info.value)


def test_a_schema_within_the_limit_is_answered(config):
    schema = {"title": "flat", "type": "object", "properties": {"x": {"type": "string"}}}
    assert MoAChatModel(config=config).with_structured_output(schema) is not None


def test_a_deep_schema_given_to_the_graph_is_refused_before_any_call(config, log):
    # create_moa_graph(response_format=...) was not checked: the proposers were asked (and
    # paid), then the aggregator failed on a RecursionError from the schema's repr.
    with pytest.raises(MoAInputError, match=FRAGMENT) as info:
        create_moa_graph(config, response_format=_schema(10_000)).invoke({"messages": "hi"})
    assert "\n" not in str(info.value)
    assert not log.calls


def test_deep_tool_parameters_are_refused_in_one_sentence(config):
    with pytest.raises(MoAInputError, match=FRAGMENT):
        MoAChatModel(config=config).bind_tools([_tool(_schema(10_000))])


def test_deep_tools_in_the_graph_input_are_refused(config):
    question = {"messages": [("user", "hi")], "tools": [_tool(_schema(10_000))]}
    with pytest.raises(MoAInputError, match=FRAGMENT):
        create_moa_graph(config).invoke(question)


def test_deep_message_content_is_refused_naming_the_message(config):
    block = {"type": "text", "text": "hi", "extra": nested(10_000)}
    question = {"messages": [("user", "hi"), ("ai", "ok"), {"role": "user", "content": [block]}]}
    with pytest.raises(MoAInputError, match=f"Message 3's content is {FRAGMENT}"):
        create_moa_graph(config).invoke(question)
    with pytest.raises(MoAInputError, match=FRAGMENT):
        MoAChatModel(config=config).invoke(question["messages"])


def _post(config, body: str):
    client = TestClient(create_app({"m": config}), base_url="http://localhost")
    headers = {"content-type": "application/json"}
    return client.post("/v1/chat/completions", content=body, headers=headers)


def _assert_400(response, *fragments):
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "\n" not in message and message.count(". ") == 0, message
    for fragment in fragments:
        assert fragment in message, message


USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "body",
    [
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": _schema(150)},
            }
        },
        {"tools": [_tool(_schema(150))]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi", "x": nested(150)}]}
            ]
        },
    ],
    ids=["schema", "tools", "content"],
)
def test_serve_refuses_deep_fields_with_a_400(config, body):
    _assert_400(_post(config, json.dumps({"model": "m", "messages": USER, **body})), FRAGMENT)


def test_serve_names_a_body_nested_past_its_parser(config):
    deep = '{"a":' * 10_000 + "{}" + "}" * 10_000
    body = '{"model":"m","messages":[{"role":"user","content":"hi"}],"metadata":' + deep + "}"
    _assert_400(_post(config, body), "The body is nested too deep", "at line 1 column")


def _deep_call(depth):
    """An earlier assistant turn calling f with arguments nested `depth` levels deep."""
    call = {"name": "f", "args": nested(depth), "id": "c1"}
    return [("user", "hi"), AIMessage("", tool_calls=[call]), ToolMessage("1", tool_call_id="c1")]


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 10_000])
def test_a_deep_tool_call_in_the_conversation_is_refused_naming_the_message(config, log, depth):
    # A model's call nested past the bound is refused (`check_call_bounds`), but the same
    # call in an earlier turn was taken: each call then failed on a RecursionError where its
    # request was encoded (a call cache's key, a provider's JSON), blamed on the providers.
    messages = _deep_call(depth)
    with pytest.raises(MoAInputError, match=f"Message 2's tool call 'f' is {FRAGMENT}") as info:
        create_moa_graph(config).invoke({"messages": messages})
    assert "\n" not in str(info.value)
    with pytest.raises(MoAInputError, match=FRAGMENT):
        MoAChatModel(config=config).invoke(messages)
    assert not log.calls


def test_a_tool_call_in_the_conversation_as_deep_as_the_bound_is_answered(config):
    state = create_moa_graph(config).invoke({"messages": _deep_call(MAX_NESTING)})
    assert state["messages"][-1].text


def test_deep_tool_call_arguments_written_as_json_are_refused_not_a_recursion_error(config):
    # LangChain reads an OpenAI-style turn's arguments with json.loads, which raised a bare
    # RecursionError (Python 3.11) out of the graph's input check.
    arguments = "[" * 10_000 + "]" * 10_000
    turn = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": arguments}}],
    }
    with pytest.raises(MoAInputError, match="Message 2 ") as info:
        create_moa_graph(config).invoke({"messages": [("user", "hi"), turn]})
    assert "\n" not in str(info.value)


def test_serve_refuses_a_deep_tool_call_in_the_conversation_with_a_400(config):
    arguments = json.dumps(nested(150))  # a string to the body's parser, read by LangChain
    turn = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
        ],
    }
    tool = {"role": "tool", "tool_call_id": "c1", "content": "1"}
    body = {"model": "m", "messages": [*USER, turn, tool]}
    _assert_400(_post(config, json.dumps(body)), FRAGMENT)
