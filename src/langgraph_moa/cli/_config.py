"""The config a command runs: a preset or file with the flags on top, or a neutral base.

No hidden defaults. When the user names the models (`--proposers`, `--aggregator`) or the
shape (`--variant`, `--layers`, `--method`) without a preset, the run starts from a neutral
base, not from some preset's leftovers: the named models (the default model where none is
named), the schema's default limits, and every value stated by `describe()` in the header.
Flags that contradict each other are refused in one sentence before anything is built, so no
model a run will not call is ever assembled or loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from langgraph_moa._redact import redacted_repr
from langgraph_moa.cli._ranges import number_option, schema_bounds
from langgraph_moa.cli._usage import OptionConflictError
from langgraph_moa.config._loader import DEFAULT_PRESET, load_config
from langgraph_moa.config._schema import MoAConfig, ProposerConfig
from langgraph_moa.config.context import MoAContext, apply_context
from langgraph_moa.errors import MoAConfigError
from langgraph_moa.local.catalog import MAX_CONTEXT, MIN_CONTEXT
from langgraph_moa.providers._models import describe_model
from langgraph_moa.serving._history import HISTORY_RUNS, MAX_HISTORY_RUNS
from langgraph_moa.text._names import did_you_mean
from langgraph_moa.variants import Plan, variant_names, variant_of, variants_help

DEFAULT_MODEL = "local:qwen2.5-coder-1.5b"
"""The model of the neutral base where the user names none: the default preset's model."""
SERVED_BY_DEFAULT = (DEFAULT_PRESET, "local-moa", "local-self-moa")
"""What `moa serve` (without --preset or --config) and `moa ui` (without --preset) serve."""
NEUTRAL_SAMPLES = {"select": 3, "self-moa": 3, "self-moa-seq": 6}
"""Samples of the neutral base's one model, for the variants that sample one model."""
SELECTION_METHODS = ("vote", "confidence", "consensus", "mux")


def list_problem(value: str) -> str | None:
    """Say what is wrong with a comma-separated list of model specs, if anything."""
    items = [item.strip() for item in value.split(",")]
    give = f"give comma-separated model specs, e.g. {PROPOSERS_EXAMPLE}."
    if not any(items):
        return f"names no model: {give}"
    if not all(items):
        return f"has an empty item (two commas in a row, or one at an end): {give}"
    return None


def spec_problem(value: str) -> str | None:
    """Say what is wrong with one model spec given to a flag, if anything."""
    if value.strip():
        return None
    return (
        "names no model: give a model spec, e.g. 'openai:gpt-4o-mini' or "
        "'local:qwen2.5-coder-1.5b'."
    )


def variant_problem(value: str) -> str | None:
    """Say that `value` names no registered variant, with the one meant or the choices."""
    names = variant_names()
    if value in names:
        return None
    hint = did_you_mean(value, names) or f"use one of {', '.join(names)}."
    return f"is not a variant: {hint}"


def method_problem(value: str) -> str | None:
    """Say that `value` is not a selection method, with the choices."""
    if value in SELECTION_METHODS:
        return None
    return f"is not a selection method: use one of {', '.join(SELECTION_METHODS)}."


def checked(problem_of: Callable[[str], str | None]) -> Callable[[str], str]:
    """Make a typer parser that refuses a value `problem_of` finds wrong, as a usage error.

    A bad value of one option exits 2 with "Invalid value for '--variant': 'x' is not a
    variant: ...", as one out of range does (`_ranges`); checked later, in `build_config`,
    it exited 1, the code of a run that failed. `build_config` keeps its own checks for
    callers outside the command line.
    """

    def parse(value: str) -> str:
        if problem := problem_of(value):
            raise typer.BadParameter(f"{value!r} {problem}")
        return value

    return parse


def _bounds(model: type[MoAConfig | ProposerConfig], field: str) -> dict[str, Any]:
    """Return the schema's bounds of `field`, as `number_option` takes them."""
    low, high, above = schema_bounds(model, field)
    return {"low": low, "high": high, "above": above}


PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset",
        "-p",
        help=f"Preset name (default {DEFAULT_PRESET}; a neutral base, stated in the header, "
        "when --proposers, --aggregator, --layers, --variant or --method are given alone).",
    ),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML or JSON config file.")]
LayersOpt = Annotated[
    int | None,
    number_option(
        "--layers", **_bounds(MoAConfig, "layers"), help="MoA layers (proposer layers + 1)."
    ),
]
PROPOSERS_EXAMPLE = "'openai:gpt-4o-mini,local:qwen2.5-coder-1.5b'"
ProposersOpt = Annotated[
    str | None,
    typer.Option(
        parser=checked(list_problem),
        metavar="SPECS",
        help=f"Comma-separated proposer specs, e.g. {PROPOSERS_EXAMPLE}.",
    ),
]
AggregatorOpt = Annotated[
    str | None,
    typer.Option(parser=checked(spec_problem), metavar="SPEC", help="Aggregator model spec."),
]
VariantOpt = Annotated[
    str | None,
    typer.Option(parser=checked(variant_problem), help="The variant: " + variants_help() + "."),
]
SamplesOpt = Annotated[
    int | None,
    number_option(
        "--samples", **_bounds(ProposerConfig, "samples"), help="Samples per proposer per layer."
    ),
]
MaxTokensOpt = Annotated[
    int | None,
    number_option(
        "--max-tokens",
        **_bounds(ProposerConfig, "max_tokens"),
        help="Completion-token cap of every call.",
    ),
]
TemperatureOpt = Annotated[
    float | None,
    number_option(
        "--temperature",
        **_bounds(ProposerConfig, "temperature"),
        kind=float,
        metavar="T",
        help="Temperature of every proposer.",
    ),
]
TimeoutOpt = Annotated[
    float | None,
    number_option(
        "--timeout",
        **_bounds(MoAConfig, "call_timeout_s"),
        kind=float,
        metavar="SECONDS",
        help="Seconds one attempt of one call may take (above 0).",
    ),
]
MethodOpt = Annotated[
    str | None,
    typer.Option(
        "--method",
        parser=checked(method_problem),
        help="How variant select picks: vote, confidence, consensus or mux.",
    ),
]
SystemOpt = Annotated[
    str | None,
    typer.Option("--system", metavar="TEXT", help="A system prompt put before the question."),
]
ContextSizeOpt = Annotated[
    int | None,
    number_option(
        "--context-size",
        low=MIN_CONTEXT,
        high=MAX_CONTEXT,
        metavar="TOKENS",
        help="Context of each local model, in tokens (default 4096 per slot).",
    ),
]

HistoryRunsOpt = Annotated[
    int,
    number_option(
        "--history-runs",
        low=0,
        high=MAX_HISTORY_RUNS,
        envvar="MOA_HISTORY_RUNS",
        help="Runs the web page's history keeps; saving another deletes the oldest "
        f"(default {HISTORY_RUNS}; 0 keeps none and writes no file).",
    ),
]


def build_config(
    preset: str | None,
    config_file: Path | None,
    layers: int | None = None,
    proposers: str | None = None,
    aggregator: str | None = None,
    variant: str | None = None,
    samples: int | None = None,
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    timeout: float | None = None,
    method: str | None = None,
) -> MoAConfig:
    """Combine a preset, a file or the neutral base with the flags, validated.

    Raises:
        MoAConfigError: flags that contradict each other or the config, in one sentence.
    """
    flags: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "timeout": timeout,
    }
    args: tuple[Any, ...] = (preset, config_file, layers, proposers, aggregator, variant, samples)
    try:
        return _build_config(*args, **flags, method=method)
    except MoAConfigError:
        flagged = samples is not None or temperature is not None
        if not flagged or temperature == GREEDY_FIX or not _builds(args, flags, method):
            raise
    raise OptionConflictError(_greedy_samples(samples, temperature))


def _builds(args: tuple[Any, ...], flags: dict[str, Any], method: str | None) -> bool:
    """Tell whether the config builds with ``--temperature 0.7`` added (samples were greedy)."""
    try:
        _build_config(*args, **{**flags, "temperature": GREEDY_FIX}, method=method)
    except MoAConfigError:
        return False
    return True


