"""Run systems over a dataset: results per system, a summary, plots, exports and a report.

A system is a preset name (``local-moa``), a config file (``my-moa.yaml``), or one model
alone written ``single:<model spec>`` (``single:local:qwen2.5-coder-0.5b``). Every model
call goes through one on-disk `SQLiteCallCache` in the output folder, so a rerun, an added
system or a changed scorer costs no repeated generation. Systems whose calls a cache cannot
replay (chunk-wise and early aggregation race their proposals, and a replay would race
again) write each finished item at once to ``results/<system>.rows.jsonl`` instead, so an
interrupted run, a rerun or a longer run of them answers only the items not yet done.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import os
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from langgraph_moa._json import dumps
from langgraph_moa._private import PRIVATE_FOLDER, write_private
from langgraph_moa._redact import (
    describe_error,
    keyless_command,
    one_line,
    redact_spec,
    redacted_repr,
)
from langgraph_moa._unicode import beginning
from langgraph_moa.config._loader import load_config, names_a_file
from langgraph_moa.config._schema import MoAConfig, ProposerConfig, explain_errors, list_presets
from langgraph_moa.errors import MoAConfigError, MoAError
from langgraph_moa.eval.costs import Prices, dollars, load_prices, pareto_front
from langgraph_moa.eval.datasets import EvalItem
from langgraph_moa.eval.export import write_exports
from langgraph_moa.eval.judge import (
    Verdict,
    bootstrap_interval,
    judge_both_orders,
    judge_reliability,
    pair_score,
    win_rate,
)
from langgraph_moa.eval.layers import (
    FINAL,
    layer_curve,
    similarities,
    similarity_vs_quality,
    stages,
)
from langgraph_moa.eval.length_control import Judged, length_controlled_win_rate
from langgraph_moa.eval.plots import quality_per_layer, quality_vs_cost
from langgraph_moa.eval.provenance import package_source, provenance
from langgraph_moa.eval.report import render_report
from langgraph_moa.eval.scorers import score
from langgraph_moa.eval.stats import paired_difference, wilson_interval
from langgraph_moa.graph._builder import create_moa_graph
from langgraph_moa.providers._models import ModelCache, ModelSpec, describe_model
from langgraph_moa.run._calls import cache_name, local_digest
from langgraph_moa.run._inputs import SEED_MAX, is_seed
from langgraph_moa.run.cache import SQLiteCallCache

SINGLE = "single:"
JUDGE_PARAMS = {"temperature": 0.0, "max_tokens": 8}
"""The judge's call settings: greedy, and room for "A", "B" or "tie" only."""
T = TypeVar("T")
NO_PAIRS = (
    "no pair could be judged: every item had an error in this system's answer or the baseline's"
)
"""The `judge_error` of a system judged on no item: not the judge's failure, but no pair."""


@dataclass
class System:
    """A named way of answering: a compiled MoA graph, or one model alone.

    `digest` identifies the whole config of a system whose calls race (chunk-wise or early
    aggregation, a layer deadline), so the rows its earlier runs finished are kept for a
    run of the same config. None keeps none: the cache resumes every other system
    (and, keyed by the exact messages, follows a code change that kept rows would not), and
    a config holding model instances has no identity a digest can see.
    """

    name: str
    graph: Any = None
    digest: str | None = None
    config: MoAConfig | None = None
    """What it runs, recorded in ``provenance.json``."""


def races(config: MoAConfig) -> bool:
    """Tell whether a run's calls depend on timing, so a cache replay would not repeat it."""
    return config.aggregation.start != "all" or config.layer_deadline_s is not None


def config_digest(config: MoAConfig) -> str | None:
    """Return a digest of every setting of `config`; None when a model is an instance."""
    roles = [*config.proposers, *config.final_chain]
    if any(isinstance(role.model, BaseChatModel) for role in roles):
        return None  # it dumps as its settings only: two different models would look alike
    data: dict[str, Any] = config.model_dump(mode="json")
    files = {str(r.model): d for r in roles if (d := local_digest(r.model)) is not None}
    if files:  # a local model's name stays when a release pins another file
        data = {"config": data, "local_files": files}
    text = json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rows_key(digest: str | None, seed: int | None) -> str | None:
    """Return what a racing system's kept rows must match: its config digest and the seed.

    Rows drawn without a seed, or with another, are other samples: kept by config alone, a
    seeded run took an unseeded run's answers as its own. An unseeded run's key is the
    digest itself, as before seeds were sent, so the rows such runs wrote stay valid.
    """
    if digest is None or seed is None:
        return digest
    return f"{digest} seed {seed}"


# The answer budget of a ``single:`` system: the same as the default preset's greedy call, so
# that "the model alone" is compared at the budget the mixture gets (and their greedy calls
# share one cache key). 640 tokens lets the 1.5B finish its GSM8K worked solutions (the
# greedy solutions of the 300 test-sample items: 184 ran past 256 tokens; 1 was cut at 640).
SINGLE_MAX_TOKENS = 640


def single_model(spec: str) -> MoAConfig:
    """Return the config of a ``single:<model>`` system: one greedy call, no mixture.

    It runs through the graph like every other system (a selection over one proposal), so its
    answer has the same call records, cache keys, retries and errors as a mixture's.
    """
    model = spec.removeprefix(SINGLE)
    if not model.strip():
        raise MoAConfigError(
            f"System {spec!r} names no model: write it as 'single:<model spec>', e.g. "
            "'single:local:qwen2.5-coder-1.5b'."
        )
    try:
        proposer = ProposerConfig(model=model, max_tokens=SINGLE_MAX_TOKENS, temperature=0.0)
    except ValidationError as exc:
        raise _spec_error(exc, f"system {redacted_repr(spec)}") from None
    return MoAConfig(variant="select", name=redact_spec(spec), proposers=[proposer])


