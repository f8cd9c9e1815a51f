"""The one place that reads LangChain's private provider table, pinned against public behaviour.

`models._langchain_providers` imports private names of langchain.chat_models.base, since
LangChain has no public API for them; these tests fail first if an upgrade changes them.
"""

import re

import pytest
from langchain.chat_models import init_chat_model

from langgraph_moa.errors import ModelResolutionError
from langgraph_moa.providers._models import _langchain_providers, known_providers, split_provider


def test_the_private_table_has_the_shape_we_read():
    providers, infer = _langchain_providers()
    assert {"openai", "together", "anthropic", "azure_openai"} <= set(providers)
    assert infer("gpt-4o-mini") == "openai"
    assert infer("claude-3-5-sonnet") == "anthropic"
    assert infer("llama-3-8b") is None


def test_the_provider_list_is_the_one_init_chat_model_reports():
    with pytest.raises(ValueError, match="Supported providers: ") as caught:
        init_chat_model("no-such-model-anywhere")
    listed = re.search(r"Supported providers: ([^\n]+)", str(caught.value)).group(1)
    public = {p.strip() for p in listed.split(",")}
    assert set(known_providers()) == public | {"local"}


def test_a_bare_name_is_given_the_inferred_provider():
    assert split_provider("gpt-4o-mini") == ("openai", "gpt-4o-mini")
    assert split_provider("claude-3-haiku") == ("anthropic", "claude-3-haiku")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("openai:gpt-4o", ("openai", "gpt-4o")),
        ("Azure-OpenAI:my-deploy", ("azure_openai", "my-deploy")),
        ("local:qwen2.5-0.5b", ("local", "qwen2.5-0.5b")),
        ("together:meta-llama/Llama-3-8b:free", ("together", "meta-llama/Llama-3-8b:free")),
    ],
)
def test_prefixed_specs_split_on_the_first_colon(spec, expected):
    assert split_provider(spec) == expected


@pytest.mark.parametrize(
    ("spec", "says"), [("openai:", "no model name"), ("llama-3-8b", "Unknown model provider")]
)
def test_unusable_specs_say_why_and_list_the_providers(spec, says):
    with pytest.raises(ModelResolutionError, match=says):
        split_provider(spec)


def test_endpoint_specs_are_remembered_but_not_long_strings_a_client_could_send():
    from langgraph_moa.providers import _models

    spec = "m@http://127.0.0.1:8080/v1"
    first = _models.parse_endpoint_string(spec)
    assert first is not None and first.model == "m" and first.base_url == "http://127.0.0.1:8080/v1"
    assert _models.parse_endpoint_string(spec) is first  # remembered: the same frozen endpoint
    cached = _models._remembered_endpoint.cache_info().currsize
    long_spec = "m@http://example.invalid/" + "x" * _models.REMEMBERED_SPEC_CHARS
    endpoint = _models.parse_endpoint_string(long_spec)
    assert endpoint is not None and endpoint.base_url.endswith("x")  # still read
    assert _models.parse_endpoint_string(long_spec) is not endpoint  # but never remembered
    assert _models._remembered_endpoint.cache_info().currsize == cached
    assert _models.parse_endpoint_string("openai:gpt-4o") is None
