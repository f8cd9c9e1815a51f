"""Digests of a config: the same in every process for the same MoA.

`fingerprint` covers every field (LangChain's LLM cache keys `MoAChatModel` on it);
`shape_digest` covers who a run asks and how (the variant, its proposers and samples, layers,
aggregators, selection and aggregation mode), which a checkpointed run records so that a
resume by a graph of another MoA is refused instead of mixing the two MoAs' proposals.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from langgraph_moa.config._schema import MoAConfig

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
    """
    return _digest(_plain(cfg))


def shape_digest(cfg: MoAConfig) -> str:
    """Return a digest of the fields that decide which calls a run makes (`SHAPE_FIELDS`)."""
    return _digest({name: _plain(getattr(cfg, name)) for name in SHAPE_FIELDS})


ROUTE_FREE = ("temperature", "max_tokens")
"""Role fields a run context sets that change how a model is asked, not who is asked, how
often, or where its answer goes: `route_digest` leaves them out."""


def route_digest(cfg: MoAConfig) -> str:
    """Return `shape_digest` less each role's `ROUTE_FREE` fields.

    Equal where two configs route a run alike (an edit by `update_state` routes with the
    base config).
    """
    shape = {name: _plain(getattr(cfg, name)) for name in SHAPE_FIELDS}
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


def _plain(value: Any) -> Any:
    """Return `value` as JSON-able data, pydantic models (and chat models) field by field."""
    if isinstance(value, BaseModel):
        fields = {name: _plain(getattr(value, name, None)) for name in type(value).model_fields}
        return {"type": type(value).__qualname__, **fields}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):  # in a known order: one process's is not another's
        return sorted((_plain(v) for v in value), key=_json)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if callable(value):
        return getattr(value, "__qualname__", type(value).__qualname__)
    return type(value).__qualname__
