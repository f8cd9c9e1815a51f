"""Secrets out of error text: keys the process knows, bearer tokens, account ids."""

import pytest

from langgraph_moa._redact import (
    REDACTED,
    describe_error,
    one_line,
    redact,
    redact_url,
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
        # A URL's key: its mark's "]" was taken for the text's and the mark for a value,
        # so each pass added a "]" (an error quoting a redacted label: "key=[redacted]]").
        "see https://h/v1?alt=json&key=AIzaSyAbCdEf123.",
        "https://h/v1#access_token=abcdef123456&x=1",
        "(https://h/v1?key=abcdef123456)",
        "https://h/login?next=http%3A%2F%2Fh%3Fkey%3Dsupersecret1%26alt%3Djson",
        "https://h/login?next=http%253A%252F%252Fh%253Fkey%253Dsupersecret1",
    ],
)
def test_redacting_twice_changes_nothing_more(text):
    # A text redacted where it was received is redacted again where it is shown: the field
    # shape's guard against its own mark was passed by giving the space before the mark to
    # the value, so "authorization: [redacted]" became "authorization:[redacted]".
    once = redact(text)
    assert redact(once) == once
    shown = redact_url(text)
    assert redact_url(shown) == shown


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


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("OPENAI_API_KEY", True),
        ("HF_TOKEN", True),
        ("APIKEY", True),
        ("KEY", True),
        ("GITHUB_TOKEN", True),
        ("MY_ACCESSKEY", True),
        ("SLACKTOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("DB_SECRET_VALUE", True),
        ("PGPASSWORD", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("OPENAI_ORG_ID", True),
        # Any other word before KEY makes a credential of it, as it did before: only the
        # ordinary words that end in "key" are spared.
        ("SIGNINGKEY", True),
        ("MASTERKEY", True),
        ("APP_ENCRYPTIONKEY", True),
        ("LICENSEKEY", True),
        ("GITHUB_PAT", True),
        ("DONKEY", False),
        ("WHISKEY", False),
        # A word that merely ends in "key" or "token" holds no secret.
        ("MONKEY", False),
        ("TURKEY", False),
        ("HOCKEY", False),
        ("BROKEN_TOKEN_COUNT", False),
        # A password by its short names, a passphrase, and names in the plural.
        ("DB_PASS", True),
        ("PGPASS", True),
        ("PASSPHRASE", True),
        ("GPG_PASSPHRASE", True),
        ("API_KEYS", True),
        ("MY_TOKENS", True),
        ("AWS_CREDENTIALS", True),
        # ... but not the ordinary words that hold "pass", nor their plurals.
        ("PASSAGE", False),
        ("BYPASS_CACHE", False),
        ("COMPASS", False),
        ("PASSENGER_COUNT", False),
        ("MONKEYS", False),
        ("MAX_TOKENS", False),
    ],
)
def test_an_environment_variable_is_a_secret_only_by_a_secret_like_name(monkeypatch, name, secret):
    # A name that merely ends in KEY ("MONKEY=banana-split") had its value cut out of
    # every error text, an ordinary word among them.
    monkeypatch.setenv(name, "banana-split")
    cleaned = redact("the upstream said banana-split")
    assert ("banana-split" not in cleaned) is secret


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # An unquoted value is one token: the words after it are the message's.
        (
            "api_key: abc123xyz was rejected by the upstream, retry later",
            f"api_key: {REDACTED} was rejected by the upstream, retry later",
        ),
        ("x-api-key=abcdef123456 rejected", f"x-api-key={REDACTED} rejected"),
        # An authorization header is its scheme and its credentials, wherever it ends.
        ("Authorization: Bearer abc123 def, then", f"Authorization: {REDACTED} def, then"),
        ("Authorization: Custom abc123def is invalid", f"Authorization: {REDACTED} is invalid"),
        ("authorization=abc123def;", f"authorization={REDACTED};"),
        # A bare token is the credentials alone: the word after it is the message's.
        ("authorization: abc123 is rejected", f"authorization: {REDACTED} is rejected"),
        ("authorization: token ghp_abc123 is rejected", f"authorization: {REDACTED} is rejected"),
        # A scheme whose credentials are a list of parameters: all of them go.
        (
            'Authorization: Digest username="u", realm="r", nonce="n", '
            'response="6629fae49393a05397450978507c4ef1" was refused',
            f"Authorization: {REDACTED} was refused",
        ),
        (
            "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1"
            "/s3/aws4_request, SignedHeaders=host;range;x-amz-date, "
            "Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024 sent",
            f"Authorization: {REDACTED} sent",
        ),
        # A pydantic secret's repr keeps its shape, its value (masked or not) redacted.
        (
            "ChatOpenAI(api_key=SecretStr('**********'), model='m')",
            f"ChatOpenAI(api_key=SecretStr('{REDACTED}'), model='m')",
        ),
        ("api_key=SecretStr('hunter2hunter2')", f"api_key=SecretStr('{REDACTED}')"),
        # A quoted value is the whole quoted text, spaces and commas included.
        ('{"api_key": "abc def, ghi", "n": 1}', f'{{"api_key": "{REDACTED}", "n": 1}}'),
        ("{'Authorization': 'Bearer abc def'}", f"{{'Authorization': '{REDACTED}'}}"),
        ("openai-organization: my-org-name\nnext", f"openai-organization: {REDACTED}\nnext"),
        # Other named secrets: a password, a client secret, an OAuth token.
        ('{"password": "hunter2hunter2"}', f'{{"password": "{REDACTED}"}}'),
        ("client_secret=abcdef123456 sent", f"client_secret={REDACTED} sent"),
        ("'access_token': 'ya29.abc'", f"'access_token': '{REDACTED}'"),
        ("refresh-token: r1x2y3 expired", f"refresh-token: {REDACTED} expired"),
        # ... prefixed too, as "model_api_key" is.
        ("db_password=hunter22 ok", f"db_password={REDACTED} ok"),
        ("DB_PASSWORD: hunter22", f"DB_PASSWORD: {REDACTED}"),
        ("github_access_token=ghp_abc", f"github_access_token={REDACTED}"),
        ("user-password: xyzxyz", f"user-password: {REDACTED}"),
        # ... but words that merely contain such a name keep their value.
        ("max_tokens=512 and token: 'the'", "max_tokens=512 and token: 'the'"),
        ("my_password_hint: blue", "my_password_hint: blue"),
    ],
)
def test_a_credential_field_loses_its_whole_value_and_nothing_after_it(text, shown):
    assert redact(text) == shown
    assert redact(shown) == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # Words after an authorization field that are no credentials: a capitalized word was
        # taken for a scheme and the word after it redacted ("Invalid [redacted]").
        ("Authorization: Invalid credentials", "Authorization: Invalid credentials"),
        ("authorization: invalid or expired", "authorization: invalid or expired"),
        ("Authorization: Required.", "Authorization: Required."),
        # A known scheme's credentials go whatever they look like; so do credential-like ones.
        ("Authorization: Key abcdef", f"Authorization: {REDACTED}"),
        ("Authorization: ApiKey abcdef is rejected", f"Authorization: {REDACTED} is rejected"),
        ("Authorization: NTLM TlRMTVNTUAAB", f"Authorization: {REDACTED}"),
        ("Authorization: Invalid abc123", f"Authorization: {REDACTED}"),
        ("authorization: hunter2 failed", f"authorization: {REDACTED} failed"),
        ("authorization: abcdefghijklmnopqrstuvwxyz", f"authorization: {REDACTED}"),
        # A credential that is one word of small letters, the field's whole value (a header
        # line, a dump), was taken for a message's word and shown: a message goes on after
        # its first word, or ends it as a sentence does.
        ("authorization: letmein", f"authorization: {REDACTED}"),
        ("Authorization: Opensesame\r\nHost: h", f"Authorization: {REDACTED}\r\nHost: h"),
        ("authorization=opensesame", f"authorization={REDACTED}"),
        ("{'authorization': letmein, 'x': 1}", f"{{'authorization': {REDACTED}, 'x': 1}}"),
        ("Proxy-Authorization: hunter", f"Proxy-Authorization: {REDACTED}"),
        ("authorization: GoogleLogin secretword", f"authorization: {REDACTED}"),
        # Two words of letters read as a message whatever they said: a custom scheme and
        # a credential of small letters, or a credential and the words after it, were shown.
        ("Authorization: Splunk secretvalue", f"Authorization: {REDACTED}"),
        ("Authorization: letmein was rejected", f"Authorization: {REDACTED} was rejected"),
        ("Authorization: not provided", "Authorization: not provided"),
        ("authorization: missing header", "authorization: missing header"),
        ("authorization: letmein failed", f"authorization: {REDACTED} failed"),
        # A word of letters before a credential-shaped token is its scheme, whatever the
        # word: a message's word ("failed", "invalid") or a lowercase scheme was taken for
        # the credential alone, and the credential after it was shown.
        ("authorization: failed letmein2", f"authorization: {REDACTED}"),
        ("authorization: invalid abc123", f"authorization: {REDACTED}"),
        ("authorization: splunk abc123def is rejected", f"authorization: {REDACTED} is rejected"),
        # A base64 or base64url credential may begin with a sign: it was shown whole.
        ("authorization: failed -Xk3sEcReT9", f"authorization: {REDACTED}"),
        ("authorization: invalid _Xk3sEcReT9", f"authorization: {REDACTED}"),
        ("Authorization: Invalid +Xk3sEcReT9==", f"Authorization: {REDACTED}"),
        # ... but a message's words, a short number among them, are still shown.
        ("authorization: failed 3 times", "authorization: failed 3 times"),
        ("authorization: failed for user bob", "authorization: failed for user bob"),
        # A credential-shaped token later in a message's words goes too: only the first two
        # tokens were read, and "expired token" or "failed:" made the rest a message's.
        ("authorization: expired token abc123def", f"authorization: expired token {REDACTED}"),
        ("authorization: failed: letmein2", f"authorization: failed: {REDACTED}"),
        (
            "Authorization: invalid or expired, got ghp_abc123 (retry)",
            f"Authorization: invalid or expired, got {REDACTED} (retry)",
        ),
        # ... on its line only: the next line is not the field's.
        (
            "authorization: missing header\nkey abc123def",
            "authorization: missing header\nkey abc123def",
        ),
        # ... at the cost of a word that looks like one (an acronym), as after the first word.
        ("authorization: failed: letmein2 HMAC", f"authorization: failed: {REDACTED} HMAC"),
        # A message's prose is shown: a count, an acronym, hyphenated words, a path; a word
        # of them, or the message word before a comma, was taken for a credential.
        ("Authorization: failed 1234 times", "Authorization: failed 1234 times"),
        ("Authorization: Invalid HMAC signature", "Authorization: Invalid HMAC signature"),
        ("Authorization: failed: bad HMAC signature", "Authorization: failed: bad HMAC signature"),
        (
            "authorization: invalid, please re-authenticate",
            "authorization: invalid, please re-authenticate",
        ),
        (
            "Authorization: missing file /etc/moa/app-2024.log",
            "Authorization: missing file /etc/moa/app-2024.log",
        ),
        (
            "Authorization: not allowed on /v1/chat/completions",
            "Authorization: not allowed on /v1/chat/completions",
        ),
        # ... but a credential that begins with "/" (base64's alphabet holds it) goes, and a
        # lowercase scheme's credential of small letters, the value's last word, with it.
        (
            "authorization: invalid token /abc123SECRETxyz",
            f"authorization: invalid token {REDACTED}",
        ),
        ("authorization: failed /Xk3sEcReT9", f"authorization: {REDACTED}"),
        ("authorization: splunk secretvalue", f"authorization: {REDACTED}"),
        ("authorization: splunk secretvalue\r\nHost: h", f"authorization: {REDACTED}\r\nHost: h"),
        # A credential after a message word and a comma went whole, the word redacted.
        ("authorization: invalid, hunter2secret", f"authorization: invalid, {REDACTED}"),
        ("Authorization: Expired, abc123def", f"Authorization: Expired, {REDACTED}"),
        ("authorization: invalid,abc123def", f"authorization: invalid,{REDACTED}"),
        # A credential quoted, bracketed or after a comma in a message's words was shown:
        # only a token after a space was read, and the quote or bracket began it.
        (
            "Authorization: invalid token (hunter2secret)",
            f"Authorization: invalid token ({REDACTED})",
        ),
        (
            'Authorization: Invalid token "hunter2secret"',
            f'Authorization: Invalid token "{REDACTED}"',
        ),
        ("Authorization: invalid token 'Zx9kQ2mP'", f"Authorization: invalid token '{REDACTED}'"),
        (
            "Authorization: expired token abc123def,hunter2secret",
            f"Authorization: expired token {REDACTED},{REDACTED}",
        ),
        ("Authorization: Invalid key <hunter2secret>", f"Authorization: Invalid key <{REDACTED}>"),
        ("Authorization: Invalid key [hunter2secret]", f"Authorization: Invalid key [{REDACTED}]"),
        (
            'Authorization: invalid token key="sk-abc"',
            f'Authorization: invalid token key="{REDACTED}"',
        ),
        (
            "{authorization: invalid token abc123def}",
            f"{{authorization: invalid token {REDACTED}}}",
        ),
        # ... and a word before a bracket is a word ("docs)" was taken for a credential).
        (
            "Authorization: Invalid credentials (see docs)",
            "Authorization: Invalid credentials (see docs)",
        ),
        ("Authorization: Invalid credentials.", "Authorization: Invalid credentials."),
        # Hyphenated prose is what words make: up to three parts, each with a vowel, no
        # longer together than a long word. Any chain of letters went as prose and was shown.
        (
            "authorization: invalid token correct-horse-battery-staple",
            f"authorization: invalid token {REDACTED}",
        ),
        ("authorization: invalid token ghp-abcdefxyz", f"authorization: invalid token {REDACTED}"),
        (
            "authorization: invalid token abcdefghij-klmnopqrst",
            f"authorization: invalid token {REDACTED}",
        ),
        (
            "authorization: not valid: non-existent or out-of-date, check end-to-end",
            "authorization: not valid: non-existent or out-of-date, check end-to-end",
        ),
        # A four- or five-digit PIN is shown as a count would be (failed 1234 times): the
        # trade-off docs/security.md states.
        ("authorization: invalid pin 48213", "authorization: invalid pin 48213"),
    ],
)
def test_an_authorization_field_keeps_ordinary_words_and_loses_credentials(text, shown):
    assert redact(text) == shown
    assert redact(shown) == shown


