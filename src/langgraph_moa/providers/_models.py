"""Model specs and their lazy resolution into chat models.

A spec is what a user writes: a `BaseChatModel` instance, a provider string understood by
`langchain.chat_models.init_chat_model` (``"openai:gpt-4o-mini"``,
``"together:Qwen/Qwen2.5-72B-Instruct-Turbo"``), an OpenAI-compatible endpoint (vLLM, Ollama,
llama.cpp) given as ``OpenAIEndpoint`` or as the string ``"model@http://host:port/v1"``, or a
``"local:<name>"`` model served by this package's embedded runtime.

Specs are checked when a config is built (so a typo fails at once) but turned into chat models
only when a run starts, so building a graph never needs a network or an API key.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import queue
import re
import sys
import threading
import unicodedata
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from langchain_core.language_models import BaseChatModel
from pydantic import BaseModel, ConfigDict, Field, field_validator

from langgraph_moa._redact import (
    key_spans,
    redact_spec,
    redact_url,
    redact_urls_in,
    redacted_repr,
    register_secret,
    shown_value,
    url_secrets,
    without,
)
from langgraph_moa.errors import MissingAPIKeyError, ModelResolutionError
from langgraph_moa.providers import _table
from langgraph_moa.providers._table import (
    LOCAL_PREFIX,
    _langchain_providers,
    known_providers,
    provider_of,
)
from langgraph_moa.transport._call_loop import (
    leave_the_parents_loop,
    loop_of_this_thread,
    running_call_loop,
)
from langgraph_moa.transport._completions import lean_completions
from langgraph_moa.transport._http import own_async_client, own_sync_client
from langgraph_moa.transport._net import is_loopback_url


class OpenAIEndpoint(BaseModel):
    """A server that speaks the OpenAI chat-completions protocol (vLLM, Ollama, llama.cpp).

    The key is never stored in the config: `api_key_env` names the environment variable that
    holds it, so configs can be shared and traced without leaking secrets.
    """

    # A refused URL may hold a password: pydantic's message must not repeat it.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    base_url: str = Field(description="Root of the API, e.g. http://127.0.0.1:8080/v1")
    model: str = Field(min_length=1, description="Model name the server expects.")
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the key, if any."
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return checked_base_url(value)

    @field_validator("model")
    @classmethod
    def _printable_model(cls, value: str) -> str:
        return printable(value, "the endpoint's model name")

    def label(self) -> str:
        """Return the spec in its string form, ``model@base_url``."""
        return f"{self.model}@{self.base_url}"

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Show `base_url` with its credential parameters redacted (`redact_spec`).

        ``repr()`` and ``str()`` of a config (a debugger, a failed test, a log line's
        ``{cfg!r}``) showed the URL whole, ``?key=...`` included; the calls still use it.
        """
        for name, value in super().__repr_args__():
            yield name, redact_spec(value) if name == "base_url" else value


def checked_base_url(value: str) -> str:
    """Return an endpoint's URL with its scheme and host lower-cased, or refuse it in one sentence.

    Both are case-insensitive, and the label (``model@url``) is what a run's endpoint is
    compared by (`moa serve`'s model policy, a LangGraph entry point's `check_endpoints`): the
    operator's ``http://Models.Lan/v1`` named as ``http://models.lan/v1`` was refused.

    A prefix check let through URLs with no host (``http://``, ``https:///v1``), which
    failed only at the first call, and refused ``HTTPS://`` with a misleading message. A
    user name or password in the URL is refused: it would show in every label, record,
    event and trace that names the endpoint, so the key belongs in ``api_key_env``. The
    messages do not repeat the URL (a refused one may hold a password).
    """
    fix = "write it as http://host:port/v1"
    if any(char.isspace() for char in value):
        raise ValueError(f"base_url must not contain spaces or other whitespace: {fix}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        raise ValueError(f"base_url is not a valid URL (check its host and port): {fix}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"base_url must start with http:// or https://: {fix}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "base_url must not hold a user name or password: put the key in an environment "
            "variable and name that variable in api_key_env"
        )
    if not parts.hostname:
        raise ValueError(f"base_url has no host: {fix}")
    # No user name or password is left in the netloc: it is the host and port alone.
    return urlunsplit(parts._replace(scheme=scheme, netloc=parts.netloc.lower())).rstrip("/")


