"""`moa eval`: compare systems on a dataset; a system that failed every item fails the command.

The report goes to stdout as written (Markdown, unwrapped, so it pipes into a file); the
progress goes to stderr, as a bar on a terminal and as lines elsewhere. When a system errored
on every item the command says so with the first error and exits 1: a table of zeros is not
an evaluation. When some answers were fallbacks (an aggregator failed and a proposal
answered), or a system failed on some items, the report counts them and the command warns
and exits 3, as `moa run` does for a fallback; so it does when some answers had a layer
passed over (fewer layers than configured ran).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from langgraph_moa._redact import read_variables, shell_command
from langgraph_moa.cli._config import checked, model_flag, spec_problem
from langgraph_moa.cli._output import out
from langgraph_moa.cli._ranges import number_option
from langgraph_moa.cli._run import DEGRADED_EXIT
from langgraph_moa.cli._usage import OptionConflictError
from langgraph_moa.errors import MoAConfigError, MoAError
from langgraph_moa.run._inputs import SEED_MAX

if TYPE_CHECKING:
    from langgraph_moa.eval.runner import Evaluation


def evaluate(
    system: Annotated[
        list[str],
        typer.Option(
            "--system", "-s", help="Preset, config file, or 'single:<model spec>' (repeatable)."
        ),
    ],
    dataset: Annotated[
        Path | None,
        typer.Option(
            help="JSONL (GSM8K's published format too), MT-Bench or AlpacaEval file, or a "
            "packaged set: 'verifiable' (the default) or 'gsm8k' (300 GSM8K test items)."
        ),
    ] = None,
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="Output folder: results, summary, report, call cache."),
    ] = Path("moa-eval"),
    limit: Annotated[
        int | None, number_option("--limit", low=1, help="Only the first N items.")
    ] = None,
    concurrency: Annotated[
        int, number_option("--concurrency", low=1, help="Items answered at the same time.")
    ] = 1,
    seed: Annotated[
        int | None,
        number_option(
            "--seed",
            low=0,
            high=SEED_MAX,
            help="Seed the proposals and aggregations (each sample its own), so a rerun can draw "
            "the same samples (llama.cpp's still change with the load on its slots).",
        ),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(
            parser=checked(spec_problem),
            metavar="SPEC",
            help="Judge model for pairwise win rates.",
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="System the others are compared with: accuracy difference with a 95% "
            "interval, and pairwise win rates with --judge."
        ),
    ] = None,
    prices: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON price table: model -> {prompt, completion} $ per 1M tokens."),
    ] = None,
    langsmith_dataset: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Read the items from this LangSmith dataset (needs LANGSMITH_API_KEY).",
        ),
    ] = None,
    plots: Annotated[bool, typer.Option(help="Draw the PNG plots (needs the eval extra).")] = True,
    judge_layers: Annotated[
        bool,
        typer.Option(help="Judge every proposal of unverifiable items (per-layer analysis)."),
    ] = False,
    calibration_out: Annotated[
        Path | None,
        typer.Option(
            help="Write each 'single:' model's accuracy to this JSON file, for SLM-MUX "
            "selection (selection.calibration_file)."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the report.")] = False,
) -> None:
    """Compare systems (single models, MoA, Self-MoA...) on a dataset; reruns hit the cache."""
    import asyncio

    from langgraph_moa.eval.datasets import load_dataset, shipped_dataset
    from langgraph_moa.eval.provenance import LANGSMITH_SOURCE
    from langgraph_moa.eval.runner import Evaluation

    out.quiet = quiet
    no_plots = not plots  # as asked: the command that resumes a stopped run says it again
    judge = model_flag("--judge", judge)
    if langsmith_dataset is not None and dataset is not None:
        raise OptionConflictError("Give either --dataset or --langsmith-dataset, not both.")
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            out.warn(
                "the plots need the 'eval' extra (matplotlib is not installed): install "
                "langgraph-moa[eval], or pass --no-plots; the report is written without them."
            )
            plots = False
    if calibration_out is not None:
        _check_calibration_out(calibration_out, system)
    if langsmith_dataset is not None:
        items = _langsmith_items(langsmith_dataset, limit)
    else:
        items = load_dataset(dataset or shipped_dataset())[:limit]
    evaluation = Evaluation(
        system,
        items,
        out_dir,
        concurrency=concurrency,
        seed=seed,
        judge=judge,
        baseline=baseline,
        prices=prices,
        plots=plots,
        judge_layers=judge_layers,
        dataset=(
            f"{LANGSMITH_SOURCE}{langsmith_dataset}"
            if langsmith_dataset is not None
            else str(dataset or "verifiable")
        ),
        command=_command(
            system,
            dataset,
            langsmith_dataset,
            out_dir,
            limit,
            concurrency,
            judge,
            baseline,
            prices,
            judge_layers,
            seed=seed,
        ),
    )
    resume = _resume_command(evaluation.command or "", no_plots, calibration_out, quiet)
    out.interrupt_hint = lambda: _stopped(evaluation, out_dir, resume)
    bar = out.stderr_is_terminal and not quiet
    log = None if bar or quiet else out.plain
    try:
        summary = asyncio.run(evaluation.run(progress=bar, log=log, on_screen=out.showing))
    finally:
        out.interrupt_hint = ""
        evaluation.close()  # not left to garbage collection, whenever that comes
    out.answer((out_dir / "report.md").read_text(encoding="utf-8"))  # on a terminal, made safe
    if calibration_out is not None:
        from langgraph_moa.eval.runner import calibration

        _write_calibration(calibration_out, json.dumps(calibration(summary), indent=2))
        out.info(f"[dim]calibration: {escape(str(calibration_out))}[/]")
    where = escape(str(out_dir))  # the user's path: "[/x]" in it is no closing tag
    out.info(
        f"[dim]results: {where}/results, {where}/summary.json; call cache: {where}/calls.db[/]"
    )
    degraded = [*_partly_failed(summary), *_fallbacks(summary), *_passed_over(summary)]
    for warning in degraded:  # said even when a failure below sets the exit code to 1
        out.warn(warning)
    problems = [*_judge_failure(summary, out_dir), *_failed_systems(summary)]
    for problem in problems[:-1]:
        out.error(problem)
    if problems:
        raise MoAError(problems[-1])
    if degraded:
        sys.exit(DEGRADED_EXIT)


def _command(
    systems: list[str],
    dataset: Path | None,
    langsmith_dataset: str | None,
    out_dir: Path,
    limit: int | None,
    concurrency: int,
    judge: str | None,
    baseline: str | None,
    prices: Path | None,
    judge_layers: bool,
    seed: int | None = None,
) -> str:
    """Return the `moa eval` command that makes these answers again, for the report.

    Built from the options as read, not from ``sys.argv``: the same however the command
    was started (``moa``, ``python -m langgraph_moa``, a test), and free of display options.
    Concurrency is written because it changes the wall times and, on llama.cpp's shared
    slots, even greedy answers (README, "5 of 10 greedy answers differed").
    """
    words = ["moa", "eval"]
    for spec in systems:
        words += ["--system", spec]
    if langsmith_dataset is not None:
        words += ["--langsmith-dataset", langsmith_dataset]
    else:
        words += ["--dataset", str(dataset or "verifiable")]
    words += ["--out", str(out_dir)]
    if limit is not None:
        words += ["--limit", str(limit)]
    if concurrency != 1:
        words += ["--concurrency", str(concurrency)]
    if judge is not None:
        words += ["--judge", judge]
    if baseline is not None:
        words += ["--baseline", baseline]
    if prices is not None:
        words += ["--prices", str(prices)]
    if judge_layers:
        words.append("--judge-layers")
    if seed is not None:
        words += ["--seed", str(seed)]
    return shell_command(words)


def _resume_command(command: str, no_plots: bool, calibration_out: Path | None, quiet: bool) -> str:
    """Return the command that goes on with a stopped run: the report's, display options too.

    The report's command leaves out what changes no answer; the user resuming a run wants
    it as they ran it, without plots, with its calibration file, quiet.
    """
    words = []
    if no_plots:
        words.append("--no-plots")
    if calibration_out is not None:
        words += ["--calibration-out", str(calibration_out)]
    if quiet:
        words.append("--quiet")
    return " ".join([command, shlex.join(words)]) if words else command


def _stopped(evaluation: Evaluation, out_dir: Path, resume: str) -> str:
    """Say, after "Interrupted.", what a stopped run finished, what it wrote and how to go on.

    A stopped run writes no summary.json, report.md or provenance.json: a report of some of
    the items could be read as the evaluation. What it finished is in the call cache (and
    the rows files of racing systems), so the same command answers only the rest; stopped
    while the judge was asked, every answer is done and the verdicts given are cached too.
    """
    total = len(evaluation.items)
    counts = [f"{name} {n} of {total}" for name, n in evaluation.finished.items()]
    counts[0] += " items"
    earlier = (
        "; the report.md there is an earlier run's" if (out_dir / "report.md").exists() else ""
    )
    judging = getattr(evaluation, "judging", None)
    if judging is None:
        where, rest = f"Finished: {', '.join(counts)}", "answer only the rest"
    else:
        system, done, pairs = judging
        where = (
            f"Every answer was done ({', '.join(counts)}); stopped while judging {system} "
            f"against {evaluation.baseline}: {done} of {pairs} pairs judged"
        )
        rest = "judge only the rest (the answers and the verdicts given are cached)"
    return (
        f" {where}. What finished is kept in {out_dir} (a stopped run writes no summary or "
        f"report{earlier}): run the same command again to {rest}: {resume}{_key_left_out(resume)}"
    )


def _key_left_out(resume: str) -> str:
    """Say which variables the command shown reads its URLs' keys from (`shell_command`)."""
    names = read_variables(resume)
    if not names:
        return ""
    listed = ", ".join(f"${name}" for name in names[:-1])
    listed = f"{listed} and ${names[-1]}" if listed else f"${names[-1]}"
    return (
        " (no key is shown: the command reads each URL's key from its variable, "
        f"{listed}: set {'them' if len(names) > 1 else 'it'} to your "
        f"key{'s' if len(names) > 1 else ''} before running it)"
    )


