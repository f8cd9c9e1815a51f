"""GSM8K on the local models: token budgets (train split), and accuracy / samples / time (test).

Two measurements, each cached so that a rerun, or a run that was stopped, repeats no call
(chunk-wise and early aggregation, which race their calls, resume from the rows `moa eval`
writes as each item finishes: see docs/evaluation.md, "Cache and resume"):

``budget`` (tuning, the TRAIN sample only): the 1.5B's greedy step-by-step solutions with a
1024-token cap on the first N items of ``benchmarks/data/gsm8k_train_100.jsonl``; prints the
distribution of their lengths, and for caps of 256, 384, 512, 640 and 768 tokens the share
of solutions the cap would cut off and the accuracy that would be left (a cut-off answer is
counted wrong: it never votes). The presets' caps are chosen from this.

``systems`` (reporting, the TEST sample): every system answers the first N items of the
packaged GSM8K test sample (300 items; ``--dataset verifiable`` for the shipped set) through
`moa eval`, each system in its own folder with its own call cache, so that its answer times
are its own and not replays of another system's calls. Printed: correct counts, the paired
difference to the 1.5B alone (greedy, same 640-token budget) with a 95% bootstrap interval,
wins and losses, the median answer time (over items answered without any cached call; a
replay takes no time), calls and completion tokens per item. Then the samples curve: the
``vote16`` system's 16 answers per item (greedy + 15 samples) re-voted offline over the
first k (k = 1..16), and adaptive stop rules replayed over the same answers (rounds of 3,
stop when a share of the answers agree): accuracy against samples drawn, with the interval
against the 1.5B alone. The offline curve has no answer time of its own: its cost is the
samples (and tokens) drawn; local-math's measured time shows what one adaptive setting costs.

    PYTHONPATH=src python benchmarks/gsm8k.py budget --items 32
    PYTHONPATH=src python benchmarks/gsm8k.py systems --items 300      # many hours on 2 cores
    PYTHONPATH=src python benchmarks/gsm8k.py systems --items 300 --dataset verifiable \\
        --systems greedy,local-confidence,local-math

Figures depend on the machine's load: say with each figure how many items it covers and
whether the machine was shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _seed import call_seed

from langgraph_moa.eval.datasets import EvalItem, load_dataset
from langgraph_moa.eval.runner import Evaluation, slug
from langgraph_moa.eval.scorers import score
from langgraph_moa.eval.stats import paired_difference
from langgraph_moa.run.cache import SQLiteCallCache
from langgraph_moa.text._selection import Candidate, SelectionConfig, select

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "benchmarks" / "data" / "gsm8k_train_100.jsonl"
CONFIGS = ROOT / "benchmarks" / "gsm8k_systems"
BASELINE = "greedy"
SYSTEMS = ["greedy", "local-confidence", "local-math", "vote16", "moa", "moa-tally"]
CAPS = (256, 384, 512, 640, 768)
BUDGET_CAP = 1024
CURVE_CAP = 640
ROUND = 3
STOPS = (0.5, 0.6, 0.7, 0.8, 1.0)


def command() -> str:
    """Return this script's command line, for each run's provenance.json."""
    return shlex.join(["python", *sys.argv])


def system_spec(name: str) -> str:
    """Map a short name to what `moa eval` takes: a config here, else a preset or spec."""
    path = CONFIGS / f"{name}.yaml"
    return str(path) if path.is_file() else name


def evaluate(
    name: str,
    items: list[EvalItem],
    out: Path,
    concurrency: int,
    shared_cache: Path | None = None,
    run: bool = True,
    dataset: str | None = None,
    eval_seed: int | None = None,
) -> list[dict[str, Any]]:
    """Answer `items` with one system in its own folder; return its results rows.

    `shared_cache`: a call cache merged in before each run, so calls this system shares with
    another (the same model, settings, prompt and sample index) are not generated twice,
    also when a longer run (more items) extends a folder that already has its own cache.
    Their items then have no answer time of their own (a replay takes none). `run` False reads
    the results of the last run instead: a system with early aggregation would race again on
    a replay (its cancelled calls were never cached), so its results are read, not remade.
    `eval_seed`: sent with every call (`moa eval --seed`), so a rerun can draw the same samples.
    """
    folder = out / slug(name)
    if shared_cache is not None and shared_cache.is_file() and run:
        cache = SQLiteCallCache(folder / "calls.db")
        cache.merge(shared_cache)
        cache.close()
    if run:
        with Evaluation(
            [system_spec(name)],
            items,
            folder,
            concurrency=concurrency,
            plots=False,
            exports=False,
            dataset=dataset,
            command=command(),
            seed=eval_seed,
        ) as evaluation:
            asyncio.run(evaluation.run(progress=True))
    rows = [
        json.loads(line)
        for line in (folder / "results" / f"{slug(system_spec(name))}.jsonl")
        .read_text()
        .splitlines()
    ]
    _keep_fresh_times(folder, rows)
    return rows


def _keep_fresh_times(folder: Path, rows: list[dict[str, Any]]) -> None:
    """Remember each item's answer time from the run that generated it (not a replay)."""
    path = folder / "fresh_times.json"
    times = json.loads(path.read_text()) if path.is_file() else {}
    for row in rows:
        if row["error"] is None and row["cached_calls"] == 0 and row["id"] not in times:
            times[row["id"]] = row["wall_s"]
    path.write_text(json.dumps(times, indent=1))
    for row in rows:
        row["fresh_s"] = times.get(row["id"])