_JOINERS = frozenset("\u200c\u200d")
"""Zero-width non-joiner and joiner: format characters that belong to a word's spelling."""


def _allowed(char: str) -> bool:
    """Tell whether `char` may stand in a printed name (see `printable`)."""
    # Space separators (no-break, narrow, ideographic space) print as a space; Python's
    # `isprintable` counts only the ASCII one. Line and paragraph separators stay refused.
    return char.isprintable() or char in _JOINERS or unicodedata.category(char) == "Zs"


def printable(value: str, what: str) -> str:
    """Return `value`, or refuse one that holds a control or format character.

    A model name or label is printed on terminals and written to logs, events and traces:
    an escape sequence in one (ESC, then ``[2J``) reached the terminal of `moa run` as written,
    and a NUL or a right-to-left override hides what is really called.

    The zero-width joiner and non-joiner are kept: they are part of how Persian, Indic
    scripts and emoji sequences are spelt (a Persian display name was refused). So are the
    spaces of other widths (a no-break space in a French label was refused).

    Raises:
        ValueError: naming the character, escaped.
    """
    bad = next((c for c in value if not _allowed(c)), None)
    if bad is not None:
        raise ValueError(
            f"{what} holds a control or invisible character ({bad!r}): remove it, names are printed"
        )
    return value


ModelSpec = str | OpenAIEndpoint | BaseChatModel
"""Anything that names a chat model; see the module docstring."""


REMEMBERED_SPEC_CHARS = 512
"""The longest endpoint spec `parse_endpoint_string` remembers."""


def parse_endpoint_string(spec: str) -> OpenAIEndpoint | None:
    """Read ``"model@http://host/v1"`` as an endpoint; return None for other strings.

    A spec of up to `REMEMBERED_SPEC_CHARS` characters is remembered (the endpoint is
    frozen): every model call reads its spec a few times (the model cache's key, the shared
    client, the timeout), and building the endpoint anew each time was 16 of the function
    calls the package made per model call. A longer one, which no real endpoint needs, is
    read anew each time, so that the strings a `moa serve` client sends, refused or not,
    cannot fill the memory.
    """
    if len(spec) <= REMEMBERED_SPEC_CHARS:
        return _remembered_endpoint(spec)
    return _endpoint_of(spec)


@functools.lru_cache(maxsize=1024)
def _remembered_endpoint(spec: str) -> OpenAIEndpoint | None:
    return _endpoint_of(spec)


_ENDPOINT_AT = re.compile(r"@(?=https?://)", re.IGNORECASE)
"""The ``@`` that starts an endpoint's URL in ``model@http://host/v1`` (any scheme case)."""


def _endpoint_of(spec: str) -> OpenAIEndpoint | None:
    at = _ENDPOINT_AT.search(spec)
    if at is None:
        return None
    return OpenAIEndpoint(model=spec[: at.start()], base_url=spec[at.end() :])


def split_provider(spec: str) -> tuple[str, str]:
    """Split ``provider:model`` into its parts, inferring the provider as LangChain does.

    Raises:
        ModelResolutionError: the prefix is unknown or no provider can be inferred; the
            message lists the prefixes that work.
    """
    providers, infer_provider = _langchain_providers()
    prefix, sep, name = spec.partition(":")
    if sep:
        provider = prefix.replace("-", "_").lower()
        if provider == LOCAL_PREFIX or provider in providers:
            if not name:
                raise ModelResolutionError(
                    f"Model spec {redacted_repr(spec)} has no model name after '{prefix}:'; "
                    f"write it as '{prefix}:<model>'."
                )
            return provider, name
    # LangChain's guess warns of a guess it will change (a bare "gemini-..." name) repeating
    # what it was given: the spec written without its URL's key, which the guess, by the
    # name's beginning, never reads.
    inferred = infer_provider(redact_spec(spec))
    if inferred is None:
        raise ModelResolutionError(
            f"Unknown model provider in {redacted_repr(spec)}. Write it as 'provider:model' "
            f"with one of these providers: {', '.join(known_providers())}; or give an "
            "OpenAI-compatible endpoint as 'model@http://host:port/v1'."
        )
    return inferred, spec


