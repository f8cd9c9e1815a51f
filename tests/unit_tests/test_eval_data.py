"""Evaluation datasets and scorers, pinned on known inputs."""

import json
import re
from collections import Counter

import pytest

from langgraph_moa.errors import EvalDatasetError
from langgraph_moa.eval import EvalItem, load_dataset, score, shipped_dataset
from langgraph_moa.eval.scorers import (
    contains,
    exact,
    hedges,
    last_number,
    normalize,
    normalized,
    numeric,
    regex,
)
from langgraph_moa.text._selection import chosen_option, concluded_number, extract_answer

SHIPPED = load_dataset(shipped_dataset())
CATEGORIES = {
    "fact": "fact",
    "arithmetic": "arith",
    "unit-conversion": "unit",
    "reasoning": "reason",
    "multiple-choice": "mc",
}
# The first 22 items predate the categories: their ids stay as they were.
ORIGINAL_IDS = (
    [f"fact-{i:02d}" for i in range(1, 17)]
    + [f"num-0{i}" for i in range(1, 5)]
    + ["re-01", "re-02"]
)
# Answers for the two regex items, which hold a pattern instead of an expected answer.
FORMAT_ANSWERS = {"re-01": "s[::-1]", "re-02": "someone@example.com"}


def _number(value):
    return str(int(value)) if value.is_integer() else str(value)


def test_the_shipped_dataset_is_large_categorized_and_verifiable():
    items = SHIPPED
    assert len(items) >= 200 and all(item.verifiable for item in items)
    ids = [item.id for item in items]
    assert len(set(ids)) == len(ids)
    assert ids[:22] == ORIGINAL_IDS  # the original items are kept, in order
    assert items[0].turns == ["What is the capital of France?"] and items[0].expected == ["paris"]
    counts = Counter(item.category for item in items)
    assert set(counts) == {*CATEGORIES, "format"}  # format: the two original regex items
    assert all(counts[category] >= 25 for category in CATEGORIES), counts
    for item in items[22:]:
        assert item.id.startswith(CATEGORIES[item.category] + "-"), item.id


def _generator():
    """Import benchmarks/data/make_verifiable.py, which writes and checks the shipped file."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks" / "data" / "make_verifiable.py"
    spec = importlib.util.spec_from_file_location("make_verifiable", path)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    return generator


def test_the_shipped_file_is_what_its_generator_computes():
    """Every numeric answer in the file matches the generator's recomputation from the question."""
    generator = _generator()
    shipped = [
        json.loads(line) for line in shipped_dataset().read_text(encoding="utf-8").splitlines()
    ]
    assert shipped == generator.legacy() + generator.build()


def test_multiple_choice_items_list_four_options_and_spread_the_right_letter():
    choices = [item for item in SHIPPED if item.category == "multiple-choice"]
    for item in choices:
        assert all(f"\n{letter}) " in item.turns[0] for letter in "ABCD"), item.id
        assert item.expected[0] in "ABCD" and item.pattern
    letters = Counter(item.expected[0] for item in choices)
    assert set(letters) == set("ABCD") and min(letters.values()) >= len(choices) // 4 - 1


@pytest.mark.parametrize("item", SHIPPED, ids=lambda item: item.id)
def test_each_shipped_item_accepts_its_answer_and_refuses_a_wrong_one(item):
    if item.expected:
        right = item.expected
    elif item.numeric is not None:
        right = [_number(item.numeric), f"The answer is {_number(item.numeric)}."]
    else:
        right = [FORMAT_ANSWERS[item.id]]
    for answer in right:
        assert score(item, answer)["correct"], answer
    wrong = ["I do not know."]
    if item.numeric is not None:
        wrong.append(_number(item.numeric + 1))
    if item.category == "multiple-choice":
        wrong += [letter for letter in "ABCD" if letter != item.expected[0]]
        wrong.append(item.turns[0])  # echoing every option is no answer
    for answer in wrong:
        assert not score(item, answer).get("correct"), answer


