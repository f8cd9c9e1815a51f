"""Validated configuration for every MoA variant, loadable from Python, YAML, JSON or presets.

One `MoAConfig` describes every registered variant (`langgraph_moa.variants`: layered MoA,
single-proposer, Self-MoA, Self-MoA-Seq, the ranker baseline and selection); the variant's own
rules check the config and fill in its defaults.

`layers` counts MoA layers as the paper does: 3 layers = 2 proposer layers + the aggregator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, ErrorDetails

from langgraph_moa._redact import CLIENT_TEXT_CHARS, clip, redact, redact_spec, shown_value
from langgraph_moa.config._aggregation import AggregationConfig
from langgraph_moa.config._files import is_json, read_mapping_file
from langgraph_moa.config._limits import (
    MAX_COUNT,
    MAX_FALLBACKS,
    MAX_FAN_OUT,
    MAX_LAYERS,
    MAX_PROPOSALS,
    MAX_TOKENS,
    MAX_WAIT_S,
    Budget,
    check_budget,
)
from langgraph_moa.errors import MoAConfigError
from langgraph_moa.providers._models import ModelSpec, describe_model, printable, validate_spec
from langgraph_moa.providers._table import LOCAL_PREFIX
from langgraph_moa.text._names import did_you_mean
from langgraph_moa.text._prompts import AGGREGATE_AND_SYNTHESIZE_PROMPT
from langgraph_moa.text._selection import SelectionConfig
from langgraph_moa.variants import Plan, variant_names, variant_of

MAX_ATTEMPTS = 20
"""The most attempts a call may be given (retries are visible and each one is paid for)."""


class RetrySettings(BaseModel):
    """Exponential backoff with jitter for every proposer and aggregator call."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=3, ge=1, le=MAX_ATTEMPTS)
    initial_interval: float = Field(default=0.5, ge=0.0, le=MAX_WAIT_S)
    backoff_factor: float = Field(default=2.0, ge=1.0)
    max_interval: float = Field(default=30.0, ge=0.0, le=MAX_WAIT_S)
    jitter: bool = Field(default=True, description="Add up to 1 s of random delay.")

    def backoff_s(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt` + 1, jitter aside (a `RetryPolicy`'s)."""
        return min(self.initial_interval * self.backoff_factor ** (attempt - 1), self.max_interval)


def _registered_variant(name: str) -> str:
    variant_of(name)  # raises ValueError naming the registered variants
    return name


class _VariantSchema:
    """The JSON schema of a variant name: an enum of the variants registered when it is drawn."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"enum": list(variant_names()), "type": "string"}


Variant = Annotated[str, AfterValidator(_registered_variant), _VariantSchema()]
"""A registered variant's name (see `langgraph_moa.variants`)."""


def _coerce_role(value: Any) -> Any:
    """Let a bare model spec stand for a role config with default limits.

    Anything else but a role config stands for one too (``proposers: [no]``, a date, a list,
    a blank item), so that it is refused as a model, with the spec's rule and the type of
    what was given, not as "a valid dictionary".
    """
    if isinstance(value, dict) and "model" in value:
        return value
    if not isinstance(value, (ProposerConfig, AggregatorConfig)):
        return {"model": value}
    return value


def _coerce_roles(value: Any, most: int, too_many: str) -> Any:
    """Coerce a list of roles (one alone stands for a list of one), refusing past `most`.

    `too_many` is the refusal, with ``{most}`` and ``{got}`` to fill in.
    """
    if isinstance(value, (str, dict, BaseModel)):
        value = [value]
    if isinstance(value, list) and len(value) > most:
        raise ValueError(too_many.format(most=most, got=len(value)))
    return [_coerce_role(v) for v in value] if isinstance(value, list) else value


class RoleConfig(BaseModel):
    """A model plus the limits of one role. Each role keeps its own limits."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    model: ModelSpec
    name: str | None = Field(default=None, description="Display label; defaults to the model.")
    temperature: float | None = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    context_window: int | None = Field(
        default=None,
        ge=256,
        le=MAX_TOKENS,
        description="The model's context in tokens; references are trimmed to fit it. "
        "Known for local models; None elsewhere means no trimming.",
    )

    @field_validator("model", mode="before")
    @classmethod
    def _check_spec(cls, value: Any) -> ModelSpec:
        return validate_spec(value)

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str | None) -> str | None:
        return None if value is None else printable(value, "a display name")

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Show a spec string with its URL's key redacted (`redact_spec`).

        An endpoint object's repr redacts its URL; a spec written as a string
        (``m@https://host/v1?key=...``) was shown whole by ``repr()`` and ``str()`` of a
        config. The calls still use the spec as written.
        """
        for name, value in super().__repr_args__():
            yield name, redact_spec(value) if name == "model" and isinstance(value, str) else value

    @property
    def label(self) -> str:
        """Human label: `name` if given, else the model spec."""
        return self.name or describe_model(self.model)

    def call_params(self) -> dict[str, Any]:
        """Parameters passed when the chat model is built for this role."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    @property
    def is_local(self) -> bool:
        """Tell whether the model is an embedded local one (``local:<name>``, llama.cpp)."""
        return isinstance(self.model, str) and self.model.startswith(f"{LOCAL_PREFIX}:")

    def known_context_window(self) -> int | None:
        """Return the context window: as configured, else the catalog's for a local model."""
        if self.context_window is not None:
            return self.context_window
        if self.is_local:
            from langgraph_moa.local.catalog import CATALOG, context_size

            info = CATALOG.get(str(self.model).removeprefix(f"{LOCAL_PREFIX}:"))
            return context_size(info) if info else None
        return None


class ProposerConfig(RoleConfig):
    """One proposer: a model, its sampling limits, and how many samples to draw per layer."""

    max_tokens: int | None = Field(default=512, ge=1, le=MAX_TOKENS)
    samples: int = Field(default=1, ge=1, le=MAX_FAN_OUT, description="Samples per layer.")
    logprobs: bool = Field(
        default=False,
        description="Ask the provider for token logprobs (OpenAI-compatible APIs), for "
        "confidence-weighted selection. Local models always return them.",
    )

    def call_params(self) -> dict[str, Any]:
        """Parameters passed when the chat model is built for this role."""
        params = super().call_params()
        if self.logprobs:
            params["logprobs"] = True
        return params


class AggregatorConfig(RoleConfig):
    """The final aggregator (or ranker). Its limits are its own, never a proposer's."""

    max_tokens: int | None = Field(default=2048, ge=1, le=MAX_TOKENS)


class SelfMoASeqConfig(BaseModel):
    """Sliding-window settings of Self-MoA-Seq.

    The first step aggregates the first `window_size` samples; every later step aggregates
    the running synthesis (reference 1) plus the next `samples_per_step` samples, so no
    aggregation call ever sees more than `window_size` references, and every sample is read
    exactly once. The total number of samples is the proposer's `samples`.
    """

    model_config = ConfigDict(extra="forbid")

    window_size: int = Field(default=6, ge=2, le=64)
    samples_per_step: int | None = Field(
        default=None,
        ge=1,
        le=63,  # window_size - 1 at most
        description="New samples per later step; default window_size - 1.",
    )

    @model_validator(mode="after")
    def _fits_window(self) -> Self:
        if self.samples_per_step is not None and self.samples_per_step > self.window_size - 1:
            raise ValueError(
                f"samples_per_step ({self.samples_per_step}) must be at most window_size - 1 "
                f"({self.window_size - 1}): one slot holds the running synthesis"
            )
        return self

    @property
    def step_size(self) -> int:
        """New samples aggregated by each step after the first."""
        return self.samples_per_step or self.window_size - 1

    def batches(self, total: int) -> list[range]:
        """Sample indices drawn at each step, in order; together they cover 0..total-1 once."""
        out = [range(0, min(self.window_size, total))]
        while out[-1].stop < total:
            start = out[-1].stop
            out.append(range(start, min(start + self.step_size, total)))
        return out


class MoAConfig(BaseModel):
    """Everything that defines one MoA system. Invalid values raise `MoAConfigError`.

    Example:
        ```python
        MoAConfig(proposers=["openai:gpt-4o-mini", my_model], aggregator="openai:gpt-4o")
        MoAConfig.from_preset("moa-lite")
        MoAConfig.from_file("moa.yaml")
        ```
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    variant: Variant = "moa"
    proposers: list[ProposerConfig] = Field(min_length=1)
    aggregator: AggregatorConfig | None = Field(
        default=None,
        description="Final aggregator (or ranker). Self-MoA variants default to the proposer.",
    )
    layers: int | None = Field(
        default=None,
        ge=2,
        le=MAX_LAYERS,
        description="MoA layers counted as in the paper: proposer layers + 1. "
        "Default 3 for moa, 2 otherwise.",
    )
    synthesis_prompt: str = Field(default=AGGREGATE_AND_SYNTHESIZE_PROMPT, min_length=1)
    reference_order: Literal["stable", "shuffled"] = "stable"
    shuffle_seed: int = Field(default=0, ge=-MAX_COUNT, le=MAX_COUNT)
    seq: SelfMoASeqConfig = Field(default_factory=SelfMoASeqConfig)
    reference_format: Literal["fenced", "paper"] = Field(
        default="fenced",
        description="fenced: each reference between tags the text cannot forge (proposals "
        "are untrusted); paper: the reference code's '\\n{i}. {response}' lines, verbatim.",
    )
    selection: SelectionConfig | None = Field(
        default=None,
        description="How variant 'select' picks its answer (default: a majority vote); in "
        "synthesizing variants, `show_tally` shows the aggregator the vote.",
    )
    aggregator_fallbacks: list[AggregatorConfig] = Field(
        default_factory=list,
        description="Models tried in order when the aggregator fails after its retries.",
    )
    on_aggregator_failure: Literal["best_proposal", "raise"] = Field(
        default="best_proposal",
        description="When every aggregator fails: answer with the first successful "
        "proposal of the last layer (labelled so), or raise AggregatorFailedError.",
    )
    retry: RetrySettings = Field(default_factory=RetrySettings)
    call_timeout_s: float | None = Field(
        default=300.0,
        gt=0,
        le=MAX_WAIT_S,
        description="Wall-clock cap on one attempt of one model call (None: no cap).",
    )
    layer_deadline_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_WAIT_S,
        description="Seconds after a layer starts when it goes on without its stragglers, "
        "provided min_proposers have answered.",
    )
    min_proposers: int = Field(
        default=1,
        ge=1,
        le=MAX_PROPOSALS,
        description="Quorum: successful proposals a layer needs to go on.",
    )
    aggregation: AggregationConfig = Field(
        default_factory=AggregationConfig,
        description="When the final step starts: after every proposal of the last layer "
        "(start: all), or once a quorum answered (start: quorum, quorum: k), the "
        "stragglers cancelled and recorded.",
    )
    name: str | None = Field(default=None, description="Preset or system name, for metadata.")
    budget: Budget = Field(
        default_factory=Budget,
        description="What one run may spend (max_calls, max_tokens); a config, per-run "
        "context included, whose run would make more calls than max_calls is refused "
        "before any call.",
    )

    def __init__(self, **data: Any) -> None:
        """Validate, turning pydantic's error into one that names the field and the rule.

        The call budget is checked here too, not in a validator, so that its error keeps its
        own type (`LimitExceededError`) and every derived config (overrides, run context)
        passes through it.
        """
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise MoAConfigError(explain_validation_error(exc, schema=MoAConfig)) from None
        check_budget(self)

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str | None) -> str | None:
        return None if value is None else printable(value, "a system name")

    @field_validator("proposers", mode="before")
    @classmethod
    def _coerce_proposers(cls, value: Any) -> Any:
        return _coerce_roles(
            value,
            MAX_FAN_OUT,
            "a layer has at most {most} proposers, got {got}: use fewer (a proposer's "
            "samples give more answers from one model)",
        )

    @field_validator("synthesis_prompt")
    @classmethod
    def _written_prompt(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(
                "blank (only whitespace): write the aggregator's instructions, or "
                "remove synthesis_prompt for the default"
            )
        return value

    @field_validator("aggregator", mode="before")
    @classmethod
    def _coerce_aggregator(cls, value: Any) -> Any:
        return None if value is None else _coerce_role(value)

    @field_validator("aggregator_fallbacks", mode="before")
    @classmethod
    def _coerce_fallbacks(cls, value: Any) -> Any:
        return _coerce_roles(
            value,
            MAX_FALLBACKS,
            "at most {most} models, got {got}: keep the few most likely to answer (each is "
            "tried only after the one before it failed)",
        )

    @classmethod
    def _derived_value(cls, rules: type[Plan], field: str, raw: Any) -> Any:
        """Validate a variant's derived default as the field's own value, bounds included.

        A registered variant may not derive what a user may not write (``layers: 1``), and
        a mistake in its `derive` is named here, with the variant, not as a bare KeyError.
        """
        info = cls.model_fields.get(field)
        if info is None:
            raise ValueError(
                f"variant {rules.name!r} derived {field!r}, which is no MoAConfig field: "
                "return only config fields from its derive()"
            )
        annotation: Any = info.annotation
        if info.metadata:  # the field's bounds (ge, le, ...)
            annotation = Annotated[annotation, *info.metadata]
        try:
            return TypeAdapter(annotation).validate_python(raw)
        except ValidationError as exc:
            raise ValueError(
                f"variant {rules.name!r} derived {field}={raw!r}, which the field refuses "
                f"({exc.errors()[0]['msg']}): fix the variant's derive()"
            ) from None

    @model_validator(mode="after")
    def _check_variant(self) -> Self:
        rules = self.rules
        for field, raw in rules.derive(self).items():
            setattr(self, field, self._derived_value(rules, field, raw))
        rules.check(self)
        self._check_priority()
        selects = rules.final_role == "selector"
        self._check_quorum(sum(self.first_round()) if selects else rules.proposals_per_layer(self))
        if self.aggregation.chunked and (selects or not rules.chunkable):
            raise ValueError(
                f"chunk-wise aggregation (aggregation.start 'chunks') needs an aggregator "
                f"that writes the answer after the proposers: variant {self.variant!r} has "
                f"none; use {', '.join(n for n in variant_names() if variant_of(n).chunkable)}, "
                "or start 'quorum'"
            )
        if self.aggregation.chunked and self.aggregator_fallbacks:
            raise ValueError(
                "chunk-wise aggregation writes with one aggregator: remove "
                "aggregator_fallbacks or use aggregation.start 'quorum'"
            )
        return self

    def _check_priority(self) -> None:
        """Refuse a ``selection.priority`` label that names no proposer.

        Ties go to the proposers in that order; a misspelt label was silently ignored, so
        ties went by proposer order against what the config asked.
        """
        if self.selection is None:
            return
        labels = list(dict.fromkeys(p.label for p in self.proposers))
        unknown = [label for label in self.selection.priority if label not in labels]
        if unknown:
            hint = did_you_mean(unknown[0], labels) or "the proposers' labels are " + ", ".join(
                map(repr, labels)
            )
            raise ValueError(
                f"selection.priority names {unknown[0]!r}, which is no proposer's label (its "
                f"name, else its model): {hint}"
            )

    def _check_quorum(self, per_layer: int | None) -> None:
        quorum = self.aggregation.quorum
        if quorum is None:
            return
        if per_layer is not None and quorum > per_layer:
            raise ValueError(
                f"aggregation.quorum ({quorum}) cannot exceed the {per_layer} proposals of a "
                "layer: lower it, or add proposers"
            )
        if quorum < self.min_proposers:
            raise ValueError(
                f"aggregation.quorum ({quorum}) is below min_proposers ({self.min_proposers}):"
                " raise the quorum to at least min_proposers"
            )

    # --- derived values ------------------------------------------------------------------

    @property
    def rules(self) -> type[Plan]:
        """The variant's registered rules and routing (`langgraph_moa.variants`)."""
        return variant_of(self.variant)

    @property
    def adaptive(self) -> bool:
        """Tell whether samples are drawn in rounds until the answers agree."""
        return self.rules.is_adaptive(self)

    def first_round(self) -> list[int]:
        """Return how many samples each proposer draws before the first look at the votes."""
        if not self.adaptive:
            return [p.samples for p in self.proposers]
        assert self.selection is not None
        return [min(p.samples, self.selection.round_size) for p in self.proposers]

    @property
    def proposer_layers(self) -> int:
        """Number of proposer layers: `layers` - 1 (the last layer is the aggregator)."""
        assert self.layers is not None
        return self.layers - 1

    @property
    def final_role(self) -> Literal["aggregator", "ranker", "selector"]:
        """Which role writes the final answer."""
        return self.rules.final_role

    @property
    def final(self) -> AggregatorConfig:
        """The aggregator config (set after validation for every variant but 'select')."""
        assert self.aggregator is not None
        return self.aggregator

    @property
    def final_chain(self) -> list[AggregatorConfig]:
        """The aggregator, then its fallbacks, in the order they are tried."""
        if self.aggregator is None:
            return []
        return [self.final, *self.aggregator_fallbacks]

    def local_model_names(self) -> list[str]:
        """List the ``local:`` models a run may call, in order, each once (nothing else)."""
        specs = [p.model for p in self.proposers] + [a.model for a in self.final_chain]
        names: list[str] = []
        for spec in specs:
            if isinstance(spec, str) and spec.startswith(f"{LOCAL_PREFIX}:"):
                name = spec.removeprefix(f"{LOCAL_PREFIX}:")
                if name not in names:
                    names.append(name)
        return names

    def calls_per_run(self) -> int:
        """Model calls a fully successful run makes (the budget and the server count on it)."""
        return self.rules.calls_per_run(self)

    # --- loading -------------------------------------------------------------------------

    def with_overrides(self, **changes: Any) -> MoAConfig:
        """Return a validated copy with some fields replaced (None values are ignored)."""
        data = self._as_input()
        variant = changes.get("variant") or self.variant
        if variant != self.variant:
            # Defaults that depended on the old variant are derived again.
            for field in variant_of(variant).derived_fields:
                data[field] = None
        data.update({k: v for k, v in changes.items() if v is not None})
        return MoAConfig(**data)

    def _as_input(self) -> dict[str, Any]:
        """Fields as constructor input, keeping model instances as they are."""
        return {name: getattr(self, name) for name in type(self).model_fields}

    @classmethod
    def from_preset(cls, name: str, /, **overrides: Any) -> MoAConfig:
        """Load a preset shipped with the package (see `list_presets()`).

        `name` is positional-only, so that `name=` among the overrides renames the config
        (a file with `preset:` and `name:`) instead of colliding with the preset's name.
        """
        presets = list_presets()
        if name not in presets:
            # A list of YAML aliases was written out in full (megabytes), a long word too.
            close = did_you_mean(name, presets) if isinstance(name, str) else None
            hint = close or f"choose one of {', '.join(presets)}."
            what = "Unknown preset" if isinstance(name, str) else "A preset is a name, got"
            raise MoAConfigError(f"{what} {shown_value(name)}: {hint}")
        text = (
            resources.files("langgraph_moa.config.presets")
            .joinpath(f"{name}.yaml")
            .read_text(encoding="utf-8")
        )
        data = yaml.safe_load(text)
        data.setdefault("name", name)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> MoAConfig:
        """Load a config from a YAML (.yaml/.yml) or JSON (.json) file."""
        path = Path(path)
        data = read_mapping_file(path, "Config file", "a mapping of settings")
        _files_beside(data, path.parent)
        reading = _READING_YAML.set(not is_json(path))  # as read_mapping_file parses
        try:
            if "preset" in data:
                return cls.from_preset(data.pop("preset"), **data)
            return cls(**data)
        finally:
            _READING_YAML.reset(reading)

    def to_file(self, path: str | Path) -> None:
        """Write the config as YAML or JSON; model instances cannot be written."""
        data = self.model_dump(mode="json", exclude_none=True)
        path = Path(path)
        text = json.dumps(data, indent=2) if is_json(path) else yaml.safe_dump(data)
        path.write_text(text, encoding="utf-8")


_READING_YAML: ContextVar[bool] = ContextVar("moa_reading_yaml", default=False)
"""True while a YAML config file's settings are validated: only then does a refusal say how
YAML read an unquoted word (`_yaml_reading`); Python's 5 or JSON's true was written so."""


def _files_beside(data: dict[str, Any], folder: Path) -> None:
    """Read a relative file path that a config file names from the config file's folder.

    ``selection.calibration_file: cal.json`` was read from the working folder, so the same
    config found its calibration or not depending on where the command ran. An absolute
    path stays as written. The path held is absolute: joined to a relative folder
    (``configs/cal.json``), `to_file` wrote it so and the copy, read from its own folder,
    looked in ``configs/configs``.
    """
    selection = data.get("selection")
    if not isinstance(selection, dict):
        return
    named = selection.get("calibration_file")
    if isinstance(named, str) and named:
        data["selection"] = {**selection, "calibration_file": str(folder.absolute() / named)}


def list_presets() -> list[str]:
    """Names of the presets shipped in the package."""
    folder = resources.files("langgraph_moa.config.presets")
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def explain_validation_error(
    exc: ValidationError,
    what: str = "MoA configuration",
    schema: type[BaseModel] | None = None,
) -> str:
    """One line: for each broken rule, the field's dotted path, the rule and the value given.

    Pydantic's own text spans several lines and links to its documentation; an error shown
    on a command line or in an HTTP body must stay one line. With the `schema` that was
    validated, a misspelt setting is named with the setting meant (see `explain_errors`).
    """
    return explain_errors(exc.errors(include_url=False), what, schema)


def explain_errors(
    errors: Sequence[ErrorDetails], what: str, schema: type[BaseModel] | None = None
) -> str:
    """Explain pydantic error details in one line (see `explain_validation_error`).

    An unknown setting is a typo far more often than anything else: pydantic's "Extra
    inputs are not permitted" named neither the setting meant nor the fix, and repeated the
    value (a key put under a misnamed field, ``api_key:``, was echoed). It now says
    "unknown setting; did you mean 'layers'?", or lists the settings of its place in
    `schema`, and never repeats the value.
    """
    parts = []
    for err in errors[:EXPLAINED_ERRORS]:
        where = ".".join(_shown_key(part) for part in err["loc"])
        if err["type"] == "extra_forbidden":
            fix = f"unknown setting; {_fix_unknown(schema, err['loc'])}"
            parts.append(f"{where}: {fix}" if where else fix)
            continue
        msg = " ".join(err["msg"].removeprefix("Value error, ").split()).rstrip(".")
        msg = _LONG_QUOTE.sub(lambda m: f"'{clip(m[1])}'", msg)  # a long input, repeated
        given = err.get("input")
        # Redacted: a refused endpoint URL may hold a password (``https://user:pass@host``).
        shown = f"got {redact(repr(given))}" if _shows_value(err, msg) else ""
        if reading := _yaml_reading(err):
            shown = f"{shown}: {reading}" if shown else reading
        shown = f" ({shown})" if shown else ""
        parts.append(f"{where}: {msg}{shown}" if where else f"{msg}{shown}")
    if len(errors) > EXPLAINED_ERRORS:
        parts.append(f"and {len(errors) - EXPLAINED_ERRORS} more")
    text = f"Invalid {what}: " + "; ".join(parts)
    return text if text.endswith("?") else text + "."


def _shown_key(part: int | str) -> str:
    """Return one step of a setting's path as a refusal writes it: as is, else quoted.

    A key is the user's or a client's text: one holding a new line broke the one-line
    message in two, and one holding an escape sequence reached the terminal as written. A
    key that is not plain printable text, or is blank, is written as its repr; a long one
    is clipped.
    """
    text = str(part)
    return clip(text if text.isprintable() and text.strip() else repr(text))


EXPLAINED_ERRORS = 3
"""The broken rules an error names; the rest are counted. 20,000 bad proposers were each
explained, in one line of 1.9 MB."""


def _fix_unknown(schema: type[BaseModel] | None, loc: tuple[int | str, ...]) -> str:
    """Name the setting an unknown one was meant to be, or the settings of its place."""
    known = _settings_at(schema, loc[:-1]) if schema is not None else []
    if not known:
        return "remove it"
    return did_you_mean(loc[-1], known) or "the settings here are " + ", ".join(known)


def _settings_at(schema: type[BaseModel], path: tuple[int | str, ...]) -> list[str]:
    """Return the setting names of the model(s) found at `path` below `schema`.

    List indexes are stepped over; a field that may hold several models (a model spec, an
    optional section) offers the settings of each one that refuses unknown settings.
    """
    models = [schema]
    for part in path:
        if isinstance(part, int):
            continue
        models = [
            found
            for model in models
            if part in model.model_fields
            for found in _models_in(model.model_fields[part].annotation)
        ]
    names = {name for model in models for name in model.model_fields}
    return sorted(names)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Return the models in a field's type (through lists, unions, Optional) that refuse extras.

    Only those raise "extra_forbidden", so only their settings can be the one meant.
    """
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation] if annotation.model_config.get("extra") == "forbid" else []
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


_LONG_QUOTE = re.compile(rf"'([^'\s]{{{CLIENT_TEXT_CHARS + 1},}})'")
"""A quoted word longer than a client string may be repeated (an input pydantic's message
quotes); the package's own quoted prose has spaces and is left alone."""


def _shows_value(err: ErrorDetails, msg: str) -> bool:
    """Tell whether the value given is to follow the rule's text, as "(got ...)".

    Not when the rule's text quotes it already: "got '' (got '')" and "got False (got
    False)" said it twice.
    """
    given = err.get("input")
    if err["type"] == "missing" or not _short(given):
        return False
    if isinstance(given, str):
        return repr(given) not in msg
    return f"got {given!r}" not in msg


def _yaml_reading(err: ErrorDetails) -> str:
    """Say how YAML read an unquoted word where text was wanted, and how to write the text.

    ``model: no``, ``name: on``, ``name: 2024-01-01`` and ``name: 1.5`` are read as False,
    True, a date and a number; the refusal showed the reading (or nothing, for a date) and
    left the person who wrote a word to guess why. Empty where no text was wanted.
    """
    given = err.get("input")
    wants_text = err["type"] == "string_type" or err["loc"][-1:] == ("model",)
    if not (wants_text and _READING_YAML.get()):
        return ""
    if isinstance(given, bool):
        return (
            "YAML reads an unquoted yes, no, on, off, true or false as a boolean; quote it "
            "if it is text"
        )
    if isinstance(given, date):
        return f"YAML reads an unquoted {given} as a date; quote it if it is text"
    if isinstance(given, int | float):  # base 60 and octal are refused as the file is read
        return "YAML reads an unquoted number as a number; quote it if it is text"
    return ""


def _short(value: Any) -> bool:
    """Tell whether `value` is a number or string short enough to repeat (under 80 characters).

    An int is measured by its bits first: Python refuses to write one of over 4,300 digits,
    and a budget of 10**5000 tokens failed in this error's own text, not with it.
    """
    if isinstance(value, int) and value.bit_length() > 256:  # 78 digits or more
        return False
    return isinstance(value, (int, float, str)) and len(repr(value)) < 80
