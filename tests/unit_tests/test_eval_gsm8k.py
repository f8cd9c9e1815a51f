"""GSM8K in `moa eval`: the published format, the packaged sample, scoring and vote keys."""

import json
import random
from fractions import Fraction
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

from langgraph_moa.errors import EvalDatasetError
from langgraph_moa.eval import load_dataset, score, shipped_dataset
from langgraph_moa.eval.datasets import PACKAGED, gsm8k_final_number
from langgraph_moa.eval.scorers import last_number, numeric
from langgraph_moa.run.cache import SQLiteCallCache
from langgraph_moa.text._selection import extract_answer, number_value, stated_number

ROOT = Path(__file__).parents[2]
# Two lines exactly as openai/grade-school-math publishes them (test.jsonl, lines 1 and 2).
PUBLISHED = [
    {
        "question": "Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every "
        "morning and bakes muffins for her friends every day with four. She sells the "
        "remainder at the farmers' market daily for $2 per fresh duck egg. How much in "
        "dollars does she make every day at the farmers' market?",
        "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = "
        "$<<9*2=18>>18 every day at the farmer\u2019s market.\n#### 18",
    },
    {
        "question": "A robe takes 2 bolts of blue fiber and half that much white fiber.  How "
        "many bolts in total does it take?",
        "answer": "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total amount of fabric "
        "is 2+1=<<2+1=3>>3 bolts of fabric\n#### 3",
    },
]


def test_published_lines_load_with_the_final_number_as_target(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in PUBLISHED))
    ducks, robe = load_dataset(path)
    assert (ducks.id, ducks.numeric, ducks.category) == ("1", 18.0, "gsm8k")
    assert ducks.turns == [PUBLISHED[0]["question"]]
    assert ducks.reference == PUBLISHED[0]["answer"] and robe.numeric == 3.0
    assert score(ducks, "She makes 9 * 2 = $18 a day.\n#### 18")["correct"]
    assert not score(ducks, "She sells 9 eggs.\n#### 9")["correct"]


@pytest.mark.parametrize(
    ("final", "value"), [("#### 1,600", 1600.0), ("#### -3", -3.0), ("####42", 42.0)]
)
def test_final_lines_with_commas_and_signs(tmp_path, final, value):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": f"work\n{final}"}) + "\n")
    assert load_dataset(path)[0].numeric == value


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("She makes 18 dollars.", "g.jsonl:2: 'answer' is read as a GSM8K solution"),
        ("work\n#### eighteen", "ends '#### eighteen'; end it with '#### N'"),
        ("#### 18\nthen more text", "or 'numeric' (a number) instead"),
        (18, "'answer' must be a GSM8K worked solution (a string ending '#### N'), got int"),
    ],
)
def test_a_malformed_gsm8k_line_names_the_line_and_the_fix(tmp_path, answer, message):
    path = tmp_path / "g.jsonl"
    good = json.dumps(PUBLISHED[1])
    path.write_text(good + "\n" + json.dumps({"question": "q", "answer": answer}) + "\n")
    with pytest.raises(EvalDatasetError) as err:
        load_dataset(path)
    assert message in str(err.value) and "g.jsonl:2" in str(err.value)


def test_the_packaged_sample_loads_by_name_and_every_reference_scores_right():
    items = load_dataset("gsm8k")
    assert len(items) == 300 and len({i.id for i in items}) == 300
    assert all(i.id.startswith("gsm8k-test-") and i.numeric is not None for i in items)
    assert all(score(i, i.reference or "")["correct"] for i in items)
    assert load_dataset(shipped_dataset("gsm8k"))[0].id == items[0].id
    notice = (shipped_dataset("gsm8k").parent / "GSM8K_NOTICE.txt").read_text()
    assert "MIT License" in notice and "3101c7d5072418e28b9008a6636bde82a006892c" in notice


def test_the_samples_are_the_seeded_draw_their_script_records():
    """The committed files hold exactly the lines the recorded seed picks (no hand edits)."""
    script = (ROOT / "benchmarks" / "data" / "make_gsm8k.py").read_text()
    seed = int(script.split("SEED = ")[1].split()[0])
    for split, size, total, path in (
        ("test", 300, 1319, shipped_dataset("gsm8k")),
        ("train", 100, 7473, ROOT / "benchmarks" / "data" / "gsm8k_train_100.jsonl"),
    ):
        picked = sorted(random.Random(f"{seed}-{split}").sample(range(total), size))
        ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
        assert ids == [f"gsm8k-{split}-{i:04d}" for i in picked]
    test_ids = {i.id for i in load_dataset("gsm8k")}
    assert all(i.startswith("gsm8k-test") for i in test_ids)


