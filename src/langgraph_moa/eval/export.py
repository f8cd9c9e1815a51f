"""Exports to the official harnesses, for leaderboard-comparable numbers with a judge API.

- AlpacaEval: ``model_outputs.json``, a list of ``{"instruction", "output", "generator",
  "dataset"}``, which ``alpaca_eval --model_outputs model_outputs.json`` reads.
- FastChat MT-Bench: one answer file per model (``<model_id>.jsonl``), one line per question:
  ``{"question_id", "answer_id", "model_id", "choices": [{"index": 0, "turns": [...]}],
  "tstamp"}``, which goes under ``fastchat/llm_judge/data/mt_bench/model_answer/``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langgraph_moa._private import PRIVATE_FOLDER, write_private


def alpaca_eval_outputs(rows: Sequence[dict[str, Any]], generator: str) -> list[dict[str, Any]]:
    """AlpacaEval records for one system; multi-turn items give their last answer."""
    return [
        {
            "instruction": "\n\n".join(row["turns"]),
            "output": row["answer"],
            "generator": generator,
            "dataset": row.get("category") or "langgraph-moa",
        }
        for row in rows
        if row.get("error") is None
    ]


def mt_bench_answers(
    rows: Sequence[dict[str, Any]], model_id: str, *, tstamp: float | None = None
) -> list[dict[str, Any]]:
    """FastChat answer records for one system, one per question, every turn's answer kept.

    ``answer_id`` is derived from the model and question, so re-exporting the same run
    gives the same file.
    """
    stamp = time.time() if tstamp is None else tstamp
    out = []
    for row in rows:
        if row.get("error") is not None:
            continue
        qid: int | str = int(row["id"]) if str(row["id"]).isdigit() else row["id"]
        digest = hashlib.sha256(f"{model_id}\0{row['id']}".encode()).hexdigest()[:22]
        out.append(
            {
                "question_id": qid,
                "answer_id": digest,
                "model_id": model_id,
                "choices": [{"index": 0, "turns": list(row["answers"])}],
                "tstamp": stamp,
            }
        )
    return out


def write_exports(out_dir: Path, results: dict[str, list[dict[str, Any]]], slug: Any) -> Path:
    """Write both formats for every system under ``out_dir/exports``; return that folder."""
    root = out_dir / "exports"
    for name, rows in results.items():
        alpaca = root / "alpaca_eval" / slug(name)
        _private_folder(alpaca, root)
        outputs = json.dumps(alpaca_eval_outputs(rows, name), indent=2, ensure_ascii=False)
        write_private(alpaca / "model_outputs.json", outputs.encode("utf-8"))
        mt = root / "mt_bench" / "model_answer"
        _private_folder(mt, root)
        answers = mt_bench_answers(rows, slug(name))
        lines = "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers)
        write_private(mt / f"{slug(name)}.jsonl", lines.encode("utf-8"))
    return root


def _private_folder(path: Path, root: Path) -> None:
    """Create `path` and its missing folders up to `root` (included) owner-only.

    They hold every question and answer (`_private`); a folder that exists keeps its mode.
    """
    folders = [path]
    while folders[-1] != root:
        folders.append(folders[-1].parent)
    for folder in reversed(folders):
        folder.mkdir(exist_ok=True, mode=PRIVATE_FOLDER)
