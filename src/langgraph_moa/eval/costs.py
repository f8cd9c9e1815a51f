"""The Pareto front of quality against cost; prices themselves live in `config._prices`.

A price table maps a model name to dollars per million prompt and completion tokens (see
`langgraph_moa.config._prices`); `moa eval --prices` and `moa serve --prices` read the same
format.
"""

from __future__ import annotations

from collections.abc import Mapping

from langgraph_moa.config._prices import Prices, dollars, load_prices, price_of

__all__ = ["Prices", "dollars", "load_prices", "pareto_front", "price_of"]


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point beats: (cost, quality), lower cost, higher quality.

    A point is dominated when another costs no more and scores no less, and is strictly
    better on one of the two.
    """
    front = []
    for name, (cost, quality) in points.items():
        dominated = any(
            c <= cost and q >= quality and (c < cost or q > quality)
            for other, (c, q) in points.items()
            if other != name
        )
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: points[n][0])
