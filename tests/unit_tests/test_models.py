"""The one place that reads LangChain's private provider table, pinned against public behaviour.

`providers._table._langchain_providers` (which `_models` re-imports) reads private names of
langchain.chat_models.base, since LangChain has no public API for them; spec validation and
`register_provider` both use it, and these tests fail first if an upgrade changes them.
"""

import importlib.util
import re

import pytest
from langchain.chat_models import init_chat_model

from langgraph_moa import MoAConfig
from langgraph_moa.errors import ModelResolutionError
from langgraph_moa.providers._models import (
    _langchain_providers,
    known_providers,
    parse_endpoint_string,
    split_provider,
)


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


@pytest.mark.parametrize(
    "spec,says",
    [
        ("m@http://", "base_url has no host"),
        ("m@http:///", "base_url has no host"),
        ("m@https:///v1", "base_url has no host"),
        ("m@http://h /v1", "must not contain spaces"),
        ("m@http://h:port/v1", "is not a valid URL"),
        ("m@https://user:pa55w0rdXYZ@host/v1", "must not hold a user name or password"),
    ],
)
def test_an_endpoint_without_a_usable_host_is_refused_in_one_sentence(spec, says):
    """A prefix check let hostless URLs through; they failed only at the first call."""
    from langgraph_moa import MoAConfig
    from langgraph_moa.errors import MoAConfigError

    with pytest.raises(MoAConfigError) as caught:
        MoAConfig(proposers=[spec], aggregator="openai:gpt-4o")
    message = str(caught.value)
    assert says in message
    assert "http://host:port/v1" in message or "api_key_env" in message  # the fix
    assert "pa55w0rdXYZ" not in message and "\n" not in message


def test_an_endpoint_scheme_is_read_in_any_case_and_lower_cased():
    """HTTPS:// was refused as an unknown provider, a misleading message."""
    from langgraph_moa.providers._models import OpenAIEndpoint, describe_model, validate_spec

    assert validate_spec("m@HTTPS://h/v1") == "m@HTTPS://h/v1"
    endpoint = parse_endpoint_string("m@HTTPS://h/v1")
    assert endpoint == OpenAIEndpoint(model="m", base_url="https://h/v1")
    assert describe_model(endpoint) == "m@https://h/v1"
    assert (
        parse_endpoint_string("org/m@v2@http://[::1]:8080/v1/").base_url == "http://[::1]:8080/v1"
    )


def test_a_password_in_an_endpoint_url_never_reaches_an_error_message():
    from pydantic import ValidationError

    from langgraph_moa import MoAConfig
    from langgraph_moa.errors import MoAConfigError
    from langgraph_moa.providers._models import OpenAIEndpoint

    with pytest.raises(ValidationError) as direct:
        OpenAIEndpoint(base_url="https://bob:pa55w0rdXYZ@h/v1", model="m")
    with pytest.raises(MoAConfigError) as shaped:  # a misplaced key: pydantic repeats the input
        MoAConfig(
            proposers=[{"model": "m", "base_url": "https://bob:pa55w0rdXYZ@h/v1"}],
            aggregator="openai:gpt-4o",
        )
    for error in (direct.value, shaped.value):
        assert "pa55w0rdXYZ" not in str(error)


@pytest.mark.parametrize(
    "spec", ["Local:smollm2-135m", "LOCAL:smollm2-135m", " local:smollm2-135m"]
)
def test_a_local_spec_in_any_case_is_seen_as_local_everywhere(spec):
    """ "Local:x" built a local model, but the checks that start its server missed it."""
    from langgraph_moa import MoAConfig

    config = MoAConfig(variant="self-moa", proposers=[{"model": spec, "samples": 2}])
    assert config.proposers[0].model == "local:smollm2-135m"
    assert config.local_model_names() == ["smollm2-135m"]
    assert config.proposers[0].is_local
    assert config.proposers[0].known_context_window() is not None


def test_a_provider_prefix_is_kept_as_it_is_resolved_and_a_bare_name_as_written():
    from langgraph_moa.providers._models import validate_spec

    assert validate_spec("OpenAI:gpt-4o") == "openai:gpt-4o"
    assert validate_spec("ollama:llama3:8b") == "ollama:llama3:8b"
    assert validate_spec("gpt-4o") == "gpt-4o"  # the provider is inferred, not written in


@pytest.mark.skipif(importlib.util.find_spec("socksio") is not None, reason="socksio installed")
@pytest.mark.parametrize("variable", ["ALL_PROXY", "all_proxy", "HTTPS_PROXY"])
@pytest.mark.parametrize("spec", ["openai:gpt-4o-mini", "m@http://10.1.2.3:8000/v1"])
def test_a_proxy_httpx_cannot_use_is_one_sentence_not_an_import_error(monkeypatch, variable, spec):
    from langgraph_moa.errors import MoAConfigError
    from langgraph_moa.providers._models import ModelCache

    for name in ("ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "socks5://127.0.0.1:1080")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    with pytest.raises(MoAConfigError, match=r"socksio.*unset the proxy variable"):
        ModelCache().get(spec, {"temperature": 0.0})


def test_a_served_presets_model_is_admitted_as_its_config_spells_it():
    from langgraph_moa.serving._policy import ModelPolicy

    served = MoAConfig(
        proposers=["OpenAI:gpt-4o-mini", "azure-openai:gpt-4o"],
        aggregator="openai:gpt-4o-mini",
        name="s",
    )
    policy = ModelPolicy.for_systems({"s": served})
    assert policy.admit("OpenAI:gpt-4o-mini", "proposers[0]")
    assert policy.admit("azure-openai:gpt-4o", "proposers[1]")


def test_security_md_names_each_provider_that_keeps_its_own_http_clients():
    # docs/security.md said the answer bound and the refused redirects held for "every model
    # on langchain-openai" and named none that escape them: `deepseek:` and `openrouter:`
    # (on langchain-openai too) and a user's own ChatOpenAI instance keep their SDK's clients.
    from pathlib import Path

    from langgraph_moa.providers._table import LOCAL_PREFIX, providers

    page = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    section = page.split("### A misbehaving model server", 1)[1].split("\n### ", 1)[0]
    for row in providers():
        if row.prefix != LOCAL_PREFIX:
            assert f"`{row.prefix}:`" in section, row.prefix
    assert "an instance passed in as a spec" in section
