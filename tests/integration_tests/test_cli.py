"""The `moa` command as users run it: a separate process, its exit code and its stderr."""

import subprocess
import sys

import pytest


def moa(*args):
    return subprocess.run(
        [sys.executable, "-c", "from langgraph_moa.cli._app import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "hi", "--preset", "nope"], "Unknown preset 'nope'"),
        (["run", "hi", "--proposers", "nonsense-model"], "Unknown model provider"),
        (["run", "   "], "The question is empty"),
        (["run", "hi", "--config", "/nonexistent.yaml"], "does not exist"),
        (
            ["run", "hi", "--proposers", "openai:gpt-4o-mini", "--aggregator", "openai:gpt-4o"],
            "OPENAI_API_KEY",
        ),
    ],
)
def test_bad_input_gets_one_clear_line(args, message):
    result = moa(*args)
    assert result.returncode == 1
    assert message in result.stderr.replace("\n", " ")
    assert "Traceback" not in result.stderr + result.stdout


def test_a_bad_file_a_directory_or_a_bad_override_is_one_line(tmp_path):
    binary = tmp_path / "config.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    cases = [
        (["--config", str(binary)], "is not UTF-8 text: give a YAML or JSON file"),
        (["--config", str(tmp_path)], "is a directory: give the path of a YAML or JSON file"),
        (["--proposers", "nonsense"], "Unknown model provider in 'nonsense'"),
    ]
    for args, message in cases:
        result = moa("run", "hi", *args)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert message in lines[0] and "unexpected" not in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layers", "1"], "'--layers': 1 is out of range: give a whole number from 2 to 16."),
        (["--samples", "10000"], "'--samples': 10000 is out of range: give a whole number from 1"),
    ],
)
def test_an_option_out_of_range_is_a_usage_error(args, message):
    # They exited 1 in pydantic's words ("Input should be ..."), after the config was built.
    result = moa("run", "hi", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "Input should" not in result.stderr


def test_serve_refuses_a_port_out_of_range():
    result = moa("serve", "--port", "99999")
    assert result.returncode == 2 and "'--port'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_option_is_a_usage_error_not_a_traceback():
    result = moa("run", "hi", "--layerz", "2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