def _check_judge(judge: ModelSpec) -> None:
    """Refuse a judge spec that cannot name a model, checked like a proposer's, not built.

    Building it would spawn a local judge's server now, to sit through every system's run.
    """
    try:
        ProposerConfig(model=judge)
    except ValidationError as exc:
        raise _spec_error(exc, "--judge") from None


def _spec_error(exc: ValidationError, what: str) -> MoAConfigError:
    """Explain a model spec's validation error in one line, said of `what` as written."""
    errors = exc.errors(include_url=False)
    for error in errors:
        error["loc"] = ()  # not the config field it fills
    return MoAConfigError(explain_errors(errors, what))


def resolve_system(spec: str | MoAConfig, cache: SQLiteCallCache) -> System:
    """Turn a system spec into something that answers (no network).

    A `MoAConfig` object is a system too (named by its ``name``, else its variant), which is
    how Python users evaluate configs that hold model instances.
    """
    if isinstance(spec, MoAConfig):
        return _system(spec.name or spec.variant, spec, cache)
    if spec.startswith(SINGLE):  # named as written, less any key in an endpoint URL
        return _system(redact_spec(spec), single_model(spec), cache)
    in_file = names_a_file(spec)
    if in_file or spec in list_presets():
        config = load_config(spec)
    else:
        raise MoAConfigError(
            f"Unknown system {redacted_repr(spec)}: give a preset "
            f"({', '.join(list_presets())}), a config file (.yaml/.json), or one model as "
            "'single:<model spec>'."
        )
    # A config file's own `name:` names the system in the report, not its file name.
    name = config.name if in_file and config.name else spec
    return _system(name, config, cache)


def _system(name: str, config: MoAConfig, cache: SQLiteCallCache) -> System:
    graph = create_moa_graph(config, call_cache=cache)
    digest = config_digest(config) if races(config) else None
    return System(name=name, graph=graph, digest=digest, config=config)


_LAYER_FIELDS = ("stage_scores", "proposal_scores", "proposal_similarity")
"""What scoring a row's layers writes into it (`Evaluation._record_layers`)."""


def check_eval_seed(seed: Any) -> None:
    """Refuse a run's seed unless it is a whole number from 0 to `SEED_MAX`.

    Each sample gets the seed plus its position, which only a whole number has, and
    provenance records it to draw the same samples again: -1 (llama.cpp's random seed per
    call) would claim that falsely, and another negative seed would count down. ``moa eval
    --seed`` takes the same range.
    """
    if is_seed(seed) and 0 <= seed <= SEED_MAX:
        return
    if is_seed(seed) and seed < 0:
        raise MoAConfigError(
            f"seed {seed} is negative, and -1 would ask llama.cpp for a random seed per call: "
            f"pass a seed from 0 to {SEED_MAX}, or none."
        )
    raise MoAConfigError(
        f"seed {beginning(str(seed), 40)!r} is not a whole number from 0 to {SEED_MAX}: "
        "pass one, or none."
    )


