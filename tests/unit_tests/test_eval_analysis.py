"""Evaluation analysis pinned on known inputs: LC win rate, per-layer extraction, similarity,
prices and the Pareto front, harness exports, and a report that states a negative result."""

import json
import re
import warnings

import pandas as pd
import pytest

from langgraph_moa.errors import MoAConfigError, MoAError
from langgraph_moa.eval.costs import dollars, load_prices, pareto_front, price_of
from langgraph_moa.eval.export import alpaca_eval_outputs, mt_bench_answers
from langgraph_moa.eval.layers import (
    layer_curve,
    similarities,
    similarity_vs_quality,
    stages,
)
from langgraph_moa.eval.length_control import Judged, length_controlled_win_rate, to_annotations
from langgraph_moa.eval.report import render_report

# --- length-controlled win rate ------------------------------------------------------------


def _length_driven() -> list[Judged]:
    """The candidate wins exactly where it is longer: a judge rewarding length."""
    judged = []
    for i in range(12):
        if i < 8:
            judged.append(
                Judged(f"q{i}", "x" * (300 + 25 * i), "y" * (100 + 10 * i), 1.0 if i % 4 else 0.5)
            )
        else:
            judged.append(
                Judged(f"q{i}", "x" * (80 + 5 * i), "y" * (200 + 7 * i), 0.0 if i % 2 else 0.5)
            )
    return judged


