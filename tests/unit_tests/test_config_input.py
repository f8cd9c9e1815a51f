"""Configuration as untrusted input: typos, hostile files and values past what can run.

Every refusal is one sentence that names the problem and the fix (`MoAConfigError`), never
a traceback, a hang or a run that fails only once it has started.
"""

import pytest

from langgraph_moa import MoAConfig, MoAConfigError, MoAContext, create_moa_graph
from langgraph_moa._settings_bytes import MAX_CONFIG_BYTES
from langgraph_moa.config._files import read_mapping_file
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
    assert "Extra inputs" not in str(err.value) and "?." not in str(err.value)


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


# --- hostile files ----------------------------------------------------------------------


def refused(tmp_path, name: str, text: str) -> str:
    """Write a config file, load it and return the one-line refusal."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MoAConfigError) as err:
        MoAConfig.from_file(path)
    message = str(err.value)
    assert "\n" not in message and len(message) < 2000
    return message


@pytest.mark.parametrize("name", ["deep.json", "deep.yaml"])
def test_a_file_nested_past_what_python_can_read_is_refused_in_one_sentence(tmp_path, name):
    # json and yaml raised RecursionError, which the CLI showed as an unexpected error.
    message = refused(tmp_path, name, '{"proposers": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert "is nested too deeply" in message


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("digits.json", '{"layers": ' + "1" * 5000 + "}", "a number of more than"),
        ("digits.yaml", "layers: " + "1" * 5000, "a number of more than"),
        ("date.yaml", "name: 2024-13-01\n", "month must be in 1..12"),
        ("float.yaml", "layers: !!float abc\n", "could not convert"),
    ],
)
def test_a_value_the_parser_cannot_build_is_refused_in_one_sentence(tmp_path, name, text, says):
    # A ValueError from the parser (int's digit limit, a date YAML reads as one) escaped.
    message = refused(tmp_path, name, text)
    assert "has a value that cannot be read" in message and says in message


@pytest.mark.parametrize(
    ("name", "text", "key"),
    [
        (
            "top.yaml",
            "layers: 2\nproposers: [openai:a]\naggregator: openai:b\nlayers: 3\n",
            "layers",
        ),
        ("nested.yaml", "proposers:\n  - {model: openai:a, samples: 2, samples: 9}\n", "samples"),
        ("top.json", '{"layers": 2, "proposers": ["openai:a"], "layers": 3}', "layers"),
        ("nested.json", '{"retry": {"max_attempts": 1, "max_attempts": 5}}', "max_attempts"),
    ],
)
def test_a_setting_given_twice_is_refused_not_silently_the_last(tmp_path, name, text, key):
    message = refused(tmp_path, name, text)
    assert f"gives {key!r} twice" in message and "keep one" in message


def test_a_file_past_the_size_of_any_config_is_refused_before_it_is_parsed(tmp_path):
    # 2,000,000 proposers (36 MB) took 72 s and 2 GB before a validation error.
    text = "proposers:\n" + "  - openai:gpt-4o\n" * (MAX_CONFIG_BYTES // 17 + 1)
    message = refused(tmp_path, "huge.yaml", text)
    assert f"is larger than {MAX_CONFIG_BYTES} bytes" in message


def test_an_anchor_bomb_is_refused_without_expanding_it(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    message = refused(tmp_path, "bomb.yaml", "\n".join([*lines, "proposers: *a9", ""]))
    assert "proposers.0.model: a model must be" in message and "got a list" in message


def test_thousands_of_broken_rules_are_summed_up_in_one_short_line():
    with pytest.raises(MoAConfigError) as err:
        MoAConfig(
            variant="select",
            proposers=[{"model": "openai:gpt-4o", "samples": 3}],
            selection={"method": "mux", "calibration": {f"m{i}": 5.0 for i in range(20_000)}},
        )
    message = str(err.value)
    # Every one of them was listed: a 1.9 MB error line (20,000 proposers, before a layer's
    # proposers were capped).
    assert len(message) < 1000 and "selection.calibration.m0: " in message
    assert "and 19997 more" in message


def test_a_key_that_overrides_a_merged_anchor_is_no_repeat(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(
        "x-role: &role {model: 'openai:gpt-4o', temperature: 0.7, max_tokens: 64}\n"
        "proposers: [{<<: *role, temperature: 0.2}]\n"
        "aggregator: 'openai:gpt-4o'\n"
    )
    data = read_mapping_file(path, "Config file", "a mapping")
    assert data["proposers"] == [{"model": "openai:gpt-4o", "temperature": 0.2, "max_tokens": 64}]


# --- values past what can run -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"call_timeout_s": float("inf")}, "call_timeout_s"),
        ({"call_timeout_s": 1e10}, "call_timeout_s"),
        ({"layer_deadline_s": float("inf")}, "layer_deadline_s"),
        ({"retry": {"max_interval": 1e10, "initial_interval": 1e10}}, "retry.initial_interval"),
        ({"retry": {"max_interval": float("inf")}}, "retry.max_interval"),
        ({"aggregation": {"start": "chunks", "first_chunk_s": 1e12}}, "aggregation.first_chunk_s"),
    ],
)
def test_a_wait_no_clock_can_hold_is_refused_when_the_config_is_built(data, field):
    # A socket or a sleep of 1e10 s raised OverflowError ("timestamp out of range for
    # platform time_t") at the first call: every local call of `moa run --timeout inf` failed.
    with pytest.raises(MoAConfigError, match=rf"{field}: Input should be less than or equal"):
        MoAConfig(**BASE, **data)


@pytest.mark.parametrize(
    "data",
    [
        {"proposers": [{"model": "openai:gpt-4o", "max_tokens": 2**31}]},
        {"aggregator": {"model": "openai:gpt-4o", "max_tokens": 10**23}},
        {"aggregator_fallbacks": [{"model": "openai:gpt-4o", "context_window": 2**63}]},
    ],
)
def test_a_token_count_past_what_a_server_can_hold_is_refused(data):
    # 10**23 reached llama.cpp as -2147483648: every call failed with a 400.
    with pytest.raises(MoAConfigError, match="less than or equal to 2147483647"):
        MoAConfig(**{**BASE, **data})


def test_a_context_size_past_what_llama_cpp_holds_is_one_error_line(monkeypatch):
    from typer.testing import CliRunner

    from langgraph_moa.cli import _app as cli
    from langgraph_moa.local.catalog import MAX_CONTEXT, context_size, lookup

    # 10**20 reached llama.cpp's n_ctx: the server died with an OverflowError traceback.
    result = CliRunner().invoke(cli.app, ["run", "hi", "--context-size", str(10**20)])
    assert result.exit_code == 2 and "--context-size" in result.output
    info = lookup("qwen2.5-coder-1.5b")
    for value in ("²", str(MAX_CONTEXT + 1), "100", "many"):
        monkeypatch.setenv("LANGGRAPH_MOA_CONTEXT", value)
        with pytest.raises(MoAConfigError, match="LANGGRAPH_MOA_CONTEXT must be a whole number"):
            context_size(info)
    monkeypatch.setenv("LANGGRAPH_MOA_CONTEXT", str(MAX_CONTEXT))
    assert context_size(info) == MAX_CONTEXT


@pytest.mark.parametrize(
    "data",
    [
        {"proposers": ["openai:gpt\x00-4o"]},
        {"aggregator": "openai:gpt-4o\x1b[2J"},
        {"aggregator": "m\x07@http://127.0.0.1:8080/v1"},
        {"aggregator": {"model": {"base_url": "http://127.0.0.1:8080/v1", "model": "m\x1b[31m"}}},
        {"proposers": [{"model": "openai:gpt-4o", "name": "fast\x1b[2Jone"}]},
        {"name": "my\rsystem"},
        {"proposers": ["openai:gpt\u202e-4o"]},  # a right-to-left override
    ],
)
def test_a_control_character_in_a_model_or_a_name_is_refused(data):
    # They were kept, and reached terminals (rich prints ESC as written), logs and traces.
    with pytest.raises(MoAConfigError, match="holds a control or invisible character") as err:
        MoAConfig(**{**BASE, **data})
    assert "\x1b" not in str(err.value) and "\x00" not in str(err.value)


@pytest.mark.parametrize("accuracy", [float("nan"), 5.0, -1.0])
def test_a_calibration_given_inline_is_held_to_the_files_range(accuracy):
    # A file's accuracies must be in 0..1; inline ones were taken as given, and a NaN made
    # mux's tie-break order arbitrary.
    with pytest.raises(MoAConfigError, match=r"selection.calibration.A"):
        MoAConfig(
            variant="select",
            proposers=[{"model": "openai:gpt-4o", "samples": 3}],
            selection={"method": "mux", "calibration": {"A": accuracy}},
        )


def test_a_calibration_file_nested_too_deeply_is_one_sentence(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(MoAConfigError, match="cannot be read as JSON"):
        MoAConfig(
            variant="select",
            proposers=[{"model": "openai:gpt-4o", "samples": 3}],
            selection={"method": "mux", "calibration_file": str(path)},
        )


# --- a second review: what the hardening refused that it should take, and what it took ----


def test_an_anchor_that_merges_and_overrides_can_be_merged_again(tmp_path):
    # The aggregator merges proposer b, which merges proposer a and overrides its model.
    # Flattening b for the aggregator before b itself was built left b holding 'model'
    # twice, and the file was refused as "gives 'model' twice".
    path = tmp_path / "chain.yaml"
    path.write_text(
        "proposers:\n"
        "  - &a {model: 'openai:gpt-4o-mini', temperature: 0.3}\n"
        "  - &b {<<: *a, model: 'openai:gpt-4o'}\n"
        "aggregator: {<<: *b, max_tokens: 1024}\n"
    )
    config = MoAConfig.from_file(path)
    assert [p.model for p in config.proposers] == ["openai:gpt-4o-mini", "openai:gpt-4o"]
    assert (config.final.model, config.final.temperature) == ("openai:gpt-4o", 0.3)


def test_a_key_written_twice_beside_a_merge_is_still_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text(
        "proposers:\n"
        "  - &a {model: 'openai:gpt-4o-mini'}\n"
        "  - {<<: *a, model: 'openai:gpt-4o', model: 'openai:o3'}\n"
        "aggregator: 'openai:gpt-4o'\n"
    )
    with pytest.raises(MoAConfigError, match="gives 'model' twice"):
        MoAConfig.from_file(path)


@pytest.mark.parametrize(
    "name",
    [
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian (escaped for ruff): a zero-width non-joiner is part of the spelling
        "\U0001f469\u200d\U0001f4bb coder",  # an emoji sequence joined by a zero-width joiner
        "Café Modèle 模型",
        "Mod\u00e8le\u00a0A",  # a no-break space (French typography) keeps a label on one line
        "GPT\u202f4o",  # a narrow no-break space
    ],
)
def test_a_name_in_any_script_is_kept(name):
    config = MoAConfig(**{**BASE, "proposers": [{"model": "openai:通义千问", "name": name}]})
    assert config.proposers[0].label == name


def test_the_proposers_of_a_layer_are_capped_as_the_samples_are():
    # 10,000 proposers were taken: every layer would have called each of them.
    with pytest.raises(MoAConfigError) as err:
        MoAConfig(**{**BASE, "proposers": ["openai:gpt-4o-mini"] * 257})
    assert "at most 256 proposers" in str(err.value) and "257" in str(err.value)
    assert len(MoAConfig(**{**BASE, "proposers": ["openai:gpt-4o-mini"] * 256}).proposers) == 256


def test_the_aggregator_fallbacks_are_capped():
    # Any number was taken (10,000): each is tried only after the one before it spent its
    # retries and timeouts, so a long chain holds a failing run for hours.
    with pytest.raises(MoAConfigError) as err:
        MoAConfig(**{**BASE, "aggregator_fallbacks": ["openai:gpt-4o-mini"] * 17})
    message = str(err.value)
    assert "aggregator_fallbacks" in message and "at most 16" in message and "17" in message
    assert "\n" not in message
    chain = MoAConfig(**{**BASE, "aggregator_fallbacks": ["openai:gpt-4o-mini"] * 16})
    assert len(chain.aggregator_fallbacks) == 16


@pytest.mark.parametrize("prompt", [" ", "\n\t \n"])
def test_a_blank_synthesis_prompt_is_refused(prompt):
    with pytest.raises(MoAConfigError, match=r"synthesis_prompt: .*blank"):
        MoAConfig(**BASE, synthesis_prompt=prompt)


def test_a_synthesis_prompt_of_several_lines_and_tabs_is_kept():
    prompt = "Read the responses below.\n\tThen write one answer.\n"
    assert MoAConfig(**BASE, synthesis_prompt=prompt).synthesis_prompt == prompt


SELECT = {
    "variant": "select",
    "proposers": [{"model": "openai:gpt-4o", "samples": 3}, "openai:gpt-4o-mini"],
}


def test_a_misspelt_priority_label_is_refused_naming_the_label_meant():
    # It was ignored: ties went by proposer order, against what the config asked.
    with pytest.raises(MoAConfigError) as err:
        MoAConfig(**SELECT, selection={"priority": ["openai:gpt-4o-mni"]})
    message = str(err.value)
    assert "selection.priority" in message and "'openai:gpt-4o-mni'" in message
    assert "did you mean 'openai:gpt-4o-mini'?" in message


def test_a_priority_label_far_from_any_proposer_lists_the_labels():
    with pytest.raises(MoAConfigError) as err:
        MoAConfig(**SELECT, selection={"priority": ["claude"]})
    assert "'openai:gpt-4o', 'openai:gpt-4o-mini'" in str(err.value)


def test_a_priority_by_display_name_is_kept():
    proposers = [{"model": "openai:gpt-4o", "name": "big", "samples": 3}, "openai:gpt-4o-mini"]
    config = MoAConfig(variant="select", proposers=proposers, selection={"priority": ["big"]})
    assert config.selection is not None and config.selection.priority == ["big"]


def test_a_context_that_replaces_the_proposers_keeps_the_priority_of_those_left():
    from langgraph_moa.config.context import apply_context

    base = MoAConfig(**SELECT, selection={"priority": ["openai:gpt-4o-mini", "openai:gpt-4o"]})
    config = apply_context(base, MoAContext(proposers=["openai:o3", "openai:gpt-4o"]))
    assert config.selection is not None and config.selection.priority == ["openai:gpt-4o"]


@pytest.mark.parametrize(
    ("load", "says"),
    [
        (lambda: MoAConfig.from_preset("moa-lit"), "did you mean 'moa-lite'?"),
        (lambda: MoAConfig(**{**BASE, "variant": "self-mao"}), "did you mean 'self-moa'?"),
    ],
)
def test_a_misspelt_preset_or_variant_is_named_with_the_one_meant(load, says):
    with pytest.raises(MoAConfigError) as err:
        load()
    assert says in str(err.value)
    assert "single-proposer" not in str(err.value)  # not every choice


def test_a_misspelt_preset_source_is_named_with_the_one_meant():
    from langgraph_moa.config._loader import load_config

    with pytest.raises(MoAConfigError, match=r"did you mean 'moa-lite'\?") as err:
        load_config("moa-lyte")
    assert ".yaml" in str(err.value)  # a path is still offered


@pytest.mark.parametrize(
    ("data", "value"),
    [
        ({"proposers": [""]}, "''"),
        ({"aggregator": "openai:"}, "'openai:'"),
        ({"variant": "zzz"}, "'zzz'"),
    ],
)
def test_an_error_does_not_repeat_the_value_its_rule_names(data, value):
    # "... got '' (got '')": the rule's own text named the value, and it was added again.
    with pytest.raises(MoAConfigError) as err:
        MoAConfig(**{**BASE, **data})
    message = str(err.value)
    assert value in message and f"(got {value})" not in message, message


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_settings_file_saved_with_a_byte_order_mark_is_read(tmp_path, suffix):
    # Windows Notepad starts UTF-8 files with a byte order mark: a JSON file so saved was
    # refused as "Unexpected UTF-8 BOM".
    path = tmp_path / f"moa{suffix}"
    text = '{"layers": 2}' if suffix == ".json" else "layers: 2\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert read_mapping_file(path, "Config file", "a mapping") == {"layers": 2}