@pytest.mark.parametrize(
    "item", [i for i in SHIPPED if i.category == "multiple-choice"], ids=lambda item: item.id
)
def test_a_worked_choice_answer_counts_by_its_conclusion(item):
    # Measured: Qwen walks through "A) ... D)" and ends with \boxed{C}; the echo rule alone
    # marked such answers wrong whatever they concluded.
    walked = "\n".join(f"{line}: considered." for line in item.turns[0].splitlines()[1:5])
    right = item.expected[0]
    assert score(item, f"{walked}\nTherefore, the correct answer is \\boxed{{{right}}}.")["correct"]
    for other in "ABCD".replace(right, ""):
        assert score(item, f"The answer is {right}. Option {other} is wrong.")["correct"], other
        assert not score(item, f"{walked}\nSo the answer is {other}.")["correct"], other
        changed_mind = f"The answer is {right}. Checking again, the correct answer is {other}."
        assert not score(item, changed_mind)["correct"], other


@pytest.mark.parametrize(
    "item", [i for i in SHIPPED if i.category == "multiple-choice"], ids=lambda item: item.id
)
def test_a_hedge_between_options_is_wrong_even_when_it_names_the_right_one(item):
    """`\\boxed{C, D}` and "The answer is C or D" were scored right on an item whose
    answer is C: a hedge picks no option, and wrong whichever option is right."""
    right = item.expected[0]
    other = "ABCD".replace(right, "")[0]
    first, second = sorted([right, other])
    for hedge in (
        f"\\boxed{{{right}, {other}}}",
        f"\\boxed{{{other}, {right}}}",
        f"\\boxed{{\\text{{{right} or {other}}}}}",
        f"The answer is {right} or {other}.",
        f"The answer is {other} or {right}.",
        f"Answer: {first}/{second}",
        f"The correct answer is ({right}) and ({other})",
        f"{right} or {other}",
        f"{right}, {other}",
    ):
        assert not score(item, hedge)["correct"], hedge
    # Naming another option is no hedge; a conclusion after the hedge commits.
    for answer in (
        f"The answer is {right}, not {other}.",
        f"The answer is {right}. {other} is wrong.",
        f"The answer is {right} or {other}. On reflection, the answer is {right}.",
        f"\\boxed{{{right}}}",
    ):
        assert score(item, answer)["correct"], answer
    # An item without a pattern (expected letter or text) refuses the hedge too.
    plain = EvalItem(id="p", turns=item.turns, expected=item.expected)
    assert score(plain, item.expected[1])["correct"]
    assert not score(plain, f"\\boxed{{{right}, {other}}} {item.expected[1]}")["correct"]


@pytest.mark.parametrize(
    "item", [i for i in SHIPPED if i.category == "multiple-choice"], ids=lambda item: item.id
)
def test_a_right_answer_whose_next_clause_is_about_another_option_is_no_hedge(item):
    """ "The answer is C, D does not fit." was scored wrong as a hedge between C and D: a
    comma, semicolon or "and" after the stated letter began a clause about another option,
    which the vote's reader (and the item's pattern) read as the answer C."""
    right = item.expected[0]
    other = "ABCD".replace(right, "")[0]
    for answer in (
        f"The answer is {right}, {other} does not fit the data.",
        f"The answer is {right}; {other} would need more energy.",
        f"Answer: {right}, {other} being too small.",
        # The vote read these three as "c and d fails test" and the like, while the scorer
        # said C.
        f"The answer is {right}, and {other} fails the test.",
        f"The answer is {right} and {other} is wrong.",
        f"The answer is {right}, and the others are wrong.",
    ):
        assert extract_answer(answer) == right, answer
        assert score(item, answer)["correct"], answer
    # A list that ends there, or any "or", still hedges.
    for hedge in (
        f"The answer is {right}, {other}.",
        f"The answer is {right} and {other}",
        f"The answer is {right} or {other} depending on the units.",
    ):
        assert not score(item, hedge)["correct"], hedge


def test_a_stated_hedge_votes_for_no_option_as_the_scorer_refuses_it():
    """ "The answer is C, D." and "The answer is (C) or (D)" voted as C, the first option
    named, while the scorer refused them as hedges: samples that hedged joined C's group."""
    for hedge in (
        "The answer is C, D.",
        "The answer is (C) or (D)",
        "Answer: C, D\nbecause",
        "(C) or (D)",
        "C) and D)",
    ):
        assert hedges(hedge), hedge
        assert extract_answer(hedge) not in list("ABCDEFGH"), hedge
    for answer in ("The answer is C, D does not fit.", "The answer is C. D is wrong."):
        assert not hedges(answer), answer
        assert extract_answer(answer) == "C", answer