@pytest.mark.parametrize(
    "url",
    [
        "https://h/login?next=http%3A%2F%2Fh%2Fv1%3Fkey%3Dsupersecret1",
        "https://h/login?next=http%3A%2F%2Fh%2Fv1%3Falt%3Djson%26api_key%3Dsupersecret1&x=1",
        "https://h/login?next=http%253A%252F%252Fh%253Fkey%253Dsupersecret1",
    ],
)
def test_a_key_in_a_url_encoded_within_another_url_is_found(url):
    from langgraph_moa._redact import redact_url, url_secrets

    # The nested URL's "?" and "=" are escaped ("%3F", "%3D"): its key was shown.
    assert "supersecret1" not in redact_url(url)
    assert "supersecret1" not in redact(url)
    assert "supersecret1" in url_secrets(url)
    assert "x=1" in redact_url(url) or "x=1" not in url  # the outer URL's rest stays


def test_a_nested_urls_parameters_after_its_key_are_kept():
    from langgraph_moa._redact import redact_url

    url = "https://h/?next=http%3A%2F%2Fh%3Fkey%3Dsupersecret1%26alt%3Djson"
    assert redact_url(url) == f"https://h/?next=http%3A%2F%2Fh%3Fkey%3D{REDACTED}%26alt%3Djson"