def test_an_unknown_dataset_name_lists_the_packaged_ones():
    with pytest.raises(EvalDatasetError, match="packaged dataset by name"):
        load_dataset("gsm9k")
    with pytest.raises(EvalDatasetError, match="the packaged ones are verifiable, gsm8k"):
        shipped_dataset("gsm9k")
    assert set(PACKAGED) == {"verifiable", "gsm8k"}


@pytest.mark.parametrize(
    ("answer", "target"),
    [
        ("9 eggs at $2 each.\n#### 18", 18),
        ("The answer is 18. She sold 9 eggs at $2.", 18),
        ("So she makes \\boxed{18} dollars from 9 eggs.", 18),
        ("So she makes $\\boxed{\\$1,250}$ in 3 days.", 1250),
        ("Final answer: $1,250.50", 1250.5),
        ("#### -3", -3),
        ("The total is 1,600 dollars.", 1600),
        ("The discount is \\boxed{12.5\\%} of 80.", 12.5),
    ],
)
def test_the_numeric_scorer_reads_stated_results(answer, target):
    assert numeric(answer, target)


@pytest.mark.parametrize(
    ("answer", "target"),
    [
        ("The answer is -3.", -3),
        ("Answer: -12", -12),
        ("The answer is $-5.", -5),
        ("The answer is -$5.", -5),
        ("So the balance is -$5.", -5),
        ("Final answer: **-7**", -7),
        ("#### -$4", -4),
        ("So the change is \\boxed{-\\$5} after 3 days.", -5),
    ],
)
def test_a_negative_stated_result_keeps_its_sign(answer, target):
    """Two of the packaged GSM8K test items have a negative target (#### -N)."""
    assert numeric(answer, target)
    assert not numeric(answer, -target)


@pytest.mark.parametrize(
    "answer", ["**Answer:**\n- 18 dollars", "Answer:\n- 18", "The answer is: - 18 apples"]
)
def test_a_list_dash_before_the_stated_result_is_no_minus_sign(answer):
    assert numeric(answer, 18)


@pytest.mark.parametrize(
    ("answer", "last"),
    [
        ("It takes 10-15 minutes", 15),
        ("x = 20-15", 15),
        ("Read pages 3-4", 4),
        ("(2 + 3)-1", 1),
        ("The COVID-19 wave", 19),
        ("2\u22125 = \u22123", -3),
        ("So x = -5", -5),
        ("The change is (-3)", -3),
        ("That is 3 * -2", -2),
    ],
)
def test_a_hyphen_after_a_digit_letter_or_bracket_is_subtraction_not_a_sign(answer, last):
    """A range or a difference ('10-15 minutes') ends in 15, not -15; '= -5' is still -5."""
    assert last_number(answer) == last
    assert numeric(answer, last)
    assert extract_answer(answer, "last-number") == str(last)


@pytest.mark.parametrize(
    ("answer", "target"),
    [
        ("The answer is \u22123.", -3),
        ("Answer: \u221212", -12),
        ("So the balance is \u2212$5.", -5),
        ("#### \u22124", -4),
        ("So the change is \\boxed{\u22125} after 3 days.", -5),
        ("The temperature fell to \u22128", -8),
    ],
)
def test_a_unicode_minus_sign_is_a_sign(answer, target):
    """U+2212 is the minus sign typeset math and many models write."""
    assert numeric(answer, target)
    assert not numeric(answer, -target)
    assert extract_answer(answer) == extract_answer(f"#### {target}")


def test_numbers_a_unit_apart_vote_apart_however_large():
    """'%g' kept 6 significant digits, so 1234567 and 1234568 were one vote."""
    assert extract_answer("#### 1234567") != extract_answer("#### 1234568")
    assert (
        extract_answer("#### 1234567") == extract_answer("The answer is 1,234,567.00") == "1234567"
    )
    assert extract_answer("0.1") == "0.1"
    assert extract_answer("Answer: 0.10") == "0.1"
    assert extract_answer("#### -0") == extract_answer("#### 0") == "0"
    assert extract_answer("#### 100") == "100"
    assert extract_answer("#### 12345678901234567891") != extract_answer(
        "#### 12345678901234567890"
    )


