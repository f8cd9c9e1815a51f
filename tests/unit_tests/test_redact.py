"""Secrets out of error text: keys the process knows, bearer tokens, account ids."""

import pytest

from langgraph_moa._redact import (
    REDACTED,
    describe_error,
    redact,
    register_secret,
    summarize_error,
)


@pytest.mark.parametrize(
    "text",
    [
        "you sent authorization: Bearer abc.def-ghi_123",
        '{"headers": {"Authorization": "Basic dXNlcjpwYXNz"}}',
        "Incorrect API key provided: sk-proj-AbCdEf123456789.",
        "organization org-AbCdEf1234567 has no access",
        "project proj_AbCdEf1234567 is archived",
        "x-api-key=abcdef123456 rejected",
        "openai-organization: my-org-name",
    ],
)
def test_credential_shapes_are_removed(text):
    cleaned = redact(text)
    assert REDACTED in cleaned
    for secret in ("abc.def", "dXNlcjpw", "AbCdEf123", "abcdef123456", "my-org-name"):
        assert secret not in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "you sent authorization: Bearer abc.def-ghi_123",
        "you sent authorization: [redacted]",
        "x-api-key = [redacted] rejected",
        '{"api_key": "abcdef123456"}',
    ],
)
def test_redacting_twice_changes_nothing_more(text):
    # A text redacted where it was received is redacted again where it is shown: the field
    # shape's guard against its own mark was passed by giving the space before the mark to
    # the value, so "authorization: [redacted]" became "authorization:[redacted]".
    once = redact(text)
    assert redact(once) == once


def test_known_keys_go_whatever_their_shape(monkeypatch):
    monkeypatch.setenv("SOME_PROVIDER_API_KEY", "plainwordsecret")
    register_secret("registered-value-42")
    cleaned = redact("got plainwordsecret and registered-value-42 in the body")
    assert "plainwordsecret" not in cleaned and "registered-value-42" not in cleaned
    for ordinary in (
        "an ordinary error: model not found",
        "max token limit of 4096 exceeded; basic authentication failed",
        "This model's maximum context length is 8192 tokens",
    ):
        assert redact(ordinary) == ordinary


def test_a_summary_is_one_short_line():
    summary = summarize_error("line one\nline two\n" + "x" * 1000, limit=80)
    assert "\n" not in summary and len(summary) <= 80 and summary.endswith("…")


def _raised(error: BaseException, cause: BaseException) -> BaseException:
    try:
        raise error from cause
    except BaseException as caught:
        return caught


def test_a_generic_connection_error_is_described_with_its_innermost_cause(monkeypatch):
    import httpx2
    import openai

    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-abcdef123456")
    root = ConnectionRefusedError(111, "Connect call failed for tok-abcdef123456")
    middle = _raised(OSError("Cannot connect to host"), root)
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    error = _raised(openai.APIConnectionError(request=request), middle)  # "Connection error."
    described = describe_error(error)
    assert described.startswith("APIConnectionError: Connection error (")
    assert "Connect call failed" in described  # the innermost cause: what really happened
    assert "tok-abcdef123456" not in described and REDACTED in described


def test_a_specific_message_is_described_as_it_is():
    error = _raised(ValueError("Model 'x' is unknown."), OSError("unrelated"))
    assert describe_error(error) == "ValueError: Model 'x' is unknown."


def test_an_answer_that_is_not_json_is_described_by_how_it_begins():
    import json

    try:
        json.loads("<html>502 Bad Gateway</html>")
    except json.JSONDecodeError as error:
        described = describe_error(error)
    assert described.startswith("JSONDecodeError: the answer is not JSON, it begins '<html>502")


def test_an_empty_stream_says_what_to_check():
    described = describe_error(ValueError("No generations found in stream."))
    assert described.startswith("ValueError: No generations found in stream. The server's")
    assert "OpenAI chat API" in described


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("OSError: [Errno 28] /var/lib/moa/h.db: no space", "OSError: [Errno 28] [path]: no space"),
        ("cannot write ~/.cache/langgraph-moa", "cannot write [path]"),
        ("cannot write C:\\Users\\op\\cache now", "cannot write [path] now"),
        # Not the machine's: an endpoint's URL, an API path, an approximate number.
        ("404 at http://127.0.0.1:8080/v1/chat/completions", None),
        ("POST /v1/chat/completions took ~5 s", None),
    ],
)
def test_redact_machine_drops_the_machines_paths_and_nothing_else(text, shown):
    from langgraph_moa._redact import redact_machine

    assert redact_machine(text) == (shown or text)
