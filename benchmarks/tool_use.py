"""Tool use: the best single local model vs the mixtures, with tools, on a verifiable set.

The data set (``langgraph_moa/eval/data/tool_use.jsonl``, 72 items, written by
``--write-data`` from a fixed seed) needs a tool for every item: exact arithmetic on large
numbers (``calculator``), unit conversion with a fixed factor table (``convert_units``) and
a lookup in a small fictional stock table no model can know (``stock_level``). Each system
answers every item as a LangChain agent (`create_agent`) with the three tools; scored per item:

- ``tool``: the first tool call names the right tool with the right arguments (arithmetic:
  the expression evaluates to the exact value; conversion: value and units; lookup: SKU);
- ``answer``: the final answer states the expected value.

Mixtures are compared with the single model on the same items: paired bootstrap intervals
of the per-item difference (`eval.stats.paired_difference`).

    python benchmarks/tool_use.py --write-data          # regenerate the data set
    python benchmarks/tool_use.py --limit 6             # a short run (minutes on 2 cores)
    python benchmarks/tool_use.py                       # all 72 items, every system (hours)
    python benchmarks/tool_use.py --report              # the table of what has run so far
                                                        # (add the run's --seed, if any)
    python benchmarks/tool_use.py --seed 7              # every call seeded, as moa eval --seed

Items run round-robin over the categories and every system answers an item before the next
item starts, so a stopped run's prefix is a fair paired comparison; each answer is appended
to ``--out`` at once and a rerun skips what is there, drawn with its ``--seed`` (rows hold
theirs; none is one too). Without ``--seed`` the vote system's sampled proposer (temperature
0.7) draws a random seed per call, so a rerun draws other samples; with it every call is
seeded, each sample of a layer the seed plus its position (`moa eval --seed`).
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import random
import time
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

from _seed import call_seed
from langchain_core.messages import AIMessage
from langchain_core.tools import tool

from langgraph_moa.text._selection import written_numbers

DATA = Path(str(resources.files("langgraph_moa.eval") / "data" / "tool_use.jsonl"))

# --- the tools ---------------------------------------------------------------------------------

_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}


def evaluate(expression: str) -> float:
    """Evaluate arithmetic exactly (no names, no calls)."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        raise ValueError("unsupported expression")

    return walk(ast.parse(expression.replace("\u00d7", "*").replace("^", "**"), mode="eval").body)


FACTORS = {
    ("km", "mi"): 0.621371,
    ("mi", "km"): 1.609344,
    ("kg", "lb"): 2.204623,
    ("lb", "kg"): 0.453592,
    ("l", "gal"): 0.264172,
    ("gal", "l"): 3.785412,
    ("m", "ft"): 3.280840,
    ("ft", "m"): 0.3048,
}

STOCK = {f"SKU-{1000 + 37 * i}": (i * 7919) % 983 + 11 for i in range(40)}
"""A fictional warehouse: no model can know these numbers without the tool."""


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, e.g. '1234 * 5678'."""
    try:
        value = evaluate(expression)
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        return f"error: {exc}"
    return str(int(value) if float(value).is_integer() else round(value, 6))


@tool
def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a value between units: km, mi, kg, lb, l, gal, m, ft."""
    factor = FACTORS.get((from_unit.lower().strip(), to_unit.lower().strip()))
    if factor is None:
        return f"error: cannot convert {from_unit} to {to_unit}"
    return f"{value * factor:.2f}"


@tool
def stock_level(sku: str) -> str:
    """Return how many units of a product (by SKU, e.g. 'SKU-1037') the warehouse holds."""
    level = STOCK.get(sku.strip().upper())
    return "error: unknown SKU" if level is None else str(level)


TOOLS = [calculator, convert_units, stock_level]
CATEGORIES = ("arithmetic", "conversion", "lookup")
SYSTEM = (
    "You are a careful assistant with tools. Use a tool for any arithmetic, unit conversion "
    "or stock question; once a tool result is in the conversation, answer the user with it."
)

# --- the data set ------------------------------------------------------------------------------


def make_items(seed: int = 19) -> list[dict[str, Any]]:
    """Build the 72 items: 24 arithmetic, 24 conversions, 24 stock lookups."""
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    for i in range(24):
        a, b = rng.randint(1000, 9999), rng.randint(100, 9999)
        op = ["*", "+", "-"][i % 3] if i % 4 else "*"
        expression = f"{a} {op} {b}"
        value = int(evaluate(expression))
        word = {"*": "times", "+": "plus", "-": "minus"}[op]
        items.append(
            {
                "id": f"arith-{i + 1:02d}",
                "category": "arithmetic",
                "instruction": f"What is {a} {word} {b}? Give the exact number.",
                "tool": "calculator",
                "arguments": {"expression": expression},
                "expected": [str(value)],
            }
        )
    pairs = list(FACTORS)
    for i in range(24):
        source, target = pairs[i % len(pairs)]
        value = rng.randint(2, 500)
        items.append(
            {
                "id": f"conv-{i + 1:02d}",
                "category": "conversion",
                "instruction": f"Convert {value} {source} to {target}, to two decimals.",
                "tool": "convert_units",
                "arguments": {"value": value, "from_unit": source, "to_unit": target},
                "expected": [f"{value * FACTORS[(source, target)]:.2f}"],
            }
        )
    skus = rng.sample(sorted(STOCK), 24)
    for i, sku in enumerate(skus):
        items.append(
            {
                "id": f"stock-{i + 1:02d}",
                "category": "lookup",
                "instruction": f"How many units of {sku} are in stock?",
                "tool": "stock_level",
                "arguments": {"sku": sku},
                "expected": [str(STOCK[sku])],
            }
        )
    return items


