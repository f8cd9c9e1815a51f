"""Which models a client may name, and turning a request into a run (`_Preparer`)."""

import asyncio
import json
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, convert_to_messages
from langchain_core.runnables import RunnableConfig
from pydantic import (
    ValidationError,
)

from langgraph_moa._redact import clip, redact_spec, redacted_repr
from langgraph_moa.config._limits import (
    RequestLimits,
    endpoint_label,
    served_variants,
    unserved_variant,
)
from langgraph_moa.config._schema import MoAConfig, explain_validation_error
from langgraph_moa.config.context import MoAContext, answer_cap, apply_context
from langgraph_moa.errors import (
    LimitExceededError,
    MoAConfigError,
    MoAError,
    ModelNotAllowedError,
)
from langgraph_moa.graph._builder import validate_conversation
from langgraph_moa.providers._models import (
    OpenAIEndpoint,
    parse_endpoint_string,
    split_provider,
    validate_spec,
)
from langgraph_moa.run._calls import CALL_TALLY, CallTally
from langgraph_moa.serving._access import note_calls, note_model
from langgraph_moa.serving._errors import _api_error, _APIError, _invalid_body
from langgraph_moa.serving._events import ReaderPace
from langgraph_moa.serving._request_id import request_metadata
from langgraph_moa.serving._schema import ChatRequest
from langgraph_moa.variants import variant_of


@dataclass(frozen=True)
class ModelPolicy:
    """Which models a client may name in ``proposers`` and ``aggregator``.

    By default only the served presets' own models: a client that could name any model
    would spend any key the server holds, and one that could name any URL would make the
    server call hosts of its choosing (server-side request forgery, port scans).
    """

    allowed: frozenset[str]
    """The model specs clients may name, each spelled as `_label` spells it."""
    allow_client_endpoints: bool = False
    """Whether clients may name OpenAI-compatible endpoints of their own (URLs or objects)."""
    keyed: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """The labels of keyed endpoints (``api_key_env``) -> the served presets that configure
    each. A run resolves a label against its own preset's endpoints only (`apply_context`),
    so in a request for another preset the label would call the endpoint without its key."""

    @classmethod
    def for_systems(
        cls,
        systems: Mapping[str, MoAConfig],
        allow: Iterable[str] = (),
        *,
        allow_client_endpoints: bool = False,
    ) -> "ModelPolicy":
        """Enable every model the served configs use, plus the specs in `allow`.

        The specs in `allow` are checked first, by `check_allowed_models` (`create_app`
        calls it before building the policy).
        """
        served = [
            role.model
            for config in systems.values()
            for role in [*config.proposers, *config.final_chain]
            if not isinstance(role.model, BaseChatModel)  # instances cannot be named in JSON
        ]
        labels = {_label(spec) for spec in [*served, *allow]}
        configured: dict[str, set[str]] = {}
        keyed: set[str] = set()
        for name, config in systems.items():
            for role in [*config.proposers, *config.final_chain]:
                if isinstance(role.model, OpenAIEndpoint):
                    configured.setdefault(role.model.label(), set()).add(name)
                    if role.model.api_key_env:
                        keyed.add(role.model.label())
        owners = {label: frozenset(configured[label]) for label in keyed}
        return cls(frozenset(labels), allow_client_endpoints, owners)

    def admit(self, spec: Any, field: str, preset: str | None = None) -> str:
        """Return the spec as the run context takes it, or refuse it.

        `preset`: the served preset the request runs; a keyed endpoint that only other
        presets configure is refused for it (its label alone would lose the key).

        Raises:
            ModelNotAllowedError: the spec is not enabled, or is an endpoint while client
                endpoints are not.
            MoAConfigError: the spec is malformed, or names another preset's keyed endpoint.
        """
        if isinstance(spec, dict):
            return self._client_endpoint(spec, field)
        try:
            label = _label(spec)
        except ValidationError as exc:
            raise MoAConfigError(explain_validation_error(exc, f"'{field}'")) from None
        owners = self.keyed.get(label)
        if preset is not None and owners and preset not in owners:
            raise MoAConfigError(
                f"'{field}' names {clip(label)!r}, an endpoint whose key is configured for "
                f"{', '.join(map(repr, sorted(owners)))} only; send the request to that "
                "model, or name one of this model's own."
            )
        if label in self.allowed:
            return label
        if parse_endpoint_string(label) is not None:
            if self.allow_client_endpoints:
                return label
            raise ModelNotAllowedError(
                f"'{field}' names an endpoint URL, but this server only calls the models its "
                "operator enabled; the operator can let clients name endpoints with "
                "--allow-client-endpoints."
            )
        raise ModelNotAllowedError(
            f"The model {clip(str(spec))!r} in '{field}' is not enabled on this server, which "
            "runs only its presets' own models; the operator can enable more with --allow-model."
        )

    def _client_endpoint(self, spec: dict[str, Any], field: str) -> str:
        if not self.allow_client_endpoints:
            raise ModelNotAllowedError(
                f"'{field}' names an endpoint object, but this server only calls the models "
                "its operator enabled; the operator can let clients name endpoints with "
                "--allow-client-endpoints."
            )
        if spec.get("api_key_env") is not None:
            raise ModelNotAllowedError(
                f"'{field}' asks for the server's key {spec['api_key_env']!r}, which is never "
                "sent to a client's endpoint; remove 'api_key_env'."
            )
        try:
            return OpenAIEndpoint.model_validate(spec).label()
        except ValidationError as exc:
            reason = explain_validation_error(exc, f"'{field}'", OpenAIEndpoint)
            raise MoAConfigError(reason) from None


