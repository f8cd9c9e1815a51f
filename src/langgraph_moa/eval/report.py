"""The Markdown report: one table, the plots, the per-layer analysis, and a plain verdict.

Whatever the numbers say is what the report says: when a mixture scores no better than the
best single model it costs more than, the verdict line states it.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from langgraph_moa._redact import one_line
from langgraph_moa.eval.layers import FINAL, SIMILARITY_METRICS
from langgraph_moa.eval.provenance import render_provenance


def _fmt(value: Any, spec: str = "") -> str:
    return "n/a" if value is None else format(value, spec)


def first_error(system: dict[str, Any]) -> str:
    """Return a system's first recorded error on one line, at most 300 whole characters."""
    return one_line(system.get("first_error") or "", 300)


def render_report(summary: dict[str, Any], extras: dict[str, Any] | None = None) -> str:
    """Render the report from `summary.json`'s content; `extras` names plots and notes."""
    extras = extras or {}
    priced = any("dollars" in s for s in summary.values())
    baseline = _baseline(summary)
    header = (
        "| system | correct | accuracy [95% CI] "
        + (
            "| Δ acc vs baseline [95% CI] | right only here / only on baseline | McNemar p "
            if baseline
            else ""
        )
        + "| errors | prompt tokens | completion tokens "
        + ("| dollars " if priced else "")
        + "| calls (cached) | median s/item | wall s |"
    )
    lines = ["# Evaluation report", "", header, "|" + "---|" * (header.count("|") - 1)]
    for name, s in summary.items():
        cells = [name, f"{s['correct']}/{s['scored']}", _accuracy(s)]
        if baseline:
            cells += _against(name, s, baseline)
        cells += [
            s["errors"],
            s["prompt_tokens"],
            s["completion_tokens"],
        ]
        if s.get("estimated_calls"):  # said where the counts are: they are partly estimates
            cells[-1] = f"{cells[-1]} ({s['estimated_calls']} calls estimated)"
        if priced:
            dollars = _fmt(s.get("dollars"), ".4f")
            if s.get("unpriced_calls"):
                dollars += f" (+{s['unpriced_calls']} unpriced calls)"
            cells.append(dollars)
        median = s["median_item_s"]
        if s.get("cached_items") and s["cached_items"] == s["items"]:
            median = f"{median} (all cached)"
        elif s.get("cached_items"):
            median = f"{median} ({s['cached_items']} items cached)"
        cells += [f"{s['calls']} ({s['cached_calls']})", median, s["wall_s"]]
        lines.append(_row(cells))
    lines += _coverage(summary)
    if any(s.get("accuracy_ci95") for s in summary.values()):
        lines += ["", "Accuracy intervals are Wilson score 95% intervals over the items scored."]
    if baseline:
        lines += [
            "",
            f"Δ is the accuracy minus that of the baseline, **{baseline}**, over the items "
            "both answered, with a paired "
            "percentile bootstrap interval (the same items resampled for both, seeded). "
            "McNemar p is the exact two-sided test of the items only one of the two got "
            "right; the verdict calls a difference only when the interval excludes zero and "
            "p < 0.05.",
        ]
    lines += _categories(summary)
    lines += _judge_failed(summary)
    lines += _judged(summary)
    for plot, title in (
        ("quality_vs_cost", "Quality vs cost (Pareto front marked)"),
        ("quality_per_layer", "Quality per layer"),
    ):
        if plot in extras:
            lines += ["", f"## {title}", "", f"![{title}]({extras[plot]})"]
        if plot == "quality_vs_cost" and "pareto_front" in extras:
            front = ", ".join(f"**{n}**" for n in extras["pareto_front"])
            lines += ["", f"Pareto-optimal (no system is both cheaper and better): {front}"]
    lines += _layers(summary)
    if any(s["cached_calls"] for s in summary.values()):
        lines += [
            "",
            "Calls served from the cache (the bracketed counts) cost no time here, whether "
            "from an earlier run or shared with another system (same model, parameters and "
            "messages): the wall times of those systems understate a fresh run's. Tokens and "
            "dollars count every call.",
        ]
    lines += _disagreements(extras.get("disagreements") or [])
    lines += _verdict(summary)
    for note in extras.get("notes", []):
        lines += ["", f"> {note}"]
    if extras.get("provenance"):  # reports written before it have none
        lines += ["", *render_provenance(extras["provenance"])]
    return "\n".join(lines) + "\n"