def test_the_numeric_scorer_tells_large_integers_a_unit_apart():
    """A relative tolerance of 1e-6 counted 1234568 right on 1234567."""
    assert numeric("#### 1234567", 1234567)
    assert not numeric("#### 1234568", 1234567)
    assert numeric("The answer is 0.3", 0.1 + 0.2)


def test_a_negative_result_votes_apart_from_its_absolute_value():
    assert extract_answer("The answer is -3.") == extract_answer("#### -3")
    assert extract_answer("The answer is -3.") != extract_answer("The answer is 3.")


@pytest.mark.parametrize(
    ("answer", "wrong"),
    [
        ("The answer is 18. She sold 9 eggs at $2.", 2),
        ("#### 18\nHe had 4 boxes.", 4),
        ("He has to answer 20 questions, so 20 + 5 = 25.", 20),
    ],
)
def test_numbers_after_or_beside_the_conclusion_do_not_count(answer, wrong):
    assert not numeric(answer, wrong)


@pytest.mark.parametrize(
    "text",
    [
        "Step 1: 1,000 + 250 = 1,250.\n#### 1,250",
        "The answer is $1,250. That is 5 payments of $250.",
        "So the total is \\(\\boxed{\\$1{,}250}\\) over 5 months.",
        "Final answer: 1250.0",
        "1250",
    ],
)
def test_worked_solutions_vote_by_their_final_number(text):
    assert extract_answer(text) == "1250"


def test_stated_number_prefers_the_gsm8k_line_and_the_last_statement():
    assert stated_number("The answer is 5.\n#### 6") == "6"
    assert stated_number("The answer is 5. No wait, the answer is 7, as 3 + 4 = 7.") == "7"
    assert stated_number("Answer 20 questions in 3 hours.") is None
    assert stated_number("no number here") is None
    # A choice letter stated as the answer still reads as the letter.
    assert extract_answer("The answer is C) 3/4, as 3 of 4 parts are shaded.") == "C"


@pytest.fixture(scope="module")
def bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gsm8k_bench", ROOT / "benchmarks" / "gsm8k.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "benchmarks"))  # as run: its helpers are beside it
        spec.loader.exec_module(module)
        yield module


def _row(*answers: tuple[str, int]) -> dict:
    calls = [
        {
            "role": "proposer",
            "status": "ok",
            "proposer": min(k, 1),
            "sample": max(k - 1, 0),
            "configured_model": "local:m",
            "output": text,
            "completion_tokens": tokens,
        }
        for k, (text, tokens) in enumerate(answers)
    ]
    return {"id": "x", "error": None, "trace": calls}


def test_the_pickers_ceiling_counts_finished_right_proposals_only(bench, tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps(PUBLISHED[1]) + "\n")
    item = load_dataset(path)[0]  # expects 3
    assert bench.any_right(item, _row(("So \\boxed{4}", 200), ("Total: \\boxed{3}", 300)))
    assert not bench.any_right(item, _row(("So \\boxed{4}", 200), ("2+1=3", bench.CURVE_CAP)))
    assert not bench.any_right(item, _row(("So \\boxed{4}", 200)))


def test_a_shared_call_cache_is_merged_in_and_never_over_a_systems_own(
    bench, tmp_path, monkeypatch
):
    # evaluate() merges the baseline's calls into a system's cache before each run: a folder
    # that already ran keeps its own calls and gets the shared ones of items it adds.
    seed = SQLiteCallCache(tmp_path / "seed.db")
    seed.put("greedy call of item 1", AIMessage("seed 1"))
    seed.put("greedy call of item 2", AIMessage("seed 2"))
    seed.close()
    own = SQLiteCallCache(tmp_path / "out" / "local-vote" / "calls.db")
    own.put("greedy call of item 1", AIMessage("own 1"))
    own.put("sample of item 1", AIMessage("own sample"))
    own.close()

    class Stop(Exception):
        pass

    def stop(*_args, **_kwargs):
        raise Stop

    monkeypatch.setattr(bench, "Evaluation", stop)  # the merge comes before any model is built
    for name, first in (("local-vote", "own 1"), ("local-confidence", "seed 1")):
        with pytest.raises(Stop):
            bench.evaluate(name, [], tmp_path / "out", 1, tmp_path / "seed.db")
        cache = SQLiteCallCache(tmp_path / "out" / name / "calls.db")
        assert cache.get("greedy call of item 1") == AIMessage(first)
        assert cache.get("greedy call of item 2") == AIMessage("seed 2")
    assert SQLiteCallCache(tmp_path / "out" / "local-vote" / "calls.db").get("sample of item 1")


