"""Per-run settings: the graph's `context_schema`, so LangGraph server can configure runs.

Every field is optional; a run without context uses the config the graph was built with.
LangGraph server and Studio show these fields as the assistant's configuration.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from langgraph_moa._lru import BoundedLRU
from langgraph_moa._redact import clip
from langgraph_moa.config._limits import (
    MAX_FAN_OUT,
    MAX_LAYERS,
    MAX_TOKENS,
    RequestLimits,
    endpoint_label,
    served_variants,
)
from langgraph_moa.config._schema import (
    AggregatorConfig,
    MoAConfig,
    ProposerConfig,
    Variant,
    explain_errors,
    explain_validation_error,
)
from langgraph_moa.errors import MoAConfigError
from langgraph_moa.providers._models import OpenAIEndpoint, parse_endpoint_string, same_model
from langgraph_moa.text._names import did_you_mean
from langgraph_moa.text._selection import SelectionConfig
from langgraph_moa.variants import variant_names, variant_of

_M = TypeVar("_M", bound=BaseModel)


_RUN_IT_ON_ITS_OWN = (
    "run the MoA graph from a node that calls graph.invoke(state, context=MoAContext()), "
    "with the MoA settings if any"
)
"""The fix for a parent app's own context, which LangGraph hands its subgraphs."""


