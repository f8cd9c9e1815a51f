"""Run systems over a dataset: one results file per system, a summary, a Markdown report.

A system is a preset name (``local-moa``), a config file (``my-moa.yaml``), or one model
alone written ``single:<model spec>`` (``single:local:qwen2.5-coder-0.5b``). Every model
call goes through one on-disk `SQLiteCallCache` in the output folder, so a rerun, an added
system or a changed scorer costs no repeated generation, and an interrupted run resumes
where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from langgraph_moa.cache import SQLiteCallCache, call_key
from langgraph_moa.config import MoAConfig, ProposerConfig, list_presets
from langgraph_moa.errors import MoAConfigError, MoAError
from langgraph_moa.eval.datasets import EvalItem
from langgraph_moa.eval.judge import bootstrap_interval, judge_pair, win_rate
from langgraph_moa.eval.scorers import score
from langgraph_moa.graph import create_moa_graph
from langgraph_moa.models import ModelCache

SINGLE = "single:"


@dataclass
class System:
    """A named way of answering: a compiled MoA graph, or one model alone."""

    name: str
    graph: Any = None
    single: ProposerConfig | None = None


def resolve_system(spec: str, cache: SQLiteCallCache) -> System:
    """Turn a system spec into something that answers (no network)."""
    if spec.startswith(SINGLE):
        return System(
            name=spec,
            single=ProposerConfig(model=spec.removeprefix(SINGLE), max_tokens=256, temperature=0.3),
        )
    if Path(spec).suffix in (".yaml", ".yml", ".json"):
        config = MoAConfig.from_file(spec)
    elif spec in list_presets():
        config = MoAConfig.from_preset(spec)
    else:
        raise MoAConfigError(
            f"Unknown system {spec!r}: give a preset ({', '.join(list_presets())}), a config "
            "file (.yaml/.json), or one model as 'single:<model spec>'."
        )
    return System(name=spec, graph=create_moa_graph(config, call_cache=cache))


class Evaluation:
    """One evaluation: systems x items, written under `out_dir`."""

    def __init__(
        self,
        systems: list[str],
        items: list[EvalItem],
        out_dir: str | Path,
        *,
        concurrency: int = 1,
        judge: str | None = None,
        baseline: str | None = None,
    ) -> None:
        """Prepare the output folder and the call cache; nothing is called yet.

        With `judge` (a model spec) and `baseline` (one of `systems`), every other system is
        judged pairwise against the baseline: win rate with a bootstrap interval.
        """
        if (judge is None) != (baseline is None):
            raise MoAConfigError(
                "Pairwise judging needs both --judge (a model) and --baseline (a system)."
            )
        if baseline is not None and baseline not in systems:
            raise MoAConfigError(
                f"The baseline {baseline!r} must be one of the systems: {systems}."
            )
        self.judge, self.baseline = judge, baseline
        self.out = Path(out_dir)
        (self.out / "results").mkdir(parents=True, exist_ok=True)
        self.cache = SQLiteCallCache(self.out / "calls.db")
        self.systems = [resolve_system(s, self.cache) for s in systems]
        self.items = items
        self.concurrency = max(1, concurrency)
        self._models = ModelCache()

    async def _answer_single(
        self, system: System, history: list[BaseMessage]
    ) -> tuple[AIMessage, list[dict[str, Any]]]:
        assert system.single is not None
        role = system.single
        params = role.call_params()
        key = call_key(model=role.label, params=params, messages=history, role="single", sample=0)
        started = time.perf_counter()
        hit = self.cache.get(key)
        reply: BaseMessage
        if hit is None:
            reply = await self._models.get(role.model, params).ainvoke(history)
            self.cache.put(key, reply)
        else:
            reply = hit
        usage: dict[str, Any] = (
            dict(reply.usage_metadata or {}) if isinstance(reply, AIMessage) else {}
        )
        call = {
            "role": "single",
            "layer": 1,
            "model": role.label,
            "output": reply.text,
            "cached": hit is not None,
            "latency_s": round(time.perf_counter() - started, 4),
            "prompt_tokens": usage.get("input_tokens", 0),
            "completion_tokens": usage.get("output_tokens", 0),
        }
        return AIMessage(content=reply.text), [call]

    async def _run_item(self, system: System, item: EvalItem) -> dict[str, Any]:
        history: list[BaseMessage] = []
        calls: list[dict[str, Any]] = []
        started = time.perf_counter()
        error = None
        for turn in item.turns:  # multi-turn items answer turn by turn, history carried
            history.append(HumanMessage(turn))
            try:
                if system.single is not None:
                    answer, turn_calls = await self._answer_single(system, history)
                else:
                    state = await system.graph.ainvoke({"messages": history})
                    answer, turn_calls = state["messages"][-1], list(state["calls"])
            except MoAError as exc:
                error = str(exc)
                break
            history.append(AIMessage(content=answer.text))
            calls.extend(turn_calls)
        final = history[-1].text if history and isinstance(history[-1], AIMessage) else ""
        return {
            "id": item.id,
            "system": system.name,
            "turns": item.turns,
            "answers": [m.text for m in history if isinstance(m, AIMessage)],
            "answer": final,
            "error": error,
            "scores": score(item, final) if error is None and item.verifiable else {},
            "prompt_tokens": sum(c["prompt_tokens"] for c in calls),
            "completion_tokens": sum(c["completion_tokens"] for c in calls),
            "calls": len(calls),
            "cached_calls": sum(bool(c.get("cached")) for c in calls),
            "layers": _per_layer(calls),
            "wall_s": round(time.perf_counter() - started, 3),
        }

    async def run(self, progress: bool = True) -> dict[str, Any]:
        """Answer every item with every system; write results, summary and report."""
        gate = asyncio.Semaphore(self.concurrency)
        summary: dict[str, Any] = {}
        results: dict[str, list[dict[str, Any]]] = {}
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, disable=not progress) as bar:
            for system in self.systems:
                task = bar.add_task(system.name, total=len(self.items))

                async def one(
                    item: EvalItem, system: System = system, task: Any = task
                ) -> dict[str, Any]:
                    async with gate:
                        row = await self._run_item(system, item)
                    bar.advance(task)
                    return row

                started = time.perf_counter()
                rows = await asyncio.gather(*(one(item) for item in self.items))
                elapsed = time.perf_counter() - started
                path = self.out / "results" / f"{_slug(system.name)}.jsonl"
                path.write_text(
                    "".join(json.dumps(r, default=str) + "\n" for r in rows), encoding="utf-8"
                )
                summary[system.name] = _summarize(rows, elapsed)
                results[system.name] = rows
        if self.judge is not None and self.baseline is not None:
            await self._judge_all(results, summary)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        (self.out / "report.md").write_text(render_report(summary), encoding="utf-8")
        return summary

    async def _judge_all(
        self, results: dict[str, list[dict[str, Any]]], summary: dict[str, Any]
    ) -> None:
        """Judge each system against the baseline, item by item, both orders."""
        assert self.judge is not None and self.baseline is not None
        judge_model = self._models.get(self.judge, {"temperature": 0.0, "max_tokens": 8})
        base = {r["id"]: r for r in results[self.baseline]}
        gate = asyncio.Semaphore(self.concurrency)

        async def one(row: dict[str, Any]) -> float | None:
            other = base.get(row["id"])
            if other is None or row["error"] or other["error"]:
                return None
            async with gate:
                return await asyncio.to_thread(
                    judge_pair,
                    judge_model,
                    "\n\n".join(row["turns"]),
                    row["answer"],
                    other["answer"],
                    self.cache,
                    self.judge or "judge",
                )

        for name, rows in results.items():
            if name == self.baseline:
                continue
            scores = [s for s in await asyncio.gather(*(one(r) for r in rows)) if s is not None]
            low, high = bootstrap_interval(scores)
            summary[name]["win_rate"] = {
                "baseline": self.baseline,
                "judge": self.judge,
                "rate": round(win_rate(scores), 1),
                "ci95": [round(low, 1), round(high, 1)],
                "items": len(scores),
            }


def _per_layer(calls: list[dict[str, Any]]) -> dict[str, list[str]]:
    layers: dict[str, list[str]] = {}
    for call in calls:
        if call.get("output"):
            layers.setdefault(str(call["layer"]), []).append(call["output"])
    return layers


def _summarize(rows: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    scored = [r for r in rows if "correct" in r["scores"]]
    return {
        "items": len(rows),
        "errors": sum(r["error"] is not None for r in rows),
        "correct": sum(r["scores"]["correct"] for r in scored),
        "scored": len(scored),
        "accuracy": round(sum(r["scores"]["correct"] for r in scored) / len(scored), 4)
        if scored
        else None,
        "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        "calls": sum(r["calls"] for r in rows),
        "cached_calls": sum(r["cached_calls"] for r in rows),
        "median_item_s": round(statistics.median(r["wall_s"] for r in rows), 3) if rows else None,
        "wall_s": round(elapsed, 2),
    }


def render_report(summary: dict[str, Any]) -> str:
    """Render a Markdown report: one row per system, whatever the numbers say."""
    lines = [
        "# Evaluation report",
        "",
        "| system | correct | accuracy | errors | prompt tokens | completion tokens "
        "| calls (cached) | median s/item | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        accuracy = f"{s['accuracy']:.2f}" if s["accuracy"] is not None else "n/a"
        cells = [
            name,
            f"{s['correct']}/{s['scored']}",
            accuracy,
            s["errors"],
            s["prompt_tokens"],
            s["completion_tokens"],
            f"{s['calls']} ({s['cached_calls']})",
            s["median_item_s"],
            s["wall_s"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    judged = {name: s["win_rate"] for name, s in summary.items() if "win_rate" in s}
    if judged:
        first = next(iter(judged.values()))
        lines += [
            "",
            f"Pairwise win rate against **{first['baseline']}** (judge: {first['judge']}, both "
            "orders asked, 95% bootstrap interval):",
            "",
            "| system | win rate | 95% interval | items |",
            "|---|---|---|---|",
        ]
        for name, w in judged.items():
            ci = f"{w['ci95'][0]} - {w['ci95'][1]}"
            lines.append(f"| {name} | {w['rate']} | {ci} | {w['items']} |")
    best = max(summary.items(), key=lambda kv: kv[1]["accuracy"] or 0, default=None)
    if best is not None:
        lines += [
            "",
            f"Most accurate: **{best[0]}**. A system that costs more tokens without more "
            "correct answers is not worth it on this data.",
        ]
    return "\n".join(lines) + "\n"


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
