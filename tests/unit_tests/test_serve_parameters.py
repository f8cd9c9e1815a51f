"""Every parameter of OpenAI's Chat Completions reference is honoured by `moa serve` or refused
with a 400 that names it and says why; the README's table says which, kept in sync here."""

import json
import re
from pathlib import Path

import pytest

from langgraph_moa.serving import _schema
from langgraph_moa.serving._schema import ChatRequest
from tests.unit_tests.test_serve import USER, assert_one_sentence, client, post, system

__all__ = ["client", "system"]  # the fixtures these tests use

README = Path(__file__).parents[2] / "README.md"
TOOLS = [{"type": "function", "function": {"name": "add"}}]


@pytest.mark.parametrize(
    ("extra", "param", "fragment"),
    [
        ({"logit_bias": {"50256": -100}}, "logit_bias", "token ids"),
        ({"modalities": ["text", "audio"]}, "modalities", "text only"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio", "text only"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction", "aggregator"),
        ({"reasoning_effort": "low"}, "reasoning_effort", "differently"),
        ({"verbosity": "low"}, "verbosity", "differently"),
        ({"service_tier": "flex"}, "service_tier", "operator"),
        ({"web_search_options": {}}, "web_search_options", "no web"),
        ({"functions": [{"name": "add"}]}, "functions", "'tools'"),
        ({"function_call": "auto"}, "function_call", "'tool_choice'"),
        ({"top_p": 0.5}, "top_p", "temperature"),
        ({"n": 2}, "n", "one answer"),
        (
            {"stream": True, "stream_options": {"include_obfuscation": True}},
            "stream_options.include_obfuscation",
            "no obfuscation",
        ),
    ],
)
def test_an_openai_parameter_moa_cannot_honour_is_refused_saying_why(
    client, log, extra, param, fragment
):
    """They were refused as "not supported by this server; remove it", with no reason: a
    client could not tell a parameter MoA cannot honour from one it had misspelt."""
    error = assert_one_sentence(post(client, {"model": "m", "messages": USER, **extra}), 400)
    assert error["param"] == param
    assert fragment in error["message"], error["message"]
    assert log.calls == []


def test_an_unknown_field_is_still_refused_as_unknown(client):
    error = assert_one_sentence(
        post(client, {"model": "m", "messages": USER, "tempreature": 1}), 400
    )
    assert error["param"] == "tempreature" and error["code"] == "unsupported_parameter"


@pytest.mark.parametrize(
    "extra",
    [
        {"stream": True, "stream_options": {"include_obfuscation": False}},
        {"stream": True, "stream_options": {"include_usage": True, "include_obfuscation": False}},
        {"modalities": ["text"]},
    ],
)
def test_a_parameter_asking_for_what_moa_does_anyway_is_accepted(client, extra):
    """``include_obfuscation: false`` (no padding field in the chunks) and ``modalities:
    ["text"]`` ask for what MoA does: they were a 400."""
    response = post(client, {"model": "m", "messages": USER, **extra})
    assert response.status_code == 200, response.text
    assert "AGG #" in response.text
    assert "obfuscation" not in response.text


def test_safety_identifier_and_prompt_cache_key_go_to_the_trace_not_the_models(client, log):
    """OpenAI's successors of ``user``: they were a 400, so a current SDK client that sets
    them could not use the server; they change no answer, and go where ``user`` goes."""
    extra = {"safety_identifier": "s-1", "prompt_cache_key": "k-1"}
    assert post(client, {"model": "m", "messages": USER, **extra}).status_code == 200
    assert "s-1" not in repr([c.kwargs for c in log.calls])
    body = ChatRequest.model_validate({"model": "m", "messages": USER, **extra})
    assert body.trace_metadata() == extra
    assert "s-1" not in json.dumps(body.run_options(picks_proposal=False))


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"safety_identifier": "s" * 65}, "safety_identifier"),
        ({"prompt_cache_key": "k" * 257}, "prompt_cache_key"),
    ],
)
def test_trace_identifiers_past_their_bounds_are_a_400(client, extra, param):
    error = assert_one_sentence(
        post(client, {"model": "m", "messages": USER, **extra}), 400, "at most"
    )
    assert error["param"] == param


