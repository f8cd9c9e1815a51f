"""A config file written by hand: YAML's readings of unquoted words, and paths in the file.

A person writes ``model: no`` or ``name: 2024-01-01`` meaning text; YAML reads a boolean and
a date. The refusal says so and how to write the text; a file named inside a config is
found next to the config, wherever the command runs.
"""

import json

import pytest

from langgraph_moa import MoAConfig, MoAConfigError

AGGREGATOR = "aggregator: openai:gpt-4o\n"


def _refusal(tmp_path, text: str) -> str:
    path = tmp_path / "moa.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MoAConfigError) as caught:
        MoAConfig.from_file(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("proposers: [no]\n" + AGGREGATOR, "proposers.0.model"),
        ("proposers:\n  - model: yes\n" + AGGREGATOR, "proposers.0.model"),
        ("proposers: [openai:gpt-4o-mini]\naggregator: off\n", "aggregator.model"),
        ("proposers: [openai:gpt-4o-mini]\n" + AGGREGATOR + "name: on\n", "name"),
        (
            "proposers: [openai:gpt-4o-mini]\n" + AGGREGATOR + "synthesis_prompt: no\n",
            "synthesis_prompt",
        ),
    ],
)
def test_a_yaml_boolean_where_text_is_meant_says_to_quote_it(tmp_path, text, where):
    # "proposers.0: Input should be a valid dictionary or instance of ProposerConfig (got
    # False)" named neither the word written nor YAML's reading of it.
    said = _refusal(tmp_path, text)
    assert f"{where}:" in said
    assert "YAML reads an unquoted yes, no, on, off, true or false as a boolean" in said
    assert "quote it" in said


def test_a_refused_value_is_shown_once(tmp_path):
    # "got False (got False)": the spec's own message names the value already.
    said = _refusal(tmp_path, "proposers:\n  - model: no\n" + AGGREGATOR)
    assert said.count("got False") == 1


def test_a_number_as_a_model_is_refused_as_a_model(tmp_path):
    said = _refusal(tmp_path, "proposers: [5]\n" + AGGREGATOR)
    assert "proposers.0.model: a model must be" in said


def test_a_yaml_date_where_text_is_meant_is_shown_and_says_to_quote_it(tmp_path):
    # "name: Input should be a valid string." showed neither the value nor the reason.
    said = _refusal(
        tmp_path, "proposers: [openai:gpt-4o-mini]\n" + AGGREGATOR + "name: 2024-01-01\n"
    )
    assert "name:" in said and "2024-01-01" in said and "quote it" in said


def test_a_number_where_text_is_meant_says_to_quote_it(tmp_path):
    said = _refusal(tmp_path, "proposers: [openai:gpt-4o-mini]\n" + AGGREGATOR + "name: 1.5\n")
    assert "name:" in said and "1.5" in said and "quote it" in said


def test_a_quoted_word_is_text(tmp_path):
    path = tmp_path / "moa.yaml"
    path.write_text("proposers: [openai:gpt-4o-mini]\n" + AGGREGATOR + "name: 'no'\n")
    assert MoAConfig.from_file(path).name == "no"


MUX = "variant: select\nproposers:\n  - {model: openai:gpt-4o-mini, samples: 3}\n"


def test_a_calibration_file_is_found_next_to_the_config_file(tmp_path, monkeypatch):
    # The path was read from the working folder: `moa run -c configs/mux.yaml` from the
    # project's root refused the cal.json beside the config as missing.
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "cal.json").write_text(json.dumps({"accuracy": {"openai:gpt-4o-mini": 0.8}}))
    config = folder / "mux.yaml"
    config.write_text(MUX + "selection: {method: mux, calibration_file: cal.json}\n")
    monkeypatch.chdir(tmp_path)
    loaded = MoAConfig.from_file("configs/mux.yaml")
    assert loaded.selection is not None
    assert loaded.selection.calibration == {"openai:gpt-4o-mini": 0.8}


def test_a_calibration_file_over_a_preset_is_found_next_to_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "cal.json").write_text(json.dumps({"accuracy": {"x": 0.5}}))
    config = tmp_path / "mux.yaml"
    config.write_text("preset: local-mux\nselection: {method: mux, calibration_file: cal.json}\n")
    monkeypatch.chdir("/")
    loaded = MoAConfig.from_file(config)
    assert loaded.selection is not None and loaded.selection.calibration == {"x": 0.5}


