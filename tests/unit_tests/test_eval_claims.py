"""README's numbers about answer quality are the committed results' numbers, verdicts included.

Each figure is read from the result file it quotes: `docs/eval-*/summary.json` for the local
runs, the raw output pasted in `docs/eval-gsm8k/README.md` for GSM8K, and the per-item rows
of `docs/eval-tool-use/` (from which the intervals are computed again, seeded, as
`benchmarks/tool_use.py --report` does). A rerun that changes a file, or an edit of the prose,
fails here until the two say the same.
"""

import json
import re
from pathlib import Path
from typing import Any

import pytest

from langgraph_moa.eval.stats import paired_difference, sign_test_p

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
EVALUATION = (ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8")
GSM8K_RAW = (ROOT / "docs" / "eval-gsm8k" / "README.md").read_text(encoding="utf-8")
ONE_5B = "single:local:qwen2.5-coder-1.5b"
NUMBER = r"[+-]?\d+(?:\.\d+)?"


def _summary(folder: str) -> dict[str, Any]:
    return json.loads((ROOT / "docs" / f"eval-{folder}" / "summary.json").read_text())


def _section(title: str) -> str:
    """README's text under a `### title` heading, up to the next heading of any level."""
    start = README.index(f"### {title}\n")
    end = re.search(r"\n##+ ", README[start + 4 :])
    return README[start : start + 4 + end.start()] if end else README[start:]


def _rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in `text`, bold marks dropped, header skipped."""
    rows = [
        [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("|---")
    ]
    return [r for r in rows if r[0] != "system"]


def _tables(text: str) -> list[list[list[str]]]:
    """The rows of each table in `text`: runs of lines that open with a pipe."""
    blocks, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            blocks.append(_rows("\n".join(block)))
            block = []
    return blocks


def _close(quoted: str, value: float) -> bool:
    """Whether a quoted number is `value` rounded to the decimals it was written with."""
    decimals = len(quoted.partition(".")[2])
    return abs(float(quoted) - value) <= 0.5 * 10**-decimals + 1e-9


def _all_close(text: str, values: list[float]) -> None:
    quoted = re.findall(NUMBER, text)
    assert len(quoted) == len(values), (text, values)
    for q, v in zip(quoted, values, strict=True):
        assert _close(q, v), f"{text!r} quotes {q}, the result file has {v}"


def _quote(text: str, pattern: str) -> tuple[str, ...]:
    """The numbers `pattern` (with {n} for each) captures in `text`; fails when it is absent."""
    match = re.search(pattern.replace("{n}", f"({NUMBER})"), text)
    assert match, f"not in the prose: {pattern}"
    return match.groups()


def _points(v: dict[str, Any]) -> list[float]:
    return [100 * v["accuracy_diff"], 100 * v["low"], 100 * v["high"]]


# README's first table, in its order: the result folder and system of each row.
LOCAL_ROWS = [
    ("selection", ONE_5B),
    ("selection", "single:local:qwen2.5-coder-0.5b"),
    ("selection", "local-confidence"),
    ("selection", "local-vote"),
    ("selection", "local-consensus"),
    ("selection", "local-vote-adaptive"),
    ("selection-heldout", ONE_5B),
    ("selection-heldout", "local-confidence"),
    ("selection-subset", ONE_5B),
    ("selection-subset", "local-confidence"),
    ("selection-subset", "local-mux"),
    ("synthesis", ONE_5B),
    ("synthesis", "local-self-moa"),
    ("synthesis", "local-moa"),
    ("synthesis", "local-ranker"),
]


def test_the_local_models_table_is_the_committed_summaries():
    rows = _tables(_section("What it found on the local models"))[0]
    assert len(rows) == len(LOCAL_ROWS)
    for row, (folder, system) in zip(rows, LOCAL_ROWS, strict=True):
        s = _summary(folder)[system]
        label, correct, accuracy, delta, split, calls = row
        assert system.removeprefix("single:local:") in label.lower(), (label, system)
        assert correct == f"{s['correct']}/{s['scored']}", label
        _all_close(accuracy, [s["accuracy"], *s["accuracy_ci95"]])
        _all_close(calls, [s["calls"] / s["items"]])
        v = s.get("vs_baseline")
        if v is None:
            assert (delta, split) == ("(baseline)", ""), label
            continue
        assert v["baseline"] == ONE_5B and v["n"] == s["scored"], label
        _all_close(delta, [v["accuracy_diff"], v["low"], v["high"]])
        assert split == f"{v['wins']} / {v['losses']}", label
    held_out = _summary("selection-heldout")
    assert held_out["local-vote"]["vs_baseline"] == held_out["local-confidence"]["vs_baseline"]


def test_the_local_models_prose_quotes_the_summaries_and_their_verdicts():
    text = " ".join(_section("What it found on the local models").split())
    full, subset = _summary("selection"), _summary("selection-subset")
    confidence = full["local-confidence"]
    quoted = _quote(text, r"right on {n} items the single model misses and wrong on none")
    assert quoted == (str(confidence["vs_baseline"]["wins"]),)
    assert confidence["vs_baseline"]["losses"] == 0
    for name in ("local-confidence", "local-vote"):
        v = full[name]["vs_baseline"]
        pattern = (
            r"{n} points, interval \[{n}, {n}\] over 256 items"
            if name == "local-confidence"
            else r"local-vote {n} \[{n}, {n}\]"
        )
        _all_close(" ".join(_quote(text, pattern)), _points(v))
        # Called better by both tests, as "beats" says, p quoted as the exact test gives it.
        p = sign_test_p(v["wins"], v["losses"])
        assert v["low"] > 0 and p < 0.05
        assert f"{v['wins']} / {v['losses']}: p = {p:.3f}" in text
    assert "the greedy answer and two samples beats the 1.5B model alone" in text
    v = subset["local-confidence"]["vs_baseline"]
    p = sign_test_p(v["wins"], v["losses"])
    assert v["low"] > 0 and p >= 0.05  # "does not, though its interval excludes zero"
    assert (
        f"subset's {v['wins']} / {v['losses']} does not (p = {p:.4f}), though its interval "
        "excludes zero" in text
    )
    kept = _holm_kept(full)
    assert {"local-confidence", "local-vote"} <= set(kept)
    assert "on the 256-item run Holm's correction keeps both calls" in text
    v = _summary("selection-heldout")["local-confidence"]["vs_baseline"]
    wins, losses, diff = _quote(text, r"\({n} wins, {n} losses, {n} points\)")
    assert (int(wins), int(losses)) == (v["wins"], v["losses"])
    _all_close(diff, [100 * v["accuracy_diff"]])
    assert v["low"] <= 0 and f"touches zero [{v['low']:+.3f}, {v['high']:+.3f}]" in text
    best, reached = _quote(text, r"would reach {n}%; local-confidence reaches {n}%")
    _all_close(best, [100 * confidence["layer_curve"]["1"]["best"]])
    _all_close(reached, [100 * confidence["accuracy"]])
    adaptive = full["local-vote-adaptive"]["vs_baseline"]
    assert adaptive["wins"] == confidence["vs_baseline"]["wins"]  # "wins as many items"
    assert f"loses {adaptive['losses']} the greedy answer had" in text


def test_the_earlier_acceptance_run_is_its_summary():
    text = " ".join(_section("What it found on the local models").split())
    local = _summary("local")
    layer = local["local-moa"]["layer_curve"]
    best, mean, final = _quote(
        text,
        r"right on {n}% of items, the average proposal on {n}%, .*"
        r"synthesis only on {n}%",
    )
    _all_close(
        f"{best} {mean} {final}",
        [100 * layer["1"]["best"], 100 * layer["1"]["mean"], 100 * layer["final"]["mean"]],
    )
    ranker, alone = local["local-ranker"], local["single:local:qwen2.5-coder-0.5b"]
    assert f"({ranker['correct']}/22 vs {alone['correct']}/22 for the 0.5B alone)" in text
    judged = [s["win_rate"] for s in local.values() if "win_rate" in s]
    assert all(w["first_position"] == 1.0 for w in judged)
    verdicts = sum(2 * w["items"] for w in judged)
    assert f"all {verdicts} verdicts" in text
    assert f"every one of its {verdicts} verdicts" in " ".join(EVALUATION.split())


def _gsm8k_raw() -> set[tuple[str, ...]]:
    """Every result line of the pasted runs: system, correct, difference, calls, tokens, right."""
    line = re.compile(
        r"^([\w-]+) \| (\d+/\d+) \| (baseline|.*?\(\d+ wins, \d+ losses\)) \| [^|]+ \| "
        r"([\d.]+) \| (\d+)(?: \| (\d+))?$",
        re.MULTILINE,
    )
    return {m.groups() for m in line.finditer(GSM8K_RAW)}


def _gsm8k_system(label: str) -> str:
    """The script's name of a README row's system: its first word, or greedy for the 1.5B."""
    return "greedy" if "1.5B alone" in label else label.split()[0]


def test_the_gsm8k_tables_are_the_pasted_runs():
    raw = _gsm8k_raw()
    tables = _tables(_section("GSM8K: a public benchmark nobody here wrote"))
    assert [len(t) for t in tables[:2]] == [10, 4]  # GSM8K's rows, then the shipped set's
    for row in [r for table in tables[:2] for r in table]:
        label, correct, delta, split, _, calls, tokens, right = row
        name = _gsm8k_system(label.split("*")[-1].strip())
        count = correct.split()[0]
        if delta == "(baseline)":
            delta = "baseline"
        else:
            wins, losses = split.split(" / ")
            delta = f"{delta} ({wins} wins, {losses} losses)"
        found = {
            r
            for r in raw
            if r[:3] == (name, count, delta) and r[4] == tokens and r[5] in (None, right)
        }
        assert found, f"README's GSM8K row {row} is in no pasted run"
        assert all(float(r[3]) == float(calls) for r in found), row
        if "%" in correct:
            k, n = map(int, count.split("/"))
            _all_close(correct.split()[1], [100 * k / n])


def _gsm8k_row(system: str, count: str) -> tuple[str, ...]:
    return next(r for r in _gsm8k_raw() if r[0] == system and r[1] == count)


def test_the_gsm8k_prose_quotes_the_pasted_runs():
    text = " ".join(_section("GSM8K: a public benchmark nobody here wrote").split())
    base = int(_gsm8k_row("greedy", "183/300")[1].split("/")[0])
    default = _gsm8k_row("local-confidence", "199/300")
    wins, losses = map(int, re.findall(r"\d+", default[2].split("(")[1]))
    right = int(default[5])
    # Every item the vote wins is one the greedy answer missed and another answer had.
    assert (
        f"would reach {right}/300: the vote gets {wins} of the {right - base} items the greedy "
        f"answer misses and another answer has, and loses {losses} the greedy answer had" in text
    )
    diff, low, _ = map(float, re.findall(NUMBER, default[2])[:3])
    assert diff > 5 and low > 0 and sign_test_p(wins, losses) < 0.05  # "more than 5 points"
    moa = _gsm8k_row("moa", "82/140")
    assert float(re.findall(NUMBER, moa[2])[0]) < 0
    assert "The layered MoA does not help on GSM8K." in text
    assert f"some answer was right on {moa[5]}, its synthesis on 82" in text
    assert "(10 wins, 14 losses)" in moa[2] and "(10 wins, 14 losses)" in text
    tally = _gsm8k_row("moa-tally", "38/60")
    assert "(3 wins, 6 losses)" in tally[2] and "38/60, 3 wins and 6 losses" in text
    shipped = [r for r in _gsm8k_raw() if r[1].endswith("/256") and r[2] != "baseline"]
    above = {r[0] for r in shipped if float(re.findall(NUMBER, r[2])[1]) > 0}
    assert above == {"local-math"}  # "the only row with an interval above zero"


def _tool_rows(name: str) -> dict[tuple[str, str], dict[str, Any]]:
    lines = (ROOT / "docs" / "eval-tool-use" / name).read_text().splitlines()
    return {(r["system"], r["id"]): r for r in map(json.loads, lines)}


def test_the_tool_use_claims_are_the_committed_rows_again():
    """The table and intervals computed again from the per-item rows: seeded, so exactly."""
    rows = _tool_rows("results.jsonl")
    # The interval resamples the items in the order of their ids, whatever order the rows
    # come in (`paired_difference`).
    ids = list(dict.fromkeys(i for _, i in rows))
    text = " ".join(README[README.index("**Tool use:") : README.index("## Development")].split())
    table = _rows(README[README.index("**Tool use:") : README.index("## Development")])
    labels = {"1.5B alone": "single-1.5b", "`moa`": "moa", "vote": "vote"}
    for label, first_call, answer, median in table:
        system = labels[label]
        for cell, metric in ((first_call, "tool"), (answer, "answer")):
            counts = [
                sum(rows[system, i][metric] for i in ids if i.startswith(prefix))
                for prefix in ("arith", "conv", "stock", "")
            ]
            expected = [*counts, len(ids)]
            assert [int(c) for c in re.findall(r"\d+", cell)] == expected, (label, metric)
        seconds = sorted(rows[system, i]["seconds"] for i in ids)
        assert median == f"{seconds[len(seconds) // 2]:.1f}"

    def compare(system: str, metric: str, items: list[str], mine: dict) -> Any:
        return paired_difference(
            {i: mine[system, i][metric] for i in items},
            {i: rows["single-1.5b", i][metric] for i in items},
        )

    claims = [
        ("moa", "tool", r"`moa` is worse, {n} points \[{n}, {n}\] \({n} wins, {n} losses\)"),
        ("moa", "answer", r"`moa` {n} points \[{n}, {n}\] \({n} wins, {n} losses\), not sig"),
        ("vote", "answer", r"the vote {n} \[{n}, {n}\] \({n} wins, {n} losses\)"),
    ]
    for system, metric, pattern in claims:
        d = compare(system, metric, ids, rows)
        quoted = _quote(text, pattern)
        _all_close(" ".join(quoted[:3]), [100 * d.accuracy_diff, 100 * d.low, 100 * d.high])
        assert tuple(map(int, quoted[3:5])) == (d.wins, d.losses)
        assert d.significance == ("worse" if "is worse" in pattern else "no significant difference")
    fixed = _tool_rows("moa_after_marker_fix.jsonl")
    items = list(dict.fromkeys(i for _, i in fixed))
    call, answer = (compare("moa", m, items, fixed) for m in ("tool", "answer"))
    quoted = _quote(
        text,
        r"right first call {n}/24 \(the run above: {n}/24 on the same items\), right answer "
        r"{n}/24 \({n}/24\); against the single model {n} points \[{n}, {n}\] on the call "
        r"and {n} \[{n}, {n}\] on the answer",
    )
    assert [int(q) for q in quoted[:4]] == [
        sum(fixed["moa", i]["tool"] for i in items),
        sum(rows["moa", i]["tool"] for i in items),
        sum(fixed["moa", i]["answer"] for i in items),
        sum(rows["moa", i]["answer"] for i in items),
    ]
    _all_close(
        " ".join(quoted[4:]),
        [100 * x for d in (call, answer) for x in (d.accuracy_diff, d.low, d.high)],
    )


@pytest.mark.parametrize(
    "folder", ["selection", "selection-heldout", "selection-subset", "synthesis"]
)
def test_a_stored_verdict_the_exact_test_would_not_call_is_flagged_in_its_report(folder):
    """These summaries predate the McNemar test: where it disagrees, the report must say so."""
    report = " ".join((ROOT / "docs" / f"eval-{folder}" / "report.md").read_text().split())
    flagged = []
    for name, s in _summary(folder).items():
        v = s.get("vs_baseline")
        if not v or v["significance"] not in ("better", "worse"):
            continue
        p = sign_test_p(v["wins"], v["losses"])
        if p >= 0.05:
            flagged.append(f"**{name}**'s {v['wins']} / {v['losses']} (p = {p:.4g})")
            assert flagged[-1] in report, name
    if flagged:  # the note's sentence names them all and calls them what the test calls them
        sentence = re.split(r"\.(?:\s|$)", report[report.index(flagged[0]) :])[0]
        assert all(f in sentence for f in flagged)
        verb = "are" if len(flagged) > 1 else "is"
        assert sentence.endswith(f" {verb} no significant difference from the baseline")


def test_the_multiplicity_note_is_what_holm_gives_on_the_256_item_run():
    """Five systems against one baseline, each at 5%: Holm's step-down keeps the quoted calls."""
    full = _summary("selection")
    kept = _holm_kept(full)
    assert set(kept) == {"single:local:qwen2.5-coder-0.5b", "local-confidence", "local-vote"}
    systems = sum("vs_baseline" in s for s in full.values())
    text = " ".join(EVALUATION.split())
    assert f"compares {systems} systems with one baseline" in text
    assert (
        f"step-down correction keeps its {WORDS[len(kept)]} calls (the 0.5B worse, "
        "local-confidence and local-vote better;" in text
    )
    vote_p = sign_test_p(full["local-vote"]["vs_baseline"]["wins"], 0)
    assert kept[-1] == "local-vote"  # the last kept, tested at 0.05 / (systems - 2)
    assert f"local-vote's p = {vote_p:.3f} against 0.05/3 = {0.05 / 3:.4f}" in text
    assert vote_p > 0.05 / systems  # so Bonferroni would not call it
    assert f"Bonferroni's 0.05/{systems} = {0.05 / systems:g} would drop local-vote's" in text


WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


def _holm_kept(summary: dict[str, Any]) -> list[str]:
    """The systems Holm's step-down keeps at 5%, smallest p first (the exact test's p)."""
    ps = sorted(
        (sign_test_p(s["vs_baseline"]["wins"], s["vs_baseline"]["losses"]), name)
        for name, s in summary.items()
        if "vs_baseline" in s
    )
    kept = []
    for rank, (p, name) in enumerate(ps):
        if p >= 0.05 / (len(ps) - rank):
            break
        kept.append(name)
    return kept


def test_the_samples_curve_note_explains_its_gap_to_local_math_by_the_cap():
    """Replay 0.7 and local-math differ only past 13 answers, 3 per item: the gap is whole items."""
    replay = float(re.search(r"^0\.7 \| ([\d.]+) \| 23/30", GSM8K_RAW, re.MULTILINE)[1])
    live = float(_gsm8k_row("local-math", "23/30")[3])
    # Each mean is rounded to 0.1, so the extra answers per item are within 0.1 of the gap.
    gap = replay - live
    whole = [a for a in range(round(30 * gap) - 3, round(30 * gap) + 4) if a % 3 == 0]
    whole = [a for a in whole if round(abs(a / 30 - gap), 9) < 0.1]
    assert len(whole) == 1
    preset = ROOT / "src" / "langgraph_moa" / "config" / "presets" / "local-math.yaml"
    assert "samples: 12}" in preset.read_text() and "round_size: 3}" in preset.read_text()
    text = " ".join(GSM8K_RAW.split())
    assert (
        f"drew {replay} answers per item where local-math, the same stop rule over the same "
        f"answers, drew {live}" in text
    )
    assert f"over 30 items is {whole[0]} answers, {whole[0] // 3} items" in text


@pytest.mark.parametrize("report", sorted(ROOT.glob("docs/eval-*/report.md")), ids=str)
def test_a_stored_report_that_says_helps_of_an_untested_count_is_flagged(report):
    """The raw verdict now says 'ahead (untested)': a stored 'helps' must not stand unflagged."""
    text = " ".join(report.read_text(encoding="utf-8").split())
    if "): helps:" in text or "): does not help:" in text:
        assert "untested counts" in text and '"ahead (untested)"' in text


FOLDERS = sorted(
    {
        p.parent
        for name in ("summary.json", "results.jsonl")
        for p in (ROOT / "docs").glob(f"eval-*/{name}")
    }
)
"""The committed result folders: `moa eval`'s (a summary) and benchmarks' per-item rows."""


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_a_committed_result_folder_says_how_to_run_it_again(folder):
    """The committed tables predate provenance.json and their reports named no command,
    code, data file or seed: a reviewer could not tell how to make them again. Each now
    holds a provenance.json or ends with a Reproduce section that names them, and a
    `moa eval` command in it is one today's CLI still accepts."""
    import shlex

    import typer

    from langgraph_moa.cli import _app as cli

    if (folder / "provenance.json").is_file():
        return
    texts = [folder / n for n in ("report.md", "README.md") if (folder / n).is_file()]
    assert texts, f"{folder.name}: neither a report.md nor a README.md says how it was made"
    report = texts[0].read_text(encoding="utf-8")
    assert "\n## Reproduce\n" in report, f"{folder.name}: no Reproduce section"
    section = report[report.index("\n## Reproduce\n") :]
    command = re.search(r"- command: `([^`]+)`", section)
    assert command, f"{folder.name}: no command"
    for label in ("- code and data: commit ", "sha256 ", "- seed: ", "- not recorded: "):
        assert label in section, f"{folder.name}: says nothing after {label!r}"
    words = shlex.split(command.group(1))
    if words[:2] == ["moa", "eval"]:
        eval_command = typer.main.get_command(cli.app).commands["eval"]  # type: ignore[attr-defined]
        eval_command.make_context("eval", words[2:])  # refuses an option it no longer takes
    else:
        script = ROOT / words[1]
        assert words[0] == "python" and script.is_file(), words
        for option in (w for w in words[2:] if w.startswith("--")):
            assert f'"{option}"' in script.read_text(encoding="utf-8"), (script, option)
