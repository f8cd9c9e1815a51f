"""The shipped tool-use data set: every expected answer is what its tool returns."""

import importlib.util
import json
import random
import re
from fractions import Fraction
from pathlib import Path

import pytest

from langgraph_moa.eval.datasets import gsm8k_final_number
from langgraph_moa.eval.scorers import numeric
from langgraph_moa.text._selection import extract_answer

PATH = Path(__file__).parents[2] / "benchmarks" / "tool_use.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("tool_use_bench", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(PATH.parent))  # as run: its helpers are beside it
        spec.loader.exec_module(module)
        yield module


def test_the_data_set_is_the_generated_one_and_every_answer_needs_its_tool(bench):
    items = bench.load_items()
    assert items == json.loads(json.dumps(bench.make_items()))  # regenerated, not edited
    assert len(items) >= 60 and len({i["id"] for i in items}) == len(items)
    tools = {t.name: t for t in bench.TOOLS}
    for item in items:
        assert tools[item["tool"]].invoke(item["arguments"]) == item["expected"][0], item["id"]


def test_scoring_accepts_the_right_call_and_answer_only(bench):
    item = next(i for i in bench.load_items() if i["category"] == "arithmetic")
    a, op, b = item["arguments"]["expression"].split()
    assert bench.tool_right(item, {"name": "calculator", "args": {"expression": f"{a}{op}{b}"}})
    assert not bench.tool_right(item, {"name": "calculator", "args": {"expression": f"{a}+1"}})
    assert not bench.tool_right(item, {"name": "stock_level", "args": {"sku": a}})
    assert not bench.tool_right(item, None)
    value = int(item["expected"][0])
    assert bench.answer_right(item, f"The result is {value:,}.")
    assert not bench.answer_right(item, f"The result is {value + 1}.")
    conv = next(i for i in bench.load_items() if i["category"] == "conversion")
    args = dict(conv["arguments"], from_unit=conv["arguments"]["from_unit"].upper())
    assert bench.tool_right(conv, {"name": "convert_units", "args": args})


def test_answer_right_reads_numbers_as_the_scorer_does(bench):
    """Every comma was stripped first: "3,4" (a pair) counted as 34."""
    item = {"expected": ["34"]}
    assert not bench.answer_right(item, "The pair is 3,4.")
    assert bench.answer_right({"expected": ["1234"]}, "The result is 1,234.")
    assert bench.answer_right({"expected": ["-5"]}, "It is \u22125 degrees.")
    assert bench.answer_right({"expected": ["12.35"]}, "About 12.346 km.")
    assert not bench.answer_right({"expected": ["12.35"]}, "About 12.4 km.")
    assert bench.answer_right({"expected": ["2500000"]}, "2,500e3")


def test_answer_right_reads_an_answer_that_is_one_fraction_as_the_scorer_does(bench):
    """The scorer reads a lone "1/5" as 0.2; answer_right read it as 1 and 5."""
    assert bench.answer_right({"expected": ["0.2"]}, "1/5")
    assert bench.answer_right({"expected": ["-0.75"]}, " **-3/4.** ")
    assert not bench.answer_right({"expected": ["0.2"]}, "It is 1/5 of 10, so 2.")
    assert bench.answer_right({"expected": ["7"]}, "Open 24/7")


def test_every_reader_reads_a_stated_number_alike(bench):
    """Property: for a number stated as GSM8K states it, every reader reads one value.

    The GSM8K target, the scorer, the vote key and tool_use's answer_right each read
    "#### X" for thousands of X built from the marks the rules name (commas, LaTeX and
    Unicode thin spaces, minus signs, exponents, points, fractions, \\frac).
    """
    marks = ["1", "12", "123", "000", "5", "7", ",", "\\,", "\u00a0", "\u202f", ".", "e"]
    marks += ["-", "\u2212", "\uff0d", "$", "/", "\\frac", "{", "}", "..."]
    rng = random.Random(20261205)
    read = 0
    for _ in range(8000):
        written = "".join(rng.choice(marks) for _ in range(rng.randint(1, 7)))
        target = gsm8k_final_number(f"Worked.\n#### {written}")
        if target is None or abs(target) > 1e15:
            continue
        read += 1
        assert numeric(f"So 9.\n#### {written}", target), written
        assert float(Fraction(extract_answer(f"Work 3 x 4.\n#### {written}"))) == target, written
        assert bench.answer_right({"expected": [repr(target)]}, written), written
    assert read > 500  # the marks make enough numbers for the property to say something