def load_items() -> list[dict[str, Any]]:
    """Read the shipped data set."""
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


# --- scoring -----------------------------------------------------------------------------------


def tool_right(item: dict[str, Any], call: dict[str, Any] | None) -> bool:
    """Tell whether the first tool call is the right tool with the right arguments."""
    if call is None or call["name"] != item["tool"]:
        return False
    args, want = call["args"], item["arguments"]
    try:
        if item["tool"] == "calculator":
            return evaluate(str(args.get("expression", ""))) == evaluate(want["expression"])
        if item["tool"] == "convert_units":
            return (
                float(args.get("value")) == float(want["value"])
                and str(args.get("from_unit", "")).lower().strip() == want["from_unit"]
                and str(args.get("to_unit", "")).lower().strip() == want["to_unit"]
            )
        return str(args.get("sku", "")).strip().upper() == want["sku"]
    except (TypeError, ValueError, SyntaxError, ZeroDivisionError):
        return False


def answer_right(item: dict[str, Any], text: str) -> bool:
    """Tell whether the final answer states the expected value, within 0.005.

    Numbers are read as `moa eval` reads them (`written_numbers`): a comma groups thousands
    only between groups of three digits, so "3,4" is never 34 (in prose it is no number).
    """
    expected = [Fraction(e) for e in item["expected"]]
    return any(abs(n - e) < Fraction(5, 1000) for n in written_numbers(text) for e in expected)


# --- running -----------------------------------------------------------------------------------

SYSTEMS: dict[str, Any] = {
    # The baseline: the 1.5B alone, through the graph so that its tool calls written as text
    # are read the same way as the mixtures' (`read_text_tool_calls`); one call per turn.
    "single-1.5b": {
        "variant": "select",
        "proposers": [{"model": "local:qwen2.5-coder-1.5b", "max_tokens": 128, "temperature": 0.0}],
        "selection": {"method": "vote"},
    },
    # The bare model through llama.cpp, whose parser misses calls written without the
    # template's <tool_call> tokens: shows what the reading of text calls is worth.
    "raw-1.5b": "local:qwen2.5-coder-1.5b",
    "moa": {
        "proposers": [
            {"model": "local:qwen2.5-coder-1.5b", "max_tokens": 128},
            {"model": "local:qwen2.5-coder-0.5b", "max_tokens": 128},
        ],
        "aggregator": {"model": "local:qwen2.5-coder-1.5b", "max_tokens": 128},
        "layers": 2,
    },
    "vote": {
        "variant": "select",
        "proposers": [
            {"model": "local:qwen2.5-coder-1.5b", "max_tokens": 128, "temperature": 0.0},
            {"model": "local:qwen2.5-coder-1.5b", "max_tokens": 128, "temperature": 0.7},
            {"model": "local:qwen2.5-coder-0.5b", "max_tokens": 128, "temperature": 0.0},
        ],
        "selection": {"method": "vote"},
    },
}


def build(system: Any, seed: int | None = None) -> Any:
    """Return the agent of one system: a local model alone, or a MoA config.

    `seed` goes with every model call (a MoA gives each sample its own, seed + position).
    """
    from langchain.agents import create_agent

    from langgraph_moa import MoAChatModel, MoAConfig
    from langgraph_moa.providers._models import ModelCache

    if isinstance(system, str):
        model = ModelCache().get(system, {"max_tokens": 128, "temperature": 0.0})
    else:
        model = MoAChatModel(config=MoAConfig(**system))
    middleware = [] if seed is None else [_seeded(seed)]
    return create_agent(model, TOOLS, system_prompt=SYSTEM, middleware=middleware)


def _seeded(seed: int) -> Any:
    """Return agent middleware that sends `seed` with each model call, as a call argument."""
    from langchain.agents.middleware import wrap_model_call

    @wrap_model_call
    def seeded(request: Any, handler: Any) -> Any:
        return handler(request.override(model_settings={**request.model_settings, "seed": seed}))

    return seeded


def kept_rows(
    rows: list[dict[str, Any]], seed: int | None
) -> dict[tuple[str, str], dict[str, Any]]:
    """Return the rows a run with `seed` keeps, by system and item: those drawn with it.

    A row of another seed (or none: rows written before ``--seed`` hold no seed) holds other
    samples, so its item is answered again; the last row of an item wins.
    """
    return {(r["system"], r["id"]): r for r in rows if r.get("seed") == seed}