def _check_allowed_spec(spec: Any) -> None:
    """Refuse an ``--allow-model`` spec the graph could not build, in one line."""
    try:
        validate_spec(spec)
    except ValidationError as exc:
        reason = explain_validation_error(exc, "endpoint")
    except (ValueError, MoAError) as exc:
        reason = " ".join(str(exc).split())
    else:
        return
    raise MoAConfigError(f"--allow-model {redacted_repr(spec)} is not a model spec: {reason}")


@dataclass(frozen=True)
class Unready:
    """Why every call of a model would fail on this machine (see `unready_model`)."""

    problem: str
    """What is missing, after the model's name: "needs X, which is not set"."""
    fix: str
    """What the operator does about it: "export X", "pip install ..."."""
    key_env: str | None = None
    """The environment variable that is not set, if that is the problem."""


def unready_model(spec: Any) -> Unready | None:
    """Say why every call of `spec` would fail on this machine, or return None.

    A provider's key that is not set, or a local model that is not installed: either fails
    every request that uses the model, so `moa serve` refuses both before saying "Serving",
    for the presets' models and ``--allow-model``'s alike. Endpoints, model instances and
    malformed specs (the config's validation refuses those) are not checked here.
    """
    import os

    from langgraph_moa.local.catalog import CATALOG
    from langgraph_moa.providers._table import LOCAL_PREFIX, provider_of

    if not isinstance(spec, str) or parse_endpoint_string(spec.strip()) is not None:
        return None
    try:
        provider, model = split_provider(spec.strip())
    except MoAError:
        return None
    if provider == LOCAL_PREFIX:
        info = CATALOG.get(model)
        if info is None:
            return Unready(
                f"names local:{model}, which is not a local model",
                f"name one of {', '.join(CATALOG)}",
            )
        if info.installed():
            return None
        return Unready(f"uses local:{model}, which is not installed", info.install_hint)
    env = provider_of(provider).key_env
    if env and not os.environ.get(env):
        return Unready(f"needs {env}, which is not set", f"export {env}", env)
    return None


def check_allowed_models(allow: Iterable[str]) -> None:
    """Refuse an ``--allow-model`` spec that is malformed or could not run here, in one line.

    Without this, a client naming a model whose key is not set got a 500 (the server's
    configuration, found at request time), and one naming a malformed spec a 400 that
    blamed the client.

    Raises:
        MoAConfigError: the first spec that is malformed, lacks its key or is not installed.
    """
    for spec in allow:
        _check_allowed_spec(spec)
        if (unready := unready_model(spec)) is not None:
            raise MoAConfigError(
                f"--allow-model {spec.strip()!r} {unready.problem}: {unready.fix}, or drop "
                "that --allow-model."
            )


def _label(spec: str | OpenAIEndpoint) -> str:
    """Spell a spec one way, so that the same endpoint written twice compares equal."""
    if (label := endpoint_label(spec)) is not None:
        return label
    assert isinstance(spec, str)  # an endpoint has its label
    try:  # a provider prefix as the config holds it once resolved ("OpenAI:" -> "openai:")
        return str(validate_spec(spec))
    except (ValueError, MoAError):  # not a spec at all: refused as it is written, later
        return spec.strip()


