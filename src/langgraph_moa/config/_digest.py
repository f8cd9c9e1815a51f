"""Digests of a config: the same in every process for the same MoA.

`fingerprint` covers every field (LangChain's LLM cache keys `MoAChatModel` on it);
`shape_digest` covers who a run asks and how (the variant, its proposers and samples, layers,
aggregators, selection and aggregation mode), which a checkpointed run records so that a
resume by a graph of another MoA is refused instead of mixing the two MoAs' proposals.

The digests a run records take in what a user set, not what the installed versions add: a
field of a pydantic model (a config model, a chat model) at its default is left out, so a
release that adds a field with a default changes no digest, and so is a field the model
keeps out of its own data (`exclude`: a chat model's callbacks, tags and metadata, where
langchain-core records its own version). A config section's field is compared with its
default of that time (`SECTION_DEFAULTS`), so that a release changing it is seen.
Versions up to 69bfb89 took in every field (`every_field`): a run they checkpointed is
checked against that form too (`graph._nodes.Derived.earlier`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from langgraph_moa.config._aggregation import AggregationConfig
from langgraph_moa.config._schema import (
    AggregatorConfig,
    MoAConfig,
    ProposerConfig,
    SelfMoASeqConfig,
)
from langgraph_moa.text._selection import SelectionConfig

SHAPE_FIELDS = (
    "variant",
    "proposers",
    "aggregator",
    "layers",
    "seq",
    "selection",
    "aggregator_fallbacks",
    "aggregation",
)
"""The fields that say which calls a run makes and whose answers go where. The others (the
prompts' wording, retries, timeouts, the deadline, the budget, the name) may change between
a run and its resume: the proposals already made stay those of the same models."""


def fingerprint(cfg: MoAConfig) -> str:
    """Return a digest of every field of `cfg`.

    A model instance counts by its type and fields (a function by its name, any other
    object by its type): two instances of one model with the same settings answer alike.
    Every field, defaults included: a release that changes a default (a prompt's wording)
    must not hit the answers cached with the old one. An upgrade that adds a field, or a
    chat model's record of the installed langchain-core, makes the cache miss once.
    """
    return _digest(_plain(cfg, _every_field))


def shape_digest(cfg: MoAConfig, *, every_field: bool = False) -> str:
    """Return a digest of the fields that decide which calls a run makes (`SHAPE_FIELDS`).

    `every_field`: in the form of versions up to 69bfb89, every field of each model.
    """
    return _digest(_shape(cfg, every_field))


def _shape(cfg: MoAConfig, every_field: bool) -> dict[str, Any]:
    fields = _every_field if every_field else _set_fields
    return {name: _plain(getattr(cfg, name), fields) for name in SHAPE_FIELDS}


SECTION_DEFAULTS: dict[type[BaseModel], dict[str, Any]] = {
    ProposerConfig: {
        "name": None,
        "temperature": 0.7,
        "max_tokens": 512,
        "context_window": None,
        "samples": 1,
        "logprobs": False,
    },
    AggregatorConfig: {
        "name": None,
        "temperature": 0.7,
        "max_tokens": 2048,
        "context_window": None,
    },
    SelfMoASeqConfig: {"window_size": 6, "samples_per_step": None},
    AggregationConfig: {
        "start": "all",
        "quorum": None,
        "every_layer": False,
        "chunk_tokens": 32,
        "first_chunk_s": None,
        "max_parts": 16,
        "continuation": "auto",
    },
    SelectionConfig: {
        "method": "vote",
        "extractor": "auto",
        "pattern": None,
        "priority": [],
        "stop_agreement": None,
        "round_size": 2,
        "calibration": {},
        "calibration_file": None,
        "show_tally": False,
    },
}
"""The defaults of the config's sections (by class, see `_first_defaults`) when the digests
first left defaults out (2026-12-06): a section's field is left out where it holds the value
here, not wherever it holds today's default. A release that changes such a default then
changes the digests, and a run checkpointed under the old one is refused instead of resumed
with other windows or samples than it started with. Never edit a value here: that hides the
change. A field a release adds is not here, and is left out at its own default
(`_set_fields`)."""

ROUTE_FREE = ("temperature", "max_tokens")
"""Role fields a run context sets that change how a model is asked, not who is asked, how
often, or where its answer goes: `route_digest` leaves them out."""


def route_digest(cfg: MoAConfig, *, every_field: bool = False) -> str:
    """Return `shape_digest` less each role's `ROUTE_FREE` fields.

    Equal where two configs route a run alike (an edit by `update_state` routes with the
    base config).
    """
    shape = _shape(cfg, every_field)
    for name in _ROLES:
        roles = shape[name]
        shape[name] = (
            [_unsampled(r) for r in roles] if isinstance(roles, list) else _unsampled(roles)
        )
    return _digest(shape)


_ROLES = ("proposers", "aggregator", "aggregator_fallbacks")


def _unsampled(role: Any) -> Any:
    if not isinstance(role, dict):
        return role  # no aggregator
    return {k: v for k, v in role.items() if k not in ROUTE_FREE}


def _digest(data: Any) -> str:
    return hashlib.sha256(_json(data).encode()).hexdigest()[:32]


def _json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, default=lambda o: type(o).__qualname__)


Fields = Callable[[BaseModel], dict[str, Any]]
"""Which fields of a pydantic model a digest takes in, as plain data (`_plain`)."""


def _every_field(model: BaseModel) -> dict[str, Any]:
    """Return every field: the form of versions up to 69bfb89."""
    return {
        name: _plain(getattr(model, name, None), _every_field) for name in type(model).model_fields
    }


def _set_fields(model: BaseModel) -> dict[str, Any]:
    """Return the fields a user set: none at its default, none the model keeps out of its data.

    A config section's default is the one it had when defaults were first left out
    (`SECTION_DEFAULTS`), so that a changed one is seen.

    A field given a value counts where its default is read from the process (a factory that
    is no class: an API key or a URL read from an environment variable), even where that
    reads the same: else the same MoA's digest would differ between processes whose
    variables differ. Left to such a default, it is not seen.
    """
    plain = {}
    given = model.model_fields_set
    first = _first_defaults(type(model))
    for name, field in type(model).model_fields.items():
        if field.exclude is True:
            continue
        value = _plain(getattr(model, name, None), _set_fields)
        default = first[name] if name in first else _default(field)
        if (name in given and _read_by_process(field)) or value != default:
            plain[name] = value
    return plain


def _first_defaults(cls: type[BaseModel]) -> dict[str, Any]:
    """Return the `SECTION_DEFAULTS` of the config section `cls` is or extends, else none.

    Found by the class, not its name: a user's model named `SelectionConfig` is no section,
    and its fields are compared with its own defaults.
    """
    for base in cls.__mro__:
        if base in SECTION_DEFAULTS:
            return SECTION_DEFAULTS[base]
    return {}


def _read_by_process(field: FieldInfo) -> bool:
    """Tell whether `field`'s default is worked out by a function, which may read the process."""
    return field.default_factory is not None and not isinstance(field.default_factory, type)


_NO_DEFAULT = object()


def _default(field: FieldInfo) -> Any:
    """Return `field`'s default as plain data, or a value equal to none where none is known.

    A factory that takes the other fields' values (pydantic 2.10) has none known here, nor
    one that fails (a partner model's API key read from a variable that is not set, where
    the key was given): such a field counts as set.
    """
    if getattr(field, "default_factory_takes_data", False):
        return _NO_DEFAULT
    try:
        default = field.get_default(call_default_factory=True)
    except Exception:
        return _NO_DEFAULT
    return _plain(default, _set_fields)


def _plain(value: Any, fields: Fields) -> Any:
    """Return `value` as JSON-able data, pydantic models (and chat models) by their `fields`."""
    if isinstance(value, BaseModel):
        return {"type": type(value).__qualname__, **fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v, fields) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):  # in a known order: one process's is not another's
        return sorted((_plain(v, fields) for v in value), key=_json)
    if isinstance(value, (list, tuple)):
        return [_plain(v, fields) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if callable(value):
        return getattr(value, "__qualname__", type(value).__qualname__)
    return type(value).__qualname__
