"""Dollars from tokens: the price table a user gives, and what a run's calls cost.

A price table maps a model name to dollars per million prompt and completion tokens:

.. code-block:: yaml

    gpt-4o: {prompt: 2.50, completion: 10.00}
    together:Qwen/Qwen2-72B-Instruct: {prompt: 0.90, completion: 0.90}

A call is priced by the model that answered, then by the configured spec, then by the spec
without its provider prefix. Local models (``local:``) cost nothing. A call whose model is
in no row is counted as unpriced, and the report says so rather than pretending it was free.
A call whose provider reported no usage is priced by its estimated tokens and counted as
estimated, never as free.
Cached calls are priced too: the cost is a property of the system, not of this rerun.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from langgraph_moa._redact import clip, shown_value
from langgraph_moa.config._files import read_mapping_file
from langgraph_moa.errors import MoAConfigError
from langgraph_moa.providers._table import LOCAL_PREFIX
from langgraph_moa.text._names import did_you_mean

Prices = dict[str, tuple[float, float]]
"""Model -> (dollars per 1M prompt tokens, dollars per 1M completion tokens)."""


def load_prices(path: str | Path) -> Prices:
    """Read a YAML or JSON price table; every problem names the model and the fix."""
    where = f"Price table {str(path)!r}"
    data = read_mapping_file(
        path, "Price table", "model names mapped to {prompt: $/1M, completion: $/1M}"
    )
    if not data:
        raise MoAConfigError(f"{where} is empty; it needs at least one model.")
    prices: Prices = {}
    for model, row in data.items():
        problem = _row_problem(row)
        if problem:
            raise MoAConfigError(
                f"{where}: model {clip(model)!r} needs a mapping of 'prompt' and 'completion' "
                f"(dollars per million tokens), {problem}."
            )
        prompt, completion = _price(row["prompt"]), _price(row["completion"])
        if prompt is None or completion is None:
            raise MoAConfigError(f"{where}: prices of {clip(model)!r} must be numbers.")
        if not (math.isfinite(prompt) and math.isfinite(completion)):
            raise MoAConfigError(f"{where}: prices of {clip(model)!r} must be finite.")
        if prompt < 0 or completion < 0:
            raise MoAConfigError(f"{where}: prices of {clip(model)!r} cannot be negative.")
        prices[str(model)] = (prompt, completion)
    return prices


PRICE_KEYS = ("prompt", "completion")


def _row_problem(row: Any) -> str | None:
    """Say what is wrong with a row's shape, without writing the row out; None if nothing.

    The refusal wrote the row as given: YAML aliases nesting a few hundred bytes into
    millions of values made it 25 MB long, in seconds, and a few levels more ran out of
    memory. Now it names the row's type (a number or a word is shown), or the key that is
    not a price.
    """
    if not isinstance(row, dict):
        return f"got {shown_value(row)}"
    unknown = next((key for key in row if key not in PRICE_KEYS), None)
    if unknown is not None:
        hint = did_you_mean(unknown, PRICE_KEYS)
        shown = repr(clip(str(unknown)))
        return f"got {shown}; {hint}" if hint else f"got {shown}, which is neither"
    missing = [key for key in PRICE_KEYS if key not in row]
    return f"{missing[0]!r} is missing" if missing else None


def _price(value: Any) -> float | None:
    """Return a price as a float, None if it is no number (``yes`` was read as 1.0)."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def price_of(call: Mapping[str, Any], prices: Prices) -> tuple[float, float] | None:
    """Per-million prices for one call, or None when its model is not in the table."""
    for name in (call.get("model"), call.get("configured_model")):
        if not name:
            continue
        if name.startswith(f"{LOCAL_PREFIX}:"):
            return (0.0, 0.0)
        if name in prices:
            return prices[name]
        bare = name.split("@", 1)[0].split(":", 1)[-1]  # model@http://host:port: the model
        if bare in prices:
            return prices[bare]
    return None


def dollars(calls: Sequence[Mapping[str, Any]], prices: Prices) -> tuple[float, int]:
    """Dollars spent by these calls, and how many calls had no price."""
    total, unpriced = 0.0, 0
    for call in calls:
        price = price_of(call, prices)
        if price is None:
            unpriced += 1
            continue
        total += (
            call.get("prompt_tokens", 0) * price[0] + call.get("completion_tokens", 0) * price[1]
        ) / 1e6
    return total, unpriced


def estimated_calls(calls: Sequence[Mapping[str, Any]], prices: Prices) -> int:
    """Count the priced calls whose tokens are estimated: their providers reported no usage.

    Their dollars are in the total, by the estimate (``usage_estimated``), and the report
    says how many: read as 0 tokens they were free.
    """
    return sum(
        1
        for call in calls
        if call.get("usage_estimated") and (price := price_of(call, prices)) and any(price)
    )


def run_cost(calls: Sequence[Mapping[str, Any]], prices: Prices | None) -> dict[str, Any]:
    """Return what a run cost, for its provenance: dollars, and how many calls had no price.

    Without a table only local calls are priced (they cost nothing); a run whose every call is
    unpriced says so instead of showing $0. ``estimated_calls``: priced calls whose tokens
    are estimated (`estimated_calls`), only where there are any.
    """
    total, unpriced = dollars(calls, prices or {})
    cost = {"dollars": round(total, 6), "unpriced_calls": unpriced, "calls": len(calls)}
    if estimated := estimated_calls(calls, prices or {}):
        cost["estimated_calls"] = estimated
    return cost
