"""A config file written by hand: YAML's readings of unquoted words, and paths in the file.

A person writes ``model: no`` or ``name: 2024-01-01`` meaning text; YAML reads a boolean and
a date. The refusal says so and how to write the text; a file named inside a config is
found next to the config, wherever the command runs.
"""

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