@pytest.mark.parametrize(
    "item", [i for i in SHIPPED if i.category == "multiple-choice"], ids=lambda item: item.id
)
def test_a_hedge_in_common_words_is_a_hedge(item):
    """ "The answer is either C or D.", "C (or D)", "Option C or Option D" and "C or possibly
    D" were no hedge, so they scored right on an item whose answer is C: the list of
    options took no "either", no "option" before a later letter, no parenthesised "(or D)"
    and no adverb after "or"."""
    right = item.expected[0]
    other = "ABCD".replace(right, "")[0]
    for hedge in (
        f"The answer is either {right} or {other}.",
        f"The answer is {right} (or {other}).",
        f"The answer is: Option {right} or Option {other}",
        f"Answer: {right} or possibly {other}",
        f"The answer is {right} or maybe {other}",
        f"The answer is {right}, or perhaps {other}.",
        f"Final answer: {right} (or {other})",
        f"Either {right} or {other}",
    ):
        assert hedges(hedge), hedge
        assert not score(item, hedge)["correct"], hedge
        assert extract_answer(hedge) not in list("ABCDEFGH"), hedge
    for answer in (
        f"The answer is {right}, not {other}.",
        f"The answer is {right}. {other} is wrong.",
        f"The answer is {right} (not {other}, or any other).",
    ):
        assert not hedges(answer), answer
        assert score(item, answer)["correct"], answer
    assert not hedges("The answer is C (not A, B or D).")
    assert not hedges("The answer is either way C.")


def test_a_hedge_in_full_width_letters_is_a_hedge():
    """The item's pattern and the vote read full-width letters as ASCII ("\uff23" is C), so
    "The answer is \uff23 or \uff24" scored right on an item whose answer is C."""
    item = next(i for i in SHIPPED if i.category == "multiple-choice" and i.expected[0] == "C")
    for hedge in ("The answer is \uff23 or \uff24.", "\\boxed{\uff23, \uff24}"):
        assert hedges(hedge), hedge
        assert not score(item, hedge)["correct"], hedge
    assert score(item, "The answer is \uff23.")["correct"]


def test_jsonl_mt_bench_and_alpaca_formats(tmp_path):
    (tmp_path / "d.jsonl").write_text(
        json.dumps({"question": "2+2?", "expected": "4"})
        + "\n\n"
        + json.dumps(
            {
                "question_id": 81,
                "category": "writing",
                "turns": ["Write a haiku.", "Now in French."],
            }
        )
        + "\n"
    )
    plain, mt = load_dataset(tmp_path / "d.jsonl")
    assert (plain.id, plain.turns, plain.expected) == ("1", ["2+2?"], ["4"])
    assert (mt.id, mt.turns, mt.category) == ("81", ["Write a haiku.", "Now in French."], "writing")
    (tmp_path / "a.json").write_text(
        json.dumps([{"instruction": "Say hi", "output": "hi", "dataset": "helpful_base"}])
    )
    [alpaca] = load_dataset(tmp_path / "a.json")
    assert (alpaca.turns, alpaca.reference, alpaca.category) == (["Say hi"], "hi", "helpful_base")