@pytest.mark.parametrize(
    "name", ["MAX_INPUT_TOKENS", "MAX_TOTAL_TOKENS", "MAX_BATCH_PREFILL_TOKENS", "NUM_TOKENS"]
)
def test_a_tokens_variable_holding_a_count_is_no_secret(monkeypatch, name):
    # A serving stack's token limits (MAX_INPUT_TOKENS=131072) were taken for secrets by
    # their plural name, and the number was cut out of every error, the context length
    # an upstream names among them.
    monkeypatch.setenv(name, "131072")
    monkeypatch.setenv("MY_TOKENS", "tok-secret-value")
    cleaned = redact("maximum context length is 131072 tokens; tok-secret-value")
    assert cleaned == "maximum context length is 131072 tokens; [redacted]"


def test_each_key_of_a_plural_keys_variable_is_redacted_alone(monkeypatch):
    # API_KEYS holds several keys; only the whole list was removed, so an error repeating
    # one of them showed it.
    monkeypatch.setenv("API_KEYS", "alpha-key-111111, beta-key-222222;gamma-key-333333")
    cleaned = redact("invalid key beta-key-222222 (also alpha-key-111111, gamma-key-333333)")
    assert cleaned == "invalid key [redacted] (also [redacted], [redacted])"


def test_a_command_no_shell_would_split_keeps_no_part_of_a_key():
    from langgraph_moa._redact import keyless_command

    # An unclosed quote: the shell would not split it, and `redact_url` kept "cd...".
    command = "moa eval --system 'single:m@https://h.example/v1?key=ab'cd-secret-tail&alt=json'"
    assert keyless_command(command) == (
        "moa eval --system 'single:m@https://h.example/v1?key=[redacted]&alt=json'"
    )