def _table_parameters() -> list[str]:
    """The first column of the README's table of Chat Completions parameters."""
    text = README.read_text(encoding="utf-8")
    section = text.split("| parameter | what `moa serve` does |", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^\| `(\w+)`", section, flags=re.MULTILINE)


def test_the_readme_table_lists_every_parameter_the_server_reads_or_refuses_once():
    listed = _table_parameters()
    assert len(listed) == len(set(listed)), "a parameter listed twice"
    openai_fields = set(ChatRequest.model_fields) - _schema.MOA_FIELDS
    assert set(listed) == openai_fields | set(_schema.REFUSED) | _schema.MOA_FIELDS
    assert not openai_fields & set(_schema.REFUSED)  # refused by name, so never a field too


def test_an_assistant_turn_that_refused_reaches_the_models_as_what_it_said(client, log):
    """OpenAI writes a refused turn as ``{"content": null, "refusal": "..."}``; a client
    replaying its conversation got a 400 ("needs 'content' or 'tool_calls'")."""
    refused = {"role": "assistant", "content": None, "refusal": "I cannot help with that."}
    response = post(client, {"model": "m", "messages": [*USER, refused, *USER]})
    assert response.status_code == 200, response.text
    seen = log.by("A")[0].messages
    assert [m.type for m in seen] == ["human", "ai", "human"]
    assert seen[1].text == "I cannot help with that."


@pytest.mark.parametrize("empty", ["", []])
def test_a_refused_turn_with_empty_content_reaches_the_models_as_what_it_said(client, log, empty):
    """LangChain's ``convert_to_openai_messages`` writes a refused turn with ``content: ""``
    beside its ``refusal``: the refusal was kept aside, and the models read an empty turn."""
    refused = {"role": "assistant", "content": empty, "refusal": "I cannot help with that."}
    response = post(client, {"model": "m", "messages": [*USER, refused, *USER]})
    assert response.status_code == 200, response.text
    assert log.by("A")[0].messages[1].text == "I cannot help with that."


def test_a_refused_turn_with_tool_calls_keeps_both(client, log):
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    refused = {"role": "assistant", "content": None, "refusal": "Not that.", "tool_calls": [call]}
    result = {"role": "tool", "tool_call_id": "c1", "content": "3"}
    body = {"model": "m", "messages": [*USER, refused, result, *USER], "tools": TOOLS}
    assert post(client, body).status_code == 200
    seen = log.by("A")[0].messages[1]
    assert seen.text == "Not that." and [c["id"] for c in seen.tool_calls] == ["c1"]


@pytest.mark.parametrize("field", sorted(_schema.REFUSED))
def test_a_refused_parameter_sent_as_null_asks_for_nothing_and_is_accepted(client, log, field):
    """The OpenAI SDK sends a keyword given as None as ``null`` (``reasoning_effort=None``
    from a wrapper's unset option): that asks for OpenAI's default, which MoA does, and was
    a 400 saying why MoA cannot do what was not asked."""
    response = post(client, {"model": "m", "messages": USER, field: None})
    assert response.status_code == 200, response.text
    assert all(field not in call.kwargs for call in log.calls)


def test_the_deprecated_function_role_is_refused_saying_what_to_send(client, log):
    """The README's table says the ``function`` role is refused "(send a ``tool`` message)";
    the 400 said only that the tag matched none of the roles, never why nor what instead."""
    result = {"role": "function", "name": "add", "content": "3"}
    error = assert_one_sentence(
        post(client, {"model": "m", "messages": [*USER, result, *USER]}), 400, "messages[1]"
    )
    assert error["param"] == "messages"
    assert "deprecated" in error["message"] and "'tool'" in error["message"], error["message"]
    assert log.calls == []


@pytest.mark.parametrize("tier", ["auto", "default"])
def test_the_service_tier_openai_sends_by_default_is_accepted_and_not_forwarded(client, log, tier):
    """``"auto"`` is OpenAI's default tier, and an SDK may send it (or ``"default"``) on every
    request: both ask for nothing the operator's accounts do not do, and were a 400."""
    response = post(client, {"model": "m", "messages": USER, "service_tier": tier})
    assert response.status_code == 200, response.text
    assert log.calls and all("service_tier" not in call.kwargs for call in log.calls)


@pytest.mark.parametrize("tier", ["flex", "priority", "scale", 5])
def test_a_service_tier_that_promises_something_is_still_refused(client, log, tier):
    error = assert_one_sentence(
        post(client, {"model": "m", "messages": USER, "service_tier": tier}), 400, "operator"
    )
    assert error["param"] == "service_tier"
    assert log.calls == []


@pytest.mark.parametrize(
    "schema",
    [
        {"schema": {"type": "object"}},
        {"name": "", "schema": {}},
        # OpenAI refuses these names too: letters, digits, '_' and '-', at most 64
        {"name": "my answer", "schema": {}},
        {"name": "a" * 65, "schema": {}},
    ],
)
def test_a_json_schema_without_a_name_is_refused_saying_what_to_add(client, log, schema):
    """OpenAI requires ``json_schema.name``: one without it was forwarded, and the provider's
    refusal came back as a 502 after the proposers had been paid for."""
    body = {"model": "m", "messages": USER, "response_format": {"type": "json_schema"}}
    body["response_format"]["json_schema"] = schema
    error = assert_one_sentence(post(client, body), 400, "'name'")
    assert error["param"] == "response_format.json_schema"
    assert log.calls == []


@pytest.mark.parametrize("name", ["get weather", "a" * 65, "lookup.v2", "f\u00e9"])
def test_a_function_tool_name_outside_openais_rule_is_refused_naming_it(client, log, name):
    """A tool's name was checked only for being there: ``get weather`` or a 65-character name
    went upstream, and the provider's refusal came back as a 502 after the proposers had been
    paid for. It is refused at once, naming the tool and the rule."""
    tool = {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    body = {"model": "m", "messages": USER, "tools": [tool]}
    error = assert_one_sentence(post(client, body), 400, "letters, digits, '_' and '-'")
    assert name[:40] in error["message"]
    assert error["param"] == "tools.0.function"
    assert log.calls == []
