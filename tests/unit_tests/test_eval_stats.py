"""Accuracy intervals and the paired comparison with the baseline, on cases with known answers."""

import math
import random

import pytest

from langgraph_moa.eval.stats import (
    PairedDifference,
    bootstrap_mean_interval,
    paired_difference,
    sign_test_p,
    wilson_interval,
)

IDS = [f"q{i}" for i in range(40)]


def test_identical_systems_differ_by_zero_and_the_interval_holds_zero():
    rng = random.Random(3)
    scores = {i: float(rng.random() < 0.6) for i in IDS}
    diff = paired_difference(scores, dict(scores))
    assert diff.accuracy_diff == 0.0 and diff.low == 0.0 and diff.high == 0.0
    assert (diff.n, diff.wins, diff.losses) == (40, 0, 0)
    assert diff.significance == "no significant difference"


def test_right_everywhere_against_a_baseline_right_on_half_is_significantly_better():
    system = dict.fromkeys(IDS, 1.0)
    baseline = {i: float(k % 2) for k, i in enumerate(IDS)}
    diff = paired_difference(system, baseline)
    assert diff.accuracy_diff == 0.5 and (diff.wins, diff.losses, diff.n) == (20, 0, 40)
    assert 0 < diff.low < 0.5 < diff.high <= 0.75
    assert diff.significance == "better"
    # The same comparison seen from the baseline's side is significantly worse.
    reverse = paired_difference(baseline, system)
    assert reverse.accuracy_diff == -0.5 and (reverse.wins, reverse.losses) == (0, 20)
    assert reverse.high < 0 and reverse.significance == "worse"


def test_a_gap_of_one_item_in_twenty_is_not_called_a_win():
    ids = IDS[:20]
    baseline = {i: float(k < 12) for k, i in enumerate(ids)}
    system = {**baseline, ids[15]: 1.0}  # right on one more item, nothing else changes
    diff = paired_difference(system, baseline)
    assert diff.accuracy_diff == pytest.approx(0.05) and (diff.wins, diff.losses) == (1, 0)
    assert diff.low == 0.0 and diff.significance == "no significant difference"


def test_pairing_uses_only_the_items_both_systems_were_scored_on():
    system = {"a": 1.0, "b": 1.0, "c": 0.0, "only-here": 1.0}
    baseline = {"a": 0.0, "b": 1.0, "c": 0.0, "only-there": 1.0}
    diff = paired_difference(system, baseline)
    assert diff.n == 3 and diff.accuracy_diff == pytest.approx(1 / 3)
    assert (diff.wins, diff.losses) == (1, 0)


def test_the_interval_is_the_same_under_the_same_seed_and_moves_with_another():
    rng = random.Random(11)
    system = {i: float(rng.random() < 0.7) for i in IDS}
    baseline = {i: float(rng.random() < 0.5) for i in IDS}
    first = paired_difference(system, baseline, seed=5)
    assert paired_difference(system, baseline, seed=5) == first
    others = {paired_difference(system, baseline, seed=s) for s in range(6, 12)}
    assert any((o.low, o.high) != (first.low, first.high) for o in others)
    assert first.low < first.accuracy_diff < first.high


@pytest.mark.parametrize(
    ("system", "baseline"),
    [({}, {}), ({"a": 1.0}, {}), ({}, {"a": 1.0}), ({"a": 1.0}, {"b": 0.0})],
)
def test_no_common_items_gives_an_empty_result_not_an_error(system, baseline):
    diff = paired_difference(system, baseline)
    assert diff == PairedDifference(None, None, None, 0, 0, 0)
    assert diff.significance == "no common items"
    assert diff.as_dict() == {
        "accuracy_diff": None,
        "low": None,
        "high": None,
        "n": 0,
        "wins": 0,
        "losses": 0,
        "p_value": None,
        "significance": "no common items",
    }


def test_as_dict_rounds_for_the_summary():
    diff = PairedDifference(1 / 3, 0.123456789, 0.55555555, 3, 1, 0, p_value=0.000012345)
    assert diff.as_dict() == {
        "accuracy_diff": 0.3333,
        "low": 0.1235,
        "high": 0.5556,
        "n": 3,
        "wins": 1,
        "losses": 0,
        "p_value": 1.23e-05,  # significant digits: a small p is not rounded to 0
        "significance": "better",
    }


