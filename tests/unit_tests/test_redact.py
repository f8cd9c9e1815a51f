"""Secrets out of error text: keys the process knows, bearer tokens, account ids."""

import pytest

from langgraph_moa._redact import REDACTED, redact, register_secret, summarize_error


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
