"""Configuration: validation names the field and the rule; presets and files load."""

import json

import pytest

from langgraph_moa import (
    AGGREGATE_AND_SYNTHESIZE_PROMPT,
    MoAConfig,
    MoAConfigError,
    OpenAIEndpoint,
    list_presets,
)


def test_bare_specs_become_role_configs_with_separate_limits():
    c = MoAConfig(
        proposers=["openai:gpt-4o-mini", "together:Qwen/Qwen2.5-72B-Instruct-Turbo"],
        aggregator="openai:gpt-4o",
    )
    assert [p.max_tokens for p in c.proposers] == [512, 512]
    assert c.final.max_tokens == 2048
    assert c.layers == 3 and c.proposer_layers == 2
    assert c.synthesis_prompt == AGGREGATE_AND_SYNTHESIZE_PROMPT


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [
        ({"layers": 1}, "layers", "greater than or equal to 2"),
        (
            {"proposers": [{"model": "openai:gpt-4o", "temperature": 5}]},
            "proposers.0.temperature",
            "less than or equal to 2",
        ),
        (
            {"proposers": [{"model": "openai:gpt-4o", "samples": 0}]},
            "proposers.0.samples",
            "greater than or equal to 1",
        ),
        ({"proposers": []}, "proposers", "at least 1 item"),
        ({"variant": "mixture"}, "variant", "'moa'"),
        ({"reference_order": "random"}, "reference_order", "'stable' or 'shuffled'"),
        (
            {"aggregator": {"model": "openai:gpt-4o", "max_tokens": 0}},
            "aggregator.max_tokens",
            "greater than or equal to 1",
        ),
        ({"colour": "blue"}, "colour", "unknown setting"),
    ],
)
def test_invalid_values_name_the_field_and_the_rule(kwargs, field, rule):
    base = {"proposers": ["openai:gpt-4o-mini"], "aggregator": "openai:gpt-4o"}
    with pytest.raises(MoAConfigError) as err:
        MoAConfig(**{**base, **kwargs})
    assert f"{field}:" in str(err.value)
    assert rule in str(err.value)


def test_unknown_provider_prefix_lists_the_known_ones():
    with pytest.raises(MoAConfigError) as err:
        MoAConfig(proposers=["opneai:gpt-4o"], aggregator="openai:gpt-4o")
    assert "proposers.0.model" in str(err.value)
    assert "openai" in str(err.value) and "together" in str(err.value)


def test_moa_without_aggregator_says_how_to_fix():
    with pytest.raises(MoAConfigError, match="needs an aggregator"):
        MoAConfig(proposers=["openai:gpt-4o-mini"])


def test_one_model_variants_need_one_proposer():
    with pytest.raises(MoAConfigError, match="exactly one proposer"):
        MoAConfig(variant="self-moa", proposers=["openai:a", "openai:b"])


def test_self_moa_defaults_its_aggregator_to_the_proposer():
    c = MoAConfig(variant="self-moa", proposers=[{"model": "openai:gpt-4o", "samples": 4}])
    assert c.final.model == "openai:gpt-4o" and c.layers == 2 and c.calls_per_run() == 5
    seq = MoAConfig(variant="self-moa-seq", proposers=[{"model": "openai:gpt-4o", "samples": 8}])
    assert seq.final.temperature == 0.0


def test_endpoint_specs_as_object_dict_and_string():
    a = MoAConfig(
        proposers=[{"model": {"base_url": "http://127.0.0.1:8080/v1/", "model": "qwen"}}],
        aggregator="qwen@http://127.0.0.1:8080/v1",
    )
    assert a.proposers[0].model == OpenAIEndpoint(base_url="http://127.0.0.1:8080/v1", model="qwen")
    assert a.proposers[0].label == a.final.label == "qwen@http://127.0.0.1:8080/v1"
    with pytest.raises(MoAConfigError, match="base_url must start with http"):
        MoAConfig(
            proposers=[{"model": {"base_url": "localhost:8080", "model": "q"}}],
            aggregator="openai:gpt-4o",
        )


def test_presets_match_the_papers():
    assert set(list_presets()) >= {
        "moa",
        "moa-lite",
        "moa-gpt4o",
        "moa-together",
        "self-moa",
        "self-moa-seq",
        "local-moa",
        "local-self-moa",
        "local-self-moa-seq",
        "local-ranker",
    }
    moa = MoAConfig.from_preset("moa")
    assert moa.layers == 3 and len(moa.proposers) == 6
    assert moa.final.model == "together:Qwen/Qwen1.5-110B-Chat"
    lite = MoAConfig.from_preset("moa-lite")
    assert lite.layers == 2 and lite.final.model == "together:Qwen/Qwen1.5-72B-Chat"
    assert MoAConfig.from_preset("moa-gpt4o").final.model == "openai:gpt-4o"
    seq = MoAConfig.from_preset("self-moa-seq")
    assert (seq.proposers[0].samples, seq.seq.window_size, seq.seq.step_size) == (30, 6, 3)
    assert MoAConfig.from_preset("moa-lite", layers=3).layers == 3