def _row(cells: list[Any]) -> str:
    """Return one Markdown table row; each cell's own pipes and line breaks kept in it.

    Names and categories are others' text (a config's `name:`, a dataset's category): a
    "|" in one split the row into more cells than the header has, and a line break ended
    the table there.
    """
    return "| " + " | ".join(" ".join(str(c).split()).replace("|", "\\|") for c in cells) + " |"


def _coverage(summary: dict[str, Any]) -> list[str]:
    """Say which items the accuracy leaves out, and why, and which answers were degraded.

    A fallback answer, or one with a layer passed over, stays in the accuracy (it is what the
    user got), and is counted here.
    """
    lines: list[str] = []
    judged = any("win_rate" in s or "judge_error" in s for s in summary.values())
    for name, s in summary.items():
        unscored = s.get("unscored", 0)
        if unscored:
            hint = (
                "" if judged else " Add --judge MODEL --baseline SYSTEM to compare them pairwise."
            )
            lines.append(
                f"- **{name}**: {unscored} of {s['items']} items have no expected answer and "
                f"are not in the accuracy.{hint}"
            )
        if s.get("errors"):
            first = first_error(s)
            lines.append(
                f"- **{name}**: {s['errors']} of {s['items']} items failed; the first error: "
                f"{first}"
            )
        if s.get("fallbacks"):
            lines.append(
                f"- **{name}**: **{s['fallbacks']} of {s['items']} answers were fallbacks**, "
                "not the configured final step (the first: "
                f"{s.get('first_fallback') or 'no reason recorded'}); they are scored as "
                "the answers a user would get, so the accuracy is partly that of the fallback."
            )
        if s.get("failed_layers"):
            lines.append(
                f"- **{name}**: **{s['failed_layers']} of {s['items']} answers had a layer "
                "passed over** (every proposal of it failed, so the next step read the layer "
                "before it): fewer layers than configured answered them; they are scored as "
                "given."
            )
        if s.get("failed_calls"):
            lines.append(
                f"- **{name}**: {s['failed_calls']} calls failed; the traces in "
                "results/ say which and why."
            )
    return ["", *lines] if lines else []


def _categories(summary: dict[str, Any]) -> list[str]:
    """Accuracy per category and system, when the items have more than one category."""
    names = sorted({c for s in summary.values() for c in (s.get("categories") or {})})
    if len(names) < 2:
        return []
    systems = list(summary)
    lines = [
        "",
        "## Per category",
        "",
        _row(["category", *systems]),
        "|---|" + "---|" * len(systems),
    ]
    for category in names:
        cells = []
        for system in systems:
            c = (summary[system].get("categories") or {}).get(category)
            cells.append(f"{c['correct']}/{c['scored']}" if c and c["scored"] else "n/a")
        lines.append(_row([category, *cells]))
    return lines


def _disagreements(examples: list[dict[str, Any]]) -> list[str]:
    """Show a few items where the systems disagree, each answer shortened to one line.

    Shortened by `one_line`: between whole characters as drawn (an emoji family is not cut to a
    dangling joiner), with "…" where it was cut.
    """
    if not examples:
        return []
    lines = ["", "## Where the systems disagree", ""]
    for example in examples:
        question = one_line(example["question"], 160, mark=True)
        lines.append(f"- `{example['id']}`: {question}")
        for name, a in example["answers"].items():
            mark = "right" if a["correct"] else "wrong"
            answer = one_line(a["answer"], 160, mark=True)
            lines.append(f"  - {name} ({mark}): {answer}")
    return lines


def _baseline(summary: dict[str, Any]) -> str | None:
    """Return the name of the system the others were compared with, if any."""
    return next(
        (s["vs_baseline"]["baseline"] for s in summary.values() if "vs_baseline" in s), None
    )