def _partly_failed(summary: dict[str, Any]) -> list[str]:
    """Say which systems failed on some items: their accuracy leaves those items out."""
    from langgraph_moa.eval.report import first_error

    counts = {n: s["errors"] for n, s in summary.items() if 0 < s["errors"] < s["items"]}
    if not counts:
        return []
    each = ", ".join(f"{name} {n} of {summary[name]['items']}" for name, n in counts.items())
    first = first_error(summary[next(iter(counts))])
    return [
        f"some items failed ({each}) and are not in the accuracy; the first error: "
        f"{first.rstrip('.')}. Run the same command again to retry them (the rest come "
        f"from the cache): exit code {DEGRADED_EXIT}."
    ]


def _counted(summary: dict[str, Any], key: str) -> str:
    """List the systems with items counted under `key`, as 'name n of items' ('' for none)."""
    return ", ".join(
        f"{name} {s[key]} of {s['items']}" for name, s in summary.items() if s.get(key)
    )


def _fallbacks(summary: dict[str, Any]) -> list[str]:
    """Say which systems answered some items with a fallback: their scores are not all theirs."""
    if not (each := _counted(summary, "fallbacks")):
        return []
    return [
        f"some answers were fallbacks, not the configured final step ({each}); they are "
        f"scored as given, and the report counts them: exit code {DEGRADED_EXIT}, as for "
        "`moa run`."
    ]


