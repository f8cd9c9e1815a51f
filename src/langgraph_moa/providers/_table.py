"""The provider table: everything the package knows about a model provider, in one row each.

Model building (key pre-check, switching off the client's own retries, sharing the HTTP
client), call timeouts, retry decisions and accounting (finish reason, answering model) all
read this table, so a new provider is one `Provider` row passed to `register_provider`.

A provider `init_chat_model` knows but the table does not still works (`provider_of` returns a
default row); it just gets no key check before the first call and keeps its client's retries.

Error families: the SDKs of OpenAI, Anthropic, Groq, Together and others are generated from
one template and share their error classes' names (``APITimeoutError``, ``APIConnectionError``,
``APIStatusError``). A row names its SDK module (`sdk`); errors are recognised by those names in
every SDK that is already imported, so checking an error never imports a provider's package.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass

from langgraph_moa._forklock import ForkSafeLock

LOCAL_PREFIX = "local"


@dataclass(frozen=True)
class Provider:
    """One provider's row."""

    prefix: str
    """The ``prefix:`` of its model specs (``init_chat_model``'s provider name)."""
    key_env: str | None = None
    """The environment variable its key is read from, checked before the first call."""
    client_retries: str | None = None
    """The client parameter that sets its own retries (set to 0: the graph retries, visibly)."""
    shares_http_client: bool = False
    """Built on langchain-openai: takes the package's async HTTP client (and its timeout)."""
    sdk: str | None = None
    """Its SDK's module, whose errors tell timeouts and retryable statuses apart."""
    finish_reason_key: str = "finish_reason"
    """Where its responses say why generation stopped (``response_metadata``)."""
    model_name_key: str = "model_name"
    """Where its responses name the model that answered (``response_metadata``)."""

    @property
    def own_timeout(self) -> bool:
        """Its models take the package's timeout per HTTP request (so a given-up call stops)."""
        return self.shares_http_client


@dataclass(frozen=True)
class _Table:
    """The rows and what is read from them on every call, never changed once made.

    A run reads the table on every call (its response keys) and on every error (its SDKs)
    while another thread may register a row: each change makes a new `_Table` (`_change`),
    so a reader iterates rows no other thread changes, and reads keys made from those very
    rows, never ones computed from the rows before a change and kept after it.
    """

    rows: dict[str, Provider]
    finish_reason_keys: tuple[str, ...]
    model_name_keys: tuple[str, ...]
    sdks: tuple[str, ...]
    version: int
    """A number that changes whenever a row is added, replaced or removed (`table_version`)."""


current = _Table({}, ("finish_reason",), ("model_name",), (), 0)
"""The table now. Read as ``_table.current`` where it is read, never imported by name: each
change rebinds it. A run reads its response keys (``current.finish_reason_keys``,
``current.model_name_keys``) on every model call as attributes, no function call for each."""
_writing = ForkSafeLock()
"""Taken by changes alone: two registered at once each keep the other's row. A forked child
gets it unlocked, and the table whole (it is swapped in one assignment)."""


def _change(edit: Callable[[dict[str, Provider]], object]) -> None:
    """Make the table `edit` leaves of a copy of the rows, and its keys."""
    global current
    with _writing:
        rows = dict(current.rows)
        edit(rows)
        current = _Table(
            rows,
            tuple(dict.fromkeys(["finish_reason", *(r.finish_reason_key for r in rows.values())])),
            tuple(dict.fromkeys(["model_name", *(r.model_name_key for r in rows.values())])),
            tuple(sorted({r.sdk for r in rows.values() if r.sdk})),
            current.version + 1,
        )


def table_version() -> int:
    """Return a number that changes whenever a row is added, replaced or removed.

    Models are built by the table's rows (key check, client retries, shared client) and
    kept with the graph that built them: a graph kept across a change (`MoAChatModel`'s
    shared graphs) would go on calling the models of the old row, so its key holds this.
    """
    return current.version


def register_provider(row: Provider) -> Provider:
    """Add (or replace) a provider's row; its prefix must be one `init_chat_model` builds.

    The table only describes providers: building their models is `init_chat_model`'s. A
    row for any other prefix would never be read (no ``"myprov:<model>"`` spec validates),
    so it is refused here rather than at the first config that names it.
    """
    if not isinstance(row, Provider):
        raise TypeError(
            f"register_provider() takes a `Provider` row, got {row!r}: write "
            "register_provider(Provider('<prefix>', ...))"
        )
    if row.prefix not in known_providers():
        raise ValueError(
            f"provider prefix {row.prefix!r} is not one init_chat_model builds, so no "
            f"'{row.prefix}:<model>' spec could use its row: give your model as a "
            "BaseChatModel instance in the config (or an OpenAI-compatible endpoint as "
            "'model@http://host:port/v1'), or use one of: " + ", ".join(known_providers())
        )
    return _add(row)