GREEDY_FIX = 0.7
"""The temperature `moa run` suggests for samples: the one the MoA papers sample at."""


def _greedy_samples(samples: int | None, temperature: float | None) -> str:
    """Refuse samples at temperature 0 in the command line's words (the flag that fixes it).

    The config's own refusal ("set its temperature above 0 ... or its samples to 1") speaks
    to a config file; `moa run --samples 3` on a greedy preset must name the flag instead.
    """
    many = f"--samples {samples}" if samples is not None else "the samples"
    why = "--temperature 0" if temperature is not None else "the config's temperature 0"
    return (
        f"{many} at {why} would be one answer repeated: pass --temperature {GREEDY_FIX} "
        "(the papers sample at 0.7), or --samples 1."
    )


def _build_config(
    preset: str | None,
    config_file: Path | None,
    layers: int | None,
    proposers: str | None,
    aggregator: str | None,
    variant: str | None,
    samples: int | None,
    *,
    max_tokens: int | None,
    temperature: float | None,
    timeout: float | None,
    method: str | None,
) -> MoAConfig:
    """Build the config `build_config` describes (without its command-line rewording)."""
    if preset and config_file:
        raise OptionConflictError("Give either --preset or --config, not both.")
    models = model_list("--proposers", proposers)
    aggregator = model_flag("--aggregator", aggregator)
    if method is not None and (problem := method_problem(method)):
        raise MoAConfigError(f"--method {method!r} {problem}")
    shaped = any(v is not None for v in (layers, models, aggregator, variant, method))
    if preset or config_file or not shaped:
        base = load_config(config_file or preset or DEFAULT_PRESET)
        _refuse_conflicts(variant or base.variant, aggregator, method, layers, models)
        context = MoAContext(
            layers=layers,
            proposers=models,
            aggregator=aggregator,
            variant=variant,
            samples=samples,
            temperature=temperature,
            max_tokens=max_tokens,
            aggregator_max_tokens=max_tokens,
        )
        cfg = apply_context(base, context, call_timeout_s=timeout)
        if method is not None:
            selection = (
                cfg.selection.model_copy(update={"method": method})
                if cfg.selection
                else {"method": method}
            )
            cfg = cfg.with_overrides(selection=selection, name=_customized(base.name))
        return cfg
    return neutral_config(
        variant or ("select" if method else "moa"),
        models,
        aggregator,
        layers=layers,
        samples=samples,
        max_tokens=max_tokens,
        temperature=temperature,
        timeout=timeout,
        method=method,
    )


def model_list(flag: str, value: str | None) -> list[str] | None:
    """Split a comma-separated list of model specs; refuse an empty list or an empty item.

    An empty value used to be dropped as if the flag were absent, so the run called a model
    the user never named (the default preset's, or the first proposer as aggregator).
    """
    if value is None:
        return None
    if problem := list_problem(value):
        raise MoAConfigError(f"{flag} {redacted_repr(value)} {problem}")
    return [item.strip() for item in value.split(",")]


def model_flag(flag: str, value: str | None) -> str | None:
    """Return one model spec given to `flag`, refusing an empty one (see `model_list`)."""
    if value is None:
        return None
    if problem := spec_problem(value):
        raise MoAConfigError(f"{flag} {redacted_repr(value)} {problem}")
    return value.strip()


def _customized(name: str | None) -> str | None:
    if name is None or name.endswith("(customized)"):
        return name
    return f"{name} (customized)"


def _refuse_conflicts(
    variant: str,
    aggregator: str | None,
    method: str | None,
    layers: int | None,
    models: list[str] | None,
) -> None:
    """Refuse, in one sentence, flags that the chosen variant would silently ignore."""
    rules = _rules(variant)
    if rules.final_role == "selector" and aggregator is not None:
        raise OptionConflictError(
            "--aggregator has no effect with variant select, which picks a proposal without "
            "an aggregator call: drop --aggregator, or use --variant moa or ranker."
        )
    if method is not None and rules.final_role != "selector":
        raise OptionConflictError(
            f"--method chooses how variant select picks, but the variant is {variant!r}: "
            "add --variant select or drop --method."
        )
    if rules.fixed_layers and layers not in (None, rules.default_layers):
        raise OptionConflictError(
            f"--layers {layers} does not apply to variant {variant!r}, which has one proposer "
            "layer: drop --layers."
        )
    if rules.one_model and models is not None and len(models) != 1:
        raise OptionConflictError(
            f"variant {variant!r} samples one model, but --proposers names {len(models)}: "
            "give one model and --samples N."
        )


