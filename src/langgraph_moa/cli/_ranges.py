"""Number options of the `moa` command: a bad value is a usage error in one sentence.

typer checks ``min=``/``max=`` through pydantic, whose "Input should be greater than or equal
to 1" names neither the value given nor the whole range; options without them (``--samples``,
``--layers``) reached the config, which refused them with exit code 1 in its own words. Every
number option now parses through `number_option`: a value that is no number, not finite, or
out of range exits with code 2, as any usage error does, saying "Invalid value for
'--samples': 0 is out of range: give a whole number from 1 to 256." The bounds come from the
schema where the schema bounds the setting, so the two cannot disagree; --help shows them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import typer
from pydantic import BaseModel


def schema_bounds(model: type[BaseModel], field: str) -> tuple[float | None, float | None, bool]:
    """Return a schema field's (lowest, highest, lowest excluded) from its ge/gt and le."""
    low: float | None = None
    high: float | None = None
    above = False
    for rule in model.model_fields[field].metadata:
        if getattr(rule, "ge", None) is not None:
            low = rule.ge
        if getattr(rule, "gt", None) is not None:
            low, above = rule.gt, True
        if getattr(rule, "le", None) is not None:
            high = rule.le
    return low, high, above


def span(kind: type, low: float | None, high: float | None, above: bool = False) -> str:
    """Say the values allowed, e.g. 'a whole number from 1 to 256', 'a number above 0'."""
    noun = _noun(kind)
    if low is not None and high is not None and not above:
        return f"{noun} from {_shown(low)} to {_shown(high)}"
    lowest = ""
    if low is not None:
        lowest = f"above {_shown(low)}" if above else f"of at least {_shown(low)}"
    highest = f"at most {_shown(high)}" if high is not None else ""
    return " ".join(
        part for part in (noun, lowest, "and" if lowest and highest else "", highest) if part
    )


def _shown(bound: float) -> str:
    """Write a bound in full: 2147483647, not 2.14748e+09; 2, not 2.0; 0.1 as 0.1."""
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def _noun(kind: type) -> str:
    return "a whole number" if kind is int else "a number"


def parse_number(
    kind: type, low: float | None, high: float | None, above: bool = False
) -> Callable[[Any], Any]:
    """Return a typer parser that reads `kind` within the bounds, or refuses in one sentence."""
    allowed = span(kind, low, high, above)

    def parse(value: Any) -> Any:
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise typer.BadParameter(f"{value!r} is not {_noun(kind)}: give {allowed}.") from None
        if not math.isfinite(number):
            raise typer.BadParameter(f"{value!r} is not a finite number: give {allowed}.")
        too_low = low is not None and (number <= low if above else number < low)
        if too_low or (high is not None and number > high):
            raise typer.BadParameter(f"{value} is out of range: give {allowed}.")
        # -0 is in range but would be shown ('T -0') and sent (-0.0) with its sign: plain 0.
        return number + 0 if number == 0 else number

    return parse


def number_option(
    *decls: str,
    kind: type = int,
    low: float | None = None,
    high: float | None = None,
    above: bool = False,
    help: str,
    metavar: str = "N",
    **kwargs: Any,
) -> Any:
    """Make a typer option of a number in range (see the module docstring)."""
    return typer.Option(
        *decls,
        parser=parse_number(kind, low, high, above),
        # Shown in --help only: the parser checks. An excluded bound is said in the help.
        min=None if above else low,
        max=high,
        metavar=metavar,
        help=help,
        **kwargs,
    )


def port_option(help: str) -> Any:
    """Make a TCP port option, ``--port``, 1 to 65535."""
    return number_option("--port", low=1, high=65535, metavar="PORT", help=help)