class MoAContext(BaseModel):
    """Settings that can change per assistant or per run (all optional)."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = Field(default=None, description="Start from this preset instead.")
    variant: Variant | None = Field(
        default=None, description="The variant: " + ", ".join(variant_names()) + "."
    )
    proposers: list[str] | None = Field(
        default=None, description="Proposer model specs, e.g. ['openai:gpt-4o-mini']."
    )
    aggregator: str | None = Field(default=None, description="Aggregator model spec.")
    # Bounded above as the config's fields are: the context is written in JSON (its cache
    # key) before the config is made of it, which failed on an int of over 4,300 digits.
    layers: int | None = Field(
        default=None, le=MAX_LAYERS, description="MoA layers (proposer layers + 1)."
    )
    samples: int | None = Field(
        default=None, le=MAX_FAN_OUT, description="Samples per proposer per layer."
    )
    temperature: float | None = Field(default=None, description="Proposer temperature.")
    max_tokens: int | None = Field(
        default=None, le=MAX_TOKENS, description="Proposer completion-token cap."
    )
    aggregator_max_tokens: int | None = Field(
        default=None, le=MAX_TOKENS, description="Aggregator completion-token cap."
    )

    @field_validator("proposers")
    @classmethod
    def _names_a_proposer(cls, value: list[str] | None) -> list[str] | None:
        """Refuse an empty list here, as the context's: the config would blame itself."""
        if value == []:
            raise ValueError(
                "give at least one model spec, or leave 'proposers' out to keep the graph's own"
            )
        return value

    def __init__(self, **data: Any) -> None:
        """Validate; an unknown or invalid setting raises `MoAConfigError` naming it."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise MoAConfigError(explain_validation_error(exc, "run context", MoAContext)) from None

    @classmethod
    def coerce(cls, value: Any) -> MoAContext | None:
        """Accept a `MoAContext`, a dict (as the server sends), or None."""
        if value is None or isinstance(value, MoAContext):
            return value
        if isinstance(value, dict):
            return cls._from_dict(value)
        raise MoAConfigError(  # a parent app's own context reaches its subgraphs
            f"Run context must be a MoAContext or a dict, got {value!r}: as a subgraph of an "
            f"app whose context is its own, {_RUN_IT_ON_ITS_OWN}."
        )

    @classmethod
    def _from_dict(cls, value: dict[str, Any]) -> MoAContext:
        """Read a dict, naming the subgraph fix where it is likely another app's context.

        LangGraph hands a subgraph its parent app's context as it is: a TypedDict's is a
        dict whose keys are no MoA setting, nor a near miss of one (that is a typo).
        """
        try:
            return cls(**value)
        except MoAConfigError as exc:
            own = set(cls.model_fields)
            if not value or any(k in own or did_you_mean(k, own) for k in value):
                raise
            raise MoAConfigError(
                f"{str(exc).rstrip('.')}; if it is the context of an app that runs the MoA "
                f"graph as a subgraph, {_RUN_IT_ON_ITS_OWN}."
            ) from None

    def is_empty(self) -> bool:
        """Tell whether no field is set."""
        return not self.model_dump(exclude_none=True)


def _replace(obj: _M, **changes: Any) -> _M:
    """Copy a config model with changes, validating them (``model_copy`` would not)."""
    data = {name: getattr(obj, name) for name in type(obj).model_fields}
    data.update({k: v for k, v in changes.items() if v is not None})
    return _validated(type(obj), data)


def _priority_of(config: MoAConfig, proposers: list[ProposerConfig]) -> SelectionConfig | None:
    """Return the config's selection with its priority kept to the new `proposers`.

    The priority names the config's own proposers; a context that replaces them keeps the
    order of those still there (a label naming none of them would be refused as a typo).
    None when nothing changes.
    """
    selection = config.selection
    if selection is None:
        return None
    labels = {p.label for p in proposers}
    kept = [label for label in selection.priority if label in labels]
    if kept == selection.priority:
        return None
    return selection.model_copy(update={"priority": kept})


def _with_model(role: _M, model: str | OpenAIEndpoint, field: tuple[str | int, ...] = ()) -> _M:
    """Copy a role config onto another model; its display name belonged to the old one.

    So did its context window, unless the model is the same (a local model's window is then
    the catalog's): references were trimmed to, or overflowed, a window not the model's.
    """
    data = {name: getattr(role, name) for name in type(role).model_fields}
    if not same_model(data["model"], model):
        data["context_window"] = None
    data.update(model=model, name=None)
    return _validated(type(role), data, field)


def _configured_endpoints(config: MoAConfig) -> dict[str, OpenAIEndpoint]:
    """Return the config's own endpoints by label, so a label names the endpoint as configured.

    A run that names a keyed endpoint of its config by its label (``model@url``) means that
    endpoint, key variable included: the label alone would call it without its key.
    """
    roles = [*config.proposers, *config.final_chain]
    return {r.model.label(): r.model for r in roles if isinstance(r.model, OpenAIEndpoint)}


def _refuse_keys_left_behind(
    context: MoAContext, mine: dict[str, OpenAIEndpoint], known: dict[str, OpenAIEndpoint]
) -> None:
    """Refuse a label naming a keyed endpoint of `base` in a run of another preset.

    The label resolves against the run's preset only (`known`): there it would call the
    endpoint without its key, and the caller would read the upstream's 401 instead of
    what is wrong (`moa serve` refuses the same request in its model policy).
    """
    named = [("proposers", m) for m in context.proposers or []]
    named += [("aggregator", context.aggregator)] if context.aggregator is not None else []
    for field, spec in named:
        endpoint = parse_endpoint_string(spec.strip())
        label = endpoint.label() if endpoint is not None else ""
        own = mine.get(label) if label not in known else None
        if own is not None and own.api_key_env:
            raise MoAConfigError(
                f"'{field}' names {clip(label)!r}, an endpoint whose key is configured for "
                f"this graph's own config, not for preset {context.preset!r}; remove "
                "'preset', or name one of that preset's models."
            )


def _resolve(spec: str, known: dict[str, OpenAIEndpoint]) -> str | OpenAIEndpoint:
    endpoint = parse_endpoint_string(spec.strip())
    return known.get(endpoint.label(), spec) if endpoint is not None else spec


def _validated(cls: type[_M], data: dict[str, Any], field: tuple[str | int, ...] = ()) -> _M:
    """Build a role config from run settings; a bad setting fails in one line, as ours.

    A model the run named is refused under the context's `field` that named it
    (``proposers.1``): the role's own ``model`` is no setting of the context.
    """
    try:
        return cls(**data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if field:
            errors = [
                {**e, "loc": (*field, *e["loc"][1:]) if e["loc"][:1] == ("model",) else e["loc"]}
                for e in errors
            ]
        raise MoAConfigError(explain_errors(errors, "run context", cls)) from None


def _follow_the_proposer(
    config: MoAConfig, context: MoAContext, proposers: list[Any], aggregator: Any
) -> Any:
    """Return the aggregator for new proposers: the proposer's model where the variant says so.

    Self-MoA's aggregator is derived from its one proposer (the same model); a run naming
    another proposer means that model throughout. Kept as it was, the old aggregator would
    make the new config invalid ("aggregates with the proposer's own model"). A variant
    changed by the context derives its aggregator afresh anyway.
    """
    variant = context.variant or config.variant
    follows = variant_of(variant).aggregates_with_proposer
    if variant != config.variant or not follows or config.aggregator is None or not proposers:
        return aggregator
    return _with_model(aggregator or config.aggregator, proposers[0].model)


def apply_context(
    base: MoAConfig,
    context: MoAContext | None = None,
    *,
    call_timeout_s: float | None = None,
    max_attempts: int | None = None,
) -> MoAConfig:
    """Return `base` (or the named preset) with the context's settings applied, validated.

    Every entrance changes a config through here (the CLI's flags, the server's request
    fields, `MoAChatModel`'s parameters, a run's context), so a bad value fails the same
    way everywhere, as `MoAConfigError`, instead of slipping through an unvalidated copy.

    Args:
        base: The config to start from.
        context: The per-run settings; None or empty changes nothing.
        call_timeout_s: A new per-call timeout. Not a run setting: the graph builds its retry
            and timeout machinery when it is compiled, so only callers that compile the
            result themselves may change it.
        max_attempts: A new number of attempts per call (same caveat).
    """
    context = context or MoAContext()
    if context.is_empty() and call_timeout_s is None and max_attempts is None:
        return base
    config = MoAConfig.from_preset(context.preset) if context.preset else base
    proposers = list(config.proposers)
    known = _configured_endpoints(config)
    if config is not base:
        _refuse_keys_left_behind(context, _configured_endpoints(base), known)
    if context.proposers is not None:
        proposers = [
            _with_model(proposers[0], _resolve(m, known), ("proposers", i))
            for i, m in enumerate(context.proposers)
        ]
    proposers = [
        _replace(
            p,
            samples=context.samples,
            temperature=context.temperature,
            max_tokens=context.max_tokens,
        )
        for p in proposers
    ]
    aggregator = None  # None keeps the config's aggregator (or re-derives it for Self-MoA)
    if config.aggregator is not None and context.aggregator_max_tokens is not None:
        aggregator = _replace(config.aggregator, max_tokens=context.aggregator_max_tokens)
    if context.aggregator is not None:
        if (context.variant or config.variant) == "select":
            raise MoAConfigError(
                "The 'select' variant picks its answer among the proposals without an "
                "aggregator: remove 'aggregator', or choose a variant that aggregates."
            )
        if aggregator is None and config.aggregator is None:  # leaving 'select' for another
            aggregator = _validated(
                AggregatorConfig, {"model": context.aggregator}, ("aggregator",)
            )
        else:
            chosen = _resolve(context.aggregator, known)
            aggregator = _with_model(aggregator or config.final, chosen, ("aggregator",))
    if context.proposers is not None and context.aggregator is None:
        aggregator = _follow_the_proposer(config, context, proposers, aggregator)
    selection = _priority_of(config, proposers) if context.proposers is not None else None
    retry = _replace(config.retry, max_attempts=max_attempts) if max_attempts is not None else None
    changed = (
        bool(context.model_dump(exclude_none=True, exclude={"preset"}))
        or call_timeout_s is not None
        or retry is not None
    )
    name = f"{config.name} (customized)" if config.name and changed else config.name
    return config.with_overrides(
        name=name,
        variant=context.variant,
        layers=context.layers,
        proposers=proposers,
        aggregator=aggregator,
        selection=selection,
        call_timeout_s=call_timeout_s,
        retry=retry,
    )


class ContextConfigCache:
    """Remembers the config computed for each distinct context (validation is not free)."""

    def __init__(
        self, base: MoAConfig, size: int = 64, limits: RequestLimits | None = None
    ) -> None:
        """Cache up to `size` contexts on top of `base`.

        With `limits` (the LangGraph server entry points set them), every run's config is
        held to them as `moa serve` holds a request: the token budget, and a context past a
        limit is refused (`LimitExceededError`) before the first call. The limits are
        raised, as in `moa serve`, to what `base` itself uses.
        """
        self.limits = limits.covering(base) if limits is not None else None
        self.base = limits.with_budget(base) if limits is not None else base
        self._cache: BoundedLRU[str, MoAConfig] = BoundedLRU(size)
        self._variants = served_variants([base.variant])
        """The variants a run may pick under `limits`: those shipped, and the base's own."""
        self._endpoints: dict[str | None, frozenset[str]] = {}  # None: the base config's

    def get(self, context: Any) -> MoAConfig:
        """Return the effective config for this run's context.

        With limits the variant is checked first, before the context is read: reading it
        refuses an unknown variant naming every registered one (`RequestLimits.check_variant`).
        Every model call looks its plan up here: a run that names no variant (no context, or
        an empty one) is not checked at all.
        """
        if self.limits is not None and context:
            if (variant := _variant_asked(context)) is not None:
                self.limits.check_variant(variant, self._variants)
        ctx = MoAContext.coerce(context)
        if ctx is None or ctx.is_empty():
            return self.base
        key = json.dumps(ctx.model_dump(exclude_none=True), sort_keys=True)
        kept = self._cache.get(key)
        if kept is not None:
            return kept
        try:
            config = apply_context(self.base, ctx)
        except ValidationError as exc:
            raise MoAConfigError(explain_validation_error(exc, schema=MoAConfig)) from None
        if self.limits is not None:
            config = self.limits.with_budget(config)  # a context preset has its own budget
            if ctx.variant is None:  # one it names was checked above; a preset's is new
                self.limits.check_variant(config.variant, self._variants)
            self.limits.check_config(config)
            self.limits.check_endpoints(config, self._own_endpoints(ctx))
        return self._cache.put(key, config)

    def _own_endpoints(self, context: MoAContext) -> frozenset[str]:
        """Return the labels of the endpoints the operator configured.

        The base config's, and those of the preset the context starts from (presets ship
        with the package, so their endpoints are the operator's choice too). Both are
        fixed, so each is read once, on first use.
        """
        labels = self._labels(None)
        return labels | self._labels(context.preset) if context.preset else labels

    def _labels(self, preset: str | None) -> frozenset[str]:
        """Return the endpoint labels of `preset` (None: the base config), read once."""
        labels = self._endpoints.get(preset)
        if labels is None:
            config = MoAConfig.from_preset(preset) if preset else self.base
            labels = self._endpoints[preset] = _endpoint_labels(config)
        return labels


def _endpoint_labels(config: MoAConfig) -> frozenset[str]:
    """Return the ``model@url`` labels of the endpoints `config`'s roles call."""
    labels = {endpoint_label(role.model) for role in [*config.proposers, *config.final_chain]}
    return frozenset(label for label in labels if label is not None)


def _variant_asked(context: Any) -> Any:
    """Return the variant a run context names (a `MoAContext` or a dict), or None.

    The dict (what the server sends) is tried first: on older pydantic (2.7, the floor)
    `isinstance(x, MoAContext)` runs the model metaclass's Python check, three more calls
    on every model call of a run that set a context.
    """
    if isinstance(context, dict):
        return context.get("variant")
    return context.variant if isinstance(context, MoAContext) else None


def answer_cap(variant: str, max_tokens: int | None) -> dict[str, int]:
    """Return the context fields that cap a run's answer at `max_tokens`.

    The answer is the aggregator's, or on a variant that returns a proposal verbatim
    (select, ranker) a proposer's: there the cap goes to the proposers, and the ranker
    keeps its own. `MoAChatModel`'s ``max_tokens`` and `moa serve`'s client both mean it.
    """
    if max_tokens is None:
        return {}
    field = "max_tokens" if variant_of(variant).returns_proposal() else "aggregator_max_tokens"
    return {field: max_tokens}