def test_a_missing_calibration_file_is_named_with_its_full_path(tmp_path, monkeypatch):
    tmp_path = tmp_path.joinpath(*["a_folder_deep_down"] * 6)  # a path of over 100 characters
    tmp_path.mkdir(parents=True)
    config = tmp_path / "mux.yaml"
    config.write_text(MUX + "selection: {method: mux, calibration_file: gone.json}\n")
    monkeypatch.chdir("/")
    with pytest.raises(MoAConfigError) as caught:
        MoAConfig.from_file(config)
    assert str(tmp_path / "gone.json") in str(caught.value)


def test_a_relative_calibration_file_given_in_python_is_named_with_its_full_path(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MoAConfigError) as caught:
        MoAConfig(
            variant="select",
            proposers=[{"model": "openai:gpt-4o-mini", "samples": 3}],
            selection={"method": "mux", "calibration_file": "gone.json"},
        )
    assert str(tmp_path / "gone.json") in str(caught.value)


def test_a_model_of_nested_aliases_is_refused_without_writing_them_out(tmp_path):
    # A few hundred bytes of YAML aliases: the refusal wrote the list out (3 MB at six
    # levels, nine times more with each level).
    levels = ["&a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 5)
    ]
    said = _refusal(tmp_path, AGGREGATOR + "proposers:\n  - model: [" + ", ".join(levels) + "]\n")
    assert "proposers.0.model: a model must be" in said and "got a list" in said
    assert len(said) < 500


def test_a_missing_config_file_is_named_with_its_full_path(tmp_path, monkeypatch):
    # "Config file 'moa.yaml' does not exist" did not say which folder was looked in (a
    # service's working folder is seldom the one its operator has in mind).
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MoAConfigError, match="does not exist") as caught:
        MoAConfig.from_file("moa.yaml")
    assert str(tmp_path / "moa.yaml") in str(caught.value)


def test_a_tab_in_the_indentation_says_yaml_indents_with_spaces(tmp_path):
    # The parser's "found character '\t' that cannot start any token" named no fix.
    said = _refusal(tmp_path, "proposers:\n\t- openai:gpt-4o-mini\n" + AGGREGATOR)
    assert "line 2" in said and "indent with spaces, not tabs" in said


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_config_file_is_called_empty(tmp_path, text):
    # "must hold a mapping of settings at the top level" for a file with nothing in it.
    said = _refusal(tmp_path, text)
    assert "is empty: it must hold a mapping of settings" in said


@pytest.mark.parametrize("text", ["", " \n\n", "\ufeff"])
def test_an_empty_json_config_file_is_called_empty(tmp_path, text):
    # "is not valid: Expecting value: line 1 column 1 (char 0)" for a file just created.
    path = tmp_path / "moa.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MoAConfigError, match="is empty: it must hold a mapping of settings"):
        MoAConfig.from_file(path)


def test_a_preset_of_nested_aliases_is_refused_without_writing_them_out(tmp_path):
    # "Unknown preset [[...]]" wrote the list out: 16 MB of text in seconds at six levels,
    # nine times more with each level.
    levels = ["&a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 6)
    ]
    said = _refusal(tmp_path, "preset: [" + ", ".join(levels) + "]\n")
    assert "preset" in said and "got a list" in said
    assert len(said) < 500


def test_a_long_preset_name_is_clipped(tmp_path):
    said = _refusal(tmp_path, "preset: " + "m" * 100_000 + "\n")
    assert "Unknown preset" in said and len(said) < 1_000


def test_a_config_loaded_by_a_relative_path_and_written_again_still_loads(tmp_path, monkeypatch):
    # The calibration path was joined to the config's relative folder ("configs/cal.json")
    # and written so by to_file: the copy, read from its own folder, looked for
    # configs/configs/cal.json.
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "cal.json").write_text(json.dumps({"accuracy": {"openai:gpt-4o-mini": 0.8}}))
    (folder / "mux.yaml").write_text(MUX + "selection: {method: mux, calibration_file: cal.json}\n")
    monkeypatch.chdir(tmp_path)
    MoAConfig.from_file("configs/mux.yaml").to_file("configs/copy.yaml")
    loaded = MoAConfig.from_file("configs/copy.yaml")
    assert loaded.selection is not None
    assert loaded.selection.calibration == {"openai:gpt-4o-mini": 0.8}