@pytest.mark.parametrize("suffix", [".JSON", ".Jsonl", ".NDJSON"])
def test_a_dataset_whose_suffix_is_in_capitals_is_read_by_it(tmp_path, suffix):
    # A config or price file named moa.JSON is JSON; a dataset named data.JSON was refused
    # as of an "unknown dataset format '.JSON'; use ... .json".
    item = {"instruction": "Say hi", "output": "hi"}
    text = json.dumps([item]) if suffix.lower() == ".json" else json.dumps(item) + "\n"
    (tmp_path / f"data{suffix}").write_text(text)
    [read] = load_dataset(tmp_path / f"data{suffix}")
    assert read.turns == ["Say hi"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty.jsonl", "", "the file is empty"),
        ("blank.jsonl", "\n\n", "the file is empty"),
        ("bad.jsonl", '{"instruction": "ok"}\n{"instruction": \n', "bad.jsonl:2: not valid JSON"),
        (
            "noinst.jsonl",
            '{"instruction": "ok"}\n{"expected": "x"}\n',
            "noinst.jsonl:2: missing field 'instruction'",
        ),
        (
            "type.jsonl",
            '{"instruction": 5}\n',
            "type.jsonl:1: 'instruction' has the wrong type (the number 5): it must be a string",
        ),
        ("qlist.jsonl", '{"question": ["a"]}\n', "'question' has the wrong type (a list)"),
        ("blankq.jsonl", '{"prompt": "  "}\n', "blankq.jsonl:1: 'prompt' is empty"),
        ("pat.jsonl", '{"instruction": "q", "pattern": 5}\n', "'pattern' has the wrong type"),
        ("list.jsonl", '["a"]\n', "list.jsonl:1: each line must be a JSON object"),
        ("turns.jsonl", '{"turns": []}\n', "turns.jsonl:1: 'turns' must be a non-empty list"),
        (
            "num.jsonl",
            '{"instruction": "q", "numeric": "five"}\n',
            "num.jsonl:1: 'numeric' must be a number",
        ),
        (
            "re.jsonl",
            '{"instruction": "q", "pattern": "("}\n',
            "re.jsonl:1: 'pattern' is not a valid regex",
        ),
        (
            "dup.jsonl",
            '{"id": "a", "instruction": "q"}\n{"id": "a", "instruction": "r"}\n',
            "duplicate ids ['a']",
        ),
        ("a.json", '{"instruction": "x"}', "non-empty JSON list"),
        ("b.json", '[{"output": "x"}]', "item 0: needs an 'instruction'"),
        ("data.csv", "a,b\n", "unknown dataset format '.csv'"),
    ],
)
def test_bad_datasets_name_the_line_and_the_fix(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(EvalDatasetError) as err:
        load_dataset(tmp_path / name)
    assert message in str(err.value)


def test_a_non_utf8_dataset_names_the_file_the_line_and_the_fix(tmp_path):
    data = tmp_path / "latin1.jsonl"
    data.write_bytes(b'{"instruction": "ok?"}\n{"instruction": "caf\xe9?"}\n')
    with pytest.raises(EvalDatasetError) as err:
        load_dataset(data)
    assert str(err.value) == (
        f"{data}:2: the file is not UTF-8 (byte 0xe9); save it as UTF-8 (e.g. iconv -f latin1 "
        "-t utf-8) and run again."
    )


@pytest.mark.parametrize(
    "encoding", ["utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom", "utf-32", "utf-32-be-bom"]
)
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_dataset_saved_with_a_byte_order_mark_is_read(tmp_path, encoding, suffix):
    # Windows editors save "UTF-8" with a byte-order mark, or "Unicode" as UTF-16: the
    # first line was refused as "not valid JSON (Unexpected UTF-8 BOM ...)", and UTF-16 as
    # "not UTF-8 (byte 0xff); ... iconv -f latin1", a fix that garbles the file.
    items = [{"instruction": "Что такое 東京? 👩‍👩‍👧", "output": "café"}]
    text = json.dumps(items, ensure_ascii=False)
    if suffix == ".jsonl":
        text = text[1:-1] + "\n"
    bom, codec = {
        "utf-8-sig": (b"", "utf-8-sig"),
        "utf-16": (b"", "utf-16"),
        "utf-16-le-bom": (b"\xff\xfe", "utf-16-le"),
        "utf-16-be-bom": (b"\xfe\xff", "utf-16-be"),
        # UTF-32's little-endian mark starts as UTF-16's does (FF FE, then 00 00): it was
        # read as UTF-16, a NUL after each character, "not valid JSON (Expecting value)".
        "utf-32": (b"", "utf-32"),
        "utf-32-be-bom": (b"\x00\x00\xfe\xff", "utf-32-be"),
    }[encoding]
    data = tmp_path / "données" / f"数据{suffix}"
    data.parent.mkdir()
    data.write_bytes(bom + text.encode(codec))
    (item,) = load_dataset(data)
    assert item.turns == ["Что такое 東京? 👩‍👩‍👧"]


def test_a_dataset_with_a_utf16_mark_but_broken_utf16_is_one_sentence(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"\xff\xfe" + '{"instruction": "x"}'.encode("utf-16-le") + b"\x00\xd8")
    with pytest.raises(EvalDatasetError) as err:
        load_dataset(data)
    assert str(err.value) == (
        f"{data}: the file starts with a UTF-16 byte-order mark but is not UTF-16 throughout; "
        "save it as UTF-8 and run again."
    )


def test_an_unreadable_dataset_is_one_sentence(tmp_path, monkeypatch):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "x"}\n')

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(data), "read_bytes", refuse)
    with pytest.raises(
        EvalDatasetError, match=r"cannot read the file \(Permission denied\); check"
    ):
        load_dataset(data)