def test_the_benchmark_records_its_dataset_and_command(bench, tmp_path, monkeypatch):
    # Its runs made the docs' GSM8K numbers: their provenance.json must say how.
    seen = {}

    class Stop(Exception):
        pass

    def stop(*_args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(bench, "Evaluation", stop)
    monkeypatch.setattr(bench.sys, "argv", ["benchmarks/gsm8k.py", "systems", "--items", "30"])
    with pytest.raises(Stop):
        bench.evaluate("local-vote", [], tmp_path, 1, dataset="gsm8k")
    assert seen["dataset"] == "gsm8k"
    assert seen["command"] == "python benchmarks/gsm8k.py systems --items 30"


def test_the_benchmarks_seed_reaches_every_systems_evaluation(bench, tmp_path, monkeypatch):
    # The systems sampled (local-math, vote16, moa) with no seed: a rerun drew other samples.
    seen = []

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        seen.append(kwargs.get("seed", kwargs.get("eval_seed")))
        raise Stop

    evaluate = bench.evaluate
    monkeypatch.setattr(bench, "evaluate", stop)
    argv = ["benchmarks/gsm8k.py", "systems", "--items", "1", "--seed", "3"]
    monkeypatch.setattr(bench.sys, "argv", argv)
    with pytest.raises(Stop):
        bench.main()
    monkeypatch.setattr(bench, "Evaluation", stop)
    with pytest.raises(Stop):
        evaluate("local-vote", [], tmp_path, 1, eval_seed=3)
    assert seen == [3, 3]  # the script passes it on, and evaluate() to moa eval's runner


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_the_benchmarks_seed_out_of_range_is_refused_before_any_work(
    bench, seed, monkeypatch, capsys
):
    """``--seed -1`` or ``2**64`` ended in a traceback after the dataset loaded: it is
    checked as ``moa eval --seed`` checks it (0 to 2**63-1), one sentence, exit 2."""

    def work(*_args, **_kwargs):
        raise AssertionError("no work with a seed out of range")

    monkeypatch.setattr(bench, "systems", work)
    monkeypatch.setattr(bench.sys, "argv", ["benchmarks/gsm8k.py", "systems", "--seed", seed])
    with pytest.raises(SystemExit) as raised:
        bench.main()
    assert raised.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--seed" in error and str(2**63 - 1) in error, error


@pytest.mark.parametrize(
    "notice",
    [
        shipped_dataset("gsm8k").parent / "GSM8K_NOTICE.txt",
        ROOT / "benchmarks" / "data" / "GSM8K_NOTICE.txt",
    ],
    ids=["package", "benchmarks"],
)
def test_each_gsm8k_notice_speaks_of_the_samples_beside_it(notice):
    # The notice in the package (and so in the wheel) said "GSM8K samples in this folder"
    # and described gsm8k_train_100.jsonl, which is in benchmarks/data, not in the package.
    import re

    text = notice.read_text()
    described = set(re.findall(r"^(gsm8k_\w+\.jsonl) holds", text, flags=re.MULTILINE))
    beside = {path.name for path in notice.parent.glob("gsm8k_*.jsonl")}
    assert described == beside, text[:600]
    assert "MIT License" in text and "Copyright (c) 2021 OpenAI" in text


@pytest.mark.parametrize(
    ("answer", "value", "key"),
    [
        ("1e-5", 0.00001, "0.00001"),
        ("The rate is 2.5E+3 per second", 2500, "2500"),
        ("The answer is 1e-5.", 0.00001, "0.00001"),
        ("#### 3e2", 300, "300"),
        ("So the error is \\boxed{1e-5}.", 0.00001, "0.00001"),
        ("It shrinks to 4e\u22123", 0.004, "0.004"),
    ],
)
def test_a_number_in_scientific_notation_is_one_number(answer, value, key):
    """'1e-5' was read as 5: the hyphen after the letter e was no sign, and e no digit."""
    assert numeric(answer, value)
    assert not numeric(answer, 5) or value == 5
    assert extract_answer(answer) == key
    assert extract_answer(answer, "last-number") == key


@pytest.mark.parametrize(
    ("answer", "last"), [("She bought 3eggs", 3), ("Grade 2e", 2), ("It costs 7 each", 7)]
)
def test_a_letter_e_without_an_exponent_makes_no_scientific_number(answer, last):
    assert last_number(answer) == last
    assert extract_answer(answer, "last-number") == str(last)


def test_a_huge_exponent_is_no_number_rather_than_a_huge_string():
    assert extract_answer("1e999999999", "last-number") in ("", "1e999999999")
    assert not numeric("1e999999999", 1)


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("1/2", 0.5),
        ("-3/4", -0.75),
        ("The answer is 1/2.", 0.5),
        ("Answer: 3/8 of the pie", 0.375),
        ("#### 1/4", 0.25),
        ("So the share is \\boxed{1/2}.", 0.5),
    ],
)
def test_a_fraction_given_as_the_answer_is_its_exact_value(answer, value):
    """'1/2' never matched a gold of 0.5: it was read as its last number, 2."""
    assert numeric(answer, value)
    assert not numeric(answer, 2) and not numeric(answer, 4)
    assert extract_answer(answer) == extract_answer(f"#### {value}")


