"""The JSON the package writes for others to read: strict JSON, whatever a value holds.

Python's `json.dumps` writes ``NaN``, ``Infinity`` and ``-Infinity`` for non-finite floats,
which no JSON parser has to accept (a provider's ``-inf`` logprob, a win rate of no pairs).
Every JSON text `moa serve` writes itself, and `moa eval`'s summary, go through `dumps`,
which writes them as ``null``, as the non-stream answers' serializer (FastAPI's, pydantic's
``inf_nan_mode="null"``) already does.
"""

from __future__ import annotations

import json
import math
from typing import Any


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Return `value` as strict JSON: non-finite floats as null, other objects as `str`."""
    try:
        return json.dumps(value, default=str, allow_nan=False, indent=indent)
    except ValueError:  # a NaN or an infinity somewhere: rare, so the walk is paid only then
        return json.dumps(_finite(value), default=str, allow_nan=False, indent=indent)


def _finite(value: Any) -> Any:
    """Return `value` with every non-finite float replaced by None (dicts, lists, tuples)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