def run_item(agent: Any, item: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
    """Answer one item; return its scores, first tool call and final answer.

    The agent is streamed (state after each step) so that a run that fails later, for example
    at the recursion limit after the model repeated its call, still has its first tool call
    scored; its final answer then scores zero and the error is kept.
    """
    started = time.perf_counter()
    messages: list[Any] = []
    error = None
    try:
        for state in agent.stream(
            {"messages": [("user", item["instruction"])]},
            {"recursion_limit": 8},
            stream_mode="values",
        ):
            messages = state["messages"]
    except Exception as exc:  # a failed run's answer scores zero, and says why
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    calls = [c for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    first = calls[0] if calls else None
    final = "" if error or not messages else messages[-1].text
    row = {
        "id": item["id"],
        "tool": int(tool_right(item, first)),
        "answer": int(answer_right(item, final)),
        "first_call": first and {"name": first["name"], "args": first["args"]},
        "tool_calls": len(calls),
        "final": final[:200],
        "seconds": round(time.perf_counter() - started, 1),
        "seed": seed,
    }
    if error:
        row["error"] = error
    return row


def interleaved(items: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """Order items round-robin over the categories, so that any prefix of a run covers all three."""
    columns = [[i for i in items if i["category"] == c][:limit] for c in CATEGORIES]
    return [
        column[k] for k in range(max(map(len, columns))) for column in columns if k < len(column)
    ]


def report(
    done: dict[tuple[str, str], dict[str, Any]], items: list[dict[str, Any]], systems: list[str]
) -> None:
    """Print the per-category table and each mixture's paired difference to the baseline."""
    from langgraph_moa.eval.stats import paired_difference

    ids = [i["id"] for i in items if all((s, i["id"]) in done for s in systems)]
    category = {i["id"]: i["category"] for i in items}
    print(f"\nitems answered by every system: {len(ids)} of {len(items)}")
    print(
        "system       | metric | "
        + " | ".join(f"{c:10s}" for c in CATEGORIES)
        + " | all    | median s"
    )
    for name in systems:
        rows = [done[(name, i)] for i in ids]
        seconds = sorted(r.get("seconds", 0.0) for r in rows)
        median = f"{seconds[len(seconds) // 2]:.1f}" if seconds else "-"
        for metric in ("tool", "answer"):
            cells = []
            for c in CATEGORIES:
                picked = [r[metric] for r in rows if category[r["id"]] == c]
                cells.append(f"{sum(picked):>3d}/{len(picked):<6d}")
            total = f"{sum(r[metric] for r in rows)}/{len(rows)}"
            print(f"{name:12s} | {metric:6s} | " + " | ".join(cells) + f" | {total:6s} | {median}")
    baseline = systems[0]
    for name in systems[1:]:
        for metric in ("tool", "answer"):
            diff = paired_difference(
                {i: done[(name, i)][metric] for i in ids},
                {i: done[(baseline, i)][metric] for i in ids},
            ).as_dict()
            print(f"{name} - {baseline} ({metric}): {diff}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-data", action="store_true", help="regenerate the data set")
    parser.add_argument("--limit", type=int, default=None, help="items per category")
    parser.add_argument("--systems", nargs="*", default=["single-1.5b", "moa", "vote"])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("tool_use_results.jsonl"),
        help="per-item results, one JSON line each; a rerun skips what is there (resumes)",
    )
    parser.add_argument(
        "--report", action="store_true", help="print the table of --out (rows of --seed) and stop"
    )
    parser.add_argument(
        "--seed",
        type=call_seed,
        default=None,
        help="seed every call (moa eval --seed): a rerun can draw the same samples",
    )
    args = parser.parse_args()
    if args.write_data:
        DATA.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in make_items()))
        print(f"wrote {DATA} ({len(make_items())} items)")
        return
    from langgraph_moa.local.runtime import LocalRuntime

    items = interleaved(load_items(), args.limit)
    rows: list[dict[str, Any]] = []
    if args.out.exists():
        rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    done = kept_rows(rows, args.seed)
    if args.report:
        # The table is one seed's rows; a seeded run's are left out without its --seed.
        for seed in sorted({r.get("seed") for r in rows} - {args.seed}, key=str):
            flag = "no --seed" if seed is None else f"--seed {seed}"
            print(f"rows drawn with {flag} are left out: report them with {flag}")
        report(done, items, args.systems)
        return
    try:
        agents = {name: build(SYSTEMS[name], args.seed) for name in args.systems}
        with args.out.open("a") as sink:
            for n, item in enumerate(items, 1):
                for name in args.systems:
                    if (name, item["id"]) in done:
                        continue
                    row = {"system": name, **run_item(agents[name], item, args.seed)}
                    sink.write(json.dumps(row) + "\n")
                    sink.flush()
                    done[(name, item["id"])] = row
                    print(
                        f"[{n}/{len(items)}] {name:12s} {item['id']}: tool {row['tool']} "
                        f"answer {row['answer']} ({row.get('seconds', '-')} s)",
                        flush=True,
                    )
    finally:
        LocalRuntime.default().stop_all()
    report(done, items, args.systems)
    print(f"per-item results: {args.out}")


if __name__ == "__main__":
    main()