def _accuracy(s: dict[str, Any]) -> str:
    ci = s.get("accuracy_ci95")
    if s["accuracy"] is None or ci is None:
        return _fmt(s["accuracy"], ".2f")
    return f"{s['accuracy']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _against(name: str, s: dict[str, Any], baseline: str) -> list[str]:
    """Cells of the difference to the baseline: the delta and its interval, wins / losses."""
    if name == baseline:
        return ["(baseline)", "", ""]
    v = s.get("vs_baseline")
    if not v or not v["n"]:
        return ["n/a", "n/a", "n/a"]
    return [
        f"{_signed(v['accuracy_diff'])} [{_signed(v['low'])}, {_signed(v['high'])}]",
        f"{v['wins']} / {v['losses']}",
        _p(v.get("p_value")),
    ]


def _signed(value: float) -> str:
    """Write a difference or a bound to 3 places, a nonzero one that rounds to 0 to its first digit.

    On 2500 items a bound of one item is 0.0004: "+0.000" beside "beats the baseline" reads
    as an interval that touches zero; "+0.0004" does not.
    """
    if value and not round(value, 3):
        return f"{value:+.{-math.floor(math.log10(abs(value)))}f}"
    return f"{value:+.3f}"


def _p(value: float | None) -> str:
    """Write a p-value for a table: n/a when none was computed (a summary before it was)."""
    if value is None:
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _judge_failed(summary: dict[str, Any]) -> list[str]:
    """Say in bold which systems the judge failed on, and why: a missing win rate is news."""
    unjudged = [n for n, s in summary.items() if (s.get("win_rate") or {}).get("items") == 0]
    failed = {
        name: s["judge_error"]
        for name, s in summary.items()
        if s.get("judge_error") and name not in unjudged
    }
    lines: list[str] = []
    for name in unjudged:
        lines += [
            "",
            f"**No pair could be judged** for **{name}**: every item had an error in its "
            "answer or the baseline's (above), so it has no win rate.",
        ]
    if not failed:
        return lines
    names = ", ".join(f"**{name}**" for name in failed)
    return [
        *lines,
        "",
        f"**Judging failed** for {names}: {next(iter(failed.values()))}. Their pairwise win "
        "rates are missing (or, with --judge-layers, their per-layer judging); the answers, "
        "accuracy and costs above are complete. Run the same command again once the judge "
        "answers: the answers come from the cache.",
    ]