def test_the_readmes_limit_1_rerun_names_every_item_that_command_runs(bench):
    """docs/eval-tool-use/README.md said ``--limit 1`` reran "the first two items (arith-01,
    conv-01)": it runs three, one per category. The text now names them all, and which of them
    were compared with the committed rows."""
    readme = (PATH.parents[1] / "docs" / "eval-tool-use" / "README.md").read_text("utf-8")
    said = " ".join(readme.split())
    start = said.index("Rerun with `--limit 1")
    sentence = said[start : said.index(" - ", start)]
    named = re.findall(r"`([a-z]+-\d\d)`", sentence)
    runs = [i["id"] for i in bench.interleaved(bench.load_items(), 1)]
    assert named[: len(runs)] == runs, sentence


def test_a_seed_reaches_every_call_of_a_system_so_a_sampled_vote_can_be_drawn_again(bench):
    """The vote system samples (one proposer at temperature 0.7) and `moa eval` takes
    ``--seed``, but the benchmark sent no seed: each rerun drew other samples. Its
    ``--seed`` now goes to every call, each sample its own, and each row records it."""
    from tests.fakes import CallLog, FakeChat

    log = CallLog()
    system = {
        "variant": "select",
        "proposers": [
            {"model": FakeChat(label=f"p{i}", log=log, reply=lambda *_: "42"), "temperature": 0.7}
            for i in range(3)
        ],
        "selection": {"method": "vote"},
    }
    item = next(i for i in bench.load_items() if i["category"] == "arithmetic")
    row = bench.run_item(bench.build(system, seed=7), item, seed=7)
    assert sorted(c.kwargs.get("seed") for c in log.calls) == [7, 8, 9]
    assert row["seed"] == 7
    unseeded = bench.run_item(bench.build(system), item)
    assert unseeded["seed"] is None
    # A rerun keeps only the rows drawn with its own seed: others are other samples.
    rows = [{**row, "system": "vote"}, {**unseeded, "system": "vote"}]
    assert bench.kept_rows(rows, 7) == {("vote", item["id"]): rows[0]}
    assert bench.kept_rows(rows, None) == {("vote", item["id"]): rows[1]}
    assert bench.kept_rows([{"system": "vote", "id": "x"}], None)  # rows written before seeds


def test_the_report_names_the_seeds_of_the_rows_it_leaves_out(bench, tmp_path, monkeypatch, capsys):
    """After a ``--seed 7`` run, ``--report`` (documented as "the table of what has run so
    far") showed no row of it and said nothing: it keeps only the rows of its own seed."""
    item = bench.interleaved(bench.load_items(), 1)[0]
    out = tmp_path / "rows.jsonl"
    row = {"id": item["id"], "tool": True, "answer": True, "seconds": 1.0, "seed": 7}
    out.write_text(json.dumps({"system": "moa", **row}) + "\n")
    monkeypatch.setattr(
        "sys.argv", ["tool_use.py", "--report", "--out", str(out), "--systems", "moa"]
    )
    bench.main()
    assert "--seed 7" in capsys.readouterr().out


def test_the_seed_is_read_by_the_helper_the_benchmarks_share(bench, monkeypatch, capsys):
    """tool_use.py read ``--seed`` with `call_seed` imported, inside main, from gsm8k.py, the
    GSM8K benchmark script, loaded whole for one function. Both scripts take it from
    ``_seed.py`` beside them, as the serve benchmarks take `_served`'s helpers."""
    import _seed

    assert bench.call_seed is _seed.call_seed
    monkeypatch.setattr("sys.argv", ["tool_use.py", "--report", "--seed", "-1"])
    with pytest.raises(SystemExit) as raised:
        bench.main()
    assert raised.value.code == 2 and "--seed" in capsys.readouterr().err
