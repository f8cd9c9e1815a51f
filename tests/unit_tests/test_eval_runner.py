"""`Evaluation` end to end on fake models: per-layer curves, similarity, judge, prices, plots."""

import asyncio
import json
import re

import pytest

from langgraph_moa import MoAConfig
from langgraph_moa.errors import MoAConfigError, MoAError
from langgraph_moa.eval import EvalItem, Evaluation, runner
from langgraph_moa.eval.runner import _RowStore, config_digest
from langgraph_moa.providers._models import OpenAIEndpoint
from tests.fakes import FakeChat
from tests.helpers import is_closed, opened_connections

ITEMS = [
    EvalItem(id=str(i), turns=[f"Say the code word alpha{i}."], expected=[f"alpha{i}"])
    for i in range(6)
]


def code_word(messages):
    return re.search(
        r"alpha\d", messages[0].text if len(messages) == 1 else messages[-1].text
    ).group(0)


def first_code_word(_label, _n, messages):
    return re.findall(r"alpha\d", "\n".join(m.text for m in messages))[0]


@pytest.fixture
def mix():
    """One proposer always right, one always wrong, an aggregator that keeps the right one."""
    right = FakeChat(
        label="right", reply=lambda _l, _n, m: f"The code word is {first_code_word(_l, _n, m)}."
    )
    wrong = FakeChat(
        label="wrong", reply=lambda *_: "I do not know any code words, sorry about that."
    )
    aggregator = FakeChat(
        label="agg", reply=lambda _l, _n, m: f"The code word is {first_code_word(_l, _n, m)}."
    )
    return MoAConfig(name="mix", proposers=[right, wrong], aggregator=aggregator, layers=2)


@pytest.fixture
def lone():
    """A baseline wrong on every item: one proposer that has no idea, aggregated as such."""
    return MoAConfig(
        name="wrong-alone",
        variant="single-proposer",
        proposers=[FakeChat(label="wrong2", reply=lambda *_: "No idea.")],
        aggregator=FakeChat(label="agg2", reply=lambda *_: "No idea at all."),
    )