def _rules(variant: str) -> type[Plan]:
    """Return the variant's registered rules, or refuse an unknown one in one sentence."""
    try:
        return variant_of(variant)
    except ValueError as exc:
        raise MoAConfigError(f"--variant: {exc}.") from None


def neutral_config(
    variant: str,
    models: list[str] | None,
    aggregator: str | None,
    *,
    layers: int | None = None,
    samples: int | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    timeout: float | None = None,
    method: str | None = None,
) -> MoAConfig:
    """Build the neutral base: exactly the named models, the schema's defaults, nothing else.

    Where no proposer is named, the default model proposes; where a synthesizing variant
    names no aggregator, its first proposer aggregates. Both are stated in the header.
    """
    _refuse_conflicts(variant, aggregator, method, layers, models)
    models = models or [DEFAULT_MODEL]
    role: dict[str, Any] = {}
    if max_tokens is not None:
        role["max_tokens"] = max_tokens
    proposer_role = {**role, **({"temperature": temperature} if temperature is not None else {})}
    count = NEUTRAL_SAMPLES.get(variant, 1) if samples is None else samples
    data: dict[str, Any] = {
        "name": "custom",
        "variant": variant,
        "proposers": [{"model": m, "samples": count, **proposer_role} for m in models],
    }
    if "aggregator" not in _rules(variant).derived_fields:
        data["aggregator"] = {"model": aggregator or models[0], **role}
    elif aggregator is not None:  # self-moa with its own model named: the schema checks it
        data["aggregator"] = {"model": aggregator, **role}
    if layers is not None:
        data["layers"] = layers
    if timeout is not None:
        data["call_timeout_s"] = timeout
    if method is not None:
        data["selection"] = {"method": method}
    return _cap_derived_aggregator(MoAConfig(**data), max_tokens)


def _cap_derived_aggregator(cfg: MoAConfig, max_tokens: int | None) -> MoAConfig:
    """Give an aggregator the variant derived (Self-MoA's) the `--max-tokens` cap too.

    The variant derives it from the proposer with the schema's 2048-token room, so without
    this `--max-tokens` capped every call but that one, against the header and README.
    """
    final = cfg.aggregator
    if max_tokens is None or final is None or final.max_tokens == max_tokens:
        return cfg
    return cfg.with_overrides(aggregator=final.model_copy(update={"max_tokens": max_tokens}))


def describe(cfg: MoAConfig) -> str:
    """State a config in full, in one line: name, variant, layers, models and their limits."""
    if cfg.final_role == "selector" and cfg.selection is not None:
        answers = sum(p.samples for p in cfg.proposers)
        shape = f"select by {cfg.selection.method} over {answers} answers"
    else:
        shape = f"{cfg.variant}, {cfg.layers} layers"
    parts = [f"{cfg.name or 'custom'}: {shape}"]
    parts.append("proposers " + ", ".join(_role(p, p.samples) for p in cfg.proposers))
    if cfg.final_role != "selector" and cfg.aggregator is not None:
        parts.append(f"{cfg.final_role} {_role(cfg.final, 1)}")
    if cfg.call_timeout_s is not None:
        parts.append(f"timeout {cfg.call_timeout_s:g}s per call")
    return " · ".join(parts)


def _role(role: Any, samples: int) -> str:
    times = f" x{samples}" if samples > 1 else ""
    limit = f"max {role.max_tokens} tokens" if role.max_tokens else "no token cap"
    temp = f", T {role.temperature:g}" if role.temperature is not None else ""
    return f"{describe_model(role.model)}{times} ({limit}{temp})"


def local_models(cfg: MoAConfig) -> list[str]:
    """List the local models a run of `cfg` may call, in order, each once (nothing else)."""
    return cfg.local_model_names()
