"""Configuration as untrusted input: typos, hostile files and values past what can run.

Every refusal is one sentence that names the problem and the fix (`MoAConfigError`), never
a traceback, a hang or a run that fails only once it has started.
"""

import pytest

from langgraph_moa import MoAConfig, MoAConfigError, MoAContext, create_moa_graph
from tests.helpers import QUESTION

BASE = {"proposers": ["openai:gpt-4o-mini"], "aggregator": "openai:gpt-4o"}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"layrs": 3}, "layrs: unknown setting; did you mean 'layers'?"),
        (
            {"proposers": [{"model": "openai:gpt-4o", "temprature": 0.3}]},
            "proposers.0.temprature: unknown setting; did you mean 'temperature'?",
        ),
        (
            {"aggregator": {"model": "openai:gpt-4o", "max_token": 9}},
            "aggregator.max_token: unknown setting; did you mean 'max_tokens'?",
        ),
        (
            {"variant": "self-moa-seq", "aggregator": None, "seq": {"windw_size": 3}},
            "seq.windw_size: unknown setting; did you mean 'window_size'?",
        ),
        ({"retry": {"max_attempt": 2}}, "retry.max_attempt: unknown setting; did you mean"),
        (
            {"aggregator_fallbacks": [{"model": "openai:gpt-4o", "temprature": 0}]},
            "aggregator_fallbacks.0.temprature: unknown setting; did you mean 'temperature'?",
        ),
    ],
)
def test_a_misspelt_setting_is_named_with_the_one_meant(data, says):
    with pytest.raises(MoAConfigError) as err:
        MoAConfig(**{**BASE, **data})
    assert says in str(err.value)
    assert "Extra inputs" not in str(err.value)


def test_an_unknown_setting_with_no_near_name_lists_the_settings_of_its_place():
    with pytest.raises(MoAConfigError) as err:
        MoAConfig(**BASE, retry={"zzz": 1})
    message = str(err.value)
    assert "retry.zzz: unknown setting; the settings here are " in message
    assert "max_attempts" in message and "initial_interval" in message


def test_a_key_put_in_a_misnamed_endpoint_field_is_never_repeated():
    secret = "sk-live-0123456789abcdef"
    endpoint = {"base_url": "http://127.0.0.1:8080/v1", "model": "m", "api_key": secret}
    with pytest.raises(MoAConfigError) as err:
        MoAConfig(proposers=[{"model": endpoint}], aggregator="openai:gpt-4o")
    assert "proposers.0.model.api_key: unknown setting; did you mean 'api_key_env'?" in str(
        err.value
    )
    assert secret not in str(err.value)


def test_a_misspelt_run_setting_is_named_with_the_one_meant(fake):
    graph = create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    with pytest.raises(MoAConfigError, match="layer: unknown setting; did you mean 'layers'"):
        graph.invoke(QUESTION, context={"layer": 3})
    with pytest.raises(MoAConfigError, match="did you mean 'aggregator_max_tokens'"):
        MoAContext(aggregator_max_token=5)