PAPER_PROPOSERS = [
    "together:Qwen/Qwen1.5-110B-Chat",
    "together:Qwen/Qwen1.5-72B-Chat",
    "together:microsoft/WizardLM-2-8x22B",
    "together:meta-llama/Llama-3-70b-chat-hf",
    "together:mistralai/Mixtral-8x22B-Instruct-v0.1",
    "together:databricks/dbrx-instruct",
]


@pytest.mark.parametrize(
    ("preset", "layers", "proposers", "cap", "aggregator"),
    [
        ("moa", 3, PAPER_PROPOSERS, 2048, "together:Qwen/Qwen1.5-110B-Chat"),
        ("moa-lite", 2, PAPER_PROPOSERS, 2048, "together:Qwen/Qwen1.5-72B-Chat"),
        ("moa-gpt4o", 3, PAPER_PROPOSERS, 2048, "openai:gpt-4o"),
        (
            "moa-together",
            2,
            [
                "together:meta-llama/Llama-3.3-70B-Instruct-Turbo",
                "together:Qwen/Qwen2.5-72B-Instruct-Turbo",
                "together:Qwen/Qwen2.5-Coder-32B-Instruct",
                "together:microsoft/WizardLM-2-8x22B",
            ],
            512,
            "together:Qwen/Qwen2.5-72B-Instruct-Turbo",
        ),
    ],
)
def test_the_paper_presets_keep_the_papers_settings(preset, layers, proposers, cap, aggregator):
    """moa-spec sections 1-2: a preset named after a paper's system is that system.

    The synthesis prompt injected as the reference code injects it (not the default fenced
    format), the paper's proposers in every layer, T = 0.7 and their token caps.
    """
    config = MoAConfig.from_preset(preset)
    assert (config.variant, config.layers, config.final.model) == ("moa", layers, aggregator)
    assert [p.model for p in config.proposers] == proposers
    assert {(p.temperature, p.max_tokens, p.samples) for p in config.proposers} == {(0.7, cap, 1)}
    assert (config.reference_format, config.reference_order) == ("paper", "stable")
    assert config.synthesis_prompt == AGGREGATE_AND_SYNTHESIZE_PROMPT


def test_the_self_moa_presets_keep_the_papers_settings():
    """moa-spec section 3: k = 6 samples at T = 0.7; Seq: 30 samples, aggregator at T = 0."""
    self_moa = MoAConfig.from_preset("self-moa")
    seq = MoAConfig.from_preset("self-moa-seq")
    for config in (self_moa, seq):
        (proposer,) = config.proposers
        assert proposer.temperature == 0.7 and config.final.model == proposer.model
        assert config.reference_format == "paper"
        assert config.synthesis_prompt == AGGREGATE_AND_SYNTHESIZE_PROMPT
    assert (self_moa.variant, self_moa.proposers[0].samples, self_moa.layers) == ("self-moa", 6, 2)
    assert self_moa.final.temperature == 0.7
    assert (seq.variant, seq.final.temperature) == ("self-moa-seq", 0.0)


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(MoAConfigError, match="moa-lite"):
        MoAConfig.from_preset("moa-heavy")


def test_yaml_and_json_files_round_trip(tmp_path):
    c = MoAConfig.from_preset("moa-lite", reference_order="shuffled", shuffle_seed=3)
    for name in ("c.yaml", "c.json"):
        c.to_file(tmp_path / name)
        assert MoAConfig.from_file(tmp_path / name) == c
    (tmp_path / "p.yaml").write_text(
        "preset: self-moa\nproposers:\n  - {model: 'openai:gpt-4o', samples: 3}\n"
    )
    assert MoAConfig.from_file(tmp_path / "p.yaml").proposers[0].samples == 3
    json.loads((tmp_path / "c.json").read_text())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just\n- a list\n", "mapping"),
        ("proposers: [\n", "not valid"),
        ("layers: 0\nproposers: [openai:gpt-4o]\naggregator: openai:gpt-4o\n", "layers:"),
        ("1: 2\nproposers: [{model: 'openai:gpt-4o-mini'}]\n", "key that is not a name .1.:"),
        (
            "preset: moa-lite\nnull: 3\n",
            "key that is not a name .None.: it must hold a mapping of settings",
        ),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MoAConfigError, match=message):
        MoAConfig.from_file(path)


def test_missing_file():
    with pytest.raises(MoAConfigError, match="does not exist"):
        MoAConfig.from_file("/nonexistent/moa.yaml")


def test_with_overrides_rederives_variant_defaults():
    base = MoAConfig(
        proposers=[{"model": "openai:gpt-4o", "samples": 3}],
        aggregator="openai:gpt-4o-mini",
        variant="single-proposer",
    )
    selfmoa = base.with_overrides(variant="self-moa")
    assert selfmoa.final.model == "openai:gpt-4o" and selfmoa.layers == 2
    assert base.with_overrides(layers=4).layers == 4