@dataclass
class _Job:
    name: str
    messages: list[BaseMessage]
    context: MoAContext
    stream: bool | None
    """The body's ``stream``; None where it left it out."""
    include_usage: bool
    progress: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    """The graph input's call options: tools, stop, response_format, ... (see `MoAInput`)."""
    trace: dict[str, Any] = field(default_factory=dict)
    """Run metadata the request forwards (``user``, ``metadata``)."""
    logprobs: bool = False
    tally: CallTally = field(default_factory=CallTally)
    """The run's calls ended so far (for the access log of a client that leaves)."""
    pace: ReaderPace = field(default_factory=ReaderPace)
    """Holds the run's models while its stream's reader is behind (its `pump`'s room)."""
    since: float | None = None
    """The event loop's time its body was read (`_Preparer.off_loop`), from which its
    ``--request-timeout`` counts: an exchange may last that plus twice ``--body-timeout``
    from its admission (the upload, the run, the end), and a wait to be prepared (a large
    body's turn) that the deadline did not count came out of the time left for the end."""

    def run_input(self) -> dict[str, Any]:
        """Return the graph's input: the conversation and the call options."""
        return {"messages": self.messages, **self.options}

    def config(self) -> RunnableConfig:
        """Return the run's config: the trace metadata, the call tally, the reader's pace.

        `pace` holds the models' token streams while a streamed run's reader is behind
        (`_events.pump`); a run with no reader to wait for never waits.
        """
        config = RunnableConfig(configurable={CALL_TALLY: self.tally}, callbacks=[self.pace])
        if self.trace:
            config["metadata"] = self.trace
        return config


HEAVY_BODY_BYTES = 64 * 1024
"""Bodies from this size on are parsed one at a time (`_Preparer.off_loop`)."""


def _named_once(items: list[tuple[str, Any]]) -> None:
    """Refuse one JSON object that names a field twice (`_REPEATS`'s hook, per object).

    C-level work alone per object (one dict, two lengths); nothing is built for the
    caller, whose values the check never keeps.
    """
    if len(dict(items)) < len(items):
        names = [name for name, _ in items]
        name = next(name for i, name in enumerate(names) if name in names[:i])
        raise _APIError(
            400,
            f"The body names the field {clip(name)!r} twice in one object; send each field once.",
            param=clip(name),
            code="duplicate_field",
        )


_REPEATS = json.JSONDecoder(object_pairs_hook=_named_once, parse_int=str, parse_float=str)
"""The reader `_refuse_repeated_names` uses, built once: numbers stay text (not kept)."""


def _refuse_repeated_names(raw: bytes) -> None:
    """Refuse a body whose JSON names one field twice in an object, at any depth (400).

    JSON leaves duplicate names to each parser: this one keeps the last, a proxy in front
    may have checked the first (``"model"`` twice, say), so the request would not be the one
    it seemed. The body was already read as valid (`ChatRequest`, whose reader cannot tell);
    this second, plain read only looks for a repeated name, in the same worker thread, at
    a few counted calls per object (`_named_once`).
    """
    try:
        _REPEATS.decode(raw.decode())
    except (ValueError, RecursionError):  # what Python's reader alone refuses was read above
        return