def test_missing_file():
    with pytest.raises(EvalDatasetError, match="does not exist"):
        load_dataset("/nonexistent.jsonl")


def test_scorers_on_known_inputs():
    assert normalize("The  Capital, is PARIS!") == "capital is paris"
    assert exact(" Paris ", ["Paris"]) and not exact("paris", ["Paris"])
    assert normalized("The answer: Paris.", ["answer paris"])
    assert contains("I think it's Paris, France.", ["paris"]) and not contains(
        "Parisian food", ["paris"]
    )
    assert contains("It is carbon dioxide.", ["carbon dioxide", "co2"])
    # A unit sign glued to the number is not part of the word (measured: "32°F" was scored
    # wrong for the freezing point, 32); ASCII punctuation is still dropped inside words.
    assert contains("The freezing point is 32°F.", ["32"]) and contains("It costs €5.", ["5"])
    assert normalize("U.S. 2\u00d73") == "us 2 3" and not contains("320°F", ["32"])
    assert last_number("First 12, then 1,250.5 apples") == 1250.5 and last_number("none") is None
    # A stated result beats a number restated after it (measured: "\boxed{12} days to read
    # the 300-page book" was scored as 300).
    assert numeric("So it takes \\(\\boxed{12}\\) days to read the 300-page book.", 12)
    assert not numeric("\\boxed{12} days, no: \\boxed{13}", 12)
    assert numeric("So 7 pens cost 21 dollars.", 21) and not numeric("21 or maybe 22", 21)
    assert numeric("-3.0", -3) and not numeric("no number", 3)
    assert regex("Use s[::-1] to reverse.", r"s\s*\[\s*::\s*-1\s*\]") and not regex(
        "reverse it", r"\[::-1\]"
    )


def test_score_picks_the_decisive_scorer():
    items = {i.id: i for i in load_dataset(shipped_dataset())}
    assert score(items["fact-01"], "The capital of France is Paris.") == {
        "exact": False,
        "normalized": False,
        "contains": True,
        "correct": True,
    }
    assert score(items["num-01"], "7 pens at 3 dollars: 21 dollars.")["correct"]
    assert not score(items["num-01"], "They cost 20.")["correct"]
    assert score(items["re-02"], "Try ada@example.org")["correct"]


class _LangSmithStub:
    """Stands in for langsmith.Client.list_examples (the only call the loader makes)."""

    def __init__(self, examples):
        self.examples, self.asked = examples, []

    def list_examples(self, dataset_name, limit=None):
        self.asked.append((dataset_name, limit))
        return iter(self.examples[:limit])


def _example(inputs, outputs=None, id="e1"):
    from types import SimpleNamespace

    return SimpleNamespace(id=id, inputs=inputs, outputs=outputs, metadata={"category": "facts"})


def test_langsmith_examples_become_items():
    from langgraph_moa.eval.langsmith_eval import load_langsmith_dataset

    stub = _LangSmithStub(
        [
            _example({"question": "Capital of France?"}, {"answer": "Paris"}, id="a"),
            _example(
                {
                    "messages": [
                        {"role": "system", "content": "be brief"},
                        {"role": "user", "content": "2+2?"},
                    ]
                },
                {"numeric": 4},
                id="b",
            ),
            _example({"prompt": "Write a haiku."}, None, id="c"),
        ]
    )
    items = load_langsmith_dataset("my-set", client=stub, limit=3)
    assert stub.asked == [("my-set", 3)]
    assert [(i.id, i.turns, i.expected, i.numeric, i.category) for i in items] == [
        ("a", ["Capital of France?"], ["Paris"], None, "facts"),
        ("b", ["2+2?"], [], 4.0, "facts"),
        ("c", ["Write a haiku."], [], None, "facts"),
    ]
    assert items[0].verifiable and items[1].verifiable and not items[2].verifiable