def _alpaca_eval_reference(judged, monkeypatch, tmp_path):
    """alpaca-eval's own function on hand-built AlpacaEval annotations (preference 1..2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from alpaca_eval.metrics import glm_winrate
    table = tmp_path / "difficulty.csv"
    pd.DataFrame(
        {
            "index": range(len(judged)),
            "instruction_difficulty": 0.0,
            "model": "m",
            "not_gamed_baseline": True,
            "preference": 1.5,
        }
    ).to_csv(table, index=False)
    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **_: str(table))
    annotations = pd.DataFrame(
        {
            "index": range(len(judged)),
            "output_1": [j.baseline for j in judged],
            "output_2": [j.candidate for j in judged],
            "generator_1": "single",
            "generator_2": "moa",
            "annotator": "judge",
            "preference": [{1.0: 2.0, 0.5: 1.5, 0.0: 1.0}[j.score] for j in judged],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's notices about its own future
        return glm_winrate.get_length_controlled_winrate(
            annotations,
            glm_name="length_controlled_minimal",
            save_weights_dir=None,
            is_warn_extreme_changes=False,
        )


def test_lc_win_rate_equals_alpaca_evals_on_a_fixed_annotation_set(monkeypatch, tmp_path):
    judged = _length_driven()
    ours = length_controlled_win_rate(judged, "moa", "single")
    theirs = _alpaca_eval_reference(judged, monkeypatch, tmp_path)
    assert ours["win_rate"] == pytest.approx(float(theirs["win_rate"]))
    assert ours["length_controlled_win_rate"] == pytest.approx(
        float(theirs["length_controlled_winrate"])
    )
    # Pinned values: the raw win rate is inflated by length, the controlled one is not.
    assert ours["win_rate"] == pytest.approx(66.667, abs=0.01)
    assert ours["length_controlled_win_rate"] == pytest.approx(50.75, abs=0.05)


def test_lc_win_rate_keeps_a_win_that_length_does_not_explain():
    judged = [
        Judged(
            f"q{i}", "x" * (100 + 37 * (i % 5)), "y" * (100 + 23 * (i % 3)), 1.0 if i % 4 else 0.0
        )
        for i in range(12)
    ]
    out = length_controlled_win_rate(judged, "moa", "single")
    assert out["win_rate"] == 75.0
    assert 70 < out["length_controlled_win_rate"] < 76


@pytest.mark.parametrize("scores", [[0.5] * 6, [1.0, 0.0, 1.0, 0.5, 1.0, 1.0]])
@pytest.mark.parametrize("lengths", [(30, 30), (40, 30)])
def test_lc_win_rate_where_every_length_difference_is_the_same_is_the_win_rate(scores, lengths):
    """AlpacaEval standardizes the length difference by its spread: where every difference
    was the same, it divided by 0. Answers of equal length (one server's answers) gave NaN and
    the system's win rate was lost to a judge error; a constant difference made a feature the
    intercept already is, and 75% read as 50%. No length to control for: the rate is the win
    rate."""
    candidate, baseline = lengths
    judged = [
        Judged(f"q{i}", "x" * candidate, "y" * baseline, score) for i, score in enumerate(scores)
    ]
    out = length_controlled_win_rate(judged, "moa", "single")
    assert out["length_controlled_win_rate"] == out["win_rate"]
    assert out["lc_standard_error"] == out["standard_error"]
    assert out["win_rate"] == pytest.approx(100 * sum(scores) / len(scores))


def test_scores_map_to_alpaca_eval_preferences():
    rows = to_annotations(
        [Judged("q", "c", "b", 1.0), Judged("q", "c", "b", 0.0), Judged("q", "c", "b", 0.5)],
        "moa",
        "base",
        "j",
    )
    assert [r["preference"] for r in rows] == [2.0, 1.0, 1.5]  # 2: model wins, 1: baseline wins
    assert rows[0]["output_1"] == "b" and rows[0]["generator_2"] == "moa"


def test_lc_win_rate_needs_five_items():
    with pytest.raises(MoAError, match="at least 5 judged items"):
        length_controlled_win_rate([Judged("q", "a", "b", 1.0)] * 4, "moa", "single")


# --- per-layer extraction ------------------------------------------------------------------


def _call(role, layer, proposer, output, status="ok"):
    return {
        "role": role,
        "layer": layer,
        "proposer": proposer,
        "sample": 0,
        "output": output,
        "status": status,
    }


CALLS = [
    _call("proposer", 1, 0, "Paris"),
    _call("proposer", 1, 1, "Lyon"),
    _call("proposer", 1, 2, None, status="failed"),
    _call("proposer", 2, 0, "Paris, France"),
    _call("proposer", 2, 1, "Marseille"),
    _call("aggregator", 2, -1, "The capital is Paris."),
]


def test_stages_group_outputs_by_layer_and_end_with_the_final_answer():
    assert stages(CALLS, "The capital is Paris.") == {
        "1": ["Paris", "Lyon"],  # the failed proposer has no output and is left out
        "2": ["Paris, France", "Marseille"],
        "final": ["The capital is Paris."],
    }
    assert stages([], "alone") == {"final": ["alone"]}  # a single model: one stage


def test_layer_curve_means_and_best_proposal_per_stage():
    rows = [
        {"stage_scores": {"1": [1, 0], "2": [1, 1], "final": [1]}},
        {"stage_scores": {"1": [0, 0], "2": [1, 0], "final": [0]}},
        {"scores": {}},  # an unverifiable item takes no part
    ]
    assert layer_curve(rows) == {
        "1": {"mean": 0.25, "best": 0.5, "items": 2},
        "2": {"mean": 0.75, "best": 1.0, "items": 2},
        "final": {"mean": 0.5, "best": 0.5, "items": 2},
    }


def test_similarity_metrics_on_identical_and_disjoint_texts():
    same = similarities(
        "the sky is blue because of rayleigh scattering",
        ["the sky is blue because of rayleigh scattering"],
    )
    assert same["bleu"][0] == pytest.approx(1.0)
    assert same["tfidf_cosine"][0] == pytest.approx(1.0)
    assert same["levenshtein"][0] == pytest.approx(1.0)
    apart = similarities("alpha beta gamma", ["zzzz yyyy"])
    assert apart["bleu"][0] == pytest.approx(0.0)
    assert apart["tfidf_cosine"][0] == pytest.approx(0.0)
    assert apart["levenshtein"][0] < 0.3
    assert similarities("x", []) == {"bleu": [], "tfidf_cosine": [], "levenshtein": []}


def test_tfidf_similarity_reads_short_answers():
    # `moa eval` on arithmetic items reported tfidf_cosine 0.33 for a single model whose final
    # answer is its proposal: one-character answers ("5") had no term, so identical texts
    # scored 0 while BLEU and Levenshtein said 1.
    assert similarities("5", ["5", "6"])["tfidf_cosine"] == pytest.approx([1.0, 0.0])
    assert similarities("A", ["A"])["tfidf_cosine"] == pytest.approx([1.0])
    assert similarities("?!", ["?!", ""])["tfidf_cosine"] == pytest.approx([1.0, 0.0])


def test_spearman_is_positive_when_the_final_answer_follows_the_right_proposals():
    rows = []
    for i in range(6):
        final = f"the answer is {i} because of a careful derivation"
        right, wrong = final, f"perhaps {i + 50} or something else entirely"
        rows.append(
            {"proposal_scores": [1, 0], "proposal_similarity": similarities(final, [right, wrong])}
        )
    out = similarity_vs_quality(rows)
    for metric in ("bleu", "tfidf_cosine", "levenshtein"):
        assert out[metric]["spearman"] > 0.8 and out[metric]["pairs"] == 12
    constant = [
        {"proposal_scores": [1, 1], "proposal_similarity": r["proposal_similarity"]} for r in rows
    ]
    assert similarity_vs_quality(constant)["bleu"]["spearman"] is None  # undefined, not 0


# --- prices, dollars, Pareto ---------------------------------------------------------------


def test_prices_give_dollars_and_name_unpriced_calls(tmp_path):
    table = tmp_path / "prices.yaml"
    table.write_text(
        "gpt-4o: {prompt: 2.5, completion: 10}\nQwen/Qwen2-72B-Instruct: {prompt: 0.9, completion: 0.9}\n"
    )
    prices = load_prices(table)
    assert price_of(
        {"model": "gpt-4o-2024-08-06", "configured_model": "openai:gpt-4o"}, prices
    ) == (2.5, 10.0)
    assert price_of({"model": "local:qwen2.5-coder-0.5b"}, prices) == (0.0, 0.0)
    assert price_of({"model": "claude-x"}, prices) is None
    # An endpoint spec is priced by its model, not by a piece of its URL.
    served = {"model": "", "configured_model": "gpt-4o@http://127.0.0.1:8080/v1"}
    assert price_of(served, prices) == (2.5, 10.0)
    calls = [
        {"model": "gpt-4o", "prompt_tokens": 1_000_000, "completion_tokens": 100_000},
        {
            "configured_model": "together:Qwen/Qwen2-72B-Instruct",
            "prompt_tokens": 500_000,
            "completion_tokens": 0,
        },
        {"model": "claude-x", "prompt_tokens": 10, "completion_tokens": 10},
    ]
    spent, unpriced = dollars(calls, prices)
    assert spent == pytest.approx(2.5 + 1.0 + 0.45) and unpriced == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "gpt-4o: {prompt: 2.5}\n",
            "needs a mapping of .prompt. and .completion.*.completion. is missing",
        ),
        ("gpt-4o: {prompt: -1, completion: 1}\n", "cannot be negative"),
        ("gpt-4o: {prompt: cheap, completion: 1}\n", "must be numbers"),
        # A price written yes/no was read as 1.0/0.0, a .nan or 1e400 made every cost NaN/inf.
        ("gpt-4o: {prompt: yes, completion: 1}\n", "must be numbers"),
        ("gpt-4o: {prompt: .nan, completion: 1}\n", "must be finite"),
        ("gpt-4o: {prompt: '1e400', completion: 1}\n", "must be finite"),
        ("gpt-4o: {promt: 1, completion: 1}\n", "got 'promt'; did you mean 'prompt'"),
        ("gpt-4o: [1, 2]\n", "needs a mapping of 'prompt' and 'completion'.*got a list"),
        # "got a int": a price written without its row is shown as written.
        ("gpt-4o: 2.5\n", "needs a mapping of 'prompt' and 'completion'.*got 2.5[.]$"),
        # "every key must be a setting name, e.g. 'proposers:'", said of a price table.
        ("2024: {prompt: 1, completion: 1}\n", "not a name [(]2024[)]: it must hold model names"),
        ("[1, 2]\n", "must hold model names mapped to"),
        ("{}\n", "is empty"),
    ],
)
def test_bad_price_tables_name_the_model_and_the_fix(tmp_path, text, message):
    table = tmp_path / "prices.yaml"
    table.write_text(text)
    with pytest.raises(MoAConfigError, match=message):
        load_prices(table)
    with pytest.raises(MoAConfigError, match="does not exist"):
        load_prices(tmp_path / "missing.yaml")


def test_a_price_table_of_nested_aliases_is_refused_without_writing_them_out(tmp_path):
    # 332 bytes of YAML aliases nesting 9**8 values: the refusal wrote the row out, 25 MB of
    # text in 8 s and 640 MB of memory; a few levels more and it ran out of memory.
    levels = ["&a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)
    ]
    table = tmp_path / "prices.yaml"
    table.write_text("gpt-4o: [" + ", ".join(levels) + "]\n")
    with pytest.raises(MoAConfigError, match="got a list") as caught:
        load_prices(table)
    assert len(str(caught.value)) < 400


def test_pareto_front_keeps_only_undominated_systems():
    points = {
        "cheap": (1.0, 60.0),
        "mid": (2.0, 70.0),
        "worse": (3.0, 65.0),
        "best": (5.0, 80.0),
        "tie": (1.0, 60.0),
    }
    assert pareto_front(points) == ["cheap", "tie", "mid", "best"]


# --- exports -------------------------------------------------------------------------------

ROWS = [
    {
        "id": "1",
        "turns": ["Q1", "Q1b"],
        "answers": ["A1", "A1b"],
        "answer": "A1b",
        "error": None,
        "category": "math",
    },
    {
        "id": "x-2",
        "turns": ["Q2"],
        "answers": [],
        "answer": "",
        "error": "failed",
        "category": None,
    },
]


def test_alpaca_eval_and_mt_bench_exports():
    assert alpaca_eval_outputs(ROWS, "local-moa") == [
        {"instruction": "Q1\n\nQ1b", "output": "A1b", "generator": "local-moa", "dataset": "math"}
    ]
    first = mt_bench_answers(ROWS, "local-moa", tstamp=1.0)
    again = mt_bench_answers(ROWS, "local-moa", tstamp=1.0)
    assert first == again and len(first) == 1  # the failed item is not exported
    answer = first[0]
    assert answer["question_id"] == 1 and answer["model_id"] == "local-moa"
    assert answer["choices"] == [{"index": 0, "turns": ["A1", "A1b"]}]
    json.dumps(first)  # serializable as FastChat reads it


# --- report --------------------------------------------------------------------------------


def _summary(correct, scored, tokens):
    return {
        "items": scored,
        "errors": 0,
        "correct": correct,
        "scored": scored,
        "accuracy": correct / scored,
        "prompt_tokens": tokens,
        "completion_tokens": 0,
        "calls": 1,
        "cached_calls": 0,
        "median_item_s": 1.0,
        "wall_s": 1.0,
        "layer_curve": {},
    }


def test_report_says_plainly_when_moa_does_not_help():
    summary = {
        "single:local:qwen": _summary(13, 22, 1000),
        "local-moa": _summary(11, 22, 6000),
        "local-self-moa": _summary(15, 22, 8000),
    }
    report = render_report(summary)
    assert (
        "**local-moa** vs the best single model (single:local:qwen): behind (untested): -9.1 "
        "points of accuracy (11/22 against 13/22 scored), at 6.0x the tokens." in report
    )
    assert (
        "**local-self-moa** vs the best single model (single:local:qwen): ahead (untested): +9.1 "
        "points of accuracy (15/22 against 13/22 scored), at 8.0x the tokens." in report
    )
    assert "Most accurate: **local-self-moa**" in report


@pytest.mark.parametrize(
    "order", [["single:local:qwen", "local-moa"], ["local-moa", "single:local:qwen"]]
)
def test_a_tie_for_most_accurate_names_every_tied_system_whatever_the_order(order):
    tied = {"single:local:qwen": _summary(4, 5, 1000), "local-moa": _summary(4, 5, 6000)}
    summary = {name: tied[name] for name in order}
    summary["single:local:small"] = _summary(3, 5, 500)
    report = render_report(summary)
    first, second = order
    assert f"Most accurate: **{first}** and **{second}**, tied (0.80)." in report


def test_the_verdict_says_when_a_systems_accuracy_and_tokens_leave_failed_items_out():
    """4/4 right with 4 of 8 items failed is no clean 1.00, and its tokens are half a run's:
    per answered item it costs as much as the single model (500 / 4 against 1000 / 8)."""
    flaky = {**_summary(4, 4, 500), "items": 8, "errors": 4}
    summary = {"single:local:qwen": _summary(5, 8, 1000), "local-moa": flaky}
    verdict = render_report(summary).split("## Verdict")[1]
    assert "Most accurate: **local-moa** (1.00; 4 of its 8 items failed" in verdict
    assert (
        "- **local-moa** vs the best single model (single:local:qwen): ahead (untested): +37.5 "
        "points of accuracy (4/4 against 5/8 scored), at 1.0x the tokens per answered item; 4 of its 8 "
        "items failed, "
        "left out of its accuracy and tokens." in verdict
    )
    assert verdict.count("items failed") == 2  # the single model failed on none
    summary["single:local:qwen"] = _summary(8, 8, 1000)  # tied at 1.00, on every item
    verdict = render_report(summary).split("## Verdict")[1]
    assert (
        "Most accurate: **single:local:qwen** and **local-moa** (4 of its 8 items failed), "
        "tied (1.00)." in verdict
    )


def test_accuracies_that_round_alike_are_no_tie():
    """summary.json rounds accuracy to 4 places: 199/201 and 198/200 both read 0.99."""
    summary = {
        "local-moa": {**_summary(199, 201, 6000), "accuracy": round(199 / 201, 4)},
        "single:local:qwen": {**_summary(198, 200, 1000), "accuracy": round(198 / 200, 4)},
    }
    assert summary["local-moa"]["accuracy"] == summary["single:local:qwen"]["accuracy"]
    report = render_report(summary)
    assert "Most accurate: **local-moa** (0.99)." in report
    assert "tied" not in report


def test_the_accuracy_interval_is_named_without_a_baseline_too():
    summary = {"single:local:qwen": {**_summary(4, 5, 1000), "accuracy_ci95": [0.38, 0.96]}}
    report = render_report(summary)
    assert "0.80 [0.38, 0.96]" in report
    assert "Accuracy intervals are Wilson score 95% intervals" in report


def _against(diff, low, high, wins, losses, significance, n=200, p_value=None):
    return {
        "baseline": "single:local:qwen",
        "accuracy_diff": diff,
        "low": low,
        "high": high,
        "n": n,
        "wins": wins,
        "losses": losses,
        "p_value": p_value,
        "significance": significance,
    }


def test_the_verdict_calls_a_difference_only_when_its_interval_excludes_zero():
    summary = {
        "single:local:qwen": _summary(120, 200, 1000),
        "local-moa": _summary(140, 200, 6000),
        "local-self-moa": _summary(126, 200, 3000),
        "local-ranker": _summary(100, 200, 4000),
    }
    summary["local-moa"]["vs_baseline"] = _against(
        0.1, 0.04, 0.16, 30, 10, "better", p_value=0.00222
    )
    summary["local-self-moa"]["vs_baseline"] = _against(
        0.03, -0.02, 0.08, 12, 6, "no significant difference", p_value=0.238
    )
    summary["local-ranker"]["vs_baseline"] = _against(-0.1, -0.17, -0.04, 8, 28, "worse")
    report = render_report(summary)
    assert (
        "- **local-moa** vs the best single model (single:local:qwen): beats the baseline, "
        "+0.100 accuracy (95% CI +0.040 to +0.160, 200 items; right on 30 the baseline missed, "
        "wrong on 10 it got right; McNemar p 0.002), at 6.0x the tokens." in report
    )
    # Six more right answers, but the interval holds zero: no win is claimed.
    assert (
        "- **local-self-moa** vs the best single model (single:local:qwen): no significant "
        "difference from the baseline, +0.030 accuracy" in report
    )
    assert (
        "- **local-ranker** vs the best single model (single:local:qwen): is worse than the baseline, -0.100"
        in report
    )
    assert "ahead (untested)" not in report and "raw counts" not in report
    assert (
        "| local-self-moa | 126/200 | 0.63 | +0.030 [-0.020, +0.080] | 12 / 6 | 0.238 |" in report
    )
    assert "| local-ranker | 100/200 | 0.50 | -0.100 [-0.170, -0.040] | 8 / 28 | n/a |" in report
    assert "| single:local:qwen | 120/200 | 0.60 | (baseline) |  |" in report


def test_without_a_baseline_the_verdict_says_its_counts_are_untested():
    summary = {"single:local:qwen": _summary(13, 22, 1000), "local-moa": _summary(15, 22, 6000)}
    report = render_report(summary)
    assert "ahead (untested): +9.1 points of accuracy (15/22 against 13/22 scored)" in report
    assert "Δ acc" not in report
    assert "raw counts, not tested" in report


def test_the_raw_verdict_compares_accuracies_not_counts_scored_on_different_items():
    # 2/2 is the more accurate, yet one correct answer fewer than 3/4: said as points.
    summary = {"single:local:qwen": _summary(3, 4, 1000), "local-moa": _summary(2, 2, 1000)}
    summary["local-moa"]["items"] = 4  # two items failed: scored on 2
    report = render_report(summary)
    assert (
        "- **local-moa** vs the best single model (single:local:qwen): ahead (untested): +25.0 "
        "points of accuracy (2/2 against 3/4 scored), at 1.0x the tokens." in report
    )
    assert "-1 correct" not in report


def test_the_best_single_model_and_the_raw_verdict_compare_exact_accuracies():
    """Without a baseline, 'the best single model' and 'ahead' read the exact fractions."""
    summary = {
        "single:a": {**_summary(198, 200, 1000), "accuracy": round(198 / 200, 4)},
        "single:b": {**_summary(199, 201, 1000), "accuracy": round(199 / 201, 4)},
        "local-moa": {**_summary(200, 202, 6000), "accuracy": round(200 / 202, 4)},
    }
    report = render_report(summary)
    assert "vs the best single model (single:b)" in report
    assert (
        "**local-moa** vs the best single model (single:b): ahead (untested): +<0.1 points"
        in report
    )
    assert "+0.0" not in report and "-0.0" not in report


def test_a_pipe_or_line_break_in_a_name_or_category_stays_in_its_table_cell():
    """A dataset's category and a config's name are others' text: "a|b" split a row in two."""
    categories = {
        "math|easy": {"correct": 1, "scored": 2},
        "line\nbreak": {"correct": 0, "scored": 1},
    }
    names = ["single:x|y", "moa | injected | row"]  # a name is one printable line (its schema)
    summary = {name: {**_summary(1, 3, 100), "categories": categories} for name in names}
    report = render_report(summary)
    tables = [line for line in report.splitlines() if line.startswith("|")]
    widths = {}
    for line in tables:
        cells = re.split(r"(?<!\\)\|", line)
        widths.setdefault(len(cells), []).append(line)
    assert len(widths) == 2, widths  # the main table's width, the category table's width
    assert "single:x\\|y" in report and "math\\|easy" in report
    assert "| line break |" in report


def test_a_token_ratio_with_failed_items_compares_tokens_per_answered_item():
    """Failed items' tokens are left out of a system's totals, so the ratio of totals made a
    system that failed more look cheaper; with failures on either side it is per answered
    item, and says so."""
    costly = {**_summary(2, 2, 1000), "items": 8, "errors": 6}  # 500 per answered item
    summary = {"single:local:qwen": _summary(4, 8, 2000), "local-moa": costly}  # 250 per item
    verdict = render_report(summary).split("## Verdict")[1]
    assert "at 2.0x the tokens per answered item; 6 of its 8 items failed" in verdict
    nothing = {**_summary(0, 1, 0), "items": 8, "errors": 8, "scored": 0}
    summary = {"single:local:qwen": _summary(4, 8, 2000), "local-moa": nothing}
    verdict = render_report(summary).split("## Verdict")[1]
    assert (
        "scored), its tokens not compared (it answered no item); 8 of its 8 items failed" in verdict
    )


def test_an_untested_raw_difference_is_not_called_help():
    """One answer more of 22 is no evidence of help: the raw verdict says ahead, untested."""
    summary = {"single:local:qwen": _summary(16, 22, 1000), "local-moa": _summary(17, 22, 6000)}
    summary["local-self-moa"] = _summary(15, 22, 6000)
    report = render_report(summary)
    assert "help" not in report.split("## Verdict")[1]
    assert "(single:local:qwen): ahead (untested): +4.5 points of accuracy (17/22" in report
    assert "(single:local:qwen): behind (untested): -4.5 points of accuracy (15/22" in report


def test_a_shown_bound_never_rounds_to_a_zero_that_contradicts_the_verdict():
    """On 2500 items a bound of one item is 0.0004: '+0.000' beside 'beats' reads as zero."""
    summary = {
        "single:local:qwen": _summary(2000, 2500, 1000),
        "local-moa": _summary(2003, 2500, 3000),
        "local-ranker": _summary(1997, 2500, 3000),
    }
    summary["local-moa"]["vs_baseline"] = _against(
        0.0012, 0.0004, 0.002, 3, 0, "better", n=2500, p_value=0.0313
    )
    summary["local-ranker"]["vs_baseline"] = _against(
        -0.0012, -0.002, -0.0004, 0, 3, "worse", n=2500, p_value=0.0313
    )
    report = render_report(summary)
    assert not re.search(r"[+-]0\.000(?!\d)", report)
    assert "beats the baseline, +0.001 accuracy (95% CI +0.0004 to +0.002, 2500 items" in report
    assert "| +0.001 [+0.0004, +0.002] | 3 / 0 |" in report
    assert "is worse than the baseline, -0.001 accuracy (95% CI -0.002 to -0.0004" in report