def test_list_variables_of_ordinary_words_are_no_secrets(monkeypatch):
    # A plural name's list was split and every item cut out of every error text: a stop
    # token, a sorting key's field names. Only items shaped as credentials are secrets.
    monkeypatch.setenv("STOP_TOKENS", "<|im_end|>,<|endoftext|>")
    monkeypatch.setenv("SORT_KEYS", "name,created_at")
    monkeypatch.setenv("API_KEYS", "alpha-key-111111,beta-key-222222")
    text = "stopped at <|im_end|> sorting by created_at name with beta-key-222222"
    assert redact(text) == f"stopped at <|im_end|> sorting by created_at name with {REDACTED}"


def test_a_whole_number_in_a_list_variable_is_a_count_as_the_whole_value_is(monkeypatch):
    # A whole-number value alone was a count, but the same number as an item of a list was
    # a secret: a model's stop token ids (STOP_TOKENS=128001,128009) were cut out of every
    # error text naming them.
    monkeypatch.setenv("STOP_TOKENS", "128001,128009")
    monkeypatch.setenv("API_KEYS", "4096 alpha-key-111111")
    text = "stopped at token 128009 after 4096 tokens, key alpha-key-111111"
    assert redact(text) == f"stopped at token 128009 after 4096 tokens, key {REDACTED}"