def test_a_langsmith_gsm8k_answer_is_scored_by_its_final_number_as_in_a_jsonl_file():
    """GSM8K kept in LangSmith ({"answer": "...#### 18"}) was scored against the whole worked
    solution as text, so every right answer counted wrong."""
    from langgraph_moa.eval.langsmith_eval import item_from_example

    solution = "She sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18 a day.\n#### 18"
    item = item_from_example(_example({"question": "How much?"}, {"answer": solution}, id="g"))
    assert (item.numeric, item.expected, item.reference) == (18.0, [], solution)
    assert score(item, "9 eggs at $2 each: the answer is 18.")["correct"]
    assert not score(item, "The answer is 9.")["correct"]
    # A plain answer that is no worked solution stays an expected text.
    plain = item_from_example(_example({"question": "Capital?"}, {"answer": "Paris"}, id="p"))
    assert (plain.numeric, plain.expected) == (None, ["Paris"])


def test_bad_langsmith_examples_name_the_example_and_the_fix():
    from langgraph_moa.eval.langsmith_eval import item_from_example, load_langsmith_dataset

    with pytest.raises(
        EvalDatasetError, match=r"LangSmith example x1: inputs need one of instruction"
    ):
        item_from_example(_example({"text": "hi"}, id="x1"))
    with pytest.raises(EvalDatasetError, match="must be a string or a list"):
        item_from_example(_example({"question": "q"}, {"expected": 4}, id="x2"))
    with pytest.raises(EvalDatasetError, match="holds no examples"):
        load_langsmith_dataset("empty", client=_LangSmithStub([]))


def test_a_langsmith_gsm8k_solution_under_output_is_scored_by_its_final_number():
    """A solution kept under 'output' (not 'answer') was scored as free text: always wrong."""
    from langgraph_moa.eval.langsmith_eval import item_from_example

    solution = "She sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18 a day.\n#### 18"
    item = item_from_example(_example({"question": "How much?"}, {"output": solution}, id="o"))
    assert (item.numeric, item.expected, item.reference) == (18.0, [], solution)
    assert score(item, "So she makes $18 a day. The answer is 18.")["correct"]
    assert not score(item, "The answer is 9.")["correct"]
    plain = item_from_example(_example({"question": "Capital?"}, {"output": "Paris"}, id="p"))
    assert (plain.numeric, plain.expected) == (None, ["Paris"])


@pytest.mark.parametrize("field", ["answer", "output"])
def test_a_langsmith_solution_whose_final_line_is_no_number_names_the_fix(field):
    from langgraph_moa.eval.langsmith_eval import item_from_example

    solution = "She sells 9 eggs.\n#### eighteen"
    with pytest.raises(
        EvalDatasetError,
        match=rf"LangSmith example s: '{field}' ends like a GSM8K solution.*'#### N'",
    ):
        item_from_example(_example({"question": "How much?"}, {field: solution}, id="s"))


EACH_CHOICE_ITEM = pytest.mark.parametrize(
    "item", [i for i in SHIPPED if i.category == "multiple-choice"], ids=lambda item: item.id
)


def _right_and_other(item):
    """The item's right option letter, and another one."""
    return item.expected[0], "ABCD".replace(item.expected[0], "")[0]


def _option_texts(item):
    """The item's options, letter to text, as its instruction lists them ("C) Ankara")."""
    return dict(re.findall(r"(?m)^([A-H])\) (.+)$", item.turns[0]))


@EACH_CHOICE_ITEM
def test_the_vote_and_the_scorer_read_one_option_from_an_answer(item):
    """The vote and the scorer read the option an answer picks through one function
    (`chosen_option`): "The answer is C, not D" voted as the text "c not d" while the scorer
    said C, and "the answer is c" voted as the text "c" while the scorer said wrong."""
    right, other = _right_and_other(item)
    answers = (
        f"The answer is {right}, not {other}.",
        f"The answer is {right}, not {other}",
        f"Answer: {right} (not {other})",
        f"the answer is {right.lower()}",
        f"The answer is {right.lower()}.",
        f"Answer: ({right.lower()})",
    )
    read = {a: (chosen_option(a), extract_answer(a), score(item, a)["correct"]) for a in answers}
    assert read == dict.fromkeys(answers, (right, right, True))
    assert not score(item, f"the answer is {other.lower()}")["correct"]
    # The options echoed, with no conclusion, pick none (the vote read the first label).
    echoed = "\n".join(item.turns[0].splitlines()[1:5])
    assert chosen_option(echoed) is None
    assert not score(item, echoed)["correct"]


def test_every_shipped_item_passes_its_generators_check():
    """The generator's own check (each item's answer right in its forms, wrong answers
    wrong) ran only when the file was written: a scorer change could break it unseen."""
    _generator().check(shipped_dataset())


