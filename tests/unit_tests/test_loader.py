"""One loader for every entrance: preset, file, mapping, object or nothing, refused alike."""

import pytest
import yaml

from langgraph_moa import (
    DEFAULT_PRESET,
    MoAChatModel,
    MoAConfig,
    MoAConfigError,
    create_moa_graph,
    load_config,
)


def test_every_kind_of_source_gives_the_same_config(tmp_path):
    by_name = load_config("moa-lite")
    file = tmp_path / "mine.yaml"
    file.write_text(yaml.safe_dump({"preset": "moa-lite"}))
    assert load_config(str(file)) == by_name
    assert load_config(file) == by_name  # a Path
    assert load_config({"preset": "moa-lite"}) == by_name
    assert load_config(by_name) is by_name
    assert load_config(None) == MoAConfig.from_preset(DEFAULT_PRESET)


def test_a_preset_based_config_may_rename_itself(tmp_path):
    """`preset:` with `name:` once raised a TypeError (two values for from_preset's name)."""
    file = tmp_path / "mine.yaml"
    file.write_text(yaml.safe_dump({"preset": "moa-lite", "name": "my-lite"}))
    for source in (file, {"preset": "moa-lite", "name": "my-lite"}):
        config = load_config(source)
        assert config.name == "my-lite"
        assert config.model_copy(update={"name": "moa-lite"}) == load_config("moa-lite")
    assert MoAConfig.from_preset("moa-lite", name="my-lite").name == "my-lite"


def test_a_mapping_without_a_preset_is_a_whole_config():
    config = load_config({"proposers": ["openai:gpt-4o-mini"], "aggregator": "openai:gpt-4o"})
    assert config.variant == "moa" and config.layers == 3


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("zz-top", "Unknown preset 'zz-top': give a preset ("),
        ("missing.yaml", "missing.yaml"),
        (42, "must be a preset name, a file path, a mapping or a MoAConfig, got int"),
        ({"preset": "moa-lyte"}, "Unknown preset 'moa-lyte'"),
        ({"proposers": []}, "proposers"),
        # a caller's key that is no name raised a TypeError ("keywords must be strings")
        ({1: 2}, "A config mapping has a top-level key that is not a name .1.: it must hold"),
        ({"preset": "moa", None: 2}, "A config mapping has a top-level key that is not a name"),
    ],
)
def test_bad_sources_are_refused_in_one_sentence(source, message):
    with pytest.raises(MoAConfigError, match=message.replace("(", r"\(")):
        load_config(source)


def test_create_moa_graph_takes_a_config_file(tmp_path):
    file = tmp_path / "local.yaml"
    file.write_text(yaml.safe_dump({"preset": "local-moa"}))
    graph = create_moa_graph(str(file))
    assert graph.name == "local-moa"


def test_the_chat_model_is_validated_when_it_is_built(tmp_path):
    with pytest.raises(MoAConfigError, match="Unknown preset 'typo'"):
        MoAChatModel(config="typo")
    with pytest.raises(MoAConfigError, match=r"no-such-file\.yaml"):
        MoAChatModel(config=str(tmp_path / "no-such-file.yaml"))


def test_the_chat_model_and_the_cli_share_one_default():
    from langgraph_moa.cli._app import build_config

    assert MoAChatModel().moa_config.name == DEFAULT_PRESET == build_config(None, None).name