def test_fraction_votes_are_exact_and_agree_with_their_decimals():
    assert extract_answer("1/3") == extract_answer("2/6") == "1/3"
    assert extract_answer("1/3") != extract_answer("0.3333333333")
    assert extract_answer("\\boxed{1/2}") != extract_answer("\\boxed{3/2}")
    assert extract_answer("4/2") == extract_answer("2") == "2"
    assert not numeric("1/0", 1) and not numeric("1/0", 0)


@pytest.mark.parametrize(
    ("answer", "last"),
    [
        ("The store is open 24/7 for 30 days", 30),
        ("She paid on 12/25/2024", 2024),
        ("She ate 3/4 of the 8 slices", 8),
        ("He was born 12/25/2024.", 2024),
        ("The answer is 12/25/2024", 12),
    ],
)
def test_a_slash_inside_prose_or_a_date_is_no_fraction(answer, last):
    """Only an answer (or a stated answer) that is one a/b token is a fraction."""
    assert numeric(answer, last)
    assert not numeric(answer, 24 / 7) and not numeric(answer, 12 / 25)


@pytest.mark.parametrize(
    ("answer", "last", "wrong"),
    [
        # A lone comma in prose, or before four digits, is ambiguous: no number, rather than
        # the 4, 23 and 1 they read (see test_eval_number_ambiguous.py).
        ("The points are 3,4", None, 34),
        ("Read 1,23", None, 123),
        ("It holds 1,234 books", 1234, 4),
        ("Population 12,345,678", 12345678, 678),
        ("The answer is 3,4", 3.4, 34),  # a stated value: a decimal comma (it read 3)
        ("Answer: 1,2345", None, 12345),
        ("Final answer: 1,234.5", 1234.5, 5),
    ],
)
def test_a_comma_groups_thousands_only_between_groups_of_three_digits(answer, last, wrong):
    """'3,4' was read as 34: every comma was taken for a thousands separator."""
    assert numeric(answer, last) if last is not None else last_number(answer) is None
    assert not numeric(answer, wrong)


def test_a_boxed_pair_is_no_thousands_number():
    assert not numeric("\\boxed{3,4}", 34)


@pytest.mark.parametrize(("final", "value"), [("3,4", 3.4), ("1,23", 1.23), ("1,234", 1234.0)])
def test_a_gsm8k_final_line_groups_thousands_by_three(final, value):
    from langgraph_moa.eval.datasets import gsm8k_final_number

    assert gsm8k_final_number(f"Work.\n#### {final}") == value


@pytest.mark.parametrize(
    ("answer", "target", "wrong"),
    [
        ("The answer is: **42**. That is 6 packs of 7.", 42, 7),
        ("**The answer is:** **42**, from 6 packs of 7.", 42, 7),
        ("Answer: __18__ dollars from 9 eggs at $2", 18, 2),
        ("The answer is: **-3**, as 2 - 5 = -3 and not 4", -3, 4),
    ],
)
def test_a_bold_stated_result_is_the_result(answer, target, wrong):
    """'The answer is: **42**' stated nothing (four marks before the number), so a number
    written after it was read instead."""
    assert numeric(answer, target)
    assert not numeric(answer, wrong)
    assert extract_answer(answer) == str(target)


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("So \\boxed{\\frac{1}{2}} of the pie is left.", 0.5),
        ("So \\boxed{\\dfrac{3}{4}} of 8 slices", 0.75),
        ("The change is \\boxed{-\\frac{5}{2}}", -2.5),
    ],
)
def test_a_boxed_latex_fraction_of_integers_is_its_value(answer, value):
    """'\\boxed{\\frac{1}{2}}' was read as 2 by the scorer, and \\frac{1}{23} and
    \\frac{12}{3} voted as one answer ('frac123')."""
    assert numeric(answer, value)
    assert not numeric(answer, 2) and not numeric(answer, 8)
    assert extract_answer(answer) == extract_answer(f"#### {value}")