def test_bootstrap_mean_interval_on_known_inputs():
    assert bootstrap_mean_interval([0.25] * 7) == (0.25, 0.25)
    low, high = bootstrap_mean_interval([0.0, 1.0] * 50, seed=1)
    assert 0.38 < low < 0.45 and 0.55 < high < 0.62  # about 0.5 ± 1.96 * 0.05
    assert all(math.isnan(x) for x in bootstrap_mean_interval([]))


def test_wilson_interval_on_known_values():
    # 8 of 10: the textbook Wilson 95% interval is 0.490 to 0.943.
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    # All right still leaves room below 1, unlike a bootstrap's [1, 1].
    low, high = wilson_interval(22, 22)
    assert high == 1.0 and 0.8 < low < 0.9
    low, high = wilson_interval(0, 22)
    assert low == 0.0 and 0.1 < high < 0.2
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError, match="between 0 and n"):
        wilson_interval(5, 3)


def test_one_item_won_is_not_a_significant_difference():
    # The bootstrap of one difference of +1 is [+1, +1]; the exact test says p = 1.
    diff = paired_difference({"a": 1.0}, {"a": 0.0})
    assert (diff.low, diff.high, diff.p_value) == (1.0, 1.0, 1.0)
    assert diff.significance == "no significant difference"
    assert paired_difference({"a": 0.0}, {"a": 1.0}).significance == "no significant difference"


def test_five_wins_no_loss_among_22_items_is_not_significant_though_the_interval_excludes_0():
    system = {str(i): 1.0 for i in range(22)}
    baseline = {str(i): 0.0 if i < 5 else 1.0 for i in range(22)}
    diff = paired_difference(system, baseline)
    assert diff.low > 0 and diff.p_value == pytest.approx(0.0625)
    assert diff.significance == "no significant difference"
    # A sixth win makes the exact test agree (p = 0.03125): then it is called.
    baseline["5"] = 0.0
    assert paired_difference(system, baseline).significance == "better"


@pytest.mark.parametrize(
    ("wins", "losses", "p"),
    [(0, 0, 1.0), (1, 0, 1.0), (5, 0, 0.0625), (6, 0, 0.03125), (8, 2, 0.109375), (3, 3, 1.0)],
)
def test_sign_test_p_is_the_exact_two_sided_binomial(wins, losses, p):
    assert sign_test_p(wins, losses) == pytest.approx(p)
    assert sign_test_p(losses, wins) == pytest.approx(p)


def test_the_verdict_asks_the_exact_test_at_the_level_of_the_interval():
    # 7 items, all won: the bootstrap interval is [+1, +1] at any confidence, and the exact
    # test gives p = 2 / 2**7 = 0.0156: significant at 95%, not at 99%.
    system, baseline = dict.fromkeys("abcdefg", 1.0), dict.fromkeys("abcdefg", 0.0)
    assert paired_difference(system, baseline).significance == "better"
    strict = paired_difference(system, baseline, confidence=0.99)
    assert strict.p_value == pytest.approx(2 / 2**7) and strict.low == 1.0
    assert strict.significance == "no significant difference"
    assert paired_difference(baseline, system, confidence=0.99).significance == (
        "no significant difference"
    )
    # Looser, 5 wins and no loss (p = 0.0625) is called at 90%, not at 95%.
    five_won, five_lost = dict.fromkeys("abcde", 1.0), dict.fromkeys("abcde", 0.0)
    assert paired_difference(five_won, five_lost).significance == "no significant difference"
    loose = paired_difference(five_won, five_lost, confidence=0.9)
    assert loose.p_value == pytest.approx(0.0625) and loose.significance == "better"
    # The summary's fields stay as they were: the level is the interval's, already stated.
    assert "alpha" not in strict.as_dict() and set(strict.as_dict()) == set(
        paired_difference(system, baseline).as_dict()
    )


def _binomial_two_sided(k: int, n: int) -> float:
    """Reference: sum the exact Binomial(n, 1/2) probabilities no likelier than k's."""
    pmf = [math.comb(n, i) / 2**n for i in range(n + 1)]
    return min(1.0, sum(q for q in pmf if q <= pmf[k] * (1 + 1e-12)))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 61, 200])
def test_sign_test_p_equals_the_textbook_binomial_test_for_every_split(n):
    for wins in range(n + 1):
        assert sign_test_p(wins, n - wins) == pytest.approx(_binomial_two_sided(wins, n), rel=1e-9)


