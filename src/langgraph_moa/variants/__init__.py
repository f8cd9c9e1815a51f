"""The variants, as a registry: one module per family, one `register` line each.

A variant is a `Plan` subclass that owns its name, one-line description, config checks and
defaults, calls per run, final node and role, and routing on the shared graph. The config's
`variant` field, the CLI's help, the run context's schema and the README's table all read
this registry, so adding a variant is one module, one line below and a preset.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from langgraph_moa.text._names import did_you_mean
from langgraph_moa.variants._base import (
    AGGREGATE,
    JOIN_LAYER,
    PREPARE,
    PROPOSE,
    RANK,
    SELECT,
    FinalRole,
    Plan,
    Route,
)
from langgraph_moa.variants.layered import LayeredMoA, SelfMoA, SingleProposer
from langgraph_moa.variants.ranker import Ranker
from langgraph_moa.variants.select import Select
from langgraph_moa.variants.self_moa_seq import SelfMoASeq

if TYPE_CHECKING:
    from langgraph_moa.config._schema import MoAConfig

_REGISTRY: dict[str, type[Plan]] = {}


_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
"""A variant's name: lower-case words joined by hyphens, as the built-in ones are written.

The name is a config value, a CLI choice, a run-context enum member, a row of the README's
table and a word in one-line messages: spaces, colons, capitals or control characters break
one of them far from the `register` call that let them in.
"""


def register(variant: type[Plan]) -> type[Plan]:
    """Add a variant to the registry (usable as a class decorator); its name must be new.

    Everything is checked here, so that a mistake fails at the `register` line and not in
    the first config or run that names the variant. The name is lower-case words of letters
    and digits joined by single hyphens, starting with a letter (``deep-moa``, ``moa-2``).
    """
    if not (isinstance(variant, type) and issubclass(variant, Plan)):
        raise TypeError(
            f"register() takes a `Plan` subclass, got {variant!r}: subclass "
            "langgraph_moa.variants.Plan and pass the class"
        )
    if not variant.name or not variant.description:
        raise ValueError(f"{variant.__name__} needs a `name` and a one-line `description`")
    if not _NAME.fullmatch(variant.name):
        raise ValueError(
            f"variant name {variant.name!r} of {variant.__name__} is not lower-case letters, "
            "digits and single hyphens that start with a letter and end with no hyphen: write "
            "it as the built-in ones are (for example 'self-moa-seq' or 'moa-2')"
        )
    # One step that looks the name up and stores the class (a dict's own, under the GIL): a
    # lookup, then a store, let a class of that name registered in another thread between
    # them be told it was registered and then be replaced.
    taken = _REGISTRY.setdefault(variant.name, variant)
    if taken is not variant:
        raise ValueError(
            f"variant {variant.name!r} is already registered (by "
            f"{taken.__module__}.{taken.__qualname__}): choose another name"
            + ("" if variant.name in _SHIPPED else f", or unregister({variant.name!r}) first")
        )
    return variant


def unregister(name: str) -> None:
    """Remove a variant you registered (for tests that register a toy one).

    A shipped variant stays: presets, the default config and `moa serve`'s clients name it,
    and removing it would break them for the whole process.
    """
    if name in _SHIPPED:
        raise ValueError(
            f"variant {name!r} ships with the package and presets name it: unregister only "
            "variants you registered"
        )
    _REGISTRY.pop(name, None)


for _family in (LayeredMoA, SingleProposer, SelfMoA, SelfMoASeq, Ranker, Select):
    register(_family)

_SHIPPED = tuple(_REGISTRY)


def shipped_variants() -> tuple[str, ...]:
    """Return the variants this package ships (not those another module registered).

    `moa serve` lets a client switch among these; a variant registered by whatever module
    the server's process imported is served only where the operator configured it.
    """
    return _SHIPPED


def variant_names() -> tuple[str, ...]:
    """Return the registered variants' names, in registration order."""
    return tuple(_REGISTRY)


def variant_of(name: str) -> type[Plan]:
    """Return the registered variant called `name` (raises `ValueError` naming the choices)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        hint = did_you_mean(name, _REGISTRY)
        raise ValueError(
            f"unknown variant {name!r}; "
            + (hint or f"choose one of: {', '.join(map(repr, _REGISTRY))}")
        ) from None


def plan_for(cfg: MoAConfig) -> Plan:
    """Return the plan of the config's variant."""
    return variant_of(cfg.variant)(cfg)


def _registered() -> tuple[tuple[str, type[Plan]], ...]:
    """Return the variants as they are now, to go through while another thread registers one.

    Going through the registry itself, a variant at a time, failed with "dictionary changed
    size during iteration" when one was registered meanwhile; the copy is made at once.
    """
    return tuple(_REGISTRY.items())


def variants_help() -> str:
    """One line per variant, `name: description`, for help texts."""
    return "; ".join(f"{name}: {v.description}" for name, v in _registered())


def variants_table() -> str:
    """Return the README's variant table as Markdown (a test keeps the README in step)."""
    rows = [f"| `{name}` | {v.description} |" for name, v in _registered()]
    return "\n".join(["| variant | what runs |", "|---|---|", *rows])


__all__ = [
    "AGGREGATE",
    "PREPARE",
    "PROPOSE",
    "RANK",
    "SELECT",
    "JOIN_LAYER",
    "FinalRole",
    "Plan",
    "Route",
    "plan_for",
    "register",
    "shipped_variants",
    "unregister",
    "variant_names",
    "variant_of",
    "variants_help",
    "variants_table",
]