def test_latex_fractions_that_differ_vote_apart():
    assert extract_answer("\\boxed{\\frac{1}{23}}") != extract_answer("\\boxed{\\frac{12}{3}}")
    assert extract_answer("\\boxed{\\frac{12}{3}}") == "4"
    assert extract_answer("\\boxed{2\\sqrt{2}}") == "2\\sqrt2"  # other LaTeX: as written


@pytest.mark.parametrize(
    "answer",
    ["9" * 5000, "9" * 5000 + "/3", "1/" + "9" * 5000, "#### " + "9" * 5000, "\\boxed{1e999}"],
)
def test_a_number_past_any_float_is_read_without_an_error(answer):
    """A 5,000-digit answer must neither raise (int() refuses over 4,300 digits, float() a
    fraction past its range) nor equal a small target."""
    assert not numeric(answer, 1)
    assert isinstance(extract_answer(answer), str)
    assert extract_answer(answer, "last-number") == extract_answer(answer, "last-number")


@pytest.mark.parametrize("answer", ["**1/2**", "$1/2$", "**1/2.**", "  __1/2__\n"])
def test_a_lone_fraction_in_bold_or_inline_math_is_still_lone(answer):
    assert numeric(answer, 0.5)
    assert extract_answer(answer) == "0.5"


@pytest.mark.parametrize(
    "written",
    ["9" * 1001, "1" + "0" * 1000, "1/" + "3" * 1001, "3" * 1001 + "/7", "1." + "5" * 1000],
)
def test_a_number_of_more_than_1000_digits_is_no_number(written):
    """Reading a 200,000-digit number took seconds, and twice the digits three times as long
    (its exact value is built super-linearly): past 1000 digits, like an exponent past 1000,
    it is no answer anyone means, so the scorer and the vote read no number there."""
    assert number_value(written) is None
    if "/" not in written:  # in prose, "x/7" ends in the number 7
        assert number_value(f"The answer is {written}.") is None
    assert last_number(written) is None
    assert extract_answer(written, "last-number") == ""
    assert gsm8k_final_number(f"so\n#### {written}") is None


@pytest.mark.parametrize("written", ["9" * 1000, "1/" + "3" * 1000, "1." + "5" * 999])
def test_a_number_of_1000_digits_is_still_read(written):
    assert number_value(written) is not None
    assert extract_answer(written, "last-number") != ""


@pytest.mark.parametrize("answer", ["\\boxed{\\frac{-1}{2}}", "\\boxed{\\dfrac{-1}{2}}"])
def test_a_boxed_latex_fraction_with_a_negative_numerator_is_its_value(answer):
    """'\\boxed{\\frac{-1}{2}}' was scored as 2 and voted as 'frac12', one answer with
    \\frac{-12}{...} and \\frac{1}{2} spelled otherwise; a minus inside the numerator is
    the fraction's sign, as one before \\frac is."""
    assert numeric(answer, -0.5)
    assert not numeric(answer, 2)
    assert extract_answer(answer) == extract_answer("#### -0.5") == "-0.5"
    assert extract_answer("\\boxed{\\frac{-12}{3}}") != extract_answer("\\boxed{\\frac{-1}{23}}")


@pytest.mark.parametrize(
    ("answer", "value"), [("12,34,567", 1234567), ("It costs Rs 1,00,000.", 100000)]
)
def test_an_indian_grouped_number_is_one_number(answer, value):
    """'12,34,567' (lakh grouping) was read as 34567, neither the number nor a list's last
    entry; a first group of one or two digits, two-digit groups and a last group of three
    is one number, as it was before commas were read by groups of three."""
    assert numeric(answer, value)
    assert extract_answer(answer) == str(value)