class _Preparer:
    """Reads a body into a run, or refuses it; runs in a worker thread, off the event loop.

    Parsing and converting a large conversation takes CPU time, and the event loop must
    stay free for other clients meanwhile (``GET /v1/models`` included). A worker thread
    alone is not enough: the parse holds the GIL, and eight large bodies parsed at once left
    the loop a ninth of it (a side request's p95 went to hundreds of milliseconds), so large
    bodies queue for one parsing slot, waiting without a thread.
    """

    def __init__(
        self,
        systems: Mapping[str, MoAConfig],
        policy: ModelPolicy,
        limits: RequestLimits,
    ) -> None:
        self.systems = systems
        self.policy = policy
        self.limits = {name: limits.covering(config) for name, config in systems.items()}
        self.variants = served_variants(c.variant for c in systems.values())
        """The variants a client may switch to: those shipped, and the served systems' own."""
        self._gates: weakref.WeakKeyDictionary[Any, asyncio.Semaphore] = weakref.WeakKeyDictionary()

    async def off_loop(self, raw: bytes, scope: Any = None) -> _Job:
        """Prepare `raw` in a worker thread; large bodies take turns (see the class).

        The body's ``model``, once read, is noted in the request's `scope` for the access
        log (`note_model`), refused or not; so is an accepted run's call tally (`note_calls`).
        The job's `since` is when this began: its deadline counts the wait for its turn.
        """
        loop = asyncio.get_running_loop()
        since = loop.time()
        job = await self._in_turn(raw, scope, loop)
        job.since = since
        return job

    async def _in_turn(self, raw: bytes, scope: Any, loop: asyncio.AbstractEventLoop) -> _Job:
        """Prepare `raw` in a worker thread, a large body after the one before it."""
        from starlette.concurrency import run_in_threadpool

        if len(raw) < HEAVY_BODY_BYTES:
            return await run_in_threadpool(self, raw, scope)
        gate = self._gates.get(loop)
        if gate is None:  # one per event loop: a semaphore belongs to the loop it waits on
            gate = self._gates[loop] = asyncio.Semaphore(1)
        async with gate:
            return await run_in_threadpool(self, raw, scope)

    def __call__(self, raw: bytes, scope: Any = None) -> _Job:
        try:
            body = ChatRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise _invalid_body(exc) from None
        note_model(scope, body.model)  # the one read (the last), named in the log line
        _refuse_repeated_names(raw)
        if body.model not in self.systems:
            raise _APIError(
                404,
                f"The model {clip(redact_spec(body.model))!r} does not exist; served models: "
                f"{', '.join(self.systems)}.",
                code="model_not_found",
                param="model",
            )
        if not body.messages:  # the package's own message shows a Python example
            raise _APIError(
                400,
                "The conversation is empty: send at least one user message, for example "
                '"messages": [{"role": "user", "content": "Explain X"}].',
                param="messages",
                code="invalid_value",
            )
        limits = self.limits[body.model]
        try:
            limits.check_conversation(
                len(body.messages),
                sum(m.chars() for m in body.messages) + body.option_chars(),
                sum(m.parts() for m in body.messages) + body.option_parts(),
            )
            context = self._context(body, limits)
            # LangChain wants 'content' even beside tool calls, where OpenAI allows null.
            dumped = [{"content": "", **m.model_dump(exclude_none=True)} for m in body.messages]
            messages = convert_to_messages(dumped)
            validate_conversation(messages)
            if not context.is_empty():
                limits.check_config(apply_context(self.systems[body.model], context))
        except MoAError as exc:
            raise _api_error(exc) from None
        except (ValueError, TypeError, NotImplementedError) as exc:
            reason = str(exc).splitlines()[0].rstrip(". ")  # LangChain adds a link below
            raise _APIError(400, f"'messages' is not a valid conversation: {reason}.") from None
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        rules = variant_of(context.variant or self.systems[body.model].variant)
        job = _Job(
            body.model,
            messages,
            context,
            body.stream if "stream" in body.model_fields_set else None,
            include_usage,
            body.moa_progress,
            # Variants that answer with a proposal verbatim send final-call options to all.
            body.run_options(picks_proposal=rules.returns_proposal()),
            body.trace_metadata() | request_metadata(scope),
            bool(body.logprobs),
        )
        note_calls(scope, job.tally)
        return job

    def _check_variant(self, variant: str | None) -> None:
        """Refuse a variant the operator did not serve, naming only the served ones.

        Any module the server's process imports can register a variant; running it for a
        client would run code the operator never chose. An unknown name gets the same answer,
        its did-you-mean drawn from the served ones: the registry's own message would name
        (and a different answer would betray) a registered variant that is not served.
        """
        if variant is None or (hint := unserved_variant(variant, self.variants)) is None:
            return
        raise _APIError(
            400,
            f"The variant {clip(variant)!r} is not served here: choose one of "
            f"{', '.join(map(repr, self.variants))}" + (f" ({hint})." if hint else "."),
            param="variant",
            code="invalid_value",
        )

    def _context(self, body: ChatRequest, limits: RequestLimits) -> MoAContext:
        proposers = None
        if body.proposers is not None:
            if len(body.proposers) > limits.max_proposers:
                raise LimitExceededError(
                    f"This request names {len(body.proposers)} proposers, over the server's "
                    f"limit of {limits.max_proposers}: name fewer, or have the operator raise "
                    "--max-proposers."
                )
            proposers = [
                self.policy.admit(spec, f"proposers[{i}]", body.model)
                for i, spec in enumerate(body.proposers)
            ]
        aggregator = None
        if body.aggregator is not None:
            aggregator = self.policy.admit(body.aggregator, "aggregator", body.model)
        limits.check_answer_tokens(body.max_tokens)
        limits.check_answer_tokens(body.max_completion_tokens)
        self._check_variant(body.variant)
        context = MoAContext(
            layers=body.layers,
            samples=body.samples,
            variant=body.variant,
            proposers=proposers,
            aggregator=aggregator,
            temperature=body.temperature,
        )
        # max_tokens caps the answer: the aggregator's, or where the answer is a proposal
        # returned verbatim (select, ranker) the proposers'; the ranker keeps its own cap.
        cap = body.max_tokens or body.max_completion_tokens
        variant = context.variant or self.systems[body.model].variant
        return context.model_copy(update=answer_cap(variant, cap))