@EACH_CHOICE_ITEM
def test_a_hedge_split_by_other_words_or_between_option_texts_is_a_hedge(item):
    """ "C or quite possibly D" (words between "or" and the letter beyond the listed
    adverbs) and "Ankara or Istanbul" (two options' texts) scored right on an item whose
    answer is C."""
    right, other = _right_and_other(item)
    split = (
        f"The answer is {right}, or quite possibly {other}.",
        f"The answer is {right} or, less likely, {other}.",
        f"The answer is {right} or maybe even {other}",
        f"The answer is {right}, though it could possibly be {other}.",
    )
    read = {
        h: (
            hedges(h),
            chosen_option(h),
            extract_answer(h) in tuple("ABCDEFGH"),
            score(item, h)["correct"],
        )
        for h in split
    }
    assert read == dict.fromkeys(split, (True, None, False, False))
    texts = _option_texts(item)
    graded = {
        f"The answer is {texts[right]} or {texts[other]}.": False,
        f"{texts[other]} or possibly {texts[right]}": False,
        f"Either {texts[right]}, or {texts[other]}": False,
        f"The answer is {right} or, put another way, {texts[right]}.": True,
        f"{texts[right]}, not {texts[other]} or any other.": True,
        texts[right]: True,
    }
    assert {answer: score(item, answer)["correct"] for answer in graded} == graded


def test_an_or_or_maybe_whose_sentence_ends_before_another_option_is_no_hedge():
    """ "C. Or maybe not. A careful check ..." read the article "A" of the next sentence as
    the option "or" offered: a hedge between C and A, so a stated C picked none; so did
    "C, but maybe not. A careful check ..." with the option "maybe" offered."""
    firm = (
        "The answer is C. Or maybe not. A careful check confirms it.",
        "The answer is C. Or is it? A second look says yes.",
        "The answer is C. Or not! A trap, but C holds.",
        "The answer is C, but maybe not. A careful check confirms it.",
        "The answer is C, though perhaps not! A second look says C.",
        "The answer is C, but it could be. A trap? No: C.",
    )
    assert {a: (hedges(a), chosen_option(a)) for a in firm} == dict.fromkeys(firm, (False, "C"))
    still = (
        "The answer is C. Or maybe D.",
        "The answer is C. Or D, if the question means speed.",
        "The answer is C. Or, less likely, D.",
        "The answer is C, or quite possibly D.",
        "The answer is C (or D).",
        "The answer is C or... D",
        "The answer is C or... maybe D.",
        "The answer is C, but maybe D.",
        "The answer is C, though it might be D.",
        "The answer is C, but maybe... D",
    )
    assert {a: (hedges(a), chosen_option(a)) for a in still} == dict.fromkeys(still, (True, None))


@EACH_CHOICE_ITEM
def test_an_option_offered_or_not_or_beside_another_right_one_picks_none(item):
    """ "The answer is C or maybe not." scored right on C (a hedge in one sentence), and
    "The answer is C, but D is also correct." read C (two answers: no single option)."""
    right, other = _right_and_other(item)
    doubts = ("or maybe not.", ", or not.", "or perhaps not", ", but {o} is also correct.")
    doubts += (", though {o} would also be right.", ", and {o} also works.")
    # With a semicolon, or a CJK comma before a Chinese or Japanese "or", no word joins the
    # two: they scored right on C.
    doubts += ("; {o} is also correct.", "\uff0c或 {o}", "\u3001还是{o}\uff1f", "\u3001または{o}")
    hedged = [
        f"The answer is {right} {d.format(o=other)}".replace(" ,", ",").replace(" ;", ";")
        for d in doubts
    ]
    read = {h: (hedges(h), chosen_option(h), score(item, h)["correct"]) for h in hedged}
    assert read == dict.fromkeys(hedged, (True, None, False))
    # A hedge that a later conclusion settles picks that conclusion, never the hedged one.
    settled = f"{other} or not; the answer is {right}."
    assert (chosen_option(settled), score(item, settled)["correct"]) == (right, True)
    for loose in (
        f"{other} or not; {right} is the answer",
        f"{other}, but {right} is also correct",
    ):
        assert chosen_option(loose) in (None, right)
        assert not score(item, loose)["correct"] or chosen_option(loose) == right
    # A remark on another option that is not "also right" still states the right one.
    firm = f"The answer is {right}, but {other} is wrong."
    assert (chosen_option(firm), score(item, firm)["correct"]) == (right, True)


