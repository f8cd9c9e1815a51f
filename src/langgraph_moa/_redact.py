"""Secrets out of error text: what an upstream says goes nowhere before passing through here.

An upstream's error body is untrusted text, and a careless (or hostile) one repeats the
request's ``Authorization`` header, the organization and project ids, or the key itself.
That text would otherwise reach a `moa serve` client (the 502 body, a stream's error event,
``moa.calls[].error`` of a fallback answer), a log, a trace or a call record.

`redact` removes every secret this process knows (the keys it read for the models it built,
and any environment variable whose name says it holds a key, a token or a secret), bearer
tokens, ``sk-`` keys and OpenAI organization and project ids. `summarize_error` does that and
makes one short line of it. This module imports nothing of the package, so every layer
may use it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from langgraph_moa._forklock import ForkSafeLock
from langgraph_moa._unicode import beginning, boundary

REDACTED = "[redacted]"
_MARK = re.escape(REDACTED)
MIN_SECRET_CHARS = 6
"""Shorter values are not treated as secrets (they would redact ordinary words)."""

_ORDINARY_KEY_WORDS = ("MON", "TUR", "HOC", "DON", "JOC", "WHIS", "LAC", "HOT")
"""What comes before ``KEY`` in the ordinary words that end in it (``MONKEY``, ``HOTKEY``)."""

_SECRET_NAME = re.compile(
    rf"(?:^|[_.\-])(?!(?:{'|'.join(_ORDINARY_KEY_WORDS)})KEYS?$)[^_.\-]*KEYS?$"
    r"|TOKEN$|(?<!MAX_)(?<!MIN_)TOKENS$|SECRET|PASSWORD|PASSWD|PASSPHRASE"
    r"|(?:^|_)(?:PG)?PASS$|CREDENTIALS?$|(?:^|_)PAT$|_ORG_ID$|PROJECT_ID$"
)
"""An environment variable name that says its value is a secret (``OPENAI_API_KEY``,
``APIKEY``, ``API_KEYS``, ``SIGNINGKEY``, ``HF_TOKEN``, ``MY_TOKENS``, ``GITHUB_PAT``,
``DB_SECRET_VALUE``, ``PGPASSWORD``, ``DB_PASS``, ``PGPASS``, ``PASSPHRASE``). Any name
ending in ``KEY`` (or ``KEYS``) is one, but for an ordinary word that ends in ``key``
(``MONKEY``, ``TURKEY``, `_ORDINARY_KEY_WORDS`): its value was cut out of every error text.
``PASS`` counts only as a name's whole last word (``DB_PASS``), never inside one
(``PASSAGE``, ``BYPASS_CACHE``, ``COMPASS``); ``MAX_TOKENS`` is a count. A name wrongly
taken for a secret costs a reader a word, one wrongly not taken leaks a key."""
_PLURAL_NAME = re.compile(r"(?:KEYS|TOKENS)$")
"""A name in the plural (``API_KEYS=k1,k2``) holds a list: each of its secrets is removed
alone, as an error repeats one. A whole number in one is a count, not a secret
(``MAX_INPUT_TOKENS=131072``, a serving stack's limit): it was cut out of every error,
the context length an upstream names among them."""
_LIST_SEPARATOR = re.compile(r"[\s,;]+")
_LISTED_WORD = re.compile(r"[a-z][a-z_]*|\d+|.*[<|>].*")
"""An item of such a list that is clearly no key: a plain lowercase word or snake_case name
(``SORT_KEYS=name,created_at``), a whole number, a count or an id as the whole value alone
is (``STOP_TOKENS=128001,128009``, a model's stop token ids), or one with a character no key
holds (``STOP_TOKENS=<|im_end|>,<|endoftext|>``); each was cut out of every error text (the
whole list still is). Any other item of `MIN_SECRET_CHARS` or more is a secret: one counted only
with 12 or more characters and a digit or a sign let ``hunter2024``, ``local-key1`` and a
key of letters and ``_`` through."""
_ACCOUNT_VARS = ("OPENAI_ORG_ID", "OPENAI_ORGANIZATION", "OPENAI_PROJECT_ID")

_PATTERNS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=\-]{4,}"), rf"\1\2{REDACTED}"),
    # Basic credentials are base64: a digit, '+', '/' or '=' tells them from a word.
    (
        re.compile(r"(?i)\b(basic)(\s+)(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{8,}={0,2}"),
        rf"\1\2{REDACTED}",
    ),
    # The user name and password of a URL (``https://user:pass@host``): an endpoint URL that
    # was refused for holding them is repeated in its error. The scheme is read from the
    # start of a run of its characters only: read from each word of one ("a-a-a..."), to
    # its end each time, a crafted run took minutes.
    (re.compile(r"(?i)(?<![a-z0-9+.\-])([a-z0-9+.\-]*://)[^/\s@]+@"), rf"\1{REDACTED}@"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), REDACTED),
    (re.compile(r"\borg-[A-Za-z0-9]{6,}"), f"org-{REDACTED}"),
    (re.compile(r"\bproj_[A-Za-z0-9]{6,}"), f"proj_{REDACTED}"),
]

_NOT_A_CREDENTIAL = r"(?:sort|order|partition|range|row|group|model|cache)[_.\-]key"
"""Names ending in ``key`` whose first word says what the key orders or picks
(``sort_key``, ``partition_key``, ``model_key``): shown. Any other word before ``_key``
(``primary_key``, ``subscription-key``, ``model_api_key``) is taken for a credential: a name
wrongly redacted costs a reader a value, one wrongly shown leaks a key."""

_TEXT_AFTER = r")\]},;"
"""Punctuation that ends a value's text rather than the key (``init(...?key=abc);``): no
key's alphabet holds it (base64 and base64url, hex, a URL's unreserved ``-._~`` and its
``%`` escapes). Only at the value's very end is it given back; inside the value it is the
key's, and goes with it. A key's own ``.``, ``=`` or ``~`` always goes, even ending a
sentence."""

_PARAM_START = r"(?:[?&;#]|\\u0026)"
"""What opens a parameter: the query's ``?``, ``&`` or ``;``, the fragment's ``#`` (OAuth's
implicit flow returns ``#access_token=...``), and ``\\u0026``, the ``&`` of a URL repeated
in a JSON body whose encoder escapes it (Go's does): the key after either was shown."""

_CREDENTIAL_NAME = (
    r"(?:[\w.\-]*[_.\-])?(?:key|api_?key|apikey|token|auth|authorization|sig|signature|"
    r"password|passwd|pwd|secret|credentials?)"
)

_CREDENTIAL_PARAM = re.compile(
    rf"(?i)({_PARAM_START}(?!{_NOT_A_CREDENTIAL}=){_CREDENTIAL_NAME}=)"
    rf"(?!{_MARK}[{_TEXT_AFTER}]*(?:[&#\s'\"<>]|$))"
    rf"[^&#\s'\"<>]*[^&#\s'\"<>{_TEXT_AFTER}](?=[{_TEXT_AFTER}]*(?:[&#\s'\"<>]|$))"
)
"""A URL's query (or fragment) parameter whose name says it holds a credential (``?key=``,
``&sig=``, ``#access_token=``, ``X-Amz-Signature=``), up to the next parameter or the URL's
end, less the punctuation of the text around the URL (`_TEXT_AFTER`). A value that is
already the mark is left: its ``]`` was taken for the text's, and each pass added one."""

_ESCAPED = r"%(?:25)*"
"""A percent escape, or an escaped one: a URL in another's query, or in a third's."""

_ESCAPED_CHAR = rf"(?:(?!{_ESCAPED}(?:26|23))[^&#\s'\"<>])"
"""A character of a value in an escaped URL: not its escaped ``&`` or ``#`` (its next
parameter), nor what ends the URL it stands in."""

_ESCAPED_PARAM = re.compile(
    rf"(?i)({_ESCAPED}(?:3F|26|23|3B)(?!{_NOT_A_CREDENTIAL}{_ESCAPED}3D)"
    rf"{_CREDENTIAL_NAME}{_ESCAPED}3D)"
    rf"(?!{_MARK}[{_TEXT_AFTER}]*(?:[&#\s'\"<>]|{_ESCAPED}(?:26|23)|$))"
    rf"{_ESCAPED_CHAR}*(?![{_TEXT_AFTER}]){_ESCAPED_CHAR}"
    rf"(?=[{_TEXT_AFTER}]*(?:[&#\s'\"<>]|{_ESCAPED}(?:26|23)|$))"
)
"""A credential parameter of a URL escaped within another URL's query
(``?next=http%3A%2F%2Fh%2Fv1%3Fkey%3Dsecret``: a login's return address, a proxy's target):
its ``?`` and ``=`` are escapes, and `_CREDENTIAL_PARAM` found nothing there. Its value
ends at the escaped URL's next parameter (``%26``) or where the outer one ends."""

_URL_PARAMS = (_CREDENTIAL_PARAM, _ESCAPED_PARAM)

_PATTERNS[:0] = [(pattern, rf"\1{REDACTED}") for pattern in _URL_PARAMS]

_SECRET_REPR = r"Secret(?:Str|Bytes)\(b?"
"""How pydantic's secret types begin their repr (``SecretStr('**********')``): a client's
repr (``api_key=SecretStr(...)``) keeps that shape, its quoted value redacted."""

_KNOWN_SCHEME = (
    r"(?:bearer|basic|digest|token|negotiate|ntlm|oauth|hoba|mutual|dpop|aws4-hmac-sha256"
    r"|api-?key|key|sso-key|ssws)"
)
"""An authorization's known scheme, in any case: its credentials go, whatever they look like."""

_WORD = r"(?-i:[A-Za-z][a-z]{0,19})"
_TOKEN_END = r"""(?![^\s,;"'}])"""
_MESSAGE_WORD = (
    r"(?i:invalid|missing|expired|required|not|no|bad|wrong|denied|empty|malformed|unknown"
    r"|revoked|incorrect|unauthorized|forbidden|failed|rejected|none|null|absent|disabled)"
)
_HYPHENATED = (
    r"(?=[A-Za-z\-]{3,20}(?![A-Za-z\-]))"
    rf"(?:(?i:(?=[a-z]*[aeiouy])){_WORD})(?:-(?i:(?=[a-z]*[aeiouy])){_WORD}){{1,2}}"
)
"""Hyphenated words as a message writes them (``re-authenticate``, ``out-of-date``): two or
three parts, each with a vowel, at most 20 characters as a long word (`_WORD`). Any chain of letters
and hyphens was one, so ``correct-horse-battery-staple`` or ``ghp-abcdefxyz`` was shown."""
_PROSE = rf"(?:(?!sk-)(?:{_WORD}|{_HYPHENATED})|(?-i:[A-Z]{{2,6}})|\d{{1,5}})"
"""A message's token: a word, hyphenated words (`_HYPHENATED`; not an OpenAI key's ``sk-``
and the rest of it), an acronym (``HMAC``) or a count (``1234 times``, up to five digits).
A four- or five-digit PIN or one-time code is shown as such a count would be: the
trade-off docs/security.md states; six digits or more go."""
_PATH_NAME = r"(?-i:[A-Za-z][a-z]{0,19}\d*|\d+)"
_PATH = rf"(?:/{_PATH_NAME}(?:[._\-]{_PATH_NAME})*)+/?"
"""A path of a message (``/etc/moa/app-2024.log``, ``/v1/chat/completions``): each part
words and numbers joined by ``.``, ``_`` or ``-``. A credential that begins with ``/``
(base64's alphabet holds it) mixes them (``/abc123SECRETxyz``)."""
_CREDENTIAL_SHAPED = (
    rf"""(?!(?:{_PROSE}|{_PATH})[.:!?]?{_TOKEN_END})[A-Za-z0-9+_\-/][^\s,;"'}}]{{3,}}"""
)
"""A token that is no ordinary word (`_PROSE`) or path (`_PATH`): four characters or more,
the first a letter, a digit or a sign a base64 or base64url credential may begin with
(``-Xk3...``, ``/Xk3...``, shown whole when only a letter or digit began one), with a
digit, a sign, a capital inside or more letters than a word has (``abc123``,
``TlRMTVNT``, ``ghp_abc``). A short number (``3 times``) or ``(code`` is a message's."""
_MESSAGE = rf"(?={_MESSAGE_WORD}\b){_WORD}(?:,|[.:]{_TOKEN_END}|[ \t]+(?!{_CREDENTIAL_SHAPED}))"
"""An authorization's value that is a message's words (``Invalid credentials``,
``invalid or expired``, ``Required.``, ``failed 3 times``): a word that says what is wrong
(`_MESSAGE_WORD`), which a sentence's stop ends or anything but a credential-shaped token
(`_CREDENTIAL_SHAPED`) follows on its line, or a comma (``invalid, please
re-authenticate``): a credential after the comma is one of the message's pieces
(``invalid, hunter2secret``, ``invalid,abc123``: "invalid" was taken for the credential
and the key shown).
Any other first word is a scheme or a
credential: two words of letters read as a message whatever they said, and ``Splunk
secretvalue`` or ``letmein was rejected`` were shown. One word alone, the field's whole
value (``authorization: missing``, a header line or a dump), is a credential: that is
where a credential stands."""

_AUTH_VALUE = r"""[\w\-]+=(?:"(?:\\.|[^"\\\n])*"|[^\s,"']*)"""
_AUTH_PARAMS = rf"{_AUTH_VALUE}(?:[ \t]*,[ \t]*{_AUTH_VALUE})*"
"""A scheme's credentials written as parameters (Digest's ``response="..."``, AWS
Signature 4's ``Credential=..., SignedHeaders=..., Signature=...``): all of them go."""

_AUTH_CREDENTIALS = (
    rf"(?:{_KNOWN_SCHEME}[ \t]+(?:{_AUTH_PARAMS}|[^\s,;\"'}}]+)"
    rf"|(?!{_MESSAGE})(?:(?-i:[A-Z][A-Za-z]*(?:-[A-Za-z]+)*)[ \t]+"
    rf"|[A-Za-z]+[ \t]+(?={_CREDENTIAL_SHAPED})"
    rf"|[A-Za-z]+[ \t]+(?!{_MESSAGE_WORD}\b)(?=[^\s,;\"'}}]+[ \t]*(?:[\r\n,;\"'}}]|$)))?"
    rf"(?:{_AUTH_PARAMS}|[^\s,;\"'}}]+))"
)
"""An authorization's value: a known scheme and its credentials; or, unless it reads as a
message (`_MESSAGE`), credentials after a capitalized word taken for a scheme (``Custom
abc123def``), after any word of letters when they are credential-shaped (``splunk
abc123def``, ``failed letmein2``: "failed" was redacted and the credential shown), after
any word of letters when they are the value's last word and no message's (``splunk
secretvalue``: the second word was shown), or alone
(``authorization: abc123 is rejected``), the word after them the message's. A message's
words (``Authorization: Invalid credentials``) are shown: "Invalid" was taken for a scheme
and "credentials" redacted."""


_SEPARATOR = r"[\"']?+\s*+[:=]\s*+"
"""Between a field's name and its value. Possessive: else the space or quote before an
earlier pass's mark is given to the value, the guard passes, and each pass eats one more
character."""

_CREDENTIAL_FIELD = re.compile(
    r"(?i)((?:api[_-]?key|x-api-key|(?P<auth>authorization)|openai-organization|openai-project"
    # Named secrets of other kinds, prefixed or not ("db_password", "github_access_token"),
    # never inside a word; a bare "token" or "secret" names ordinary things in an error's
    # text ("token: 'the'", "max_tokens=512").
    r"|(?<![A-Za-z0-9])(?:password|passwd|client[_-]secret|secret[_-]key"
    r"|(?:access|refresh|id|auth|bearer)[_-]token))"
    rf"{_SEPARATOR})"
    rf"(?:(?P<wrap>{_SECRET_REPR})?(?P<q>[\"'])(?!{_MARK})(?:\\.|(?!(?P=q))[^\\\n])*(?P<end>(?P=q))?"
    rf"|(?!{_MARK}|{_SECRET_REPR})"
    rf"(?(auth){_AUTH_CREDENTIALS}|[^\s,;\"'}}]+))"
)
"""A credential field outside a URL (an error's text, a header dump, a JSON body): its name,
then its value. A quoted value is the whole quoted text (to its line's end where the text
was cut before its closing quote); an unquoted one is one token, and an authorization's is
its scheme and its credentials (``Authorization: Bearer abc``): the words after it are the
message's. It ran to the next comma: over the rest of a sentence, or, in a header, short of
a value holding one. A URL's parameter (``?api_key=``) is `_CREDENTIAL_PARAM`'s, which runs
first and takes its value alone."""


def _field_redacted(match: re.Match[str]) -> str:
    quote = match["q"] or ""
    return f"{match[1]}{match['wrap'] or ''}{quote}{REDACTED}{quote if match['end'] else ''}"


_AUTH_MESSAGE = re.compile(rf"(?i)(authorization{_SEPARATOR}(?={_MESSAGE}))([^\r\n]*)")
"""An authorization field whose value reads as a message (`_MESSAGE`), and the rest of its
line: only its first two tokens were read, so a credential after more of its words
(``expired token abc123def``, ``failed: letmein2``) was shown."""

_MESSAGE_PIECE = re.compile(r"""[^\s"'(),;<>\[\]{}=]+""")
"""A piece of such a message's words, between spaces and punctuation: a credential quoted,
bracketed, after a comma or an ``=`` (``token (hunter2secret)``, ``abc,hunter2secret``,
``key="sk-abc"``) is one alone, where read from a space on it began with the quote or
bracket, no credential's first character, and was shown."""

_CREDENTIAL_PIECE = re.compile(_CREDENTIAL_SHAPED)


def _message_redacted(match: re.Match[str]) -> str:
    """Return the message with each credential-shaped piece (`_CREDENTIAL_SHAPED`) redacted.

    A word that looks like one goes too (``Invalid HMAC signature``): a word lost rather
    than a key shown.
    """
    return match[1] + _MESSAGE_PIECE.sub(
        lambda piece: REDACTED if _CREDENTIAL_PIECE.fullmatch(piece[0]) else piece[0], match[2]
    )


_PATTERNS += [(_CREDENTIAL_FIELD, _field_redacted), (_AUTH_MESSAGE, _message_redacted)]


def redact_url(text: str) -> str:
    """Return `text` with the credential query parameters of its URLs shown as redacted.

    Some APIs take their key in the URL (``https://host/v1?key=...``), and an endpoint so
    written is accepted: the URL is still used for the calls, but wherever it is written or
    shown (a model's label, a record, a trace, a cache key) it goes through here. Only the
    parameter's value goes: ``?alt=json&key=[redacted]``, the rest of the URL as it was.
    """
    for pattern in _URL_PARAMS:
        text = pattern.sub(rf"\1{REDACTED}", text)
    return text


_WHOLE_URL_PARAMS = (
    re.compile(rf"(?i){_PARAM_START}(?!{_NOT_A_CREDENTIAL}=){_CREDENTIAL_NAME}=([^&#]+)"),
    re.compile(
        rf"(?i){_ESCAPED}(?:3F|26|23|3B)(?!{_NOT_A_CREDENTIAL}{_ESCAPED}3D)"
        rf"{_CREDENTIAL_NAME}{_ESCAPED}3D((?:(?!{_ESCAPED}(?:26|23))[^&#])+)"
    ),
)
"""`_URL_PARAMS` for a spec or URL given alone, not in running text: a value runs to its
URL's next parameter (``&``, ``#``) or the spec's end, quotes, spaces and ``<>`` included,
which in running text end it (and the rest of such a key was shown)."""


def key_spans(spec: str) -> list[tuple[int, int]]:
    """Return where the credential values of `spec` (a whole spec or URL) stand, in order."""
    spans = sorted(m.span(1) for pattern in _WHOLE_URL_PARAMS for m in pattern.finditer(spec))
    merged: list[tuple[int, int]] = []
    for start, end in spans:  # an escaped URL's key inside a keyed value: one span
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def redact_spec(spec: str) -> str:
    """Return a spec or URL given alone with each credential value shown as redacted.

    For what names a model or system by its spec (a label, an eval system's name): unlike
    `redact_url`, for running text, no part of a value holding a quote, a space or ``<>``
    is left.
    """
    for start, end in reversed(key_spans(spec)):
        spec = f"{spec[:start]}{REDACTED}{spec[end:]}"
    return spec


def redacted_repr(value: object) -> str:
    """Return ``repr(value)`` through `redact_url`, as an error quotes what it was given.

    A spec quoted in an error shows what was written, quotes and all, but not the key its
    endpoint URL may carry: a string (or one in a mapping or list) loses its key before it
    is quoted, so a quote in the key does not end it early.
    """
    return redact_url(repr(redact_urls_in(value, redact_spec)))


def shown_value(value: object) -> str:
    """Return a refused value as an error shows it: a scalar quoted, anything else by type.

    A container is named, never written out: YAML aliases nest a few hundred bytes into
    millions of values, and a refusal that wrote them all took megabytes, then memory. A
    scalar is redacted (`redacted_repr`), then clipped.
    """
    if value is None or isinstance(value, str | int | float):
        return clip(redacted_repr(value))
    return f"a {type(value).__name__}"


KEY_VARIABLE = "MOA_URL_KEY"
"""The variable a printed command reads a URL's key from (``MOA_URL_KEY_2`` the second's)."""

KEY_REFERENCE = re.compile(rf"\$\{{({KEY_VARIABLE}(?:_\d+)?)\}}")
"""A key read from its variable (``${MOA_URL_KEY}``), as `shell_command` writes it."""


def shell_command(words: list[str]) -> str:
    """Return `words` as one POSIX shell command line, each URL key in them read from a variable.

    A key must not be printed where a terminal's scrollback or a CI log keeps it, and a
    placeholder (``[redacted]``) typed back as shown was sent as the key. One key written
    twice is one variable; a word already reading a key from one (``${MOA_URL_KEY}``, a
    command written by this function and split again) keeps it. Only a word holding a URL
    (``://``: a model spec, ``--system=spec``, ``-sspec``) has its keys read from variables;
    any other word is written as it is, single-quoted where it must be, so the shell expands
    nothing in it: a path such as ``runs?key=1``, or a config's ``exp?key=2/moa.yaml``
    given to ``--system``, read from a variable named another file when the command ran
    again. A new key takes a name no word's text holds (``--out '${MOA_URL_KEY}'``): the
    line would read as one variable where the shell sees a folder and a key.
    """
    keys = {  # the variables already read first: a new key takes none of them
        value: named[1]
        for word in words
        if "://" in word
        for start, end in key_spans(word)
        if (named := KEY_REFERENCE.fullmatch(value := word[start:end]))
    }
    taken = {name for word in words for name in KEY_REFERENCE.findall(word)}
    return " ".join(
        _shell_word(word, keys, taken) if "://" in word else shlex.quote(word) for word in words
    )


def _shell_word(word: str, keys: dict[str, str], taken: set[str]) -> str:
    parts, at = [], 0
    for start, end in key_spans(word):
        value = word[start:end]
        if value not in keys:
            name, number = KEY_VARIABLE, 2
            while name in taken:
                name, number = f"{KEY_VARIABLE}_{number}", number + 1
            keys[value] = name
            taken.add(name)
        parts += [shlex.quote(word[at:start]), f'"${{{keys[value]}}}"']
        at = end
    if at < len(word) or not parts:
        parts.append(shlex.quote(word[at:]))
    return "".join(parts)


_SHELL_PART = re.compile(r"""'[^']*'|"(?:[^"\\]|\\.)*"|[^'"]+""")
"""A single-quoted, a double-quoted or an unquoted run of a command line."""


def read_variables(command: str) -> list[str]:
    """Return the key variables `command` reads (`KEY_REFERENCE`), in order, once each.

    Only those the shell expands: a ``${MOA_URL_KEY}`` within single quotes is a path's own
    text, and a line that listed it asked for a variable nothing read.
    """
    return list(
        dict.fromkeys(
            name
            for part in _SHELL_PART.findall(command)
            if not part.startswith("'")
            for name in KEY_REFERENCE.findall(part)
        )
    )


def keyless_command(command: str) -> str:
    """Return a command line with each URL key in it read from a variable.

    For a command recorded to be run again (an evaluation's), as `shell_command` writes one:
    `redact_url` ends a value at a quote, and a shell-quoted key holding one had its rest
    kept. A line no shell would split (an unclosed quote) has each of its words' keys
    redacted instead, each cut to its URL's next parameter: cut so on the whole line, a key
    took the words after it.
    """
    try:
        words = shlex.split(command)
    except ValueError:
        return re.sub(r"\S+", lambda word: redact_spec(word[0]), command)
    return shell_command(words)


def url_secrets(url: str) -> list[str]:
    """Return the values of `url`'s credential query parameters, as written and decoded.

    `redact_url` hides them where the URL is written; an upstream's error body may repeat
    the key alone ("API key ... is not valid"), which the transport removes with these
    (`without`). They are not registered as process-wide secrets (`register_secret`): a
    `moa serve` client may name its own endpoint's URL, and its ``?key=Connection`` would
    then be cut out of every error of every client, the list growing with each request.
    """
    values = set()
    for start, end in key_spans(url):
        value = url[start:end]
        values |= {value, *_spellings(value)}
    return sorted((v for v in values if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


def _spellings(value: str) -> set[str]:
    """Return the ways an upstream may write back the query value `value`: one key in each.

    Unescaped, and its ``+`` read as a space as a form reads a query; each escaped in full,
    a space as ``%20`` or as a form's ``+``. An escape's hex in either case (``%2b``,
    ``%2B``) is matched by `without`, which ignores case.
    """
    decoded = {unquote(value), unquote_plus(value)}
    return (
        decoded | {quote(d, safe="") for d in decoded} | {quote_plus(d, safe="") for d in decoded}
    )


def without(text: str, secrets: list[str]) -> str:
    """Return `text` with each of `secrets` (longest first) shown as redacted.

    Letter case is ignored: an escape's hex may come back in the other case, and a key
    written back re-cased is still the key, found again in a few thousand guesses.
    """
    for secret in secrets:
        text = re.sub(re.escape(secret), REDACTED, text, flags=re.IGNORECASE)
    return text


def redact_field(text: str) -> str:
    """Return `redact_spec` of a one-word string (a spec, a URL), `redact_url` of any other.

    A config's field is either a spec or URL given alone, whose key may hold a quote, or
    running text (a prompt), in which `redact_url` leaves the words after a value.
    """
    return redact_spec(text) if text.split() == [text] else redact_url(text)


def redact_urls_in(value: Any, redactor: Callable[[str], str] = redact_field) -> Any:
    """Return JSON-like `value` with `redactor` (`redact_field`) applied to every string in it.

    For what is written whole (a dumped config, a model as a tracer records it): an
    endpoint's URL may stand anywhere in it. A model's record holds its URL's query apart,
    as a mapping (``'key': '...'``), which only the URL's values (`url_secrets`) remove.
    """
    if isinstance(value, dict):
        return {k: redact_urls_in(v, redactor) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_urls_in(v, redactor) for v in value]
    return redactor(value) if isinstance(value, str) else value


_known: set[str] = set()
_lock = ForkSafeLock()


def register_secret(value: str | None) -> None:
    """Remember a secret this process uses (a key read for a model, the server's own key)."""
    if value and len(value.strip()) >= MIN_SECRET_CHARS:
        with _lock:
            _known.add(value.strip())


def _secrets() -> list[str]:
    """Return every secret to remove, longest first (so no part of one is left behind)."""
    found = {
        secret
        for name, value in os.environ.items()
        if _SECRET_NAME.search(name.upper()) or name in _ACCOUNT_VARS
        for secret in _env_secrets(name.upper(), value.strip())
        if len(secret) >= MIN_SECRET_CHARS
    }
    with _lock:
        found |= _known
    return sorted(found, key=len, reverse=True)


def _env_secrets(name: str, value: str) -> set[str]:
    """Return the secrets of the variable `name` whose value is `value` (`_PLURAL_NAME`)."""
    if not _PLURAL_NAME.search(name):
        return {value}
    if value.isdigit():
        return set()
    items = _LIST_SEPARATOR.split(value)
    return {value, *(item for item in items if not _LISTED_WORD.fullmatch(item))}


def redact(text: str) -> str:
    """Return `text` without the secrets this process knows and the usual credential shapes."""
    for secret in _secrets():
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


ERROR_CHARS = 300
"""The most characters of a failed call's line (`describe_error`), and of the error a run's
one-line summary repeats (`moa serve`'s 502): `LABEL_CHARS` keeps each fix within it."""


def summarize_error(text: str, limit: int = ERROR_CHARS) -> str:
    """Return `text` redacted, on one line, at most `limit` characters."""
    return clip(" ".join(redact(text).split()), limit)


_MACHINE_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # An earlier version's dead llama.cpp server: its pid and port, its log's path and tail.
    (re.compile(r" \(pid \d+, port \d+\)"), ""),
    (re.compile(r"(within [\d.]+ ?s) on port \d+"), r"\1"),
    (re.compile(r"\s*Its log \(.*", re.S), " The operator's log says why."),
    # Any other file of the machine: a home, temp, cache or system folder.
    (
        re.compile(
            r"(?<![\w:/.])(?:~/|[A-Za-z]:\\|/(?:tmp|var|home|Users|root|opt|usr|private|mnt|srv|"
            r"etc|data)\b)[^\s'\"),;:]*"
        ),
        "[path]",
    ),
]


def redact_machine(text: str) -> str:
    """Return an error text without the server machine's pids, ports, paths and log lines.

    Errors are written without them now, but runs kept in the page's history by an earlier
    version hold the call errors of then (a dead local server's pid, port, temp log path and
    its last lines): served again to a client, they pass through here first.
    """
    for pattern, replacement in _MACHINE_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


CLIENT_TEXT_CHARS = 100
"""How much of a client's string an error message repeats (a model name, a field name)."""

LABEL_CHARS = 48
"""The most characters of a model's label in an explained failure: with it, each fix fits the
`ERROR_CHARS` a failed call's line keeps (`describe_error`)."""


def clip(text: str, limit: int = CLIENT_TEXT_CHARS, mark: str = "…") -> str:
    """Return `text` cut to at most `limit` characters, ending with `mark` where it was cut.

    The cut falls between whole characters as drawn (`boundary`): never between a letter
    and its accent, inside an emoji sequence or a flag. A limit shorter than `mark` keeps
    the text's beginning unmarked: the mark alone would go over it.
    """
    if len(text) <= limit:
        return text
    if limit < len(mark):
        return text[: boundary(text, limit)]
    return text[: boundary(text, limit - len(mark))].rstrip() + mark


def one_line(text: object, limit: int, *, mark: bool = False) -> str:
    """Return `text` written on one line (each run of white space one space), cut to `limit`.

    What a report or a log line quotes (an error, a question, an answer) may span lines; it
    is cut between whole characters as drawn, marked with "…" (`clip`) where `mark` is set.
    """
    line = " ".join(str(text).split())
    return clip(line, limit) if mark else beginning(line, limit)


GENERIC_MESSAGES = frozenset({"Connection error."})
"""Provider messages that say nothing of the cause (the openai SDK's for every connection
that failed): the innermost cause is written after them."""

EMPTY_STREAM = "No generations found in stream."
"""LangChain's message for a streamed call whose stream held no answer at all."""


def describe_error(error: BaseException, limit: int = ERROR_CHARS) -> str:
    """Return ``"Type: message"`` for a failed call, redacted, on one line, at most `limit`.

    Where the message alone does not say what happened, it says more: a generic message
    gets its innermost cause ("Connection error." alone does not tell a refused connection
    from an unknown host or a TLS failure); an answer that is not JSON shows how it begins
    (an HTML error page from a proxy, say); an empty stream says what to check.
    """
    message = str(error).strip()
    text = f"{type(error).__name__}: {message}"
    if message in GENERIC_MESSAGES:
        root = error
        while root.__cause__ is not None:
            root = root.__cause__
        if root is not error and str(root).strip():
            text = f"{text.rstrip('.')} ({str(root).strip()})"
    elif isinstance(error, json.JSONDecodeError) and error.doc.strip():
        text = (
            f"{type(error).__name__}: the answer is not JSON, it begins "
            f"{beginning(error.doc.strip(), 80)!r} ({message})"
        )
    elif message == EMPTY_STREAM:
        text += " The server's stream held no answer: check that it serves the OpenAI chat API."
    return summarize_error(without(text, _request_secrets(error)), limit)


def _request_secrets(error: BaseException) -> list[str]:
    """Return the credential query values of the request `error` (or its causes) was about.

    The transport removes them from an error response's body (status 400 and up), but an
    upstream may answer 200 and then send an error event in its stream, repeating the key
    bare; the openai SDK raises that with the request it came on (``error.request``). They
    are removed here, before the text is cut, so no part of a key is left at the cut.
    """
    secrets: set[str] = set()
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        url = getattr(getattr(current, "request", None), "url", None)
        if url is not None:
            secrets.update(url_secrets(str(url)))
        current = current.__cause__ or current.__context__
    return sorted(secrets, key=len, reverse=True)