def _passed_over(summary: dict[str, Any]) -> list[str]:
    """Say which systems answered some items with a layer passed over: fewer layers ran."""
    if not (each := _counted(summary, "failed_layers")):
        return []
    return [
        f"some answers had a layer passed over ({each}): every proposal of it failed, so "
        "fewer layers than configured answered them; they are scored as given, and the report "
        f"counts them: exit code {DEGRADED_EXIT}, as for `moa run`."
    ]


def _check_calibration_out(path: Path, systems: list[str]) -> None:
    """Refuse, before any call, a --calibration-out that could not be written after the run."""
    from langgraph_moa.eval.runner import SINGLE

    if not any(spec.startswith(SINGLE) for spec in systems):
        raise MoAConfigError(
            "No calibration can be written: --calibration-out needs at least one "
            "'single:<model>' system; add one with -s single:<model spec>, or drop the flag."
        )
    if path.is_dir():
        raise MoAConfigError(
            f"--calibration-out {str(path)!r} is a folder: give the path of a JSON file."
        )
    if not path.parent.is_dir():
        raise MoAConfigError(
            f"--calibration-out {str(path)!r}: the folder {str(path.parent)!r} does not exist; "
            "create it or give a path in an existing folder."
        )


def _write_calibration(path: Path, text: str) -> None:
    """Write the calibration file in one step; a failure is one sentence."""
    from langgraph_moa.eval.runner import write_atomically

    try:
        write_atomically(path, text)
    except OSError as exc:
        raise MoAError(
            f"Cannot write {str(path)!r} ({exc.strerror or type(exc).__name__}); the report "
            "and results are written: fix the path and run the same command again (the "
            "answers come from the cache)."
        ) from None