def test_layers_similarity_judge_prices_and_plots(mix, lone, tmp_path):
    judge = FakeChat(label="judge", reply=lambda *_: "A")  # always the first position
    prices = {"right": (1.0, 2.0), "wrong": (1.0, 2.0)}  # 'agg' is missing: unpriced
    evaluation = Evaluation(
        [mix, lone], ITEMS, tmp_path, judge=judge, baseline="wrong-alone", prices=prices
    )
    summary = asyncio.run(evaluation.run(progress=False))

    mixed = summary["mix"]
    assert mixed["correct"] == 6 and summary["wrong-alone"]["correct"] == 0
    # Figure 4a: half the proposals were right, the best one always, the final answer always.
    assert mixed["layer_curve"] == {
        "1": {"mean": 0.5, "best": 1.0, "items": 6},
        "final": {"mean": 1.0, "best": 1.0, "items": 6},
    }
    # Figure 4b: the final answer is closest to the right proposal on every metric.
    for metric in ("bleu", "tfidf_cosine", "levenshtein"):
        assert mixed["similarity"][metric]["spearman"] > 0.8
        assert mixed["similarity"][metric]["pairs"] == 12
    # A judge that always says "A" is cancelled by asking both orders.
    win = mixed["win_rate"]
    assert win["rate"] == 50.0 and win["ci95"] == [50.0, 50.0] and win["judge"] == "judge"
    assert win["length_controlled"]["rate"] == pytest.approx(50.0, abs=0.5)
    # ... and the report says the judge cannot be trusted: never the same winner twice.
    assert win["consistent"] == 0 and win["first_position"] == 1.0 and win["unreadable"] == 0
    assert "judge_error" not in mixed  # a judge that answers is no failure
    # Dollars: priced calls only; the aggregator's calls are counted as unpriced.
    rows = [
        json.loads(line) for line in (tmp_path / "results" / "mix.jsonl").read_text().splitlines()
    ]
    priced = [c for r in rows for c in r["trace"] if c["model"] in prices]
    expected = sum(c["prompt_tokens"] * 1.0 + c["completion_tokens"] * 2.0 for c in priced) / 1e6
    assert mixed["dollars"] == pytest.approx(expected, abs=1e-6) and mixed["unpriced_calls"] == 6

    report = (tmp_path / "report.md").read_text()
    assert "| mix | layer 1 | 0.5 | 1.0 | 6 |" in report
    assert "| mix | 50.0 | 50.0 - 50.0 | 50.0 ± 0.0 | 6 | 0/6 | 100% |" in report
    assert "**The judge is not reliable here**" in report
    # The lone model is cheaper, the mix better: both are on the front, cheapest first.
    assert (
        "Pareto-optimal (no system is both cheaper and better): **wrong-alone**, **mix**" in report
    )
    for png in ("quality_vs_cost.png", "quality_per_layer.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_an_interrupted_run_resumes_from_the_cache(mix, tmp_path):
    log = mix.proposers[0].model.log
    asyncio.run(Evaluation([mix], ITEMS[:3], tmp_path, plots=False).run(progress=False))
    done = len(log.calls)
    summary = asyncio.run(Evaluation([mix], ITEMS, tmp_path, plots=False).run(progress=False))
    assert summary["mix"]["cached_calls"] == 3 * 3  # the first three items cost nothing again
    assert done == 3 and len(log.calls) - done == 3  # asked again for the new items only


def test_system_names_must_be_distinct(mix, tmp_path):
    with pytest.raises(MoAConfigError, match="distinct names"):
        Evaluation([mix, mix], ITEMS, tmp_path)


def test_an_evaluation_refused_at_its_creation_closes_the_cache_it_opened(
    mix, tmp_path, monkeypatch
):
    # The caller gets an exception, not an object to close: left open, the connection was
    # only closed by garbage collection (on Python 3.13, "ResourceWarning: unclosed database").
    opened, closed = [], []

    class Recorded(runner.SQLiteCallCache):
        def __init__(self, path):
            super().__init__(path)
            opened.append(self)

        def close(self):
            closed.append(self)
            super().close()

    monkeypatch.setattr(runner, "SQLiteCallCache", Recorded)
    with pytest.raises(MoAConfigError, match="distinct names"):
        Evaluation([mix, mix], ITEMS, tmp_path)
    assert len(opened) == 1 and closed == opened


def test_an_evaluation_used_with_with_closes_its_cache_when_the_block_ends(
    mix, tmp_path, monkeypatch
):
    # An evaluation had no close: the docs' example and the benchmarks left its cache open,
    # closed only by garbage collection (on Python 3.13, "ResourceWarning: unclosed database").
    opened = opened_connections(monkeypatch)
    with Evaluation([mix], ITEMS[:1], tmp_path, plots=False) as evaluation:
        summary = asyncio.run(evaluation.run(progress=False))
        assert not is_closed(opened[0])  # open while the block runs
    assert summary["mix"]["correct"] == 1
    assert len(opened) == 1 and is_closed(opened[0])


def test_an_evaluation_closes_its_cache_when_its_block_raises_and_when_closed_twice(
    mix, tmp_path, monkeypatch
):
    opened = opened_connections(monkeypatch)
    with pytest.raises(KeyboardInterrupt), Evaluation([mix], ITEMS[:1], tmp_path) as evaluation:
        raise KeyboardInterrupt
    assert len(opened) == 1 and is_closed(opened[0])
    evaluation.close()  # a second close, as a caller's finally may make, does nothing more
    assert is_closed(opened[0])


def test_an_evaluation_run_after_close_is_refused_in_one_sentence(mix, tmp_path):
    # close() says the evaluation runs no more after, but a run after it (a notebook cell run
    # again after its with block) made every call afresh and stored none: paid for again on
    # every rerun, without a word.
    with Evaluation([mix], ITEMS[:1], tmp_path, plots=False) as evaluation:
        pass
    with pytest.raises(MoAConfigError, match="is closed") as info:
        asyncio.run(evaluation.run(progress=False))
    assert "\n" not in str(info.value) and str(tmp_path / "calls.db") in str(info.value)
    assert not mix.proposers[0].model.log.calls


@pytest.mark.parametrize("cache_dir", ["given", None], ids=["own folder", "temporary"])
@pytest.mark.parametrize("fails", [False, True], ids=["answers", "raises"])
def test_a_langsmith_experiment_closes_the_call_cache_it_opened(
    mix, tmp_path, monkeypatch, cache_dir, fails
):
    # evaluate_system left its evaluation's cache open, closed only by garbage collection
    # whenever that came (on Python 3.13, "ResourceWarning: unclosed database"), also once
    # its temporary folder was removed.
    import langsmith

    from langgraph_moa.eval.langsmith_eval import evaluate_system

    def evaluate(target, **_):
        answered = target({"question": "Say the code word alpha1."})
        if fails:
            raise RuntimeError("the experiment failed")
        return answered

    monkeypatch.setattr(langsmith, "evaluate", evaluate)
    monkeypatch.setattr(runner, "resolve_system", lambda _s, cache: runner._system(_s, mix, cache))
    opened = opened_connections(monkeypatch)
    folder = tmp_path if cache_dir else None
    if fails:
        with pytest.raises(RuntimeError, match="the experiment failed"):
            evaluate_system("mix", [], cache_dir=folder, upload_results=False)
    else:
        assert evaluate_system("mix", [], cache_dir=folder, upload_results=False)["calls"] == 3
    assert len(opened) == 1 and is_closed(opened[0])


def test_without_the_eval_extra_the_run_completes_and_says_what_is_missing(
    mix, tmp_path, monkeypatch
):
    import sys

    for module in ("matplotlib", "sacrebleu"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    summary = asyncio.run(Evaluation([mix], ITEMS[:2], tmp_path).run(progress=False))
    assert summary["mix"]["correct"] == 2 and "similarity" not in summary["mix"]
    assert not (tmp_path / "quality_vs_cost.png").exists()
    report = (tmp_path / "report.md").read_text()
    assert "Plots need the eval extra: pip install 'langgraph-moa[eval]'" in report
    assert "Similarity analysis needs the eval extra" in report


def test_judge_layers_gives_unverifiable_items_a_per_layer_analysis(mix, lone, tmp_path):
    """No expected answers: the judge scores every proposal against the baseline's answer."""
    open_items = [EvalItem(id=i.id, turns=i.turns) for i in ITEMS]  # nothing to verify

    def prefers_the_code_word(_label, _n, messages):
        text = messages[-1].text
        a = text.split("[Response A]")[1].split("[Response B]")[0]
        b = text.split("[Response B]")[1]
        has_a, has_b = "alpha" in a, "alpha" in b
        return "tie" if has_a == has_b else ("A" if has_a else "B")

    judge = FakeChat(label="fair-judge", reply=prefers_the_code_word)
    summary = asyncio.run(
        Evaluation(
            [mix, lone],
            open_items,
            tmp_path,
            judge=judge,
            baseline="wrong-alone",
            judge_layers=True,
        ).run(progress=False)
    )
    mixed = summary["mix"]
    assert mixed["accuracy"] is None  # nothing verifiable...
    assert mixed["win_rate"]["rate"] == 100.0 and mixed["win_rate"]["consistent"] == 6
    # ... yet the layers are scored: the right proposal beats the baseline, the wrong one ties.
    assert mixed["layer_curve"] == {
        "1": {"mean": 0.75, "best": 1.0, "items": 6},
        "final": {"mean": 1.0, "best": 1.0, "items": 6},
    }
    assert mixed["similarity"]["tfidf_cosine"]["spearman"] > 0.8
    rows = [
        json.loads(line) for line in (tmp_path / "results" / "mix.jsonl").read_text().splitlines()
    ]
    assert rows[0]["proposal_scores"] == [1.0, 0.5]  # the results file carries them too
    with pytest.raises(MoAConfigError, match="--judge-layers needs a judge"):
        Evaluation([mix], open_items, tmp_path, judge_layers=True)


def _alone(name, reply):
    return MoAConfig(
        name=name,
        variant="single-proposer",
        proposers=[FakeChat(label=f"{name}-p", reply=lambda *_: reply)],
        aggregator=FakeChat(label=f"{name}-a", reply=lambda *_: reply),
    )


def test_a_baseline_without_a_judge_gives_paired_accuracy_differences(mix, tmp_path):
    """Right on every item against a baseline right on none: a win; a copy of it: no difference."""
    systems = [mix, _alone("wrong-alone", "No idea."), _alone("also-wrong", "Not sure.")]
    summary = asyncio.run(
        Evaluation(systems, ITEMS, tmp_path, baseline="wrong-alone", plots=False).run(
            progress=False
        )
    )
    assert "vs_baseline" not in summary["wrong-alone"] and "win_rate" not in summary["mix"]
    assert summary["mix"]["vs_baseline"] == {
        "baseline": "wrong-alone",
        "accuracy_diff": 1.0,
        "low": 1.0,
        "high": 1.0,
        "n": 6,
        "wins": 6,
        "losses": 0,
        "p_value": 0.0312,  # exact McNemar: 6 wins, no loss
        "significance": "better",
    }
    same = summary["also-wrong"]["vs_baseline"]
    assert (same["accuracy_diff"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    assert same["significance"] == "no significant difference"
    # Wilson intervals of 6/6 and 0/6: wide, because six items say little.
    low, high = summary["mix"]["accuracy_ci95"]
    assert high == pytest.approx(1.0) and 0.5 < low < 0.65
    assert summary["wrong-alone"]["accuracy_ci95"][0] == 0.0
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["mix"]["vs_baseline"] == summary["mix"]["vs_baseline"]

    report = (tmp_path / "report.md").read_text()
    assert "| Δ acc vs baseline [95% CI] |" in report
    assert "| mix | 6/6 | 1.00 [0.61, 1.00] | +1.000 [+1.000, +1.000] | 6 / 0 | 0.031 |" in report
    assert "| wrong-alone | 0/6 | 0.00 [0.00, 0.39] | (baseline) |  |  |" in report
    assert "| also-wrong | 0/6 | 0.00 [0.00, 0.39] | +0.000 [+0.000, +0.000] | 0 / 0 | 1.000 |" in (
        report
    )
    assert "wrong on 0 it got right; McNemar p 0.031), at" in report
    assert "- **mix** vs the baseline (wrong-alone): beats the baseline, +1.000 accuracy" in report
    assert (
        "- **also-wrong** vs the baseline (wrong-alone): no significant difference from the "
        "baseline, +0.000 accuracy (95% CI +0.000 to +0.000, 6 items" in report
    )


def test_a_judge_needs_a_baseline(mix, tmp_path):
    judge = FakeChat(label="judge", reply=lambda *_: "A")
    with pytest.raises(MoAConfigError, match="needs both --judge"):
        Evaluation([mix], ITEMS, tmp_path, judge=judge)


def test_calibration_holds_each_single_models_accuracy_for_mux(tmp_path):
    from langgraph_moa.eval.runner import calibration
    from langgraph_moa.text._selection import SelectionConfig

    summary = {
        "single:local:a": {"accuracy": 0.75, "items": 8},
        "single:local:b": {"accuracy": 0.5, "items": 8},
        "local-moa": {"accuracy": 0.9, "items": 8},
    }
    written = calibration(summary)
    assert written["accuracy"] == {"local:a": 0.75, "local:b": 0.5}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(written))
    loaded = SelectionConfig(method="mux", calibration_file=str(path)).calibration
    assert loaded == {"local:a": 0.75, "local:b": 0.5}
    with pytest.raises(MoAConfigError, match="single:<model>"):
        calibration({"local-moa": {"accuracy": 0.9, "items": 8}})


def test_the_report_counts_unscored_items_categories_disagreements_and_the_cache(mix, tmp_path):
    items = [
        EvalItem(id="a", turns=["Say the code word alpha1."], expected=["alpha1"], category="x"),
        EvalItem(id="b", turns=["Say the code word alpha2."], expected=["alpha2"], category="y"),
        EvalItem(id="open", turns=["Say the code word alpha3, then write a poem."]),
    ]
    systems = [mix, _alone("wrong-alone", "No idea.")]
    lines: list[str] = []
    first = Evaluation(systems, items, tmp_path, plots=False)
    summary = asyncio.run(first.run(progress=False, log=lines.append))
    assert summary["mix"]["unscored"] == 1 and summary["mix"]["scored"] == 2
    assert summary["mix"]["categories"] == {
        "x": {"correct": 1, "scored": 1},
        "y": {"correct": 1, "scored": 1},
        "none": {"correct": 0, "scored": 0},
    }
    # Progress lines for a log: the items done, the last one's outcome.
    assert lines[-1].startswith("wrong-alone: 3/3 items") and len(lines) == 6
    report = (tmp_path / "report.md").read_text()
    assert (
        "- **mix**: 1 of 3 items have no expected answer and are not in the accuracy. Add "
        "--judge MODEL --baseline SYSTEM to compare them pairwise." in report
    )
    assert "| category | mix | wrong-alone |" in report and "| x | 1/1 | 0/1 |" in report
    assert "## Where the systems disagree" in report
    assert "  - mix (right): The code word is alpha1." in report
    assert "  - wrong-alone (wrong): No idea." in report
    # A rerun from the cache says so instead of showing bare near-zero times.
    again = asyncio.run(Evaluation(systems, items, tmp_path, plots=False).run(progress=False))
    assert again["mix"]["cached_items"] == 3
    assert "(all cached)" in (tmp_path / "report.md").read_text()


def test_a_config_file_system_is_named_by_its_name_field(tmp_path):
    config = tmp_path / "my-file.yaml"
    config.write_text("name: my-system\nvariant: select\nproposers: ['openai:gpt-4o-mini']\n")
    evaluation = Evaluation([str(config)], ITEMS[:1], tmp_path / "out", plots=False)
    assert [s.name for s in evaluation.systems] == ["my-system"]


def test_the_model_alone_gets_the_default_greedy_call_so_both_share_its_cached_answer():
    # `moa eval -s single:<the default's model> -s <the default>` compares them at one budget:
    # the single system's call is the default's greedy call, key for key (so it is generated
    # once), and neither cap cuts a worked solution off at 256 tokens.
    from langgraph_moa.config._loader import DEFAULT_PRESET
    from langgraph_moa.eval.runner import single_model

    default = MoAConfig.from_preset(DEFAULT_PRESET)
    greedy = next(p for p in default.proposers if p.temperature == 0.0)
    alone = single_model("single:" + greedy.model).proposers[0]
    assert alone.call_params() == greedy.call_params()
    assert alone.max_tokens is not None and alone.max_tokens >= 512


# --- an interrupted run keeps what it finished -------------------------------------------------


@pytest.fixture
def racing(mix, monkeypatch):
    """`mix` with chunk-wise aggregation: its calls race, so the cache cannot replay a run."""
    # Fake model instances have no digest of their own (a real instance's identity is unknown).
    monkeypatch.setattr(runner, "config_digest", lambda config: f"digest of {config.name}")
    return mix.with_overrides(aggregation={"start": "chunks"})


def _row(item_id, error=None, status="ok"):
    item = next(i for i in ITEMS if i.id == item_id)
    trace = [{"role": "proposer", "status": status}]
    return {"id": item.id, "turns": item.turns, "answer": "x", "error": error, "trace": trace}


def _stop_at(monkeypatch, item_id):
    """Make the next run stop (as a crash would) when it reaches `item_id`; undo with the result."""
    answer = Evaluation.run_item

    async def stopped(self, system, item):
        if item.id == item_id:
            raise RuntimeError("the machine went down")
        return await answer(self, system, item)

    monkeypatch.setattr(Evaluation, "run_item", stopped)
    return lambda: monkeypatch.setattr(Evaluation, "run_item", answer)


def _evaluate(systems, items, out):
    return asyncio.run(Evaluation(systems, items, out, plots=False).run(progress=False))


def test_an_interrupted_racing_run_keeps_its_finished_items(racing, tmp_path, monkeypatch):
    """Chunk-wise and early aggregation race their proposals: only kept rows can resume them."""
    resume = _stop_at(monkeypatch, "2")
    with pytest.raises(RuntimeError):
        _evaluate([racing], ITEMS, tmp_path)
    stored = tmp_path / "results" / "mix.rows.jsonl"
    lines = [json.loads(line) for line in stored.read_text().splitlines()]
    source = runner.package_source()
    assert lines[0] == {"digest": "digest of mix", "format": 1, "source": source}
    assert [r["id"] for r in lines[1:]] == ["0", "1"]  # written the moment each was done

    resume()
    log = racing.proposers[0].model.log
    before = len(log.calls)
    summary = _evaluate([racing], ITEMS, tmp_path)
    assert len(log.calls) - before == 4  # items 2-5 only
    assert summary["mix"]["correct"] == 6 and summary["mix"]["items"] == 6
    rows = [json.loads(x) for x in (tmp_path / "results" / "mix.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [i.id for i in ITEMS]
    assert rows[0]["wall_s"] == lines[1]["wall_s"]  # the kept row, its time that run's
    report = (tmp_path / "report.md").read_text()
    assert "mix: 2 of 6 items kept from an earlier run (mix.rows.jsonl)" in report
    assert "Delete that file to answer them again." in report
    ids = [json.loads(line).get("id") for line in stored.read_text().splitlines()[1:]]
    assert sorted(ids) == [i.id for i in ITEMS]  # every finished row stays for the next run


def test_a_racing_system_run_again_on_more_items_answers_only_the_new_ones(racing, tmp_path):
    """What the cache does for the others: a longer run repeats nothing already answered."""
    _evaluate([racing], ITEMS[:3], tmp_path)
    log = racing.proposers[0].model.log
    before = len(log.calls)
    summary = _evaluate([racing], ITEMS, tmp_path)
    assert len(log.calls) - before == 3  # items 3-5 only
    assert summary["mix"]["items"] == 6 and summary["mix"]["correct"] == 6
    assert "mix: 3 of 6 items kept from an earlier run" in (tmp_path / "report.md").read_text()
    before = len(log.calls)
    _evaluate([racing], ITEMS, tmp_path)  # the same run again: nothing is answered twice
    assert len(log.calls) == before
    assert "mix: 6 of 6 items kept" in (tmp_path / "report.md").read_text()


def test_a_system_the_cache_replays_resumes_from_the_cache_alone(mix, tmp_path, monkeypatch):
    """Standard MoA keeps no rows: the cache, keyed by the exact messages, resumes it."""
    resume = _stop_at(monkeypatch, "2")
    with pytest.raises(RuntimeError):
        _evaluate([mix], ITEMS, tmp_path)
    assert not (tmp_path / "results" / "mix.rows.jsonl").exists()
    resume()
    summary = _evaluate([mix], ITEMS, tmp_path)
    assert summary["mix"]["cached_calls"] == 2 * 3  # items 0-1 replayed, nothing kept
    assert "kept from an earlier run" not in (tmp_path / "report.md").read_text()


def test_a_completed_racing_system_keeps_its_rows_when_a_later_system_stops(
    racing, tmp_path, monkeypatch
):
    later = racing.with_overrides(name="later")
    answer = Evaluation.run_item

    async def stopped_in_later(self, system, item):
        if system.name == "later" and item.id == "1":
            raise RuntimeError("stopped")
        return await answer(self, system, item)

    monkeypatch.setattr(Evaluation, "run_item", stopped_in_later)
    with pytest.raises(RuntimeError):
        _evaluate([racing, later], ITEMS, tmp_path)
    monkeypatch.setattr(Evaluation, "run_item", answer)
    log = racing.proposers[0].model.log
    before = len(log.calls)
    _evaluate([racing, later], ITEMS, tmp_path)
    assert len(log.calls) - before == 5  # mix answered nothing again; later items 1-5
    report = (tmp_path / "report.md").read_text()
    assert "mix: 6 of 6 items kept" in report and "later: 1 of 6 items kept" in report


def test_kept_rows_are_scored_again_by_todays_scorers(racing, tmp_path, monkeypatch):
    resume = _stop_at(monkeypatch, "1")
    with pytest.raises(RuntimeError):
        _evaluate([racing], ITEMS[:2], tmp_path)
    resume()
    path = tmp_path / "results" / "mix.rows.jsonl"
    header, kept = path.read_text().splitlines()
    assert json.loads(kept)["scores"]["correct"] is True
    # What a stricter scorer would say of the stored answer: the answer now names alpha1.
    wrong = {**json.loads(kept), "answer": "The code word is alpha1."}
    path.write_text(header + "\n" + json.dumps(wrong) + "\n")
    summary = _evaluate([racing], ITEMS[:2], tmp_path)
    assert summary["mix"]["correct"] == 1  # item 0 scored again (wrong), item 1 answered (right)


def test_a_kept_row_carries_no_layer_scores_of_the_run_that_answered_it(racing, tmp_path):
    """Scores are today's: an item that is no longer verifiable has no layer scores left."""
    _evaluate([racing], ITEMS[:2], tmp_path)
    unverifiable = [EvalItem(id=i.id, turns=i.turns) for i in ITEMS[:2]]
    summary = _evaluate([racing], unverifiable, tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "results" / "mix.jsonl").read_text().splitlines()]
    assert "2 of 2 items kept" in (tmp_path / "report.md").read_text()
    assert all(r["scores"] == {} for r in rows)
    assert not any(k in r for r in rows for k in ("stage_scores", "proposal_scores"))
    assert not summary["mix"].get("layer_curve")


def test_stored_rows_of_another_config_an_error_or_a_cut_off_line_are_not_kept(tmp_path):
    path = tmp_path / "s.rows.jsonl"
    items = ITEMS[:4]
    first = _RowStore(path, "A")
    assert first.rows(items) == {} and not path.exists()  # nothing written before a row
    first.add(_row("0"))
    first.add(_row("1", error="the aggregator failed"))  # tried again next time
    first.add(_row("3", status="failed"))  # answered from what was left: tried again too
    first.add(_row("5"))  # an item this run does not ask for
    with path.open("a") as file:
        file.write('{"id": "2", "tur')  # the run stopped while writing this line
    again = _RowStore(path, "A")
    assert set(again.rows(items)) == {"0"}
    again.add(_row("2"))  # not swallowed by the cut-off line before it
    changed = [*items[:2], EvalItem(id="2", turns=["Another question."], expected=["x"])]
    assert set(_RowStore(path, "A").rows(items)) == {"0", "2"}
    assert set(_RowStore(path, "A").rows(changed)) == {"0"}  # item 2 changed: answer again
    # The rows no run here asked for (item 5; item 2 with its first question) stay for one that
    # will: another dataset in the same folder, whose ids are line numbers too, erases nothing.
    ids = [json.loads(x).get("id") for x in path.read_text().splitlines()]
    assert ids == [None, "0", "5", "2"]
    assert set(_RowStore(path, "A").rows(items)) == {"0", "2"}
    other = _RowStore(path, "B")
    assert other.rows(ITEMS) == {}  # another config's rows are not kept...
    assert "5" in path.read_text()  # ...nor erased until this config finishes an item
    other.add(_row("0"))
    assert [json.loads(x).get("id") for x in path.read_text().splitlines()] == [None, "0"]
    before = path.read_text()
    _RowStore(path, None).add(_row("1"))  # no digest: nothing is ever written
    assert path.read_text() == before


def test_a_stop_while_the_row_file_is_rewritten_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "s.rows.jsonl"
    store = _RowStore(path, "A")
    store.rows(ITEMS)
    store.add(_row("0"))
    store.add(_row("1", error="the aggregator failed"))
    before = path.read_text()

    def stopped(src, dst):
        raise KeyboardInterrupt  # the stop comes after the new file is written, before the swap

    monkeypatch.setattr(runner.os, "replace", stopped)
    with pytest.raises(KeyboardInterrupt):
        _RowStore(path, "A").rows(ITEMS)  # drops the error row: a rewrite
    assert path.read_text() == before  # the old file, every line of it
    monkeypatch.undo()
    assert set(_RowStore(path, "A").rows(ITEMS)) == {"0"}  # and the next run reads it


def test_systems_whose_results_files_would_clash_are_refused(mix, tmp_path):
    with pytest.raises(MoAConfigError, match=r"share one results file \(x_y.jsonl\)"):
        Evaluation(
            [mix.with_overrides(name="x y"), mix.with_overrides(name="x_y")], ITEMS, tmp_path
        )


def test_the_config_digest_tells_settings_apart_and_not_instances():
    base = MoAConfig(proposers=["local:qwen2.5-coder-0.5b"], aggregator="local:qwen2.5-coder-1.5b")
    assert config_digest(base) == config_digest(base.with_overrides())
    assert config_digest(base) != config_digest(base.with_overrides(layers=2))
    hotter = base.proposers[0].model_copy(update={"temperature": 0.1})
    assert config_digest(base.model_copy(update={"proposers": [hotter]})) != config_digest(base)
    endpoint = OpenAIEndpoint(base_url="http://127.0.0.1:9/v1", model="m")
    other = endpoint.model_copy(update={"model": "n"})
    assert config_digest(base.with_overrides(proposers=[endpoint])) != config_digest(
        base.with_overrides(proposers=[other])
    )
    # An instance dumps as its settings only: no digest, so its rows are never kept.
    assert config_digest(base.with_overrides(proposers=[FakeChat(label="a")])) is None


def test_a_judge_whose_model_is_not_pulled_says_so_in_the_summary(mix, lone, tmp_path):
    # The judge was called past the calls' explanations: the summary said the bare 404.
    import httpx
    import openai

    body = {"error": {"message": 'model "qwen3:8b" not found, try pulling it first'}}
    response = httpx.Response(
        404, request=httpx.Request("POST", "http://h:11434/v1/chat/completions"), json=body
    )
    missing = openai.NotFoundError(f"Error code: 404 - {body}", response=response, body=body)
    judge = FakeChat(label="qwen3:8b", fail=lambda n, m: missing)
    evaluation = Evaluation(
        [mix, lone], ITEMS, tmp_path, judge=judge, baseline="wrong-alone", concurrency=1
    )
    summary = asyncio.run(evaluation.run(progress=False))
    why = summary["mix"]["judge_error"]
    assert why.startswith(
        "EndpointNotFoundError: the judge qwen3:8b: Ollama has not pulled that model: "
        "run `ollama pull qwen3:8b` on its host"
    ), why


def test_a_failing_judge_costs_the_win_rates_only(mix, lone, tmp_path):
    """The answers are computed before the judge is asked: its failure must not lose them."""
    asked = []

    def dead(n, _messages):
        asked.append(n)
        return RuntimeError("Error code: 500 - the judge's server is down")

    judge = FakeChat(label="judge", fail=dead)
    evaluation = Evaluation(
        [mix, lone], ITEMS, tmp_path, judge=judge, baseline="wrong-alone", concurrency=1
    )
    summary = asyncio.run(evaluation.run(progress=False))

    assert summary["mix"]["correct"] == 6 and "win_rate" not in summary["mix"]
    assert summary["mix"]["judge_error"] == (
        "RuntimeError: Error code: 500 - the judge's server is down"
    )
    assert "judge_error" not in summary["wrong-alone"]  # the baseline is not judged
    assert len(asked) <= 2  # judging stopped at the first failure (the next may have begun)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["mix"]["judge_error"] and saved["mix"]["accuracy"] == 1.0
    report = (tmp_path / "report.md").read_text()
    assert "| mix | 6/6 |" in report
    assert "**Judging failed** for **mix**: RuntimeError: Error code: 500" in report
    assert len((tmp_path / "results" / "mix.jsonl").read_text().splitlines()) == 6


def test_cancelled_judging_does_not_wait_out_a_judges_retry_after(mix, lone, tmp_path):
    """A Ctrl-C during judging (the run's task cancelled) waited, at the event loop's close,
    for a judging thread asleep in a Retry-After of up to a minute."""
    import threading

    import httpx
    import openai

    request = httpx.Request("POST", "http://h/v1/chat/completions")
    response = httpx.Response(429, request=request, headers={"retry-after": "50"})
    asked = threading.Event()

    def limited(_n, _messages):
        asked.set()
        return openai.RateLimitError("slow down", response=response, body=None)

    judge = FakeChat(label="judge", fail=limited)
    evaluation = Evaluation([mix, lone], ITEMS, tmp_path, judge=judge, baseline="wrong-alone")
    run = _cancelled_while_judging(evaluation, asked)
    run.join(timeout=30)  # the loop closes once its judging ends: not 50 s later
    assert asked.is_set() and not run.is_alive()


def _cancelled_while_judging(evaluation, began):
    """Run `evaluation` in a thread of its own and cancel it once `began` is set (a Ctrl-C
    during judging); return the thread, which ends once the event loop has closed."""
    import threading
    import time

    async def cancelled_while_judging() -> None:
        task = asyncio.ensure_future(evaluation.run(progress=False))
        deadline = time.monotonic() + 60
        while not began.is_set() and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run = threading.Thread(target=asyncio.run, args=(cancelled_while_judging(),), daemon=True)
    run.start()
    return run


def test_a_judge_that_cannot_be_built_is_refused_before_any_answer(mix, tmp_path):
    with pytest.raises(MoAConfigError, match="Invalid --judge: Model spec 'openai:' has no"):
        Evaluation([mix], ITEMS, tmp_path, judge="openai:", baseline="mix")
    assert mix.proposers[0].model.log.calls == []


def test_fallback_answers_are_counted_per_row_per_system_and_in_the_report(tmp_path):
    """An aggregator that always fails: every answer is the best proposal, and says so."""
    down = FakeChat(label="agg", fail=lambda n, m: RuntimeError("aggregator down"))
    right = FakeChat(
        label="p", reply=lambda _l, _n, m: f"The code word is {first_code_word(_l, _n, m)}."
    )
    config = MoAConfig(name="fb", proposers=[right], aggregator=down)
    items = ITEMS[:4]
    summary = asyncio.run(Evaluation([config], items, tmp_path, plots=False).run(progress=False))
    entry = summary["fb"]
    # Scored as given (the answer a user got), but counted as fallbacks with the failed calls.
    assert entry["correct"] == 4 and entry["errors"] == 0
    assert entry["fallbacks"] == 4 and entry["failed_calls"] >= 4
    assert entry["first_fallback"].startswith("best_proposal: ")
    rows = [json.loads(line) for line in (tmp_path / "results" / "fb.jsonl").open()]
    assert {r["fallback"] for r in rows} == {"best_proposal"}
    assert all(r["failed_calls"] >= 1 and r["fallback_reason"] for r in rows)
    report = (tmp_path / "report.md").read_text()
    assert "**4 of 4 answers were fallbacks**" in report
    assert f"{entry['failed_calls']} calls failed" in report


def test_a_system_without_fallbacks_reports_none(mix, tmp_path):
    summary = asyncio.run(Evaluation([mix], ITEMS[:2], tmp_path, plots=False).run(progress=False))
    assert (summary["mix"]["fallbacks"], summary["mix"]["failed_calls"]) == (0, 0)
    assert "fallback" not in (tmp_path / "report.md").read_text()


def _failing_on(name, k):
    """A system that fails on the item asking for alpha<k> and answers the rest."""

    def fail(_n, messages):
        return ValueError("boom") if f"alpha{k}" in messages[-1].text else None

    return MoAConfig(
        name=name,
        variant="single-proposer",
        proposers=[FakeChat(label=f"p{name}", fail=fail)],
        aggregator=FakeChat(label=f"a{name}"),
    )


def test_no_judged_pair_writes_null_not_nan_and_says_so(tmp_path):
    """A fails item 0, B item 1: no pair has both answers, so nothing can be judged."""
    items = [EvalItem(id=str(i), turns=[f"Say alpha{i}."]) for i in range(2)]
    judge = FakeChat(label="judge", reply=lambda *_: "A")
    evaluation = Evaluation(
        [_failing_on("A", 0), _failing_on("B", 1)],
        items,
        tmp_path,
        plots=False,
        judge=judge,
        baseline="B",
    )
    summary = asyncio.run(evaluation.run(progress=False))

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    saved = json.loads((tmp_path / "summary.json").read_text(), parse_constant=refuse)
    assert saved["A"]["win_rate"]["rate"] is None and saved["A"]["win_rate"]["ci95"] is None
    assert saved["A"]["win_rate"]["items"] == 0
    assert summary["A"]["judge_error"] == runner.NO_PAIRS
    assert judge.log.calls == []
    report = (tmp_path / "report.md").read_text()
    assert "**No pair could be judged** for **A**" in report
    # As a word: the report's closing lines name provenance.json.
    assert "| A | n/a | n/a |" in report and not re.search(r"\bnan\b", report, re.IGNORECASE)


def test_summary_json_never_holds_nan():
    from langgraph_moa._json import _finite

    assert _finite({"a": [float("nan"), 1.5], "b": {"c": float("inf")}}) == {
        "a": [None, 1.5],
        "b": {"c": None},
    }


def test_summary_and_report_are_written_whole_or_not_at_all(mix, tmp_path, monkeypatch):
    asyncio.run(Evaluation([mix], ITEMS[:1], tmp_path, plots=False).run(progress=False))
    names = ("results/mix.jsonl", "summary.json", "report.md")
    before = {n: (tmp_path / n).read_text() for n in names}

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner.os, "replace", full)
    with pytest.raises(MoAError) as err:
        asyncio.run(Evaluation([mix], ITEMS[:2], tmp_path, plots=False).run(progress=False))
    assert str(err.value).startswith(  # the results are written first, in one step too
        f"Cannot write '{tmp_path / 'results/mix.jsonl'}' (No space left on device); the "
        "answers are"
    )
    assert {n: (tmp_path / n).read_text() for n in before} == before  # the old files whole
    assert [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []


def test_an_atomic_write_goes_through_a_symbolic_link_and_keeps_the_mode(tmp_path):
    from langgraph_moa.eval.runner import write_atomically

    real = tmp_path / "shared" / "calibration.json"
    real.parent.mkdir()
    real.write_text("{}")
    real.chmod(0o640)
    link = tmp_path / "calibration.json"
    link.symlink_to(real)
    write_atomically(link, '{"accuracy": {}}')
    assert link.is_symlink() and real.read_text() == '{"accuracy": {}}'
    assert real.stat().st_mode & 0o777 == 0o640
    assert not list(real.parent.glob(".*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def _keep_rows(path, items, *ids):
    """Write, as a run of config "A" on `items` does, the finished rows of `ids` to `path`."""
    store = _RowStore(path, "A")
    store.rows(items)
    for item_id in ids:
        store.add(_row(item_id))


def test_a_damaged_rows_file_keeps_its_good_rows_and_answers_the_rest_again(tmp_path):
    """Bytes that are not UTF-8 or rows of the wrong shape (a disk fault) cost only those rows."""
    path = tmp_path / "s.rows.jsonl"
    items = ITEMS[:3]
    _keep_rows(path, items, "0", "1")
    damaged = path.read_bytes() + b'{"id": "2", "answer": "\xc3\n' + b'{"id": "2", "trace": [1]}\n'
    path.write_bytes(damaged)
    assert set(_RowStore(path, "A").rows(items)) == {"0", "1"}
    assert set(_RowStore(path, "A").rows(items)) == {"0", "1"}  # and the file is readable again


def test_a_rows_file_carries_its_format_and_one_an_earlier_version_wrote_keeps_its_rows(
    tmp_path,
):
    """The rows file had no format mark, so a later version could not tell an old file from
    its own; a first line without one is the format every earlier version wrote (1)."""
    path = tmp_path / "s.rows.jsonl"
    items = ITEMS[:2]
    _keep_rows(path, items, "0")
    assert json.loads(path.read_text().splitlines()[0]) == {"digest": "A", "format": 1}
    earlier = tmp_path / "old.rows.jsonl"
    earlier.write_text(json.dumps({"digest": "A"}) + "\n" + json.dumps(_row("1")) + "\n")
    assert set(_RowStore(earlier, "A").rows(items)) == {"1"}


def test_a_rows_file_of_a_later_format_is_refused_in_one_sentence_and_left_as_it_was(tmp_path):
    """Read as another config's rows, it was replaced at the first row this run finished."""
    path = tmp_path / "s.rows.jsonl"
    path.write_text(json.dumps({"digest": "A", "format": 2}) + "\n" + json.dumps(_row("0")) + "\n")
    before = path.read_text()
    store = _RowStore(path, "A")
    with pytest.raises(MoAConfigError) as caught:
        store.rows(ITEMS[:2])
    message = str(caught.value)
    assert str(path) in message and "format 2" in message and "\n" not in message
    assert path.read_text() == before


@pytest.mark.parametrize("found", [2.0, "2", "1", 0, True, None])
def test_a_rows_file_of_any_format_but_1_is_refused_and_left_as_it_was(tmp_path, found):
    """Only an int format was refused: ``"format": 2.0`` or ``"2"`` was read as another
    config's file and replaced at the first row this run finished."""
    path = tmp_path / "s.rows.jsonl"
    header = {"digest": "A", "format": found}
    path.write_text(json.dumps(header) + "\n" + json.dumps(_row("0")) + "\n")
    before = path.read_text()
    with pytest.raises(MoAConfigError) as caught:
        _RowStore(path, "A").rows(ITEMS[:2])
    message = str(caught.value)
    assert str(path) in message and repr(found) in message and "\n" not in message, message
    assert path.read_text() == before


def test_a_rows_file_of_a_later_format_is_refused_before_any_system_answers(racing, tmp_path):
    """The second system's file was refused as that system began: the first had answered
    every item by then, paid for and thrown away with the run."""
    later = racing.with_overrides(name="later")
    path = tmp_path / "results" / "later.rows.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps({"digest": "digest of later", "format": 2}) + "\n")
    with pytest.raises(MoAConfigError, match="has format 2"):
        _evaluate([racing, later], ITEMS, tmp_path)
    assert racing.proposers[0].model.log.calls == []
    assert not (tmp_path / "results" / "mix.rows.jsonl").exists()


def test_a_kept_row_whose_id_was_written_as_a_number_is_not_answered_again(tmp_path):
    """A rows file edited by hand (or by a script) may hold `"id": 1`; it is the same item."""
    path = tmp_path / "s.rows.jsonl"
    items = ITEMS[:2]
    _keep_rows(path, items, "1")
    path.write_text(path.read_text().replace('"id": "1"', '"id": 1'))
    kept = _RowStore(path, "A").rows(items)
    assert set(kept) == {"1"} and kept["1"]["id"] == "1"


def test_a_racing_local_systems_kept_rows_go_when_its_pinned_file_changes(monkeypatch):
    """Kept rows follow the config digest: another file under the same name is another config."""
    import dataclasses

    from langgraph_moa.local import catalog

    config = MoAConfig(
        proposers=["local:qwen2.5-coder-0.5b"],
        aggregator="local:qwen2.5-coder-0.5b",
        layer_deadline_s=30,
    )
    before = config_digest(config)
    assert before == config_digest(config.with_overrides())
    info = catalog.CATALOG["qwen2.5-coder-0.5b"]
    monkeypatch.setitem(
        catalog.CATALOG, "qwen2.5-coder-0.5b", dataclasses.replace(info, sha256="0" * 64)
    )
    assert config_digest(config) != before


def test_a_multi_turn_item_failing_at_a_later_turn_is_left_out_of_the_cost_like_a_single_turn_one(
    tmp_path,
):
    """A failed single-turn item costs its system nothing in the summary; a multi-turn item
    that failed at turn 2 still added turn 1's tokens, calls and dollars."""

    def fail(_n, messages):
        return ValueError("boom") if "explode" in messages[-1].text else None

    system = MoAConfig(
        name="s",
        variant="single-proposer",
        proposers=[FakeChat(label="p", fail=fail)],
        aggregator=FakeChat(label="a"),
    )
    answered = EvalItem(id="ok", turns=["Say alpha1."], expected=["alpha1"])
    failed = [
        EvalItem(id="one", turns=["Now explode."], expected=["x"]),
        EvalItem(id="two", turns=["Say alpha2.", "Now explode."], expected=["x"]),
    ]
    prices = {"p": (1.0, 2.0), "a": (1.0, 2.0)}
    alone = asyncio.run(
        Evaluation([system], [answered], tmp_path / "a", plots=False, prices=prices).run(
            progress=False
        )
    )["s"]
    evaluation = Evaluation(
        [system], [answered, *failed], tmp_path / "b", plots=False, prices=prices
    )
    summary = asyncio.run(evaluation.run(progress=False))["s"]
    assert summary["errors"] == 2
    for field in ("prompt_tokens", "completion_tokens", "calls", "dollars"):
        assert summary[field] == alone[field] > 0, field
    saved = [json.loads(line) for line in (tmp_path / "b" / "results" / "s.jsonl").open()]
    two = next(r for r in saved if r["id"] == "two")
    assert two["error"] and len(two["answers"]) == 1, "turn 1's answer is kept"
    assert two["prompt_tokens"] > 0 and {c["turn"] for c in two["trace"]} == {0}


def test_the_plots_tokens_per_item_count_answered_items_only():
    """Failed items hold no tokens in the summary, so dividing by every item made a system
    that failed on half its items look half as costly."""
    summary = {
        "steady": {
            "accuracy": 0.5,
            "items": 4,
            "errors": 0,
            "prompt_tokens": 300,
            "completion_tokens": 100,
        },
        "flaky": {
            "accuracy": 0.5,
            "items": 4,
            "errors": 2,
            "prompt_tokens": 150,
            "completion_tokens": 50,
        },
    }
    points, label, _ = runner._quality_cost_points(summary, priced=False)
    assert label == "tokens per item (prompt + completion)"
    assert points["steady"][0] == points["flaky"][0] == 100
    every_one_failed = {
        "x": {**summary["flaky"], "errors": 4, "prompt_tokens": 0, "completion_tokens": 0}
    }
    assert runner._quality_cost_points(every_one_failed, priced=False)[0]["x"][0] == 0


def test_the_plots_dollars_are_per_answered_item_as_its_label_says():
    """The priced plot drew each system's total dollars, labelled "dollars (total)": failed
    items cost nothing in the summary, so a system that failed on half its items looked half
    as costly, where the unpriced plot (tokens per answered item) did not."""
    base = {"accuracy": 0.5, "items": 4, "prompt_tokens": 0, "completion_tokens": 0}
    summary = {
        "steady": {**base, "errors": 0, "dollars": 0.04},
        "flaky": {**base, "errors": 2, "dollars": 0.02},
        "all_failed": {**base, "errors": 4, "dollars": 0.0},
    }
    points, label, _ = runner._quality_cost_points(summary, priced=True)
    assert label == "dollars per item (answered items)"
    assert points["steady"][0] == points["flaky"][0] == pytest.approx(0.01)
    assert points["all_failed"][0] == 0


def test_a_stop_while_a_results_file_is_written_leaves_the_earlier_one_whole(
    mix, tmp_path, monkeypatch
):
    # results/<system>.jsonl was truncated, then written: Ctrl-C in between left an earlier
    # run's file empty or cut off in the middle of a line.
    _evaluate([mix], ITEMS, tmp_path)
    path = tmp_path / "results" / "mix.jsonl"
    before = path.read_text()
    from langgraph_moa.eval import runner

    write = runner.write_private  # each file is written owner-only, through it

    def stopped(to, data):
        write(to, data[: len(data) // 2])
        raise KeyboardInterrupt  # the stop comes halfway through the write

    monkeypatch.setattr(runner, "write_private", stopped)
    with pytest.raises(KeyboardInterrupt):
        _evaluate([mix], ITEMS, tmp_path)
    assert path.read_text() == before  # the earlier run's file, every line of it


def test_a_plot_drawing_unpriced_calls_as_free_says_so(mix, lone, tmp_path):
    # The priced plot drew each system at the dollars of its priced calls alone: a system
    # whose models are missing from the price table sat at $0 and took the Pareto front,
    # the plot and the report's front saying nothing of it (only the table's "+N unpriced").
    prices = {"right": (1.0, 2.0), "wrong": (1.0, 2.0)}  # neither lone's nor the aggregators'
    summary = asyncio.run(
        Evaluation([mix, lone], ITEMS, tmp_path, prices=prices).run(progress=False)
    )
    assert summary["wrong-alone"]["unpriced_calls"] == 12
    report = (tmp_path / "report.md").read_text()
    [note] = [line for line in report.splitlines() if "unpriced" in line and line[:1] == ">"]
    assert "wrong-alone (12 unpriced calls)" in note and "mix (6 unpriced calls)" in note, note
    assert "price" in note


def test_a_plot_with_every_call_priced_adds_no_note(mix, tmp_path):
    prices = {"right": (1.0, 2.0), "wrong": (1.0, 2.0), "agg": (1.0, 2.0)}
    asyncio.run(Evaluation([mix], ITEMS, tmp_path, prices=prices).run(progress=False))
    report = (tmp_path / "report.md").read_text()
    assert not [line for line in report.splitlines() if "unpriced" in line and line[:1] == ">"]


@pytest.mark.parametrize(
    "spec",
    [
        "single:m@https://api.example/v1?key=ab'cd-secret-tail&alt=json",
        'single:m@https://api.example/v1?key=ab"cd-secret-tail',
        "single:m@https://api.example/v1?key=ab<cd>secret-tail",
        "single:gemini-flash?alt=json&key=ab cd-secret-tail",
    ],
)
def test_a_system_is_named_without_any_part_of_its_urls_key(tmp_path, spec):
    # Named by `redact_url`, which ends a value at a quote, a space or "<>" as in running
    # text: the rest of such a key was in the system's name (the report, summary.json, the
    # rows files, the line a stopped run prints).
    evaluation = Evaluation([spec], ITEMS[:1], tmp_path, baseline=spec)
    (name,) = evaluation.finished
    assert "secret-tail" not in name and "secret-tail" not in evaluation.baseline
    assert name == evaluation.baseline
    assert "?" in name and name.endswith(("key=[redacted]", "key=[redacted]&alt=json"))


def test_a_command_given_in_python_keeps_no_part_of_a_urls_key(tmp_path):
    # `command=` went through `redact_url`, which ends a value at a quote: a key holding
    # one, shell-quoted, had its rest written to provenance.json and the report.
    import shlex

    spec = "single:m@https://api.example/v1?key=ab'cd-secret-tail&alt=json"
    command = shlex.join(["moa", "eval", "--system", spec, "--baseline", spec])
    evaluation = Evaluation([spec], ITEMS[:1], tmp_path, baseline=spec, command=command)
    assert "secret-tail" not in evaluation.command
    assert evaluation.command == (
        "moa eval --system 'single:m@https://api.example/v1?key='\"${MOA_URL_KEY}\"'&alt=json'"
        " --baseline 'single:m@https://api.example/v1?key='\"${MOA_URL_KEY}\"'&alt=json'"
    )
    # A command already reading its keys from variables (the CLI's) is kept as it is.
    again = Evaluation([spec], ITEMS[:1], tmp_path, baseline=spec, command=evaluation.command)
    assert again.command == evaluation.command


def test_a_command_given_in_python_keeps_its_paths_that_hold_a_key_parameter(tmp_path):
    # Every word of the command holding "?key=" or ";token=" had it read from a variable,
    # paths too: the recorded command no longer ran the same evaluation.
    import shlex

    spec = "single:m@https://api.example/v1?key=secret-key-1"
    words = ["moa", "eval", "--system", spec, "--dataset", "d;token=x.jsonl", "--out=r?key=1"]
    evaluation = Evaluation([spec], ITEMS[:1], tmp_path, command=shlex.join(words))
    kept = shlex.split(evaluation.command)
    assert kept[3] == spec.replace("secret-key-1", "${MOA_URL_KEY}")
    assert kept[4:] == words[4:]
    given = shlex.join(["moa", "eval", f"--system={spec}"])
    assert "secret-key-1" not in Evaluation([spec], ITEMS[:1], tmp_path, command=given).command


@pytest.mark.parametrize(
    "words",
    [
        # A spec given as a short option with its value attached, as Click reads it.
        ["moa", "eval", "-ssingle:m@https://api.example/v1?key=secret-key-1"],
        # Another program's command (benchmarks/gsm8k.py's): its options are not moa eval's.
        [
            "python",
            "gsm8k.py",
            "systems",
            "--systems",
            "single:m@https://api.example/v1?key=secret-key-1",
        ],
    ],
)
def test_a_command_given_in_python_keeps_no_key_of_a_url_in_any_option(tmp_path, words):
    # Only the values of --system, -s, --judge and --baseline had their URL keys read from a
    # variable: a key in any other word (an attached short option, another script's option)
    # was written into provenance.json and the report as it was given.
    import shlex

    spec = "single:m@https://api.example/v1?key=secret-key-1"
    evaluation = Evaluation([spec], ITEMS[:1], tmp_path, command=shlex.join(words))
    assert "secret-key-1" not in evaluation.command
    assert shlex.split(evaluation.command)[-1].endswith("${MOA_URL_KEY}")


def test_a_racing_system_keeps_no_rows_drawn_with_another_seed(racing, tmp_path):
    """Kept rows were matched by config alone: a `--seed 5` run in an unseeded run's folder
    took its unseeded answers as its own and recorded them as drawn with seed 5."""
    log = racing.proposers[0].model.log

    def answered(seed):
        before = len(log.calls)
        evaluation = Evaluation([racing], ITEMS[:2], tmp_path, plots=False, seed=seed)
        asyncio.run(evaluation.run(progress=False))
        return len(log.calls) - before

    assert answered(None) == 2
    assert answered(5) == 2  # the unseeded rows are not this run's
    assert answered(6) == 2  # nor another seed's
    assert answered(6) == 0  # the same seed's are
    assert answered(None) == 2  # the last rows written are seed 6's


def test_rows_another_version_of_the_code_wrote_are_refused_not_kept_silently(
    racing, tmp_path, monkeypatch
):
    """Kept rows were matched by config and seed alone: a rerun after a code change (a
    prompt, the vote, the graph) took the answers the old code gave as its own, and its
    record named the new code. Each rows file now records the package's source digest, and
    a run of other code refuses it in one sentence naming the fix, leaving it as it was."""
    log = racing.proposers[0].model.log

    def answered():
        before = len(log.calls)
        evaluation = Evaluation([racing], ITEMS[:2], tmp_path, plots=False)
        asyncio.run(evaluation.run(progress=False))
        return len(log.calls) - before

    assert answered() == 2
    rows = tmp_path / "results" / "mix.rows.jsonl"
    assert json.loads(rows.read_text().splitlines()[0])["source"] == runner.package_source()
    assert answered() == 0  # the same code keeps them
    written = rows.read_bytes()
    monkeypatch.setattr(runner, "package_source", lambda: "f" * 64)
    with pytest.raises(MoAConfigError) as caught:
        answered()
    message = str(caught.value)
    assert str(rows) in message and "delete" in message and "\n" not in message
    assert rows.read_bytes() == written


def test_a_rows_file_written_before_the_source_was_recorded_is_marked_by_the_next_append(
    racing, tmp_path
):
    """A file whose header had no source kept it so: this code's rows were appended under
    it, and any later code took them all as its own. The first row this run appends writes
    the header anew with its source, the earlier rows kept."""
    log = racing.proposers[0].model.log

    def answered(count):
        before = len(log.calls)
        evaluation = Evaluation([racing], ITEMS[:count], tmp_path, plots=False)
        asyncio.run(evaluation.run(progress=False))
        return len(log.calls) - before

    assert answered(2) == 2
    rows = tmp_path / "results" / "mix.rows.jsonl"
    header, *kept = rows.read_text().splitlines()
    unmarked = {k: v for k, v in json.loads(header).items() if k != "source"}
    rows.write_text("".join(line + "\n" for line in [json.dumps(unmarked), *kept]))
    assert answered(2) == 0  # an unmarked file is kept, and nothing appended leaves it so
    assert "source" not in json.loads(rows.read_text().splitlines()[0])
    assert answered(3) == 1
    header, *lines = rows.read_text().splitlines()
    assert json.loads(header)["source"] == runner.package_source()
    assert lines[:2] == kept and len(lines) == 3


class ZMQInteractiveShell:
    """What `get_ipython()` returns in a Jupyter kernel: rich tells a notebook by its name."""


def test_a_notebook_without_ipywidgets_gets_no_warning_per_refresh_of_the_bar(
    mix, tmp_path, monkeypatch
):
    # rich draws a bar in a notebook with ipywidgets only; without them it warned "install
    # ipywidgets" at every refresh, each warning one more output block under the cell.
    import builtins
    import sys
    import warnings

    monkeypatch.setattr(builtins, "get_ipython", ZMQInteractiveShell, raising=False)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # not installed
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = asyncio.run(Evaluation([mix], ITEMS[:3], tmp_path, plots=False).run())
    assert summary
    assert not [w for w in caught if "ipywidgets" in str(w.message)]


def test_cancelled_judging_cancels_the_judges_call_under_way(mix, lone, tmp_path):
    """A Ctrl-C during judging cut the waits between a judge's attempts, but a call already
    under way ran to its end in its thread, and the event loop's close waited for it: a
    judge that answers in minutes held a Ctrl-C that long."""
    import threading

    started = threading.Event()

    def slow(_n):
        started.set()
        return 50.0

    judge = FakeChat(label="judge", delay=slow)
    evaluation = Evaluation([mix, lone], ITEMS, tmp_path, judge=judge, baseline="wrong-alone")
    run = _cancelled_while_judging(evaluation, started)
    run.join(timeout=30)  # not the 50 s the judge's answer takes
    judge.release()
    assert started.is_set() and not run.is_alive()
    assert judge.log.calls == []  # no judge call ended: the one under way was cancelled
