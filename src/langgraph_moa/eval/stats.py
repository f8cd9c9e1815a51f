"""Intervals for verifiable accuracy: is a system's gap to the baseline real, or noise?

Two systems scored on the same items are compared item by item. Differences of per-item
scores are resampled together (a paired percentile bootstrap): an item that both systems
find hard stays hard in every resample, so the interval is much narrower than comparing
two independent accuracies, and honest about how few items decided the gap. The verdict
also asks the exact McNemar test (a sign test on the items only one system got right),
which a bootstrap over a handful of such items cannot replace.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Literal

Significance = Literal["better", "worse", "no significant difference", "no common items"]


def bootstrap_mean_interval(
    values: Sequence[float], *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling values with a fixed seed.

    Seeded so that rerunning an evaluation from its cache reports the same interval; nan
    for no values, since there is nothing to say.
    """
    if not values:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    return means[int(tail * (resamples - 1))], means[int((1 - tail) * (resamples - 1))]


ALPHA = 0.05
"""The significance level of the paired verdict's exact test."""


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value: the binomial sign test of wins against losses.

    Only the discordant items (one system right, the other wrong) carry information; under
    no difference each is a fair coin. 1.0 when there are none.
    """
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of an accuracy of `correct` out of `n`; None when `n` is 0.

    Wilson rather than a bootstrap: it needs no resampling, and at 0 or n correct, which
    small sets hit often, it still gives a width instead of the bootstrap's empty [1, 1].
    """
    if n <= 0:
        return None
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be between 0 and n={n}, got {correct}.")
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = correct / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class PairedDifference:
    """A system's accuracy minus the baseline's, on the items both were scored on."""

    accuracy_diff: float | None
    """Mean of (system score - baseline score); None without common items."""
    low: float | None
    high: float | None
    n: int
    """Items both systems were scored on."""
    wins: int
    """Items the system got right and the baseline wrong."""
    losses: int
    """Items the baseline got right and the system wrong."""
    p_value: float | None = None
    """Exact McNemar test of wins against losses (`sign_test_p`); None without common items."""
    alpha: float = field(default=ALPHA, repr=False)
    """The exact test's level: 1 minus the interval's confidence, so that a 99% interval
    is not paired with a test at 5%. Not in `as_dict`: the interval's level is its own."""

    @property
    def significance(self) -> Significance:
        """Call a difference only when both tests agree that it is one.

        The whole bootstrap interval must lie on one side of zero *and* the exact McNemar
        test must give p below `alpha` (0.05 beside a 95% interval): on a handful of
        discordant items the bootstrap's interval excludes zero (one item won of one gives
        [+1, +1]) while the exact test says such a split is a coin toss (5 wins and no
        loss: p = 0.0625).
        """
        if self.low is None or self.high is None:
            return "no common items"
        exact = self.p_value is not None and self.p_value < self.alpha
        if self.low > 0 and exact:
            return "better"
        if self.high < 0 and exact:
            return "worse"
        return "no significant difference"

    def as_dict(self, digits: int = 4) -> dict[str, Any]:
        """Return the fields for ``summary.json``, rounded, with the significance spelled out."""
        out: dict[str, Any] = {
            k: _round_off_zero(v, digits) if isinstance(v, float) else v
            for k, v in asdict(self).items()
            if k != "alpha"
        }
        if self.p_value is not None:  # 3 significant digits: a tiny p must not round to 0
            out["p_value"] = float(f"{self.p_value:.3g}")
        out["significance"] = self.significance
        return out


def _round_off_zero(value: float, digits: int) -> float:
    """Round to `digits` places, but a nonzero value that would round to 0 to 3 significant.

    On 25,000 items a bound of one item is 0.00004: written as 0.0 beside "better" it says
    the interval touches zero, which is what "better" denies.
    """
    rounded = round(value, digits)
    return rounded if rounded or not value else float(f"{value:.3g}")


def paired_difference(
    system: Mapping[str, float],
    baseline: Mapping[str, float],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Compare per-item scores (item id -> score in [0, 1]) of a system and the baseline.

    Only items present in both count: an item one system failed to answer says nothing
    about the other. Resampling the per-item differences is resampling the same items for
    both systems, which is what makes the bootstrap paired. Items both got right (or both
    wrong) count in `n` as a zero difference: the gap is per item asked, not per item on
    which the two disagreed. Scores other than 0 and 1 count as a win or loss by sign in
    the exact test. Items are resampled in the order of their ids, not as the mappings list
    them: the seed fixes positions, so one cache read in another order moved the interval.
    """
    common = sorted(item for item in system if item in baseline)
    if not common:
        return PairedDifference(None, None, None, 0, 0, 0)
    diffs = [float(system[item]) - float(baseline[item]) for item in common]
    low, high = bootstrap_mean_interval(
        diffs, resamples=resamples, confidence=confidence, seed=seed
    )
    wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    return PairedDifference(
        accuracy_diff=sum(diffs) / len(diffs),
        low=low,
        high=high,
        n=len(diffs),
        wins=wins,
        losses=losses,
        p_value=sign_test_p(wins, losses),
        alpha=round(1 - confidence, 12),  # 1 - 0.95 is 0.05000000000000004
    )