def _judged(summary: dict[str, Any]) -> list[str]:
    judged = {name: s["win_rate"] for name, s in summary.items() if "win_rate" in s}
    if not judged:
        return []
    first = next(iter(judged.values()))
    lines = [
        "",
        f"Pairwise win rate against **{first['baseline']}** (judge: {first['judge']}, both "
        "orders asked, 95% bootstrap interval; length-controlled as alpaca-eval computes it). "
        "'Same winner' counts the items whose two verdicts agree once the order is swapped; "
        "'chose A' is the share of verdicts that picked the first position:",
        "",
        "| system | win rate | 95% interval | LC win rate | items | same winner | chose A |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, w in judged.items():
        ci = f"{w['ci95'][0]} - {w['ci95'][1]}" if w.get("ci95") else "n/a"
        lc = w.get("length_controlled")
        lc_cell = f"{lc['rate']} ± {lc['standard_error']}" if lc else w.get("lc_note", "n/a")
        cells = [
            name,
            _fmt(w["rate"]),
            ci,
            lc_cell,
            w["items"],
            f"{w.get('consistent', 'n/a')}/{w['items']}",
            _fmt(w.get("first_position"), ".0%"),
        ]
        lines.append(_row(cells))
    verdicts = sum(2 * w["items"] for w in judged.values())
    consistent = sum(w.get("consistent", 0) for w in judged.values())
    items = sum(w["items"] for w in judged.values())
    if items and consistent / items < 0.5:
        lines += [
            "",
            f"**The judge is not reliable here**: its two verdicts named the same winner for "
            f"only {consistent} of {items} pairs (of {verdicts} verdicts, the share that chose "
            "the first position is in the table). Asking both orders cancels that bias, so "
            "the win rates drift to 50, but they then say little about quality: use a "
            "stronger judge, or trust the verifiable scores above.",
        ]
    return lines


def _layers(summary: dict[str, Any]) -> list[str]:
    layered = {n: s for n, s in summary.items() if len(s.get("layer_curve") or {}) > 1}
    if not layered:
        return []
    lines = [
        "",
        "## Per layer",
        "",
        "Score of each stage's outputs (mean over proposals / best proposal, as an oracle "
        "picker would choose), then the final answer:",
        "",
        "| system | stage | mean | best | items |",
        "|---|---|---|---|---|",
    ]
    for name, s in layered.items():
        for stage, v in s["layer_curve"].items():
            label = stage if stage == FINAL else f"layer {stage}"
            lines.append(_row([name, label, v["mean"], v["best"], v["items"]]))
    lines += [
        "",
        "Similarity of the final answer to each proposal it was built from, and Spearman's "
        "correlation with the proposal's score (positive: the aggregator follows the better "
        "proposals):",
        "",
        "| system | metric | mean similarity | Spearman | p | pairs |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in layered.items():
        for metric in SIMILARITY_METRICS:
            v = (s.get("similarity") or {}).get(metric)
            if v is None:
                continue
            cells = [
                name,
                metric,
                _fmt(v["mean_similarity"]),
                _fmt(v["spearman"]),
                _fmt(v["p_value"]),
                v["pairs"],
            ]
            lines.append(_row(cells))
    return lines


_SIGNIFICANCE = {
    "better": "beats the baseline",
    "worse": "is worse than the baseline",
    "no significant difference": "no significant difference from the baseline",
}


def _verdict(summary: dict[str, Any]) -> list[str]:
    """Compare every system with the baseline, else every mixture with the best single model.

    Against a baseline, a system is said to beat it (or to be worse) only when the paired
    interval of the accuracy difference lies wholly above (below) zero and the exact
    McNemar test gives p < 0.05: with a few hundred items, gaps of several points are often
    noise, and with a few discordant items the bootstrap interval alone is too narrow.
    Without a baseline there is no paired comparison, and the raw counts are labelled as such.
    """
    scored = {n: s for n, s in summary.items() if s["accuracy"] is not None}
    if not scored:
        return []
    singles = {n: s for n, s in scored.items() if n.startswith("single:")}
    lines = ["", "## Verdict", "", _most_accurate(scored)]
    baseline = _baseline(summary)
    ref_name = max(singles, key=lambda n: _exact(singles[n])) if singles else None
    raw = False
    for name, s in scored.items():
        v = s.get("vs_baseline")
        if baseline and v and v["n"]:
            lines.append(_paired_verdict(name, s, summary[baseline], v, ref_name == baseline))
        elif ref_name is not None and name not in singles:
            lines.append(_raw_verdict(name, s, ref_name, singles[ref_name]))
            raw = True
    if raw:
        lines += [
            "",
            "Differences to the best single model are raw counts, not tested: give it as "
            "`--baseline` for a paired 95% interval of each difference.",
        ]
    return lines


def _most_accurate(scored: dict[str, Any]) -> str:
    """Name the most accurate system, or every one tied for it: the first listed is no winner.

    Ties compare the exact fraction right, not the rounded accuracy: 199/201 and 198/200
    both round to 0.99, and the first is ahead.
    """
    exact = {name: _exact(s) for name, s in scored.items()}
    top_fraction = max(exact.values())
    tied = {name: s for name, s in scored.items() if exact[name] == top_fraction}
    top = next(iter(tied.values()))["accuracy"]
    if len(tied) == 1:
        name, s = next(iter(tied.items()))
        failed = _failed(s)
        return f"Most accurate: **{name}** ({top:.2f}" + (
            f"; {failed}, left out of its accuracy)." if failed else ")."
        )
    best = [f"**{n}**" + (f" ({_failed(s)})" if _failed(s) else "") for n, s in tied.items()]
    return f"Most accurate: {', '.join(best[:-1])} and {best[-1]}, tied ({top:.2f})."


def _exact(s: dict[str, Any]) -> Fraction | float:
    """Return the exact fraction right: `accuracy` is rounded to 4 places in summary.json.

    A summary without the scored count (written before it was kept) has only the rounding.
    """
    return Fraction(s["correct"], s["scored"]) if s.get("scored") else s["accuracy"]


def _failed(s: dict[str, Any]) -> str:
    """Say how many of a system's items failed: its accuracy and tokens leave them out."""
    return f"{s['errors']} of its {s['items']} items failed" if s.get("errors") else ""


def _cost_and_failures(s: dict[str, Any], ref: dict[str, Any]) -> str:
    """End a verdict line: the token ratio, and the system's failed items, which it omits."""
    failed = _failed(s)
    tail = f"; {failed}, left out of its accuracy and tokens" if failed else ""
    return f"{_token_ratio(s, ref)}{tail}."


def _paired_verdict(
    name: str, s: dict[str, Any], base: dict[str, Any], v: dict[str, Any], is_best_single: bool
) -> str:
    label = "the best single model" if is_best_single else "the baseline"
    return (
        f"- **{name}** vs {label} ({v['baseline']}): {_SIGNIFICANCE[v['significance']]}, "
        f"{_signed(v['accuracy_diff'])} accuracy (95% CI {_signed(v['low'])} to "
        f"{_signed(v['high'])}, "
        f"{v['n']} items; right on {v['wins']} the baseline missed, wrong on {v['losses']} it "
        f"got right; McNemar p {_p(v.get('p_value'))}), {_cost_and_failures(s, base)}"
    )


def _token_ratio(s: dict[str, Any], ref: dict[str, Any]) -> str:
    """Give a system's tokens against `ref`'s, per answered item when either failed items.

    Failed items' tokens are left out of the totals, so the ratio of totals would make the
    system that failed more look cheaper.
    """
    ref_tokens = ref["prompt_tokens"] + ref["completion_tokens"]
    tokens = s["prompt_tokens"] + s["completion_tokens"]
    if not (s.get("errors") or ref.get("errors")):
        return f"at {tokens / ref_tokens:.1f}x the tokens" if ref_tokens else "at more tokens"
    answered, ref_answered = _answered(s), _answered(ref)
    if not answered:
        return "its tokens not compared (it answered no item)"
    if not ref_answered:
        return "its tokens not compared (the other answered no item)"
    if not ref_tokens:
        return "at more tokens"
    ratio = (tokens / answered) / (ref_tokens / ref_answered)
    return f"at {ratio:.1f}x the tokens per answered item"


def _answered(s: dict[str, Any]) -> int:
    return int(s.get("items", 0)) - int(s.get("errors", 0))


def _raw_verdict(name: str, s: dict[str, Any], ref_name: str, ref: dict[str, Any]) -> str:
    """Compare accuracies in points with the counts they come from (the counts may differ).

    A difference of correct answers alone contradicts itself when the two were scored on
    different numbers of items: 2/2 is more accurate than 3/4, yet one answer fewer. Said
    "ahead" or "behind", never "helps": no test was made, and one answer more of 22 is no
    evidence that a mixture helps.
    """
    system, best = _exact(s), _exact(ref)
    points = _points(100 * float(system - best))
    counts = f"{_count(s)} against {_count(ref)} scored"
    if system > best:
        word = f"ahead (untested): {points} points of accuracy ({counts})"
    elif system == best:
        word = f"same accuracy ({counts})"
    else:
        word = f"behind (untested): {points} points of accuracy ({counts})"
    return f"- **{name}** vs the best single model ({ref_name}): {word}, " + _cost_and_failures(
        s, ref
    )


def _points(points: float) -> str:
    """Write a nonzero difference in points, one decimal; under 0.05 not as a signed zero.

    199/201 against 198/200 differ by 0.005 points: "+0.0" read as no difference beside
    "ahead".
    """
    if 0 < abs(points) < 0.05:
        return f"{'+' if points > 0 else '-'}<0.1"
    return f"{points:+.1f}"


def _count(s: dict[str, Any]) -> str:
    """Correct of scored, e.g. 3/4; the correct count alone when the scored one is missing."""
    return f"{s['correct']}/{s['scored']}" if "scored" in s else str(s["correct"])
