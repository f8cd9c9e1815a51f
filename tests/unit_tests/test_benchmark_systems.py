"""The benchmarks' system files: each loads, and each comparison changes only what it compares."""

from pathlib import Path

import pytest

from langgraph_moa import MoAConfig

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
SYSTEM_FILES = sorted(BENCHMARKS.glob("*_systems/*.yaml"))


def test_there_are_system_files_to_check():
    folders = {path.parent.name for path in SYSTEM_FILES}
    assert {"gsm8k_systems", "aggregation_systems"} <= folders


@pytest.mark.parametrize("path", SYSTEM_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_system_file_loads(path):
    config = MoAConfig.from_file(path)
    assert config.proposers


@pytest.mark.parametrize("path", sorted((BENCHMARKS / "aggregation_systems").glob("*.yaml")))
def test_aggregation_systems_are_the_local_moa_preset_but_for_when_aggregation_starts(path):
    """A quality difference against `local-moa` must come from the aggregation start alone.

    `logprobs` is allowed to differ: the local models return logprobs either way, and the flag
    gives the early system its own call-cache keys.
    """
    variant = MoAConfig.from_file(path).model_dump()
    preset = MoAConfig.from_preset("local-moa").model_dump()
    assert variant["aggregation"]["start"] != preset["aggregation"]["start"]
    for config in (variant, preset):
        config.pop("name")
        config.pop("aggregation")
        for proposer in config["proposers"]:
            proposer.pop("logprobs")
    assert variant == preset


def test_gsm8k_early_system_is_the_layered_moa_but_for_when_aggregation_starts():
    early = MoAConfig.from_file(BENCHMARKS / "gsm8k_systems" / "moa-early.yaml").model_dump()
    standard = MoAConfig.from_file(BENCHMARKS / "gsm8k_systems" / "moa.yaml").model_dump()
    assert early["aggregation"]["start"] == "quorum"
    assert early["aggregation"]["quorum"] == 2
    assert standard["aggregation"]["start"] != "quorum"
    for config in (early, standard):
        config.pop("name")
        config.pop("aggregation")
    assert early == standard


@pytest.mark.parametrize(
    ("name", "continuation"),
    [("moa-chunks", "auto"), ("moa-chunks-instruction", "instruction")],
)
def test_gsm8k_chunkwise_systems_are_the_layered_moa_but_for_chunkwise_aggregation(
    name, continuation
):
    chunks = MoAConfig.from_file(BENCHMARKS / "gsm8k_systems" / f"{name}.yaml").model_dump()
    standard = MoAConfig.from_file(BENCHMARKS / "gsm8k_systems" / "moa.yaml").model_dump()
    assert chunks["aggregation"]["start"] == "chunks"
    assert chunks["aggregation"]["chunk_tokens"] == 64
    assert chunks["aggregation"]["continuation"] == continuation
    assert standard["aggregation"]["start"] == "all"
    for config in (chunks, standard):
        config.pop("name")
        config.pop("aggregation")
    assert chunks == standard