def test_list_items_not_shaped_as_words_are_secrets(monkeypatch):
    # An item counted only with 12 or more characters and a digit or a sign: a short key,
    # a word with digits and a long key of letters and one underscore were all shown.
    monkeypatch.setenv("API_KEYS", "local-key1,hunter2024,hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh")
    text = "failed with key hunter2024 and hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh and local-key1"
    assert redact(text) == f"failed with key {REDACTED} and {REDACTED} and {REDACTED}"


def test_a_new_key_takes_no_variable_a_later_word_already_reads():
    from langgraph_moa._redact import shell_command

    # The first new key was given MOA_URL_KEY, which a later word already read: two keys,
    # one variable.
    words = ["moa", "eval", "--system", "single:n@https://h/v1?key=zzzzzzzzz"]
    words += ["--system", "single:o@https://h/v1?key=${MOA_URL_KEY}"]
    assert shell_command(words) == (
        "moa eval --system 'single:n@https://h/v1?key='\"${MOA_URL_KEY_2}\""
        " --system 'single:o@https://h/v1?key='\"${MOA_URL_KEY}\""
    )


def test_a_command_no_shell_would_split_keeps_its_words_after_a_key():
    from langgraph_moa._redact import keyless_command

    # Redacted as one spec, the key's value ran to the line's end: the rest was dropped.
    # (The quote after the key may be the key's own: it goes with it.)
    command = "moa eval --system 'single:m@https://h/v1?key=abcdefgh' --runs 3 --out d'ir"
    assert keyless_command(command) == (
        "moa eval --system 'single:m@https://h/v1?key=[redacted] --runs 3 --out d'ir"
    )


def test_a_short_bearer_token_is_redacted_too():
    # A proxy's token of a few characters is still the credential that opens it.
    assert redact("upstream refused Bearer tok42") == f"upstream refused Bearer {REDACTED}"


@pytest.mark.parametrize("name", ["MIN_TOKENS", "MAX_TOKENS"])
def test_a_tokens_limit_variable_is_no_secret(monkeypatch, name):
    monkeypatch.setenv(name, "banana-split")
    assert redact("the upstream said banana-split") == "the upstream said banana-split"


@pytest.mark.parametrize(
    ("text", "limit", "mark", "line"),
    [
        ("a\n\tb   c", 20, False, "a b c"),  # every run of white space is one space
        ("one two three", 7, False, "one two"),
        ("one two three", 8, True, "one two\u2026"),  # marked where cut, no space before it
        ("short", 5, True, "short"),
        (None, 10, False, "None"),  # any value, written out
        ("caf" + "e\u0301" + " au lait", 4, False, "caf"),  # never half a drawn character
    ],
)
def test_one_line_joins_the_white_space_and_cuts_to_the_limit(text, limit, mark, line):
    assert one_line(text, limit, mark=mark) == line