def _failed_systems(summary: dict[str, Any]) -> list[str]:
    """Say which systems failed on every item: a table of zeros is not an evaluation."""
    failed = [name for name, s in summary.items() if s["items"] and s["errors"] == s["items"]]
    if not failed:
        return []
    first = summary[failed[0]].get("first_error") or "no message recorded"
    return [
        f"{', '.join(failed)} failed on every item ({summary[failed[0]]['items']}); the "
        f"first error: {first}"
    ]


def _judge_failure(summary: dict[str, Any], out_dir: Path) -> list[str]:
    """Say that the judge failed: the report is written, but the asked-for comparison is not."""
    from langgraph_moa.eval.runner import NO_PAIRS

    unjudged = [name for name, s in summary.items() if s.get("judge_error") == NO_PAIRS]
    failed = [name for name, s in summary.items() if s.get("judge_error") not in (None, NO_PAIRS)]
    problems = [
        f"No pair could be judged for {name}: every item had an error in its answer or the "
        f"baseline's (the report in {out_dir / 'report.md'} lists them); fix those errors and "
        "run the same command again."
        for name in unjudged
    ]
    if not failed:
        return problems
    why = summary[failed[0]]["judge_error"].rstrip(".")
    return [
        *problems,
        f"The judge failed, so {', '.join(failed)} {'has' if len(failed) == 1 else 'have'} no "
        f"win rate: {why}. The report with the accuracy is in {out_dir / 'report.md'}; fix "
        "the judge (or drop --judge) and run the same command again: the answers come from "
        "the cache.",
    ]


def _langsmith_items(name: str, limit: int | None) -> list[Any]:
    """Read a LangSmith dataset; any failure is one sentence, never a dump of the client."""
    import os

    from langgraph_moa.eval.langsmith_eval import load_langsmith_dataset

    if not (os.environ.get("LANGSMITH_API_KEY") or os.environ.get("LANGCHAIN_API_KEY")):
        raise MoAConfigError(
            f"--langsmith-dataset {name!r} needs LANGSMITH_API_KEY: export it, or give a local "
            "file with --dataset."
        )
    import logging

    from langgraph_moa.cli._langsmith import endpoint, reachable

    if not reachable(endpoint()):
        raise MoAError(
            f"Cannot read the LangSmith dataset {name!r}: {endpoint()} cannot be reached "
            "(check the network or LANGSMITH_ENDPOINT)."
        )
    quiet = logging.getLogger("langsmith")  # its warnings dump request details, key included
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        from langsmith import Client

        return load_langsmith_dataset(name, client=Client(timeout_ms=5000), limit=limit)
    except MoAError:
        raise
    except Exception as exc:
        kind = type(exc).__name__
        text = str(exc)
        if "not found" in text.lower() or "404" in text:
            why = "no dataset of that name is visible to this API key"
        elif "401" in text or "403" in text or "auth" in text.lower():
            why = "the API key was refused (check LANGSMITH_API_KEY)"
        elif "connect" in text.lower() or "timed out" in text.lower() or "Connection" in kind:
            why = "its endpoint cannot be reached (check the network or LANGSMITH_ENDPOINT)"
        else:
            why = f"{kind}"
        raise MoAError(f"Cannot read the LangSmith dataset {name!r}: {why}.") from None
    finally:
        quiet.setLevel(level)