@pytest.mark.parametrize("extractor", ["auto", "choice-letter"])
@pytest.mark.parametrize("answer", ["e.g. D", "E.g. D is one", "e.g., D", "i.e. C"])
def test_an_example_is_no_option(answer, extractor):
    """ "e.g. D" read as the option E by the choice-letter extractor: "e." was a label."""
    assert extract_answer(answer, extractor) not in tuple("ABCDEFGH")
    assert chosen_option(answer) is None


@EACH_CHOICE_ITEM
def test_a_lower_case_option_reads_where_a_capital_one_concludes(item):
    """ "the answer is c because ..." voted as text: a lower-case letter read only at the end
    of its line, while a capital one ends before "because", "not", a new sentence."""
    right, other = _right_and_other(item)
    low = right.lower()
    firm = (
        f"the answer is {low} because the others do not fit",
        f"the answer is {low}, since the others do not fit",
        f"the answer is {low}, not {other.lower()}",
        f"The answer is {low}. The others do not fit.",
    )
    read = {a: (chosen_option(a), score(item, a)["correct"]) for a in firm}
    assert read == dict.fromkeys(firm, (right, True))
    # "a" as an article, or a letter that a word runs on from, names no option.
    for article in (
        "the answer is a bit subtle",
        "The answer is a mammal, not a fish.",
        "the answer is a good one because it fits",
        "the answer is c and d",
        # An article before "not", "yet" or "though" read as the option A; the first one
        # voted A and no longer concluded its number.
        "The answer is a not-so-simple number: 42",
        "the answer is a not so obvious one",
        "the answer is a yet unknown quantity",
        "the answer is a though rather odd one",
    ):
        assert chosen_option(article) is None
    assert concluded_number("The answer is a not-so-simple number: 42") == 42


@EACH_CHOICE_ITEM
def test_a_remark_on_another_option_after_a_stated_one_is_no_hedge(item):
    """ "C, though many might pick D" states C with a remark on a distractor: the modal
    alone was read as a hedge, so a firm right answer scored wrong and voted as text. The
    answer settled after its options were weighed is no hedge either ("Shark or Dolphin?
    The answer is Dolphin."), as "C or D? The answer is C." is none."""
    right, other = _right_and_other(item)
    firm = (
        f"The answer is {right}, though many might pick {other}.",
        f"The answer is {right}, but a student might choose {other} by mistake.",
        f"The answer is {right}; though one could think {other} at first, it is not.",
    )
    read = {a: (hedges(a), chosen_option(a), score(item, a)["correct"]) for a in firm}
    assert read == dict.fromkeys(firm, (False, right, True))
    still = (
        f"The answer is {right}, but it might be {other}.",
        f"The answer is {right}, though perhaps {other}.",
        f"The answer is {right}, though it could well be {other}.",
    )
    assert {h: hedges(h) for h in still} == dict.fromkeys(still, True)
    texts = _option_texts(item)
    graded = {
        f"{texts[other]} or {texts[right]}? The answer is {texts[right]}.": True,
        f"{texts[other]} or {texts[right]}? The answer is {texts[other]} or {texts[right]}.": False,
        f"{texts[other]} or {texts[right]}": False,
    }
    assert {answer: score(item, answer)["correct"] for answer in graded} == graded


def test_an_items_options_are_read_once_however_often_it_is_scored(monkeypatch):
    """Each score of an answer that names an option's text read the item's option lines
    and compiled a pattern of them again: a run scores the same item once per system and
    sample, and a rescore every row."""
    import dataclasses

    from langgraph_moa.eval import scorers

    reads = []
    option_line = scorers._OPTION_LINE

    class Counted:
        def findall(self, text):
            reads.append(text)
            return option_line.findall(text)

    item = next(i for i in SHIPPED if i.category == "multiple-choice")
    item = dataclasses.replace(item, turns=[item.turns[0] + "\n(read once)"])  # not yet read
    right = _option_texts(item)[item.expected[0]]
    monkeypatch.setattr(scorers, "_OPTION_LINE", Counted())
    assert [score(item, right)["correct"] for _ in range(3)] == [True] * 3
    assert len(reads) == 1