def correct(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Item id -> 1.0 right / 0.0 wrong, for the items answered without error."""
    return {r["id"]: float(r["scores"].get("correct", False)) for r in rows if r["error"] is None}


def interval(scores: dict[str, float], base: dict[str, float]) -> str:
    """Paired difference to the baseline, in points, with its 95% bootstrap interval."""
    diff = paired_difference(scores, base)
    if diff.accuracy_diff is None or diff.low is None or diff.high is None:
        return "n/a"
    return (
        f"{100 * diff.accuracy_diff:+.1f} [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}] "
        f"({diff.wins} wins, {diff.losses} losses)"
    )


# --- budget ---------------------------------------------------------------------------------


def budget(args: argparse.Namespace) -> None:
    """Measure the greedy solutions' lengths on the train sample and what each cap would cut."""
    items = load_dataset(TRAIN)[: args.items]
    config = args.out / "greedy-1024.yaml"
    args.out.mkdir(parents=True, exist_ok=True)
    config.write_text(
        "variant: select\nproposers:\n"
        f'  - {{model: "local:qwen2.5-coder-1.5b", temperature: 0.0, max_tokens: {BUDGET_CAP}}}\n'
        "call_timeout_s: null\n"  # a busy machine may take minutes per answer: never retry
    )
    with Evaluation(
        [str(config)],
        items,
        args.out,
        concurrency=args.concurrency,
        plots=False,
        exports=False,
        dataset=str(TRAIN),
        command=command(),
    ) as evaluation:
        asyncio.run(evaluation.run(progress=True))
    rows = [
        json.loads(line)
        for line in (args.out / "results" / f"{slug(str(config))}.jsonl").read_text().splitlines()
    ]
    lengths = sorted(r["completion_tokens"] for r in rows)
    right = {r["id"]: bool(r["scores"].get("correct")) for r in rows}
    n = len(rows)
    print(f"GSM8K train sample, first {n} items; the 1.5B greedy, cap {BUDGET_CAP} tokens")
    print(f"accuracy at cap {BUDGET_CAP}: {sum(right.values())}/{n}")
    quartiles = statistics.quantiles(lengths, n=4) if n > 1 else lengths * 3
    print(
        f"completion tokens: min {lengths[0]}, quartiles "
        f"{', '.join(f'{q:.0f}' for q in quartiles)}, max {lengths[-1]}, "
        f"hit the {BUDGET_CAP} cap: {sum(t >= BUDGET_CAP for t in lengths)}"
    )
    print("cap | cut off | accuracy left (a cut-off answer counts wrong)")
    for cap in CAPS:
        cut = [r for r in rows if r["completion_tokens"] >= cap]
        kept = sum(right[r["id"]] for r in rows if r["completion_tokens"] < cap)
        print(f"{cap:>4} | {len(cut):>2}/{n} ({100 * len(cut) / n:.0f}%) | {kept}/{n}")


# --- systems and the samples curve ----------------------------------------------------------


def systems(args: argparse.Namespace) -> None:
    """Run each system on the sample and print the table and the samples curve."""
    items = load_dataset(args.dataset)[: args.items]
    # The baseline first: the other systems are compared with it and may share its calls.
    names = [BASELINE, *(n for n in args.systems.split(",") if n != BASELINE)]
    shared = args.out / slug(BASELINE) / "calls.db" if args.share_calls else None
    results = {
        name: evaluate(
            name,
            items,
            args.out,
            args.concurrency,
            None if name == BASELINE else shared,
            run=not args.report_only,
            dataset=str(args.dataset),
            eval_seed=args.seed,
        )
        for name in names
    }
    base = correct(results[BASELINE])
    print(f"\n{args.dataset}: first {len(items)} items; baseline: the 1.5B alone, greedy")
    print(
        "system | correct | vs the 1.5B alone, points [95% CI] | median s | calls | tokens "
        "| some answer right"
    )
    by_id = {i.id: i for i in items}
    for name, rows in results.items():
        scores = correct(rows)
        some = sum(any_right(by_id[r["id"]], r) for r in rows if r["error"] is None)
        fresh = [r["fresh_s"] for r in rows if r.get("fresh_s") is not None]
        median = f"{statistics.median(fresh):.1f}" if fresh else "n/a"
        versus = "baseline" if name == BASELINE else interval(scores, base)
        print(
            f"{name} | {int(sum(scores.values()))}/{len(scores)} | {versus} | {median} "
            f"(of {len(fresh)}) | {sum(r['calls'] for r in rows) / len(rows):.1f} | "
            f"{sum(r['completion_tokens'] for r in rows) / len(rows):.0f} | {some}"
        )
    if args.versus in results:
        against = correct(results[args.versus])
        print(f"\nagainst {args.versus} (paired, the items both answered)")
        for name, rows in results.items():
            if name not in (args.versus, BASELINE):
                print(f"{name} | {interval(correct(rows), against)}")
    if "vote16" in results:
        curve(items, results["vote16"], base)


def proposals(row: dict[str, Any]) -> list[Candidate]:
    """The row's answers in draw order (the greedy answer first), cut-off ones marked."""
    calls = [c for c in row["trace"] if c["role"] == "proposer" and c["status"] == "ok"]
    calls.sort(key=lambda c: (c["proposer"], c["sample"]))
    return [
        Candidate(
            index=k,
            model=c["configured_model"],
            text=c["output"],
            cut_off=(c["completion_tokens"] or 0) >= CURVE_CAP,
        )
        for k, c in enumerate(calls)
    ]


def any_right(item: EvalItem, row: dict[str, Any]) -> bool:
    """Whether some finished proposal of the row states the right answer (a picker's ceiling)."""
    return any(not c.cut_off and score(item, c.text).get("correct") for c in proposals(row))


def vote(item: EvalItem, candidates: list[Candidate]) -> tuple[float, float]:
    """Return (1.0 if the vote's winner is right, its agreement)."""
    decision = select(candidates, SelectionConfig(method="vote"))
    winner = next(c for c in candidates if c.index == decision.winner)
    return float(bool(score(item, winner.text).get("correct"))), decision.agreement


def curve(items: list[EvalItem], rows: list[dict[str, Any]], base: dict[str, float]) -> None:
    """Re-vote the first k answers, and replay adaptive stops, over vote16's answers."""
    by_id = {i.id: i for i in items}
    drawn = {r["id"]: proposals(r) for r in rows if r["error"] is None}
    print(f"\nsamples curve: vote16's answers re-voted offline ({len(drawn)} items)")
    print("answers voted | accuracy | vs the 1.5B alone, points [95% CI]")
    for k in (1, 2, 3, 4, 6, 8, 12, 16):
        scores = {i: vote(by_id[i], c[:k])[0] for i, c in drawn.items() if len(c) >= k}
        print(f"{k:>2} | {sum(scores.values()):.0f}/{len(scores)} | {interval(scores, base)}")
    print(f"adaptive: greedy + {ROUND} samples, then {ROUND} more per round until the share")
    print("stop at | mean answers drawn | accuracy | vs the 1.5B alone, points [95% CI]")
    for stop in STOPS:
        scores, used = {}, []
        for i, cands in drawn.items():
            k = min(1 + ROUND, len(cands))
            while True:
                right, agreement = vote(by_id[i], cands[:k])
                if agreement >= stop or k >= len(cands):
                    break
                k = min(k + ROUND, len(cands))
            scores[i] = right
            used.append(k)
        print(
            f"{stop:.1f} | {statistics.mean(used):.1f} | {sum(scores.values()):.0f}/{len(scores)} "
            f"| {interval(scores, base)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("budget", help="greedy solution lengths on the train sample")
    b.add_argument("--items", type=int, default=32)
    b.add_argument("--out", type=Path, default=Path("moa-eval-gsm8k-budget"))
    b.add_argument("--concurrency", type=int, default=4)
    s = commands.add_parser("systems", help="the systems and the samples curve on the test sample")
    s.add_argument("--items", type=int, default=300)
    s.add_argument("--dataset", default="gsm8k", help="gsm8k (test sample), verifiable, a file")
    s.add_argument("--systems", default=",".join(SYSTEMS))
    s.add_argument(
        "--seed",
        type=call_seed,
        default=None,
        help="seed every call (moa eval --seed): a rerun can draw the same samples",
    )
    s.add_argument("--out", type=Path, default=Path("moa-eval-gsm8k"))
    s.add_argument("--concurrency", type=int, default=1)
    s.add_argument(
        "--report-only",
        action="store_true",
        help="read each system's last results instead of running it (the same --items)",
    )
    s.add_argument(
        "--versus",
        default="",
        help="also compare every system with this one (say moa, for moa-early), paired",
    )
    s.add_argument(
        "--share-calls",
        action="store_true",
        help="seed each system's call cache with the baseline's (its greedy calls are the same "
        "calls): saves their generation; answer times then come from a run without it",
    )
    args = parser.parse_args()
    try:
        budget(args) if args.command == "budget" else systems(args)
    except KeyboardInterrupt:
        print("Interrupted: what finished is kept; run the same command again to go on.")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