class Evaluation:
    """One evaluation: systems x items, written under `out_dir`.

    It holds its call cache open (``calls.db``) until `close`, or the end of a ``with``
    block: left to garbage collection, Python 3.13 warns of an unclosed database.
    """

    def __init__(
        self,
        systems: Sequence[str | MoAConfig],
        items: list[EvalItem],
        out_dir: str | Path,
        *,
        concurrency: int = 1,
        judge: ModelSpec | None = None,
        baseline: str | None = None,
        prices: Prices | str | Path | None = None,
        plots: bool = True,
        exports: bool = True,
        judge_layers: bool = False,
        dataset: str | None = None,
        command: str | None = None,
        seed: int | None = None,
    ) -> None:
        """Prepare the output folder and the call cache; nothing is called yet.

        With `baseline` (one of `systems`), every other system's accuracy is compared with
        the baseline's item by item: the difference with a paired bootstrap interval, and
        the items only one of the two got right. With `judge` (a model spec) too, every
        other system is also judged pairwise against the baseline: win rate with a
        bootstrap interval, and the length-controlled win rate. With `judge_layers`, items
        without a verifiable answer get their per-layer analysis from the judge too: every
        proposal is judged against the baseline's answer (two judge calls per proposal).
        `prices` (a table or its YAML/JSON file, see `langgraph_moa.eval.costs`) turns tokens
        into dollars. `dataset` (where the items came from) and `command` (the command line
        that ran this) are recorded in ``provenance.json`` and the report, to rerun it.
        `seed` goes to every call (each sample its own, as in `moa run`): without it llama.cpp
        draws a random seed per call, and a rerun draws other samples (`check_eval_seed`).
        """
        if judge is not None and baseline is None:
            raise MoAConfigError(
                "Pairwise judging needs both --judge (a model) and --baseline (a system)."
            )
        if judge_layers and judge is None:
            raise MoAConfigError("--judge-layers needs a judge: add --judge and --baseline.")
        self.prices: Prices | None = (
            load_prices(prices) if isinstance(prices, (str, Path)) else prices
        )
        self.plots, self.exports, self.judge_layers = plots, exports, judge_layers
        self.out = Path(out_dir)
        _make_folder(self.out / "results")
        self.cache = SQLiteCallCache(self.out / "calls.db")
        # Refused from here on, the caller has no evaluation to close: the cache is closed
        # here, not left to garbage collection (Python 3.13 warns of an unclosed database).
        try:
            self.systems = [resolve_system(s, self.cache) for s in systems]
            names = [s.name for s in self.systems]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise MoAConfigError(f"Systems need distinct names; given more than once: {twice}.")
            files = [slug(n) for n in names]
            alike = sorted({n for n in names if files.count(slug(n)) > 1})
            if alike:
                raise MoAConfigError(
                    f"Systems {alike} would share one results file ({slug(alike[0])}.jsonl): "
                    "give them names that differ in letters or digits."
                )
            # A ``single:`` system is named without its URL's key, and so is its baseline.
            baseline = redact_spec(baseline) if baseline is not None else None
            if baseline is not None and baseline not in names:
                raise MoAConfigError(
                    f"The baseline {baseline!r} must be one of the systems: {names}."
                )
            if seed is not None:  # checked now, not as one error row per item
                check_eval_seed(seed)
            self.judge, self.baseline, self.seed = judge, baseline, seed
            self.source_sha256 = package_source()  # the code this run loaded, not an edit during it
            self.judge_label = describe_model(judge) if judge is not None else None
            # The cache names the judge as it names any model: a local one with its file's digest.
            self.judge_key = cache_name(judge, self.judge_label) if self.judge_label else None
            self.items = items
            self.concurrency = max(1, concurrency)
            self._models = ModelCache()
            if judge is not None:  # a bad spec is said now, before any answer
                _check_judge(judge)
        except BaseException:
            self.cache.close()
            raise
        self.notes: list[str] = []
        # The command line is recorded to be run again, but not with the key it was given.
        self.dataset, self.command = (
            dataset,
            keyless_command(command) if command else command,
        )
        self.finished = dict.fromkeys(names, 0)
        """Items each system has finished so far, kept rows included: what a stop reports."""
        self.judging: tuple[str, int, int] | None = None
        """While the judge is asked: the system judged, its pairs judged so far and in all."""

    def close(self) -> None:
        """Close the call cache; the evaluation runs no more after. A second close does nothing.

        A run after it is refused (`run`): with its cache closed, it made every call afresh
        and stored none, each rerun paying for them all again.
        """
        self.cache.close()

    @property
    def closed(self) -> bool:
        """Whether `close` was called (its call cache's state): a closed evaluation runs no more."""
        return self.cache.closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def provenance(self) -> dict[str, Any]:
        """Return what this evaluation needs recorded to be run again (`eval.provenance`)."""
        configs = {s.name: s.config for s in self.systems if s.config is not None}
        return provenance(
            configs,
            self.items,
            dataset=self.dataset,
            command=self.command,
            judge=self.judge,
            baseline=self.baseline,
            seed=self.seed,
            source_sha256=self.source_sha256,
        )

    def _graph_input(self, history: list[BaseMessage]) -> dict[str, Any]:
        """Return a system's input for one turn: the history, and the run's seed if any."""
        if self.seed is None:
            return {"messages": history}
        return {"messages": history, "call_kwargs": {"seed": self.seed}}

    async def run_item(self, system: System, item: EvalItem) -> dict[str, Any]:
        """Answer one item with one system: the results row, scores and analysis included."""
        history: list[BaseMessage] = []
        calls: list[dict[str, Any]] = []
        started = time.perf_counter()
        error = None
        fallback = fallback_reason = None
        failed_layers: list[dict[str, int]] = []
        for turn, text in enumerate(item.turns):  # multi-turn: answer by turn, history carried
            history.append(HumanMessage(text))
            try:
                state = await system.graph.ainvoke(self._graph_input(history))
                answer = state["messages"][-1]
                turn_calls = [_traced(c) for c in state["calls"]]
            except MoAError as exc:
                error = str(exc)
                break
            meta = answer.response_metadata.get("moa", {})
            if meta.get("fallback") and fallback is None:  # the first turn a fallback answered
                fallback, fallback_reason = meta["fallback"], meta.get("fallback_reason")
            if meta.get("failed_layers") and not failed_layers:  # the first turn with one
                failed_layers = meta["failed_layers"]
            history.append(AIMessage(content=answer.text))
            calls.extend({**c, "turn": turn} for c in turn_calls)
        answers = [m.text for m in history if isinstance(m, AIMessage)]
        final = answers[-1] if answers and error is None else ""
        row: dict[str, Any] = {
            "id": item.id,
            "system": system.name,
            "category": item.category,
            "turns": item.turns,
            "answers": answers,
            "answer": final,
            "error": error,
            "fallback": fallback,
            "fallback_reason": fallback_reason,
            "failed_layers": failed_layers,
            "failed_calls": sum(c.get("status") == "failed" for c in calls),
            "scores": {},
            "prompt_tokens": sum(c["prompt_tokens"] or 0 for c in calls),
            "completion_tokens": sum(c["completion_tokens"] or 0 for c in calls),
            "calls": len(calls),
            "cached_calls": sum(bool(c.get("cached")) for c in calls),
            "wall_s": round(time.perf_counter() - started, 3),
            "trace": calls,
        }
        self._score(item, row)
        return row

    def _score(self, item: EvalItem, row: dict[str, Any]) -> None:
        """Score an answered row's final answer and each layer's outputs, if verifiable.

        What an earlier scoring wrote goes first: a kept row is scored by today's item and
        scorers only, even when its item is no longer verifiable.
        """
        for field in _LAYER_FIELDS:
            row.pop(field, None)
        row["scores"] = {}
        if row["error"] is None and item.verifiable:
            row["scores"] = score(item, row["answer"])
            self._analyze(item, row)

    def _analyze(self, item: EvalItem, row: dict[str, Any]) -> None:
        """Score each layer's outputs with the item's scorers (the final answer already is)."""

        def correct(text: str) -> int:
            return int(bool(score(item, text).get("correct")))

        outputs = stages(_last_turn(row), row["answer"])
        scores = {stage: [correct(o) for o in texts] for stage, texts in outputs.items()}
        self._record_layers(row, outputs, scores)

    def _record_layers(
        self,
        row: dict[str, Any],
        outputs: dict[str, list[str]],
        scores: dict[str, list[float]] | dict[str, list[int]],
    ) -> None:
        """Keep the scores per stage; compare the final answer with the last layer's proposals.

        The last proposer layer is what the final aggregator read, so its scores are the
        proposal qualities that the similarities are correlated with.
        """
        row["stage_scores"] = scores
        layers = [stage for stage in outputs if stage != FINAL]
        if not layers:
            return
        row["proposal_scores"] = scores[layers[-1]]
        try:
            row["proposal_similarity"] = similarities(row["answer"], outputs[layers[-1]])
        except MoAError as exc:
            if str(exc) not in self.notes:
                self.notes.append(str(exc))

    async def run(
        self,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        on_screen: Callable[[Progress], AbstractContextManager[Any]] | None = None,
    ) -> dict[str, Any]:
        """Answer every item with every system; write results, summary, plots and report.

        Args:
            progress: Show a progress bar (on a terminal; in a notebook, with ipywidgets).
            log: Where to write progress lines instead (off a terminal): about twenty per
                system, each with the items done, the last item's outcome and the time.
            on_screen: Told of the bar while it is shown (the command's Ctrl-C handler
                takes it away, the cursor it hid shown again, before saying it stopped).
        """
        if self.closed:
            raise MoAConfigError(
                f"This evaluation is closed, its call cache {self.cache.path} with it: create "
                "another Evaluation on the same folder to run again (it reuses the calls "
                "cached there)."
            )
        gate = asyncio.Semaphore(self.concurrency)
        summary: dict[str, Any] = {}
        results: dict[str, list[dict[str, Any]]] = {}
        columns = [
            TextColumn("{task.description}", markup=False),  # a name, not markup: "[/v2]"
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        ]
        console = Console(stderr=True)
        shown = progress and _can_draw_a_bar(console)
        bar = Progress(*columns, disable=not shown, console=console)
        # Every system's kept rows before the first call: a rows file of another format
        # is refused now, not after the systems before it answered every item.
        stores = [
            _RowStore(self._rows_path(s.name), rows_key(s.digest, self.seed), self.source_sha256)
            for s in self.systems
        ]
        kept_rows = [store.rows(self.items) for store in stores]
        with bar, on_screen(bar) if on_screen is not None and shown else nullcontext():
            for system, store, kept in zip(self.systems, stores, kept_rows, strict=True):
                task = bar.add_task(system.name, total=len(self.items))
                if kept:
                    self.notes.append(
                        f"{system.name}: {len(kept)} of {len(self.items)} items kept from an "
                        f"earlier run ({store.path.name}); their answers and answer times are "
                        "that run's (the wall time counts the others only), their scores were "
                        "computed again. Delete that file to answer them again."
                    )

                done = [0]
                started = time.perf_counter()

                async def one(
                    item: EvalItem,
                    system: System = system,
                    task: Any = task,
                    done: list[int] = done,
                    started: float = started,
                    store: _RowStore = store,
                    kept: dict[str, dict[str, Any]] = kept,
                ) -> dict[str, Any]:
                    if item.id in kept:
                        row = self._rescored(item, kept[item.id])
                    else:
                        async with gate:
                            row = await self.run_item(system, item)
                        store.add(row)
                    bar.advance(task)
                    done[0] += 1
                    self.finished[system.name] = done[0]
                    total = len(self.items)
                    if log is not None and (done[0] % max(1, total // 20) == 0 or done[0] == total):
                        log(_progress_line(system.name, done[0], total, row, started))
                    return row

                rows = await asyncio.gather(*(one(item) for item in self.items))
                elapsed = time.perf_counter() - started
                self._write_results(system.name, rows)
                summary[system.name] = self._summarize(rows, elapsed)
                results[system.name] = rows
        if self.baseline is not None:
            _compare_with_baseline(results, summary, self.baseline)
        if self.judge is not None and self.baseline is not None:
            await self._judge_all(results, summary)
        record = self.provenance()
        extras: dict[str, Any] = {
            "notes": self.notes,
            "disagreements": disagreements(results),
            "provenance": record,
        }
        if self.plots:
            self._plot(summary, extras)
        if self.exports:
            write_exports(self.out, results, slug)
        self._write("summary.json", dumps(summary, indent=2))
        self._write("provenance.json", dumps(record, indent=2))
        self._write("report.md", render_report(summary, extras))
        return summary

    def _write(self, name: str, text: str) -> None:
        """Write one output file whole (a stop halfway leaves the old one); a failure in words."""
        path = self.out / name
        try:
            write_atomically(path, text)
        except OSError as exc:
            raise MoAError(
                f"Cannot write {str(path)!r} ({exc.strerror or type(exc).__name__}); the "
                f"answers are in {str(self.out / 'results')!r} and the call cache: fix the "
                "folder (space, permissions) and run the same command again."
            ) from None

    def _summarize(self, rows: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
        """Sum a system's rows; a failed item counts in no accuracy and no cost.

        Its tokens, calls and dollars are left out, as the report says: a single-turn
        failure has no calls to count, and a multi-turn item that failed at a later turn
        counts none of its earlier turns' either, which its row and trace still hold.
        """
        scored = [r for r in rows if "correct" in r["scores"]]
        answered = [r for r in rows if r["error"] is None]
        correct = sum(r["scores"]["correct"] for r in scored)
        errors = [r["error"] for r in rows if r["error"] is not None]
        fallbacks = [r for r in rows if r.get("fallback")]
        out: dict[str, Any] = {
            "items": len(rows),
            "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "fallbacks": len(fallbacks),
            "first_fallback": _fallback_words(fallbacks[0]) if fallbacks else None,
            "failed_layers": sum(bool(r.get("failed_layers")) for r in rows),
            "failed_calls": sum(r.get("failed_calls", 0) for r in rows),
            "correct": correct,
            "scored": len(scored),
            "unscored": sum(r["error"] is None and "correct" not in r["scores"] for r in rows),
            "cached_items": sum(bool(r["calls"]) and r["cached_calls"] == r["calls"] for r in rows),
            "categories": _categories(rows),
            "accuracy": round(correct / len(scored), 4) if scored else None,
            "accuracy_ci95": _rounded(wilson_interval(correct, len(scored))),
            "prompt_tokens": sum(r["prompt_tokens"] for r in answered),
            "completion_tokens": sum(r["completion_tokens"] for r in answered),
            "calls": sum(r["calls"] for r in answered),
            "cached_calls": sum(r["cached_calls"] for r in answered),
            # calls whose providers reported no usage: their tokens (and dollars) estimated
            "estimated_calls": sum(
                bool(c.get("usage_estimated")) for r in answered for c in r["trace"]
            ),
            "median_item_s": round(statistics.median(r["wall_s"] for r in rows), 3)
            if rows
            else None,
            "wall_s": round(elapsed, 2),
        }
        self._analysis_summary(rows, out)
        if self.prices is not None:
            spent, unpriced = dollars([c for r in answered for c in r["trace"]], self.prices)
            out["dollars"], out["unpriced_calls"] = round(spent, 6), unpriced
        return out

    def _analysis_summary(self, rows: list[dict[str, Any]], out: dict[str, Any]) -> None:
        """Per-layer curve and similarity-vs-quality of one system, into its summary."""
        out["layer_curve"] = layer_curve(rows)
        if any("proposal_similarity" in r for r in rows):
            try:
                out["similarity"] = similarity_vs_quality(rows)
            except MoAError as exc:
                self.notes.append(str(exc))

    def _rescored(self, item: EvalItem, row: dict[str, Any]) -> dict[str, Any]:
        """Score a kept row again: a scorer may have changed since the run that answered it."""
        row = {**row, "category": item.category}
        self._score(item, row)
        return row

    def _rows_path(self, name: str) -> Path:
        return self.out / "results" / f"{slug(name)}.rows.jsonl"

    def _write_results(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Write a system's rows in one step: a stop halfway leaves the earlier file whole."""
        text = "".join(json.dumps(r, default=str) + "\n" for r in rows)
        self._write(f"results/{slug(name)}.jsonl", text)

    async def _judge_all(
        self, results: dict[str, list[dict[str, Any]]], summary: dict[str, Any]
    ) -> None:
        """Judge each system against the baseline; a failing judge costs only the win rates.

        The answers and their accuracy are already computed when the judge is asked, so a
        judge that fails (a dead endpoint, a missing key) must not take them down with it:
        judging stops at its first failure (every system shares the one judge), and each
        system whose judging did not finish gets a ``judge_error`` in its summary, which the
        report states in bold and ``moa eval`` turns into a failing exit code.
        """
        finished: set[str] = set()
        try:
            await self._judge_systems(results, summary, finished)
        except Exception as exc:  # any provider's error: its type and message say why
            why = describe_error(exc)
            for name in results:
                if name != self.baseline and name not in finished:
                    summary[name]["judge_error"] = why  # a win rate already given stays

    async def _judge_systems(
        self,
        results: dict[str, list[dict[str, Any]]],
        summary: dict[str, Any],
        finished: set[str],
    ) -> None:
        """Judge each system against the baseline, item by item, both orders.

        A system is added to `finished` once all its judging (layers included) is done.
        """
        assert self.judge is not None and self.baseline is not None
        judge_model = self._models.get(self.judge, JUDGE_PARAMS)
        base = {r["id"]: r for r in results[self.baseline]}
        gate = asyncio.Semaphore(self.concurrency)

        async def ask(
            instruction: str, candidate: str, baseline: str
        ) -> tuple[Verdict | None, Verdict | None]:
            async with gate:  # awaited: a cancel (a Ctrl-C) cancels the call under way
                return await judge_both_orders(
                    judge_model,
                    instruction,
                    candidate,
                    baseline,
                    self.cache,
                    self.judge_key or "judge",
                    self.judge_label,
                )

        def pairable(row: dict[str, Any]) -> bool:
            """Whether the row and its baseline answer both exist without error."""
            other = base.get(row["id"])
            return other is not None and not (row["error"] or other["error"])

        async def one(
            row: dict[str, Any],
        ) -> tuple[Judged, tuple[Verdict | None, Verdict | None]] | None:
            if not pairable(row):
                return None
            other = base[row["id"]]
            instruction = "\n\n".join(row["turns"])
            verdicts = await ask(instruction, row["answer"], other["answer"])
            judged = Judged(instruction, row["answer"], other["answer"], pair_score(*verdicts))
            assert self.judging is not None  # set before this system's rows are judged
            system, done, total = self.judging
            self.judging = (system, done + 1, total)
            return judged, verdicts

        async def judge_layers(row: dict[str, Any], final_score: float) -> None:
            """Score an unverifiable item's layers by the judge, against the baseline answer."""
            instruction, other = "\n\n".join(row["turns"]), base[row["id"]]["answer"]

            async def quality(text: str) -> float:
                return pair_score(*await ask(instruction, text, other))

            outputs = stages(_last_turn(row), row["answer"])
            scores = {
                stage: [final_score]
                if stage == FINAL
                else list(await asyncio.gather(*map(quality, texts)))
                for stage, texts in outputs.items()
            }
            self._record_layers(row, outputs, scores)

        for name, rows in results.items():
            if name == self.baseline:
                continue
            self.judging = (name, 0, sum(map(pairable, rows)))
            answered = await _all_or_none(one(r) for r in rows)
            pairs = [(row, o) for row, o in zip(rows, answered, strict=True) if o is not None]
            outcomes = [o for _, o in pairs]
            judged = [j for j, _ in outcomes]
            scores = [j.score for j in judged]
            entry: dict[str, Any] = {
                "baseline": self.baseline,
                "judge": self.judge_label,
                "rate": None,  # no pair judged: no rate (JSON has no NaN)
                "ci95": None,
                "items": len(scores),
                **judge_reliability([v for _, v in outcomes]),
            }
            if scores:
                low, high = bootstrap_interval(scores)
                entry["rate"], entry["ci95"] = (
                    round(win_rate(scores), 1),
                    [
                        round(low, 1),
                        round(high, 1),
                    ],
                )
            else:
                summary[name]["win_rate"] = entry
                summary[name]["judge_error"] = NO_PAIRS
                finished.add(name)
                continue
            try:
                lc = length_controlled_win_rate(
                    judged, name, self.baseline, self.judge_label or "judge"
                )
                entry["length_controlled"] = {
                    "rate": round(lc["length_controlled_win_rate"], 1),
                    "standard_error": round(lc["lc_standard_error"], 1),
                }
            except MoAError as exc:
                entry["lc_note"] = str(exc)
            summary[name]["win_rate"] = entry
            if self.judge_layers:
                unverifiable = [(r, j.score) for r, (j, _) in pairs if "stage_scores" not in r]
                await _all_or_none(judge_layers(row, score) for row, score in unverifiable)
                self._analysis_summary(rows, summary[name])
                self._write_results(name, rows)
            finished.add(name)

    def _plot(self, summary: dict[str, Any], extras: dict[str, Any]) -> None:
        """Quality vs cost with its Pareto front, and quality per layer, as PNG files."""
        points = _quality_cost_points(summary, priced=self.prices is not None)
        curves = {n: s["layer_curve"] for n, s in summary.items() if s.get("layer_curve")}
        try:
            if points is not None:
                values, cost_label, quality_label = points
                front = pareto_front(values)
                # Wilson intervals of the accuracy; a win rate's interval is not that of
                # the length-controlled rate the plot may show, so none is drawn for it.
                intervals = {
                    n: (100 * s["accuracy_ci95"][0], 100 * s["accuracy_ci95"][1])
                    for n, s in summary.items()
                    if s.get("accuracy_ci95") and quality_label.startswith("accuracy")
                }
                quality_vs_cost(
                    values,
                    front,
                    self.out / "quality_vs_cost.png",
                    cost_label=cost_label,
                    quality_label=quality_label,
                    intervals=intervals,
                )
                extras["quality_vs_cost"], extras["pareto_front"] = "quality_vs_cost.png", front
                if self.prices is not None and (note := _unpriced_note(summary)):
                    self.notes.append(note)
            if curves:
                quality_per_layer(curves, self.out / "quality_per_layer.png")
                extras["quality_per_layer"] = "quality_per_layer.png"
        except MoAError as exc:
            self.notes.append(str(exc))


async def _all_or_none(coroutines: Iterable[Awaitable[T]]) -> list[T]:
    """Await all, like `asyncio.gather`; at the first failure cancel the rest and raise it.

    `gather` lets the others run on, so a judge that fails would still be asked about every
    item left, each time waiting out its errors, after its failure was already known.
    """
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


_CALL_FIELDS = (
    "role",
    "layer",
    "proposer",
    "sample",
    "configured_model",
    "model",
    "status",
    "output",
    "cached",
    "latency_s",
    "prompt_tokens",
    "completion_tokens",
)


def _traced(call: Mapping[str, Any]) -> dict[str, Any]:
    """Return what a results row keeps of a call record: `_CALL_FIELDS`, and an estimate's mark.

    ``usage_estimated`` only where it is set (the provider reported no usage): dropped, the
    summary and the cost counted its estimated tokens as the provider's.
    """
    kept = {k: call.get(k) for k in _CALL_FIELDS}
    if call.get("usage_estimated"):
        kept["usage_estimated"] = True
    return kept


def _can_draw_a_bar(console: Console) -> bool:
    """Tell whether rich can draw a live bar on `console`: not in a notebook lacking ipywidgets.

    rich draws a notebook's bar as an ipywidgets widget; without them it warned "install
    ipywidgets" at every refresh, each warning one more output block under the cell.
    """
    if not console.is_jupyter:
        return True
    try:
        importlib.import_module("ipywidgets")
    except ImportError:
        return False
    return True


def _quality_cost_points(
    summary: dict[str, Any], *, priced: bool
) -> tuple[dict[str, tuple[float, float]], str, str] | None:
    """(cost, quality) per system: accuracy when every system has one, else the win rate."""
    if summary and all(s["accuracy"] is not None for s in summary.values()):
        quality = {n: 100 * s["accuracy"] for n, s in summary.items()}
        quality_label = "accuracy (%)"
    elif any("win_rate" in s for s in summary.values()):
        quality = {}
        for n, s in summary.items():
            w = s.get("win_rate")
            if w is None:
                quality[n] = 50.0  # the baseline against itself
            else:
                rate = (w.get("length_controlled") or {}).get("rate", w["rate"])
                if rate is None:
                    return None  # judged on no item: no point to draw
                quality[n] = rate
        quality_label = "win rate vs baseline (%)"
    else:
        return None
    # Per answered item: a failed item holds no tokens and no dollars in the summary, so a
    # total made a system that failed on half its items look half as costly.
    answered = {n: max(1, s["items"] - s["errors"]) for n, s in summary.items()}
    if priced:
        cost = {n: float(s.get("dollars", 0.0)) / answered[n] for n, s in summary.items()}
        cost_label = "dollars per item (answered items)"
    else:
        cost = {
            n: (s["prompt_tokens"] + s["completion_tokens"]) / answered[n]
            for n, s in summary.items()
        }
        cost_label = "tokens per item (prompt + completion)"
    return {n: (cost[n], quality[n]) for n in summary}, cost_label, quality_label


def _unpriced_note(summary: dict[str, Any]) -> str | None:
    """Say which systems the dollars plot draws cheaper than they are, if any.

    A call whose model the price table lacks adds no dollars: a system of such models sat
    at $0 on the plot and took the Pareto front, which said nothing of it.
    """
    unpriced = [
        f"{n} ({s['unpriced_calls']} unpriced calls)"
        for n, s in summary.items()
        if s.get("unpriced_calls")
    ]
    if not unpriced:
        return None
    return (
        f"The quality-vs-cost plot and its Pareto front count the priced calls' dollars only: "
        f"{', '.join(unpriced)} cost more than drawn; give their models a price to compare "
        "them."
    )


def _item_scores(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per-item verifiable score (1 right, 0 wrong) of the items that were answered and scored."""
    return {r["id"]: float(r["scores"]["correct"]) for r in rows if "correct" in r["scores"]}


def _compare_with_baseline(
    results: dict[str, list[dict[str, Any]]], summary: dict[str, Any], baseline: str
) -> None:
    """Give every other system its accuracy difference to the baseline, with an interval.

    A judge is not needed: on verifiable items the per-item scores already say which of
    the two was right, and pairing them is what tells a real gain from a lucky draw.
    """
    base = _item_scores(results[baseline])
    for name, rows in results.items():
        if name != baseline:
            diff = paired_difference(_item_scores(rows), base)
            summary[name]["vs_baseline"] = {"baseline": baseline, **diff.as_dict()}


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` in one step (a temp file beside it, then a rename).

    A stop or a full disk halfway leaves the old file whole, never half of a new one; the
    temp file is removed and the `OSError` raised. A symbolic link is written through (the
    file it points to is replaced, as `write_text` would write it), and an existing file
    keeps its permissions; a new one is its owner's alone (`_private`: an evaluation's
    files hold its questions and answers, in an --out folder that may be shared).
    """
    path = path.resolve()
    fresh = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fresh.unlink(missing_ok=True)  # a stale one would give the new file its mode
        write_private(fresh, text.encode("utf-8"))
        if path.exists():
            shutil.copymode(path, fresh)
        os.replace(fresh, path)
    except OSError:
        fresh.unlink(missing_ok=True)
        raise


def _make_folder(path: Path) -> None:
    """Create the output folder; a path that cannot be one is one sentence, not a trace."""
    taken = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    if taken is not None and not taken.is_dir():
        raise MoAConfigError(
            f"The output folder {str(path.parent)!r} cannot be made: {str(taken)!r} is a file; "
            "give --out a folder (new or one of an earlier run)."
        )
    try:
        # A new output folder is its owner's alone: its rows, results, exports and call
        # cache hold every question and answer. One that exists keeps its mode.
        path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
        path.mkdir(exist_ok=True, mode=PRIVATE_FOLDER)
    except OSError as exc:
        raise MoAConfigError(
            f"The output folder {str(path.parent)!r} cannot be made "
            f"({exc.strerror or type(exc).__name__}); give --out a folder you can write to."
        ) from None


def _fallback_words(row: dict[str, Any]) -> str:
    """Say which fallback answered a row, and why, in one line."""
    reason = one_line(row.get("fallback_reason") or "no reason recorded", 300)
    return f"{row['fallback']}: {reason}"


def _rounded(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [round(interval[0], 4), round(interval[1], 4)]


def _last_turn(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the calls that answered the item's last turn (the one its answer is)."""
    return [c for c in row["trace"] if c["turn"] == len(row["turns"]) - 1]


def _progress_line(name: str, done: int, total: int, row: dict[str, Any], started: float) -> str:
    """One line of progress for a log: items done, the last outcome, the time so far."""
    if row["error"] is not None:
        outcome = "error: " + one_line(row["error"], 100)
    elif "correct" in row["scores"]:
        outcome = "right" if row["scores"]["correct"] else "wrong"
    else:
        outcome = "answered (not scored)"
    if row.get("fallback"):
        outcome += f" (fallback: {row['fallback']})"
    if row.get("failed_layers"):
        outcome += f" (layer {row['failed_layers'][0]['layer']} passed over)"
    cached = ", cached" if row["calls"] and row["cached_calls"] == row["calls"] else ""
    return (
        f"{name}: {done}/{total} items, {time.perf_counter() - started:.0f}s; "
        f"{row['id']}: {outcome}{cached}"
    )


def _categories(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Correct and scored items per category, for the per-category table."""
    table: dict[str, dict[str, int]] = {}
    for row in rows:
        entry = table.setdefault(str(row.get("category") or "none"), {"correct": 0, "scored": 0})
        if "correct" in row["scores"]:
            entry["scored"] += 1
            entry["correct"] += int(bool(row["scores"]["correct"]))
    return table


def disagreements(results: dict[str, list[dict[str, Any]]], limit: int = 3) -> list[Any]:
    """Find a few items that some systems got right and others wrong, with each one's answer."""
    if len(results) < 2:
        return []
    by_item: dict[Any, dict[str, dict[str, Any]]] = {}
    for name, rows in results.items():
        for row in rows:
            if "correct" in row["scores"]:
                by_item.setdefault(row["id"], {})[name] = row
    examples = []
    for item_id, rows_of in by_item.items():
        verdicts = {bool(r["scores"]["correct"]) for r in rows_of.values()}
        if len(verdicts) < 2 or len(rows_of) < 2:
            continue
        first = next(iter(rows_of.values()))
        examples.append(
            {
                "id": item_id,
                "question": first["turns"][-1],
                "answers": {
                    name: {"answer": r["answer"], "correct": bool(r["scores"]["correct"])}
                    for name, r in rows_of.items()
                },
            }
        )
        if len(examples) == limit:
            break
    return examples


ROWS_FORMAT = 1
"""The format of a rows file, in its first line (``{"digest": ..., "format": 1}``); a first
line without it is this format (every earlier version wrote it so). A change to what a row
holds or means takes the next number, so that a version that cannot read a file says so
instead of keeping its rows, or replacing them as another config's."""


class _RowStore:
    """Every row a racing system finished, each written the moment it is done.

    It keeps for racing systems what the call cache keeps for the others: a rerun, a longer
    run (more items) or a run that was stopped answers only the items not yet done. The
    first line names the system's config digest, the file's `ROWS_FORMAT` and the source
    digest of the code that wrote the rows (`package_source`); a file of any other format,
    or of this config written by other code, is refused, left as it was: its answers are
    the other code's, and kept they were recorded as this code's. A file written before the
    source was recorded is kept as before, and marked with this run's source when it
    appends its first row. Rows of another config are never kept,
    nor rows that ended in an error or with a failed call (the next run tries those items
    again, as the cache would: a failed call is never cached). A row is kept for an item with
    its id and its question; a row of the same id with another question stays in the file for
    a run that asks that question. A system without a digest writes no file.
    """

    def __init__(self, path: Path, digest: str | None, source: str | None = None) -> None:
        self.path, self.digest, self.source = path, digest, source
        self._ours = False  # the file holds this config's rows (else replaced at the first)
        self._written_by = source  # the code that wrote the file's rows (None: unrecorded)

    def rows(self, items: Sequence[EvalItem]) -> dict[str, dict[str, Any]]:
        """Rows an earlier run of the same system finished for `items`, by item id."""
        if self.digest is None or not self.path.is_file():
            return {}
        # Line by line: a line that is not UTF-8 (a disk fault) costs that row, not the file.
        lines = self.path.read_bytes().splitlines()
        header = _json_line(lines[0]) if lines else None
        self._refuse_other_format(header)
        written_by = header.pop("source", None) if isinstance(header, dict) else None
        self._ours = header in ({"digest": self.digest}, self._marks())  # unmarked: format 1
        if not self._ours:
            return {}  # another config's rows: left alone until this one finishes an item
        self._refuse_other_source(written_by)
        self._written_by = written_by
        stored = _stored(lines)
        if len(stored) < len(lines) - 1:
            # Written again with good rows only: a cut-off last line must not swallow the next.
            self._replace(stored)
        # An item is its id and its question: another dataset in the same folder may reuse
        # the ids (they default to line numbers), and its rows stay for a run that asks.
        # An id written as a number (a file edited by hand) names the same item as its text.
        turns = {item.id: item.turns for item in items}
        kept = [{**r, "id": str(r.get("id"))} for r in stored]
        return {r["id"]: r for r in kept if turns.get(r["id"]) == r.get("turns")}

    def add(self, row: dict[str, Any]) -> None:
        """Append one finished row."""
        if self.digest is None:
            return
        if not self._ours:
            self._written_by = self.source
            self._replace([])
            self._ours = True
        elif self._written_by is None and self.source is not None:
            # A file from before the source was recorded: this run's rows would stay
            # unmarked under it, taken as its own by any later code. Marked at the first
            # append, its earlier rows kept (as any file without a source is).
            self._written_by = self.source
            self._replace(_stored(self.path.read_bytes().splitlines()))
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(row, default=str) + "\n")

    def _marks(self) -> dict[str, Any]:
        return {"digest": self.digest, "format": ROWS_FORMAT}

    def _header(self) -> dict[str, Any]:
        source = {} if self._written_by is None else {"source": self._written_by}
        return {**self._marks(), **source}

    def _refuse_other_source(self, written_by: Any) -> None:
        """Refuse this config's rows that other code wrote (another `package_source`)."""
        if written_by is None or self.source is None or written_by == self.source:
            return
        raise MoAConfigError(
            f"The rows file {self.path} holds answers that other code gave (source sha256 "
            f"{str(written_by)[:16]}, this run's {self.source[:16]}): run the version that "
            "wrote it to go on, or delete the file to answer its items again with this one."
        )

    def _refuse_other_format(self, header: Any) -> None:
        """Refuse a file of any format but this one's, or none (format 1, unmarked).

        Its rows may not mean what this version reads. Only a later int was refused: a
        ``"format": 2.0`` or ``"2"`` was taken for another config's file and replaced. The
        history (`serving._history.History`) refuses any SQLite mark but 1 or 0 alike.
        """
        if not isinstance(header, dict) or "format" not in header:
            return
        found = header["format"]
        if type(found) is not int or found != ROWS_FORMAT:  # not True, 1.0 or "1" either
            raise MoAConfigError(
                f"The rows file {self.path} has format {found!r}, which this version of "
                f"langgraph-moa does not read (it reads {ROWS_FORMAT}): run the version that "
                "wrote it, or delete the file to answer its items again."
            )

    def _replace(self, rows: list[dict[str, Any]]) -> None:
        """Write the file anew in one step: a stop halfway leaves the old file, not half.

        `write_atomically`: a temp file of its own writing, never a stale one whose mode the
        rows file would take (a ``.new`` left behind at 0644 made the rows file 0644).
        """
        lines = [self._header(), *rows]
        write_atomically(self.path, "".join(json.dumps(r) + "\n" for r in lines))


def _json_line(line: bytes) -> Any:
    try:
        return json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _stored(lines: list[bytes]) -> list[dict[str, Any]]:
    """Return the rows of a rows file's lines to keep (`_answered`), its header left out.

    A line that is no JSON (the one being written when a run stopped) is none.
    """
    return [r for r in map(_json_line, lines[1:]) if _answered(r)]


def _answered(row: Any) -> bool:
    """Tell whether a stored row is one to keep: answered, every call of it answered.

    A row of another shape (a damaged file) is not kept: its item is answered again.
    """
    if not isinstance(row, dict) or row.get("error") is not None:
        return False
    trace = row.get("trace") or []
    if not isinstance(trace, list) or not all(isinstance(c, dict) for c in trace):
        return False
    return not any(c.get("status") == "failed" for c in trace)


def slug(name: str) -> str:
    """Turn a system name into a safe file name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def calibration(summary: dict[str, Any]) -> dict[str, Any]:
    """Per-model accuracy from the single-model systems of a summary, for SLM-MUX ties.

    The keys are model specs as proposers name them (``local:qwen2.5-coder-1.5b``), so
    `SelectionConfig(calibration_file=...)` matches them to proposers without a mapping.
    """
    accuracy = {
        name.removeprefix(SINGLE): entry["accuracy"]
        for name, entry in summary.items()
        if name.startswith(SINGLE) and entry.get("accuracy") is not None
    }
    if not accuracy:
        raise MoAConfigError(
            "No calibration can be written: it needs at least one 'single:<model>' system "
            "scored on items with expected answers."
        )
    items = {
        name.removeprefix(SINGLE): summary[name]["items"]
        for name in summary
        if name.startswith(SINGLE)
    }
    return {"accuracy": accuracy, "items": items}