def validate_spec(spec: Any) -> ModelSpec:
    """Check a spec without building anything; return it as the config keeps it.

    A provider prefix is returned as `split_provider` reads it (lower case, ``-`` as
    ``_``), so every later check of the prefix agrees with the model that is built:
    ``"Local:x"`` built a local model, but `RoleConfig.is_local` and
    `MoAConfig.local_model_names` looked for ``"local:"`` and missed it (its server was
    then started on the event loop, its context and price unknown).
    """
    if isinstance(spec, (BaseChatModel, OpenAIEndpoint)):
        return spec
    if isinstance(spec, dict):
        return OpenAIEndpoint.model_validate(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            "a model must be a BaseChatModel, a 'provider:model' string, "
            f"or an endpoint {{base_url, model}}; got {shown_value(spec)}"
        )
    spec = printable(spec.strip(), "a model spec")
    if parse_endpoint_string(spec) is None:
        provider, name = split_provider(spec)
        if name != spec:  # an explicit prefix: written as it is resolved ("Local:" -> "local:")
            return f"{provider}:{name}"
    return spec


def describe_model(spec: ModelSpec) -> str:
    """Return a short, secret-free label for a spec (used in provenance and traces).

    An endpoint URL's credential query parameters (``?key=...``) are shown as redacted: the
    label is written into records, events and traces, while the calls use the spec itself.
    Two keys to one endpoint (in its URL or its `api_key_env`) thus share a label; the call
    cache adds a digest of the spec and key (`run._calls.cache_name`), so they never share
    cached answers.
    """
    if isinstance(spec, str):  # remembered up to REMEMBERED_SPEC_CHARS, as an endpoint is
        return redact_spec(spec) if spec[REMEMBERED_SPEC_CHARS:] else _shown(spec)
    if isinstance(spec, OpenAIEndpoint):
        label = spec.label()
        return redact_spec(label) if label[REMEMBERED_SPEC_CHARS:] else _shown(label)
    for attr in ("model_name", "model", "model_id"):
        value = getattr(spec, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(spec).__name__


@functools.lru_cache(maxsize=1024)
def _shown(spec: str) -> str:
    """Return `redact_spec` of a spec, remembered (the caller bounds its length).

    A role's label names its model on every call, and the regular expression's pass was ten
    function calls per model call. The caller measures the spec by a slice, which costs no
    function call, where ``len`` does.
    """
    return redact_spec(spec)


def cache_identity(spec: ModelSpec) -> Any:
    """Return what tells two specs' built clients apart, for the model cache's key.

    Every field that changes the client counts: an endpoint's URL, model and key variable
    (the label alone would let a keyless spelling of a keyed endpoint share its client);
    the call parameters (timeouts, headers, limits) are the key's other half. An instance
    is itself (by identity).
    """
    if isinstance(spec, BaseChatModel):
        return ("instance", id(spec))
    endpoint = spec if isinstance(spec, OpenAIEndpoint) else parse_endpoint_string(spec)
    if endpoint is not None:
        return ("endpoint", endpoint.base_url, endpoint.model, endpoint.api_key_env)
    return ("spec", spec)


def same_model(a: ModelSpec, b: ModelSpec) -> bool:
    """Tell whether two specs name the same model (instances compare by identity)."""
    if isinstance(a, BaseChatModel) or isinstance(b, BaseChatModel):
        return a is b
    return describe_model(a) == describe_model(b)


# --- resolution -----------------------------------------------------------------------------


def http_client_key(spec: ModelSpec) -> str | None:
    """Name the endpoint whose async HTTP client a model of `spec` can share.

    None when the model's integration builds its own clients (any provider not built on
    langchain-openai) or when the spec is an instance, whose clients belong to its owner.
    """
    if isinstance(spec, BaseChatModel):
        return None
    if isinstance(spec, OpenAIEndpoint):
        return spec.base_url
    endpoint = parse_endpoint_string(spec)
    if endpoint is not None:
        return endpoint.base_url
    provider, _ = split_provider(spec)
    return f"{provider}:" if provider_of(provider).shares_http_client else None


def has_own_timeout(spec: ModelSpec) -> bool:
    """Tell whether the model this package builds for `spec` takes a ``timeout`` parameter.

    Those are the models on langchain-openai's client (endpoints, local models, OpenAI,
    Together): their ``timeout`` bounds each HTTP request, so a call given up on really
    stops. An instance the user built keeps whatever timeout its owner gave it.
    """
    return not isinstance(spec, BaseChatModel) and http_client_key(spec) is not None


def with_call_timeout(
    timeout: float | None, spec: ModelSpec, params: dict[str, Any]
) -> dict[str, Any]:
    """Give a model this package builds the call timeout as its own HTTP timeout.

    Only where it takes one (`has_own_timeout`): then a call given up on really stops.
    """
    if timeout is None or not has_own_timeout(spec):
        return params
    return {**params, "timeout": timeout}


def _chat_openai_compatible(
    endpoint: OpenAIEndpoint,
    params: dict[str, Any],
    http_async_client: Any,
    http_client: Any = None,
) -> BaseChatModel:
    """Build a client for an OpenAI-compatible server.

    `BaseChatOpenAI` (the class partner packages such as langchain-together build on) sends
    ``max_tokens`` as is; `ChatOpenAI` renames it ``max_completion_tokens``, which vLLM
    accepts but llama.cpp's server ignores, so a capped call would run to the end of the
    context.
    """
    from langchain_openai.chat_models.base import BaseChatOpenAI

    key = os.environ.get(endpoint.api_key_env) if endpoint.api_key_env else None
    if endpoint.api_key_env and not key:
        raise MissingAPIKeyError(describe_model(endpoint), endpoint.api_key_env)
    register_secret(key)
    loopback = is_loopback_url(endpoint.base_url)
    base_url, query = _split_query(endpoint.base_url)
    if query:
        params = {**params, "default_query": {**query, **(params.get("default_query") or {})}}
    if http_client is None:
        # langchain-openai's own client mounts a transport that disables the proxy variables
        # (and would honour them for a loopback server); ours honours them for remote hosts.
        http_client = own_sync_client(loopback=loopback)
    model = BaseChatOpenAI(
        model=endpoint.model,
        base_url=base_url,
        api_key=key or "not-needed",  # type: ignore[arg-type]
        stream_usage=True,
        max_retries=0,  # the graph's RetryPolicy retries, visibly; the client must not
        http_async_client=http_async_client or own_async_client(loopback=loopback),
        http_client=http_client,
        **params,
    )
    if key is None:
        _without_account_headers(model)
    _traced_without_url_key(model, endpoint.base_url)
    return model


def _split_query(url: str) -> tuple[str, dict[str, Any]]:
    """Split an endpoint URL into the base the SDK joins paths onto and its query parameters.

    The SDK appends ``chat/completions`` to the base URL's path and query as one string, so
    ``/v1?key=K`` was called as ``/v1/?key=Kchat/completions``: the wrong path, and a key
    the server does not know. The parameters are sent on every request instead (a repeated
    one with all its values), as the URL gave them.
    """
    parts = urlsplit(url)
    if not parts.query:
        return url, {}
    query: dict[str, Any] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in query:
            query[name] = value
        else:
            kept = query[name]
            query[name] = [*(kept if isinstance(kept, list) else [kept]), value]
    return urlunsplit(parts._replace(query="")), query


def _traced_without_url_key(model: BaseChatModel, base_url: str) -> None:
    """Make a tracer record the model with its URL's credential parameters redacted.

    A tracer (LangSmith's) records every chat-model run with the model as LangChain
    serializes it, which for this class is its ``repr``: the base URL and the query
    parameters split from it (`_split_query`), a key (``?key=...``) included. LangChain
    computes that record once per model (a cached property), so it is computed here,
    redacted; the calls send the parameters as given.
    """
    if not key_spans(base_url):
        return
    from langchain_core.load import dumpd

    secrets = url_secrets(base_url)  # the record holds them apart from the URL too
    model.__dict__["_serialized"] = redact_urls_in(
        dumpd(model), lambda text: redact_url(without(text, secrets))
    )


def _without_account_headers(model: BaseChatModel) -> None:
    """Send no OpenAI organization or project header from a keyless endpoint's model.

    The openai client fills both from the environment (``OPENAI_ORG_ID``,
    ``OPENAI_PROJECT_ID``) whatever the host, so a keyless endpoint (a local server, or one a
    client of `moa serve` named) would learn the server's account ids. The clients read the
    fields on every request, so clearing them after construction is enough.
    """
    for client in (getattr(model, "root_client", None), getattr(model, "root_async_client", None)):
        if client is not None:
            client.organization = None
            client.project = None


def _from_provider_string(
    spec: str, params: dict[str, Any], http_async_client: Any, http_client: Any = None
) -> BaseChatModel:
    provider, name = split_provider(spec)
    if provider == LOCAL_PREFIX:
        # Imported here so that building a config never loads the local runtime.
        from langgraph_moa.local.runtime import local_chat_model

        clients = {"http_async_client": http_async_client}
        if http_client is not None:
            clients["http_client"] = http_client
        return local_chat_model(name, {**params, **clients})
    row = provider_of(provider)
    if row.key_env and not os.environ.get(row.key_env):
        raise MissingAPIKeyError(spec, row.key_env)
    register_secret(os.environ.get(row.key_env) if row.key_env else None)
    from langchain.chat_models import init_chat_model

    if row.client_retries:
        params = {row.client_retries: 0, **params}  # retries belong to the graph, where they show
    if row.shares_http_client:
        params = {"http_async_client": http_async_client or own_async_client(), **params}
        if http_client is not None:  # else each model builds its own (its own TLS setup)
            params = {"http_client": http_client, **params}
    try:
        return init_chat_model(name, model_provider=provider, **params)
    except ImportError as exc:
        raise ModelResolutionError(
            f"Model {redacted_repr(spec)} needs the LangChain integration for '{provider}', "
            f"which is not installed: {exc}. Install it with pip (for example "
            f"langchain-{provider})."
        ) from exc


def _with_limits(model: BaseChatModel, params: dict[str, Any]) -> BaseChatModel:
    """Copy an instance with the role's limits, touching only fields the class declares.

    A copy, so a proposer's token cap never leaks into the aggregator even when both roles
    share one instance.
    """
    fields = type(model).model_fields
    update = {k: v for k, v in params.items() if k in fields and v is not None}
    return model.model_copy(update=update) if update else model


def build_model(
    spec: ModelSpec,
    params: dict[str, Any],
    *,
    http_async_client: Any = None,
    http_client: Any = None,
) -> BaseChatModel:
    """Turn a spec into a chat model with the given call parameters (no network).

    Args:
        spec: The model spec.
        params: Call parameters (temperature, max_tokens, ...); None values are dropped.
        http_async_client: The async HTTP client to use where the integration takes one
            (see `http_client_key`); a new one if None.
        http_client: The sync HTTP client to use there; if None the integration makes its
            own.
    """
    params = {k: v for k, v in params.items() if v is not None}
    if isinstance(spec, BaseChatModel):
        return _with_limits(spec, params)  # the user's model: its clients are left as they are
    if isinstance(spec, OpenAIEndpoint):
        model = _chat_openai_compatible(spec, params, http_async_client, http_client)
    elif (endpoint := parse_endpoint_string(spec)) is not None:
        model = _chat_openai_compatible(endpoint, params, http_async_client, http_client)
    else:
        model = _from_provider_string(spec, params, http_async_client, http_client)
    return lean_completions(model)


_LIVE_CACHES: weakref.WeakSet[ModelCache] = weakref.WeakSet()


_CLOSING: set[asyncio.Future[Any]] = set()
"""Client closes under way: asyncio keeps only weak references to its tasks."""


_RELEASES: queue.SimpleQueue[tuple[Any, ...] | threading.Event] = queue.SimpleQueue()
"""Models gone, put by their finalizers for `_releaser` to count (`_release`)."""
_releaser: threading.Thread | None = None
_releaser_lock = threading.Lock()


def _queue_release(*hook: Any) -> None:
    """Queue a gone model's release, taking no lock (a model's finalizer).

    The garbage collector runs finalizers in whatever thread it runs, also one holding
    another cache's lock (building a model there). A finalizer that took its own cache's
    lock could so wait for a thread that, holding that lock, waited in turn for the first
    one's (freeing one of its models): both hung for ever. `SimpleQueue.put` takes no lock
    a finalizer could wait on (it is made to be called from finalizers).
    """
    _RELEASES.put(hook)


def _start_releaser() -> None:
    global _releaser
    with _releaser_lock:
        if _releaser is None:
            _releaser = threading.Thread(
                target=_release_forever, daemon=True, name="moa model releases"
            )
            _releaser.start()


def _release_forever() -> None:
    """Make the queued releases, in a thread that holds no other lock meanwhile."""
    while True:
        item = _RELEASES.get()
        if isinstance(item, threading.Event):  # `_releases_made`'s mark: all before it are made
            item.set()
            continue
        try:
            _release(*item)
        except Exception:  # reported as a finalizer's error is; the next release is still made
            sys.excepthook(*sys.exc_info())
        del item  # held while waiting for the next one, it kept its client and loop alive


def _releases_made() -> None:
    """Wait until the releases queued before this call are made."""
    _start_releaser()
    mark = threading.Event()
    _RELEASES.put(mark)
    mark.wait()


def _forget_models_after_fork() -> None:
    global _RELEASES, _releaser, _releaser_lock
    _RELEASES, _releaser, _releaser_lock = queue.SimpleQueue(), None, threading.Lock()
    _CLOSING.clear()
    for cache in list(_LIVE_CACHES):
        cache._forget_after_fork()


os.register_at_fork(after_in_child=_forget_models_after_fork)

DEFAULT_CACHE_SIZE = 128
"""Models (one per spec and parameter set) one `ModelCache` keeps per event loop."""

IDLE_LOOPS_KEPT = 4
"""Event loops stopped but not closed whose models one `ModelCache` keeps, the last used."""

KEYS_KEPT = 1024
"""Model keys one `ModelCache` remembers (`ModelCache._key`): a run context per request may
ask for a new temperature each time."""


class _SharedClient:
    """One endpoint's HTTP clients (async and sync) and the number of live models using them.

    The sync client matters for memory: left to itself, each model builds its own (two, for
    some integrations), each with its own TLS setup, about a megabyte apiece.
    """

    __slots__ = ("client", "lock", "loop", "pid", "sync_client", "users")

    def __init__(self, loop: asyncio.AbstractEventLoop | None, key: str) -> None:
        # Local models and loopback endpoints are never proxied (`own_async_client`).
        loopback = key == f"{LOCAL_PREFIX}:" or is_loopback_url(key)
        self.client = own_async_client(loopback=loopback)
        self.sync_client = own_sync_client(loopback=loopback)
        self.loop = loop
        self.pid = os.getpid()
        """The process whose models count and close it: a forked child's copy is left alone."""
        self.users = 0
        self.lock = threading.RLock()
        """Guards `users` when the cache is gone and its models go in several threads.

        Taken by `_release` alone, never in a finalizer (`_queue_release`)."""


class _Bucket:
    """The models and HTTP clients of one event loop (or of sync calls)."""

    __slots__ = ("__weakref__", "clients", "models", "used")

    def __init__(self) -> None:
        # The spec is kept with its model: an instance spec is keyed by its id, which must
        # not be reused by another object while the entry exists.
        self.models: OrderedDict[tuple[Any, ...], tuple[ModelSpec, BaseChatModel]] = OrderedDict()
        self.clients: dict[str, _SharedClient] = {}
        self.used = 0
        """When its loop last asked for a model (`ModelCache`'s count of lookups)."""


class ModelCache:
    """Builds each (spec, parameters) model once per event loop, within a bounded memory.

    HTTP clients of langchain-openai bind to the event loop that first used them, so a model
    built under one `asyncio.run` fails under the next; keying by loop avoids that, and the
    models of a closed loop, or of a stopped one but the last few used, go when another
    loop first builds one (`_bucket_of`).

    Within a loop, the models of one endpoint share one async HTTP client (one connection
    pool): a model per distinct temperature costs a few kilobytes, not a client of its own.
    At most `size` models are kept, least recently used dropped first; when the last model
    using an endpoint's client is gone (dropped, or the cache itself gone, and no call still
    holding it), the client is closed on its loop, soon after: a model gone is counted by a
    thread of its own (`_queue_release`).
    """

    def __init__(self, size: int = DEFAULT_CACHE_SIZE) -> None:
        """Start empty; models are built on first use."""
        self.size = size
        # Reentrant: a model that cannot be built gives its count back while `get` holds it.
        self._lock = threading.RLock()
        self._sync = _Bucket()
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Bucket] = (
            weakref.WeakKeyDictionary()
        )
        self._lookups = itertools.count(1)
        self._keys: dict[tuple[Any, ...], tuple[tuple[Any, ...], dict[str, Any], ModelSpec]] = {}
        """`_key`'s answers, each with its spec."""
        _LIVE_CACHES.add(self)

    def _forget_after_fork(self) -> None:
        """Drop every model and client, in a forked child.

        The child runs none of its parent's loops, and the clients hold the parent's
        connections: the models dropped here leave them to the parent (`_release`), and
        their loops' epoll sets too (`leave_the_parents_loop`), before the models go.
        """
        for loop in list(self._by_loop):
            leave_the_parents_loop(loop)
        self._lock = threading.RLock()
        self._sync = _Bucket()
        self._by_loop = weakref.WeakKeyDictionary()

    def get(
        self, spec: ModelSpec, params: dict[str, Any], timeout: float | None = None
    ) -> BaseChatModel:
        """Return the model for `spec` with `params`, building it if needed.

        `timeout`: the call timeout, given to a model that takes one as its own HTTP timeout
        (`with_call_timeout`).
        """
        try:  # the model's key, as `_key` made it for these arguments before
            key, params, _ = self._keys[
                spec if type(spec) is str else id(spec),
                timeout,
                tuple(params.items()),
                _table.current.version,
            ]
        except (KeyError, TypeError):  # new, or a value that cannot be hashed
            key, params = self._key(spec, params, timeout)
        loop = loop_of_this_thread()
        with self._lock:
            bucket = self._sync if loop is None else self._bucket_of(loop)
            if key in bucket.models:
                bucket.models.move_to_end(key)
                return bucket.models[key][1]
            client_key = http_client_key(spec)
            shared = hook = None
            if client_key is not None:
                shared = bucket.clients.get(client_key) or _SharedClient(loop, client_key)
                bucket.clients[client_key] = shared
                # Counted before the build: the garbage collector runs at any allocation,
                # and an evicted model of this client it frees meanwhile must not find
                # itself the last user and close the client the new model is built on.
                with shared.lock:
                    shared.users += 1
                # Weakly: the cache holds the model, so a hook holding the cache kept both.
                hook = (weakref.ref(self), weakref.ref(bucket), client_key, shared)
                if _releaser is None:
                    _start_releaser()
            try:
                model = build_model(
                    spec,
                    params,
                    http_async_client=shared and shared.client,
                    http_client=shared and shared.sync_client,
                )
            except BaseException:
                if hook is not None:
                    _release(*hook)  # no model came of the count
                raise
            if hook is not None:
                weakref.finalize(model, _queue_release, *hook)
            bucket.models[key] = (spec, model)
            while len(bucket.models) > self.size:
                bucket.models.popitem(last=False)
            return model

    def _key(
        self, spec: ModelSpec, params: dict[str, Any], timeout: float | None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Return the model's key in a bucket and its parameters, remembered for `get`.

        Every model call asks for its model: building the key (the spec's identity, each
        parameter's ``repr``, sorted) and reading whether the model takes a timeout were
        about 25 function calls per model call, for the same few answers. They are
        remembered by the spec (a string by its text, anything else by its identity, kept
        alive here so that the id is not reused), the timeout, the parameters as given and
        the provider table's version (a row registered since decides the timeout anew);
        parameters that compare equal (``1`` and ``1.0``) are one model, whose fields read
        them alike. At most `KEYS_KEPT` are kept; past that they are forgotten and built
        anew. A key names no loop and holds no client: the bucket it is looked up in does.
        The parameters are kept as a copy: the caller's dict, changed later, would build
        another model under this key.
        """
        given = (
            spec if type(spec) is str else id(spec),
            timeout,
            tuple(params.items()),
            _table.current.version,
        )
        params = {**with_call_timeout(timeout, spec, params)}
        key = (cache_identity(spec), tuple(sorted([(k, repr(v)) for k, v in params.items()])))
        if len(self._keys) >= KEYS_KEPT:
            self._keys.clear()
        try:
            self._keys[given] = (key, params, spec)
        except TypeError:  # a value that cannot be hashed: its key is built at every call
            pass
        return key, params

    def _bucket_of(self, loop: asyncio.AbstractEventLoop) -> _Bucket:
        """Return the loop's bucket; a new loop's drops those of loops that will not run.

        Weak keys alone never let a loop go: its models' clients hold it. So each new loop
        (each `asyncio.run` of a graph kept across runs) would keep one more set of models;
        a closed loop's clients were closed with it, and its models can serve no call. A
        loop stopped but never closed (``run_until_complete`` on a loop left open) kept its
        models as long as the cache lived: all but the `IDLE_LOOPS_KEPT` last used go too,
        their clients are closed when they run again, and their models are built anew if
        they do. Not every stopped loop: two loops run in turn (two worker threads, each
        with a loop it runs per request) dropped each other's models at every run.
        """
        bucket = self._by_loop.get(loop)
        if bucket is None:
            idle = [old for old in self._by_loop if not old.is_running()]
            stopped = [old for old in idle if not old.is_closed()]
            stopped.sort(key=lambda old: self._by_loop[old].used)
            kept = set(stopped[-IDLE_LOOPS_KEPT:])
            for old in idle:
                if old not in kept:
                    del self._by_loop[old]
            bucket = self._by_loop[loop] = _Bucket()
        bucket.used = next(self._lookups)
        return bucket

    def stats(self) -> dict[str, int]:
        """Count the models and HTTP clients held now, over every event loop.

        The releases of models already gone are made first (`_queue_release`).
        """
        _releases_made()
        with self._lock:
            buckets = [self._sync, *self._by_loop.values()]
            return {
                "models": sum(len(b.models) for b in buckets),
                "clients": sum(len(b.clients) for b in buckets),
            }


def _release(
    cache_ref: weakref.ref[ModelCache],
    bucket_ref: weakref.ref[_Bucket],
    client_key: str,
    shared: _SharedClient,
) -> None:
    """Count a model gone; close its endpoint's client once no model uses it.

    It holds its cache and bucket weakly: they hold the model, and a finalizer holding them
    kept the cache, its models and their open connections alive for ever (a notebook cell
    that builds a graph, re-run, kept one more of each). Once the cache is gone its models
    go with it, and the client closes as the last of them (or of the calls holding them)
    goes.

    In a forked child, the parent's models (dropped by `_forget_after_fork`, or later) count
    nothing: their client is the parent's to close, and its lock may have been held by
    another thread of the parent at the fork, which the child has not, so it waited forever.
    """
    if shared.pid != os.getpid():
        return
    cache = cache_ref()
    with cache._lock if cache is not None else nullcontext(), shared.lock:
        shared.users -= 1
        if shared.users > 0:
            return
        bucket = bucket_ref()
        if bucket is not None and bucket.clients.get(client_key) is shared:
            del bucket.clients[client_key]
    _close(shared)


def _closed(task: asyncio.Task[None]) -> None:
    """Forget a finished close, reading its error.

    A close that failed because its loop closed meanwhile (at interpreter exit) has
    nothing left to close; left unread, its error was printed as "Task exception was
    never retrieved" after a clean test run.
    """
    _CLOSING.discard(task)
    if not task.cancelled():
        task.exception()


def _close(shared: _SharedClient) -> None:
    """Close the client on its own loop (an async client cannot be closed elsewhere).

    A client of sync runs was used, if at all, on the call loop (`_call_loop`); one never
    used, or whose loop has ended, has nothing to close and is left to the garbage
    collector.
    """
    shared.sync_client.close()
    loop = shared.loop or running_call_loop()
    if loop is None or loop.is_closed():
        return

    def start() -> None:
        task = asyncio.ensure_future(shared.client.aclose())
        _CLOSING.add(task)
        task.add_done_callback(_closed)

    try:
        loop.call_soon_threadsafe(start)
    except RuntimeError:  # the loop closed meanwhile
        pass