# Guards against reading time that grows with the square of the text: each input is large
# enough that the old reading took minutes, so a generous timeout (not a timing) fails it.
@pytest.mark.timeout(60)
@pytest.mark.parametrize("filler", ["*", ".", "-", "$", "#### "])
def test_a_long_run_of_marks_is_read_in_linear_time(filler):
    """A model's output of 20,000 marks took 12 to 15 s to read for the vote (100,000 took
    nine minutes): the option-letter pattern tried every split of the marks between two
    '\\W*'."""
    answer = filler * (100_000 // len(filler)) + "1/2x"
    extract_answer(answer)
    extract_answer(answer, "choice-letter")


@pytest.mark.timeout(60)
def test_many_unclosed_boxes_are_read_in_linear_time():
    """Each unclosed '\\boxed{' scanned to the end of the answer, so 20,000 characters of
    them took about 4 s to read for the vote and as long again to score (quadratic: 100,000, minutes);
    one pass over the braces finds every box's end now. Unclosed boxes are still ignored."""
    answer = "\\boxed{" * 15_000 + " so \\boxed{7} it is"
    assert extract_answer(answer) == "7"
    assert numeric(answer, 7)


@pytest.mark.timeout(60)
def test_a_long_run_of_two_digit_groups_is_read_in_linear_time():
    """'12,12,12,...' of 20,000 characters took over a second to read (quadratic: 300,000, minutes), as
    Indian grouping was tried from every place in the run."""
    answer = "12," * 100_000
    assert extract_answer(answer) == "12"
    assert numeric(answer, 12)


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("2,500e3", 2_500_000),
        ("The distance is 1,500e-3 km.", 1.5),
        ("12,34,567e1", 123_456_70),
    ],
)
def test_a_number_with_thousands_commas_and_an_exponent_is_one_number(answer, value):
    assert last_number(answer) == value
    assert numeric(answer, value)
    assert extract_answer(answer) == str(value).removesuffix(".0")


@pytest.mark.parametrize(
    ("answer", "value", "key"),
    [
        (r"$\frac{-1}{2}$", -0.5, "-0.5"),
        (r"\frac{1}{2}", 0.5, "0.5"),
        (r"-\dfrac{3}{4}", -0.75, "-0.75"),
        (r"So the probability is $\tfrac{1}{3}$.", 1 / 3, "1/3"),
        (r"The answer is $\dfrac{3}{4}$. Check: 2 + 2", 0.75, "0.75"),
        (r"The answer is $-\frac{1}{4}$.", -0.25, "-0.25"),
        (r"\frac { 6 } { 4 }", 1.5, "1.5"),
    ],
)
def test_a_latex_fraction_outside_a_box_reads_as_its_value(answer, value, key):
    """Unboxed, `\\frac{1}{2}` read as its denominator, 2; boxed, it was already 0.5."""
    assert numeric(answer, value)
    assert extract_answer(answer) == key


def test_a_latex_fraction_with_a_zero_denominator_or_letters_is_no_fraction():
    assert number_value(r"\frac{1}{0}") is None  # as "1/0" is
    assert last_number(r"\frac{x}{2}") == 2  # no fraction of integers: the last number
    assert last_number(r"\frac{1}{2} of the 8 slices") == 8  # the last number, as before
    assert last_number(r"x = \frac{3}{4}") == 0.75
    assert number_value(r"\frac{1}{2}") == Fraction(1, 2)


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("\uff14\uff12", 42),  # full-width digits
        ("\u0664\u0662", 42),  # Arabic-Indic digits
        ("The answer is \u0664\u0662.", 42),
        ("\u22125", -5),  # U+2212 minus sign
        ("1\u202f234", 1234),  # narrow no-break space between groups of three
        ("1\u00a0234\u00a0567", 1234567),  # no-break space
        ("1\u2009234", 1234),  # thin space
        ("It holds 25 m\u00b2", 25),  # a superscript is no digit: m² is a unit
    ],
)
def test_unicode_digits_signs_and_separators_read_alike_everywhere(answer, value):
    """Any Unicode decimal digit is its value; a no-break or thin space groups thousands."""
    assert last_number(answer) == value
    assert numeric(answer, value)
    assert extract_answer(answer) == str(value)
    assert gsm8k_final_number(f"Worked.\n#### {answer.removeprefix('The answer is ')}") in (
        value,
        None,  # "It holds 25 m²" is no GSM8K final line
    )


@pytest.mark.parametrize("written", ["\u22125", "1\u202f234", "\u0664\u0662", "\uff0d5"])
def test_the_gsm8k_target_reader_reads_unicode_numbers_as_the_scorer_does(written):
    """A U+2212 minus was a sign to the scorer but made the '#### N' line unreadable."""
    target = gsm8k_final_number(f"Worked.\n#### {written}")
    assert target is not None
    assert numeric(written, target)


