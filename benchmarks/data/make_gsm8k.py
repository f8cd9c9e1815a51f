"""Write the fixed GSM8K samples: 300 test items (reported) and 100 train items (tuning).

GSM8K (Cobbe et al., 2021, arXiv 2110.14168) is published under the MIT license in the
``openai/grade-school-math`` repository as ``grade_school_math/data/{train,test}.jsonl``, one
``{"question", "answer"}`` object per line, the answer a worked solution ending ``#### N``.
This script copies a fixed random sample of each split verbatim, adding only an ``id`` that
names the split and the 0-based line it came from, so any item can be found in the source.
Tuning (token budgets, prompts, sample counts) reads the train sample only; the test sample is
only ever reported on.

Run it on a checkout of the source repository at the recorded commit:

    git clone https://github.com/openai/grade-school-math && git -C grade-school-math checkout \
        3101c7d5072418e28b9008a6636bde82a006892c
    PYTHONPATH=src python benchmarks/data/make_gsm8k.py grade-school-math

The output is deterministic: rerunning it rewrites the same bytes.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from langgraph_moa.eval.datasets import load_dataset
from langgraph_moa.eval.scorers import score

SOURCE = "openai/grade-school-math"
COMMIT = "3101c7d5072418e28b9008a6636bde82a006892c"
SEED = 20261202
TEST_SIZE = 300
TRAIN_SIZE = 100
ROOT = Path(__file__).parents[2]
TEST_OUT = ROOT / "src" / "langgraph_moa" / "eval" / "data" / "gsm8k_test_300.jsonl"
TRAIN_OUT = ROOT / "benchmarks" / "data" / "gsm8k_train_100.jsonl"


def sample(lines: list[str], size: int, split: str) -> list[str]:
    """Pick `size` lines with a seeded generator (per split), kept in source order."""
    picked = sorted(random.Random(f"{SEED}-{split}").sample(range(len(lines)), size))
    out = []
    for index in picked:
        data = json.loads(lines[index])
        out.append(json.dumps({"id": f"gsm8k-{split}-{index:04d}", **data}, ensure_ascii=False))
    return out


def main(checkout: Path) -> None:
    """Write both samples and check that every reference solution scores as right."""
    data = checkout / "grade_school_math" / "data"
    for split, size, out in (("test", TEST_SIZE, TEST_OUT), ("train", TRAIN_SIZE, TRAIN_OUT)):
        lines = (data / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        out.write_text("\n".join(sample(lines, size, split)) + "\n", encoding="utf-8")
        items = load_dataset(out)
        raw = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        wrong = [
            i.id for i, r in zip(items, raw, strict=True) if not score(i, r["answer"])["correct"]
        ]
        assert not wrong, f"reference solutions scored wrong: {wrong}"
        print(f"{out.relative_to(ROOT)}: {len(items)} of {len(lines)} {split} items")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