@pytest.mark.parametrize("value", ["2024-01-01", "2024-01-01 10:00:00"])
def test_a_yaml_date_as_a_model_is_refused_as_a_model(tmp_path, value):
    # "aggregator: Input should be a valid dictionary or instance of AggregatorConfig".
    said = _refusal(tmp_path, f"proposers: [openai:gpt-4o-mini]\naggregator: {value}\n")
    assert "aggregator.model: a model must be" in said
    assert f"YAML reads an unquoted {value} as a date; quote it if it is text" in said


@pytest.mark.parametrize(
    ("text", "got"),
    [
        ("proposers: [[openai:gpt-4o-mini, openai:gpt-4o]]\n" + AGGREGATOR, "got a list"),
        ("proposers:\n  - openai:gpt-4o-mini\n  -\n" + AGGREGATOR, "got None"),
        ("proposers: [openai:gpt-4o-mini]\naggregator: [openai:gpt-4o]\n", "got a list"),
    ],
)
def test_a_list_or_nothing_as_a_model_is_refused_as_a_model(tmp_path, text, got):
    # "proposers.0: Input should be a valid dictionary or instance of ProposerConfig": a
    # list or a blank item was not let stand for a model as a word or a mapping is.
    said = _refusal(tmp_path, text)
    assert ".model: a model must be" in said and got in said


@pytest.mark.parametrize(("word", "read"), [("1:30", "90"), ("0755", "493")])
def test_a_yaml_1_1_base_60_or_octal_number_is_named_as_written(tmp_path, word, read):
    # "got 90: YAML reads an unquoted number as a number" for 1:30: the person wrote no 90.
    said = _refusal(tmp_path, "proposers: [openai:gpt-4o-mini]\n" + AGGREGATOR + f"name: {word}\n")
    assert f"{word} (line 3)" in said and f"reads as {read}" in said and "quote it" in said


LONG_KEY = "k" * 100_000


@pytest.mark.parametrize(
    "settings",
    [
        f'{{"{LONG_KEY}": 1, "proposers": ["openai:gpt-4o-mini"]}}',
        f'{{"proposers": [{{"model": "openai:gpt-4o-mini", "{LONG_KEY}": 1}}]}}',
        f'{{"{LONG_KEY}": 1, "{LONG_KEY}": 2}}',
    ],
)
def test_a_long_key_is_clipped_where_a_refusal_names_it(tmp_path, settings):
    # The refusal named the key whole, in its path or as given twice: a 1 MiB file made a
    # message of a megabyte.
    path = tmp_path / "moa.json"
    path.write_text(settings, encoding="utf-8")
    with pytest.raises(MoAConfigError) as caught:
        MoAConfig.from_file(path)
    assert "kkkkkkkkkk" in str(caught.value) and len(str(caught.value)) < 1_000


def test_yaml_is_named_only_where_the_settings_came_from_yaml(tmp_path):
    # MoAConfig(name=5) in Python and {"proposers": [true]} in JSON were told "YAML reads an
    # unquoted ... as a ...": neither was YAML, and JSON's true was written as a boolean.
    with pytest.raises(MoAConfigError) as in_python:
        MoAConfig(proposers=["openai:gpt-4o-mini"], aggregator="openai:gpt-4o", name=5)
    path = tmp_path / "moa.json"
    path.write_text(json.dumps({"proposers": [True], "aggregator": "openai:gpt-4o"}))
    with pytest.raises(MoAConfigError) as in_json:
        MoAConfig.from_file(path)
    assert "name: Input should be a valid string (got 5)" in str(in_python.value)
    assert "got True" in str(in_json.value)
    assert "YAML" not in str(in_python.value) + str(in_json.value)


PLAIN = "proposers: [openai:gpt-4o-mini]\n" + AGGREGATOR