@pytest.mark.parametrize(
    ("answer", "value"), [("1\u00a0234 5", 5), ("3\u00a04", 4), ("12\u00a03456", 3456)]
)
def test_a_no_break_space_groups_only_threes(answer, value):
    assert last_number(answer) == value


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("The answer is .5", 0.5),
        ("Answer: .75 of the cake", 0.75),
        ("The answer is -.5", -0.5),
        ("The answer is $.50.", 0.5),
        ("The answer is. 5", 5),
    ],
)
def test_a_stated_value_with_no_leading_zero_keeps_its_point(answer, value):
    """The punctuation skipped after "answer is" took the point: ".5" was stated as 5."""
    assert number_value(stated_number(answer) or "") == Fraction(str(value))
    assert numeric(answer, value)
    assert extract_answer(answer) == str(value)


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("The answer is...42", 42),
        ("And the answer is...42!", 42),
        ("answer is ...7 apples", 7),
        ("So the total is...42", 42),
        ("Steps 1...10", 10),
        ("Count 1..5", 5),
    ],
)
def test_a_point_that_ends_an_ellipsis_is_no_decimal_point(answer, value):
    """'The answer is...42' stated 0.42: the ellipsis' last dot read as a leading point."""
    assert numeric(answer, value)
    assert extract_answer(answer) == str(value)


@pytest.mark.parametrize(
    ("answer", "value", "key"),
    [
        ("\\boxed{\\frac12}", 0.5, "0.5"),
        ("\\boxed{-\\dfrac34}", -0.75, "-0.75"),
        ("\\boxed{\\frac{1}2}", 0.5, "0.5"),
        ("\\boxed{\\frac3{4}}", 0.75, "0.75"),
        ("So half: $\\tfrac12$.", 0.5, "0.5"),
        ("\\boxed{\\frac{-1}{2}}", -0.5, "-0.5"),
        ("\\boxed{-\\frac{-1}{2}}", 0.5, "0.5"),
    ],
)
def test_latexs_braceless_fraction_shorthand_is_its_value(answer, value, key):
    """LaTeX reads "\\frac12" as \\frac{1}{2}: it voted as "frac12" and scored as 12."""
    assert numeric(answer, value)
    assert extract_answer(answer) == key


def test_a_braceless_fraction_takes_one_digit_each_as_latex_does():
    assert last_number("\\frac123") == 3  # \frac{1}{2}3: the 3 is written after it
    assert number_value("\\frac12") == Fraction(1, 2)
    assert extract_answer("\\boxed{\\frac{x}2}") == "\\fracx2"  # no integers: as written


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("\\boxed{1\\,000}", 1000),
        ("The answer is $1\\,250$.", 1250),
        ("\\boxed{\\$1\\,250.50}", 1250.5),
        ("It costs $12\\,345\\,678$ in all.", 12345678),
    ],
)
def test_latexs_thin_space_groups_thousands_as_a_comma_does(answer, value):
    """Math-tuned models write 1\\,000: the box read as 0, "$1\\,250$" as 1."""
    assert numeric(answer, value)
    assert extract_answer(answer) == str(value)


def test_latexs_thin_space_groups_only_threes():
    assert last_number("3\\,4") == 4
    assert last_number("1\\,2345") == 2345


@pytest.mark.parametrize("seed", [-1, -5, 2**63])
def test_the_benchmark_and_moa_evals_runner_refuse_a_seed_in_the_same_words(bench, seed, tmp_path):
    """The eval seed's range was written three ways: the runner said "signed 64-bit range"
    for 2**63 (it takes 0 to 2**63-1) and the script had words of its own for each seed."""
    import argparse

    from langgraph_moa import MoAConfig
    from langgraph_moa.errors import MoAConfigError
    from langgraph_moa.eval import Evaluation
    from langgraph_moa.run._inputs import SEED_MAX
    from tests.fakes import FakeChat

    model = FakeChat(label="p", reply=lambda _messages: "4")
    config = MoAConfig(name="one", proposers=[{"model": model}], aggregator={"model": model})
    with pytest.raises(MoAConfigError) as runner_error:
        Evaluation([config], [], tmp_path, plots=False, seed=seed)
    with pytest.raises(argparse.ArgumentTypeError) as script_error:
        bench.call_seed(str(seed))
    said = str(runner_error.value)
    assert said == str(script_error.value)
    assert str(seed) in said and f"0 to {SEED_MAX}" in said and "\n" not in said, said
    assert ("-1" in said and "random" in said) == (seed < 0), said