def _add(row: Provider) -> Provider:
    _change(lambda rows: rows.update({row.prefix: row}))
    return row


def _langchain_providers() -> tuple[Collection[str], Callable[[str], str | None]]:
    """Return the providers `init_chat_model` knows and its guess of a bare name's provider.

    These are private names of ``langchain.chat_models.base`` (checked in langchain 1.4.7):
    LangChain has no public way to list its providers or to infer one without building the
    model, and a spec must be checked when a config is validated, long before any model is
    built (with no key set, and without importing every provider's package). They are read
    here and nowhere else; ``tests/unit_tests/test_models.py`` pins what is relied on, and
    that it agrees with the public `init_chat_model`, so an upgrade that changes them fails
    there first.
    """
    from langchain.chat_models.base import (
        _BUILTIN_PROVIDERS,
        _attempt_infer_model_provider,
    )

    return _BUILTIN_PROVIDERS, _attempt_infer_model_provider


def known_providers() -> list[str]:
    """Return the provider prefixes `init_chat_model` understands, plus ``local``."""
    providers, _ = _langchain_providers()
    return sorted([*providers, LOCAL_PREFIX])


def unregister_provider(prefix: str) -> None:
    """Remove a provider's row (for tests that register a toy one)."""
    _change(lambda rows: rows.pop(prefix, None))


for _row in (
    Provider(LOCAL_PREFIX, shares_http_client=True, sdk="openai"),
    Provider("openai", "OPENAI_API_KEY", "max_retries", shares_http_client=True, sdk="openai"),
    Provider("azure_openai", None, "max_retries", shares_http_client=True, sdk="openai"),
    Provider("together", "TOGETHER_API_KEY", "max_retries", shares_http_client=True, sdk="openai"),
    Provider(
        "anthropic",
        "ANTHROPIC_API_KEY",
        "max_retries",
        sdk="anthropic",
        finish_reason_key="stop_reason",
        model_name_key="model",
    ),
    Provider("groq", "GROQ_API_KEY", "max_retries", sdk="groq"),
    Provider("fireworks", "FIREWORKS_API_KEY", "max_retries", sdk="openai"),
    Provider("deepseek", "DEEPSEEK_API_KEY", "max_retries", sdk="openai"),
    Provider("xai", "XAI_API_KEY", "max_retries", sdk="openai"),
    Provider("openrouter", "OPENROUTER_API_KEY", "max_retries", sdk="openai"),
    Provider("mistralai", "MISTRAL_API_KEY", "max_retries", model_name_key="model"),
    Provider("google_genai", "GOOGLE_API_KEY", "max_retries"),
):
    _add(_row)  # no check: shipped rows are held to LangChain's providers by a unit test


def provider_of(prefix: str) -> Provider:
    """Return a provider's row; a default row (no key check, no switches) if it has none."""
    return current.rows.get(prefix) or Provider(prefix)


def providers() -> list[Provider]:
    """Return every row, sorted by prefix."""
    return sorted(current.rows.values(), key=lambda row: row.prefix)


def _loaded_sdks() -> list[object]:
    return [sys.modules[name] for name in current.sdks if name in sys.modules]


def _sdk_errors(name: str) -> tuple[type[BaseException], ...]:
    found = (getattr(sdk, name, None) for sdk in _loaded_sdks())
    return tuple(e for e in found if isinstance(e, type) and issubclass(e, BaseException))


def is_sdk_timeout(error: BaseException) -> bool:
    """Tell whether a provider's client gave up waiting (the timeout this package set)."""
    return isinstance(error, _sdk_errors("APITimeoutError"))


def retryable_status(status: int) -> bool:
    """Tell whether an HTTP error status is worth a retry: 408, 409, 429 and 5xx."""
    return status in (408, 409, 429) or status >= 500


def sdk_retryable(error: BaseException) -> bool | None:
    """Classify a provider SDK's error: True or False when it is one, None when it is not.

    Timeouts, dropped connections, 408, 409, 429 and 5xx are worth retrying; other statuses
    (bad request, authentication, not found) cannot succeed on a second try.
    """
    if isinstance(error, _sdk_errors("APITimeoutError") + _sdk_errors("APIConnectionError")):
        return True
    if isinstance(error, _sdk_errors("APIStatusError")):
        return retryable_status(getattr(error, "status_code", 0))
    if isinstance(error, _sdk_errors("APIResponseValidationError")):
        return True
    return None