def test_sign_test_p_and_wilson_agree_with_scipy_where_it_is_installed():
    stats = pytest.importorskip("scipy.stats")
    for wins, losses in [(0, 1), (22, 6), (9, 3), (10, 14), (37, 0), (0, 103), (5, 103)]:
        expected = stats.binomtest(wins, wins + losses, 0.5).pvalue
        assert sign_test_p(wins, losses) == pytest.approx(expected, rel=1e-9)
    for correct, n in [(0, 1), (1, 1), (8, 10), (0, 22), (22, 22), (219, 256), (18, 26)]:
        for confidence in (0.8, 0.9, 0.95, 0.99):
            ci = stats.binomtest(correct, n).proportion_ci(confidence, method="wilson")
            assert wilson_interval(correct, n, confidence) == pytest.approx(
                (ci.low, ci.high), abs=1e-12
            )


def test_wilson_interval_by_hand_at_other_levels_and_one_item():
    # 1 of 1 at 95% (z = 1.959964): the lower bound is 1 / (1 + z^2) = 0.2065.
    assert wilson_interval(1, 1) == pytest.approx((0.2065, 1.0), abs=1e-4)
    assert wilson_interval(0, 1) == pytest.approx((0.0, 0.7935), abs=1e-4)
    # 8 of 10 at 90% (z = 1.644854): 0.5408 to 0.9314; wider at 99% (z = 2.575829):
    # 0.4008 to 0.9599.
    assert wilson_interval(8, 10, 0.90) == pytest.approx((0.5408, 0.9314), abs=1e-4)
    assert wilson_interval(8, 10, 0.99) == pytest.approx((0.4008, 0.9599), abs=1e-4)


@pytest.mark.parametrize(
    ("confidence", "resamples"), [(0.95, 2000), (0.9, 2000), (0.99, 1000), (0.95, 40)]
)
def test_bootstrap_bounds_are_the_percentiles_of_the_resampled_means(confidence, resamples):
    # Efron and Tibshirani's percentile interval: at most a (1 - confidence) / 2 share of
    # the resampled means lies below the lower bound, and at least that share at or below
    # it; the same above the upper bound. The means are recomputed here from the same seed.
    values = [float(k % 3 == 0) - float(k % 5 == 0) for k in range(37)]
    rng = random.Random(7)
    n = len(values)
    means = [sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples)]
    low, high = bootstrap_mean_interval(values, resamples=resamples, confidence=confidence, seed=7)
    tail = round((1 - confidence) / 2 * resamples, 9)
    assert sum(m < low for m in means) <= tail <= sum(m <= low for m in means)
    assert sum(m > high for m in means) <= tail <= sum(m >= high for m in means)
    assert low <= sum(values) / n <= high


def test_as_dict_keeps_a_bound_that_excludes_zero_off_zero():
    """A 'better' call with a bound of 1/25000 must not be written as a bound of 0.0."""
    diff = PairedDifference(0.00012, 0.00004, 0.00024, 25000, 6, 0, p_value=0.03125)
    out = diff.as_dict()
    assert out["significance"] == "better"
    assert out["low"] == 4e-05 and out["accuracy_diff"] == 0.0001
    worse = PairedDifference(-0.00012, -0.00024, -0.00004, 25000, 0, 6, p_value=0.03125)
    assert worse.as_dict()["high"] == -4e-05


def test_the_paired_interval_does_not_depend_on_the_order_the_items_come_in():
    """The seeded resample drew positions, so one cache read in another order moved it."""
    rng = random.Random(7)
    ids = [f"item-{k:02d}" for k in range(30)]
    system = {i: float(rng.random() < 0.7) for i in ids}
    baseline = {i: float(rng.random() < 0.5) for i in ids}
    first = paired_difference(system, baseline)
    for seed in range(5):
        shuffled = ids[:]
        random.Random(seed).shuffle(shuffled)
        again = paired_difference({i: system[i] for i in shuffled}, baseline)
        assert (again.low, again.high) == (first.low, first.high)


@pytest.mark.parametrize(("low", "high"), [(0.0, 0.4), (-0.4, 0.0)])
def test_an_interval_that_touches_zero_is_no_significant_difference(low, high):
    """A bound at exactly 0 does not exclude "no difference", whatever the exact test says."""
    gap = PairedDifference(
        accuracy_diff=(low + high) / 2, low=low, high=high, n=40, wins=9, losses=0, p_value=0.004
    )
    assert gap.significance == "no significant difference"