@pytest.mark.parametrize(
    ("setting", "word", "read", "fix"),
    [
        ("layers", "010", "8 (octal)", "write 10"),
        ("layers", "-010", "-8 (octal)", "write -10"),
        # The sign kept the zeros after it: "write -010 or -8 as meant", refused in its turn.
        ("layers", "-0010", "-8 (octal)", "write -10 or -8"),
        ("layers", "+0_10", "8 (octal)", "write +10 or 8"),
        ("layers", "0b11", "3 (binary)", "write 3"),
        ("call_timeout_s", "1:30", "90 (base 60)", "write 90"),
        ("call_timeout_s", "1:30.5", "90.5 (base 60)", "write 90.5"),
    ],
)
def test_a_yaml_1_1_only_number_is_refused_naming_it_and_the_fix(
    tmp_path, setting, word, read, fix
):
    # layers: 010 ran 8 layers, call_timeout_s: 1:30 waited 90 s: YAML 1.1's readings, which
    # YAML 1.2 (and the person who wrote them) do not share, taken without a word.
    said = _refusal(tmp_path, PLAIN + f"{setting}: {word}\n")
    assert f"{word} (line 3)" in said and f"YAML 1.1 reads as {read}" in said
    assert fix in said and "quote it if it is text" in said


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("10", 10),
        ("0x10", 16),
        ("1_0", 10),
        ("0", 0),
        # A leading zero YAML 1.1 reads as octal with the same value: 00 was refused as "0".
        ("00", 0),
        ("000", 0),
        ("-00", 0),
        ("+0_0", 0),
        ("07", 7),
    ],
)
def test_a_number_yaml_1_1_and_1_2_read_alike_is_taken(tmp_path, word, value):
    path = tmp_path / "moa.yaml"
    path.write_text(PLAIN + f"min_proposers: 1\nshuffle_seed: {word}\n", encoding="utf-8")
    assert MoAConfig.from_file(path).shuffle_seed == value


def test_only_a_scalar_that_can_start_a_number_is_tried_as_a_yaml_1_1_one():
    # `"" in "+-0123456789"` is true: an empty scalar was tried against the number forms.
    from langgraph_moa.config._files import _OLD_NUMBER_TAG, _SettingsLoader

    tried = {
        first
        for first, resolvers in _SettingsLoader.yaml_implicit_resolvers.items()
        if any(tag == _OLD_NUMBER_TAG for tag, _ in resolvers)
    }
    assert tried == set("+-0123456789")


def test_a_quoted_yaml_1_1_number_is_text(tmp_path):
    path = tmp_path / "moa.yaml"
    path.write_text(PLAIN + "name: '1:30'\n", encoding="utf-8")
    assert MoAConfig.from_file(path).name == "1:30"


def test_a_long_yaml_1_1_number_is_clipped(tmp_path):
    said = _refusal(tmp_path, PLAIN + "layers: 0" + "7" * 100_000 + "\n")
    assert "YAML 1.1 reads as" in said and len(said) < 1_000


@pytest.mark.parametrize("name", ["moa.JSON", "moa.Json"])
def test_a_json_config_file_with_a_capital_suffix_is_read_as_json(tmp_path, name):
    # "moa.JSON" was parsed as YAML: a JSON file's true or repeated key read by YAML's rules.
    path = tmp_path / name
    path.write_text(json.dumps({"proposers": [True], "aggregator": "openai:gpt-4o"}))
    with pytest.raises(MoAConfigError) as caught:
        MoAConfig.from_file(path)
    assert "got True" in str(caught.value) and "YAML" not in str(caught.value)


def test_a_calibration_file_larger_than_a_settings_file_is_refused_unread(tmp_path):
    # A config file is refused past MAX_CONFIG_BYTES; its calibration file was read whole.
    from langgraph_moa._settings_bytes import MAX_CONFIG_BYTES

    cal = tmp_path / "cal.json"
    cal.write_text('{"x": 0.5' + " " * MAX_CONFIG_BYTES + "}", encoding="utf-8")
    said = _refusal(tmp_path, MUX + "selection: {method: mux, calibration_file: cal.json}\n")
    assert f'calibration file "{cal}" is larger than {MAX_CONFIG_BYTES} bytes' in said
    assert "check that it is the right file" in said


def test_a_calibration_file_saved_with_a_byte_order_mark_is_read_as_a_config_file_is(tmp_path):
    # Both are read through one limit, but a calibration file Notepad saved as UTF-8 (with a
    # mark) was refused, "cannot be read as JSON: Unexpected UTF-8 BOM", a config file read.
    cal = json.dumps({"accuracy": {"openai:gpt-4o-mini": 0.8}}).encode()
    (tmp_path / "cal.json").write_bytes(b"\xef\xbb\xbf" + cal)
    config = tmp_path / "mux.yaml"
    config.write_bytes(
        b"\xef\xbb\xbf" + f"{MUX}selection: {{method: mux, calibration_file: cal.json}}\n".encode()
    )
    loaded = MoAConfig.from_file(config)
    assert loaded.selection is not None
    assert loaded.selection.calibration == {"openai:gpt-4o-mini": 0.8}
