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
