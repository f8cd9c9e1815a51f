"""An evaluation records what is needed to run it again: versions, models, configs, items."""

import asyncio
import hashlib
import json
import re
from pathlib import Path

from langgraph_moa import MoAConfig
from langgraph_moa.eval import EvalItem, Evaluation, load_dataset, runner, shipped_dataset
from langgraph_moa.eval.provenance import INTERVALS, model_identity, system_record
from langgraph_moa.eval.report import render_report
from langgraph_moa.eval.stats import ALPHA
from langgraph_moa.local.catalog import CATALOG
from tests.fakes import FakeChat

ITEMS = [EvalItem(id=f"q{i}", turns=[f"Say alpha{i}."], expected=[f"alpha{i}"]) for i in (3, 1, 2)]


def _echo(_label, _n, messages):
    return re.findall(r"alpha\d", "\n".join(m.text for m in messages))[0]


def _seq_config():
    model = FakeChat(label="p", reply=_echo)
    return MoAConfig(
        name="seq",
        variant="self-moa-seq",
        proposers=[{"model": model, "samples": 4, "temperature": 0.7}],
        aggregator={"model": model, "max_tokens": 99},
        seq={"window_size": 3, "samples_per_step": 1},
    )


def test_the_run_writes_versions_configs_items_and_methods(tmp_path):
    evaluation = Evaluation(
        [_seq_config()], ITEMS, tmp_path, plots=False, exports=False, dataset="my.jsonl"
    )
    asyncio.run(evaluation.run(progress=False))
    record = json.loads((tmp_path / "provenance.json").read_text())
    assert record["langgraph_moa"] and record["python"]
    assert record["dataset"]["source"] == "my.jsonl"
    assert record["dataset"]["ids"] == ["q3", "q1", "q2"]  # the exact items, in order
    assert len(record["scorer"]["sha256"]) == 64
    assert "Wilson" in record["intervals"]["accuracy"]
    assert "paired" in record["intervals"]["vs_baseline"]
    config = record["systems"]["seq"]["config"]
    assert config["variant"] == "self-moa-seq"
    assert config["seq"] == {"window_size": 3, "samples_per_step": 1}
    assert config["proposers"][0]["samples"] == 4
    assert config["proposers"][0]["temperature"] == 0.7
    assert config["aggregator"]["max_tokens"] == 99
    report = (tmp_path / "report.md").read_text()
    assert "## Reproduce" in report and "variant self-moa-seq" in report
    assert "4 sample(s) at T=0.7" in report and "window 3, 1 new samples per later step" in report
    assert "max 99 tokens" in report
    # The summary keeps its shape: one entry per system, nothing else.
    assert list(json.loads((tmp_path / "summary.json").read_text())) == ["seq"]


def test_a_local_model_is_named_with_its_files_digest():
    info = CATALOG["qwen2.5-coder-0.5b"]
    assert model_identity("local:qwen2.5-coder-0.5b") == {
        "spec": "local:qwen2.5-coder-0.5b",
        "sha256": info.sha256,
    }
    assert model_identity("openai:gpt-4o") == {"spec": "openai:gpt-4o"}
    record = system_record(runner.single_model("single:local:qwen2.5-coder-0.5b"))
    assert record["models"] == [{"spec": "local:qwen2.5-coder-0.5b", "sha256": info.sha256}]
    assert record["config"]["proposers"][0]["temperature"] == 0.0


def test_a_packaged_dataset_is_named_by_its_files_digest(tmp_path):
    items = load_dataset("verifiable")[:2]
    evaluation = Evaluation(
        [_seq_config()], items, tmp_path, plots=False, exports=False, dataset="verifiable"
    )
    digest = hashlib.sha256(shipped_dataset("verifiable").read_bytes()).hexdigest()
    assert evaluation.provenance()["dataset"]["sha256"] == digest


def test_a_report_written_before_provenance_still_renders():
    summary = {"a": {"items": 1, "errors": 0, "correct": 1, "scored": 1, "accuracy": 1.0}}
    summary["a"].update(calls=1, cached_calls=0, median_item_s=0.1, wall_s=0.1)
    summary["a"].update(prompt_tokens=1, completion_tokens=1)
    assert "Reproduce" not in render_report(summary, {"notes": []})


def test_a_local_judge_whose_pinned_file_changed_gets_no_old_verdicts(tmp_path, monkeypatch):
    """The judge's verdicts are cached under its name: a re-pinned local judge must miss."""
    import dataclasses

    from langgraph_moa.local import catalog

    judge = FakeChat(label="judge", reply=lambda *_: "A")
    base = FakeChat(label="base", reply=lambda *_: "No idea.")

    def judged_calls():
        judge.log.calls.clear()
        evaluation = Evaluation(
            [_seq_config(), MoAConfig(name="base", variant="select", proposers=[base])],
            ITEMS[:1],
            tmp_path,
            plots=False,
            exports=False,
            judge="local:qwen2.5-coder-0.5b",
            baseline="base",
        )
        monkeypatch.setattr(evaluation._models, "get", lambda spec, params: judge)
        asyncio.run(evaluation.run(progress=False))
        return list(judge.log.calls)

    assert len(judged_calls()) == 2  # both orders asked
    assert judged_calls() == []  # a rerun: both verdicts from the cache
    info = catalog.CATALOG["qwen2.5-coder-0.5b"]
    monkeypatch.setitem(
        catalog.CATALOG, "qwen2.5-coder-0.5b", dataclasses.replace(info, sha256="0" * 64)
    )
    assert len(judged_calls()) == 2  # another file under the same name: asked again


def test_the_same_command_twice_gives_the_same_items_order_scores_and_cache_hits(tmp_path):
    """Proposals finishing in another order, and another concurrency, change nothing."""
    import random

    jitter = random.Random(7)
    slow = FakeChat(label="slow", reply=_echo, delay=lambda n: jitter.uniform(0, 0.03))
    fast = FakeChat(
        label="fast", reply=lambda *_: "no idea", delay=lambda n: jitter.uniform(0, 0.03)
    )
    agg = FakeChat(label="agg", reply=_echo)
    config = MoAConfig(name="mix", proposers=[slow, fast], aggregator=agg, layers=2)

    def run(concurrency):
        evaluation = Evaluation(
            [config], ITEMS, tmp_path, plots=False, exports=False, concurrency=concurrency
        )
        summary = asyncio.run(evaluation.run(progress=False))
        rows = [json.loads(line) for line in (tmp_path / "results" / "mix.jsonl").open()]
        return summary["mix"], [(r["id"], r["answer"], r["scores"]) for r in rows]

    first, rows = run(3)
    again, rows_again = run(1)
    assert [r[0] for r in rows] == ["q3", "q1", "q2"]  # the dataset's order
    assert rows_again == rows and again["correct"] == first["correct"] == 3
    assert again["cached_calls"] == again["calls"] > 0  # nothing generated again


def test_the_scorers_digest_covers_the_number_reader(monkeypatch):
    """The scorers' SHA-256 hashed scorers.py alone, while the numbers it compares are read
    in text/_selection.py (and a GSM8K target in eval/datasets.py): a change to how '1/2'
    or '1e-5' is read left the recorded digest the same. Each reading module counts now."""
    from importlib import resources

    from langgraph_moa.eval import provenance as prov

    before = prov.scorer_rule()["sha256"]
    real = resources.files

    class Edited:
        def __init__(self, package):
            self.inner = real(package)
            self.package = package

        def joinpath(self, name):
            inner = self.inner.joinpath(name)
            if name != "_selection.py":
                return inner
            return type("F", (), {"read_bytes": lambda _s: inner.read_bytes() + b"\n# edited"})()

    monkeypatch.setattr(prov.resources, "files", Edited)
    assert prov.scorer_rule()["sha256"] != before


def test_the_record_names_the_level_the_paired_verdict_was_tested_at():
    """summary.json keeps each p and its call, not the level: the run's record says it."""
    assert f"the interval excludes zero and p < {ALPHA}" in INTERVALS["vs_baseline"]


def test_the_record_names_the_code_that_ran_not_only_its_unchanging_version(tmp_path):
    """The version stayed 0.1.0 through every commit, so two runs of different prompts,
    presets or graph code were recorded alike: the record now holds a digest of the whole
    package's source, which any edit changes, and the llama.cpp binding's version."""
    from langgraph_moa.eval import provenance as prov

    package = tmp_path / "pkg"
    (package / "config" / "presets" / "__pycache__").mkdir(parents=True)
    (package / "a.py").write_text("A = 1\n")
    (package / "config" / "presets" / "p.yaml").write_text("system: be brief\n")
    compiled = package / "config" / "presets" / "__pycache__" / "a.pyc"
    compiled.write_bytes(b"\0compiled")
    before = prov.source_digest(package)
    compiled.write_bytes(b"\0compiled again")
    assert prov.source_digest(package) == before  # compiled files are no source
    (package / "config" / "presets" / "p.yaml").write_text("system: be very brief\n")
    assert prov.source_digest(package) != before
    record = prov.provenance({}, ITEMS, dataset=None, command=None)
    assert record["source_sha256"] == prov.source_digest(prov.PACKAGE_DIR)
    assert "xllamacpp" in record["runtime"]


def test_a_seeded_run_sends_and_records_its_seed_so_samples_can_be_drawn_again(tmp_path):
    """`moa eval` sent no seed: llama.cpp drew a random one per call, so a sampled system's
    answers (every Self-MoA or vote preset) could not be drawn again, and the record did not
    say so. A run's seed now goes to every call (each sample its own, as `moa run` does)
    and is recorded; without one the record says the samples were unseeded."""
    from tests.fakes import CallLog

    log = CallLog()
    model = FakeChat(label="p", reply=_echo, log=log)
    config = MoAConfig(
        name="sc",
        variant="self-moa",
        proposers=[{"model": model, "samples": 3}],
        aggregator={"model": model},
    )
    evaluation = Evaluation(
        [config], ITEMS[:1], tmp_path / "a", plots=False, exports=False, seed=11
    )
    asyncio.run(evaluation.run(progress=False))
    assert sorted(c.kwargs.get("seed") for c in log.calls) == [11, 11, 12, 13]
    assert json.loads((tmp_path / "a" / "provenance.json").read_text())["seed"] == 11
    unseeded = Evaluation([_seq_config()], ITEMS[:1], tmp_path / "b", plots=False, exports=False)
    asyncio.run(unseeded.run(progress=False))
    assert json.loads((tmp_path / "b" / "provenance.json").read_text())["seed"] is None
    assert "seed: none" in (tmp_path / "b" / "report.md").read_text()


def test_a_seeded_run_seeds_the_rankers_pick_so_a_rerun_picks_the_same(tmp_path):
    """`--seed` reached the proposals and the aggregator but never the ranker's call: a
    ranker that samples picked anew on every rerun with the same seed. It gets the run's
    seed now (only the seed: the ranker answers with a number, in no schema)."""
    import random

    from tests.fakes import CallLog

    log = CallLog()

    def pick(_label, _n, _messages):  # a sampling ranker: its pick is its seed's draw
        return str(1 + random.Random(log.by("R")[-1].kwargs.get("seed")).randrange(3))

    config = MoAConfig(
        name="rank",
        variant="ranker",
        proposers=[FakeChat(label=f"p{i}", reply=lambda *_, i=i: f"answer {i}") for i in range(3)],
        aggregator=FakeChat(label="R", reply=pick, log=log, temperature=0.7),
    )

    def picked(folder):
        evaluation = Evaluation(
            [config], ITEMS, tmp_path / folder, plots=False, exports=False, seed=11
        )
        asyncio.run(evaluation.run(progress=False))
        rows = [json.loads(line) for line in (tmp_path / folder / "results" / "rank.jsonl").open()]
        return {r["id"]: r["answer"] for r in rows}

    assert picked("a") == picked("b")
    assert {c.kwargs.get("seed") for c in log.by("R")} == {11}
    assert json.loads((tmp_path / "b" / "provenance.json").read_text())["seed"] == 11


def test_a_seed_no_provider_takes_is_refused_before_any_item(tmp_path):
    """A bad seed passed the constructor and failed every item, one error row each."""
    import pytest

    from langgraph_moa.errors import MoAConfigError

    for seed in (True, 2**63, "7"):
        with pytest.raises(MoAConfigError, match="seed"):
            Evaluation([_seq_config()], ITEMS, tmp_path, plots=False, seed=seed)  # type: ignore[arg-type]


def test_the_source_digest_is_the_same_for_the_same_code_in_any_checkout(tmp_path):
    """A checkout's digest differed from the same commit's elsewhere: git on Windows writes
    CRLF line ends (no .gitattributes fixes them), and an editable checkout holds files no
    wheel ships (a Finder's .DS_Store, an editor's swap file, a .pyc beside its source)."""
    from langgraph_moa.eval import provenance as prov

    def package(name, end, extra=False):
        folder = tmp_path / name
        (folder / "config" / "presets").mkdir(parents=True)
        (folder / "a.py").write_bytes(f"A = 1{end}B = 2{end}".encode())
        presets = folder / "config" / "presets"
        (presets / "p.yaml").write_bytes(f"system: be brief{end}".encode())
        if extra:
            (folder / ".DS_Store").write_bytes(b"\0\1finder")
            (presets / ".p.yaml.swp").write_bytes(b"b0VIM")
            (folder / "a.pyc").write_bytes(b"\0compiled")
        return prov.source_digest(folder)

    wheel = package("wheel", "\n")
    assert package("windows", "\r\n") == wheel
    assert package("checkout", "\n", extra=True) == wheel


def test_a_random_seed_is_not_recorded_as_a_seeded_run(tmp_path):
    """Seed -1 asks llama.cpp for a random seed per call (every sample kept it): a run with
    it drew other samples on every rerun while its record and report said it was seeded."""
    import pytest

    from langgraph_moa.errors import MoAConfigError

    with pytest.raises(MoAConfigError, match="random"):
        Evaluation([_seq_config()], ITEMS, tmp_path, plots=False, seed=-1)
    Evaluation([_seq_config()], ITEMS, tmp_path, plots=False, seed=2)  # a fixed one


def test_a_negative_seed_is_refused_as_the_cli_refuses_it(tmp_path):
    """``Evaluation(seed=-5)`` ran while ``moa eval --seed`` refuses negative seeds, and its
    samples counted down (-5, -6, ...) though the docs say "seed + its position"."""
    import pytest

    from langgraph_moa.errors import MoAConfigError

    with pytest.raises(MoAConfigError) as raised:
        Evaluation([_seq_config()], ITEMS, tmp_path, plots=False, seed=-5)
    message = str(raised.value)
    assert "-5" in message and "0" in message and "\n" not in message, message
    assert message.count(". ") == 0, message
    Evaluation([_seq_config()], ITEMS, tmp_path, plots=False, seed=0)


def test_the_source_digest_names_the_code_the_run_started_with(tmp_path, monkeypatch):
    """The digest was taken when the run finished: a file edited in a checkout during a long
    run (the code that ran was loaded at its start) was recorded as the code that ran."""
    from langgraph_moa.eval import provenance as prov

    package = tmp_path / "pkg"
    package.mkdir()
    (package / "prompts.py").write_text("SYSTEM = 'be brief'\n")
    monkeypatch.setattr(prov, "PACKAGE_DIR", package)
    started = prov.source_digest(package)
    evaluation = Evaluation([_seq_config()], ITEMS[:1], tmp_path / "out", plots=False)
    (package / "prompts.py").write_text("SYSTEM = 'be very brief'\n")  # edited meanwhile
    asyncio.run(evaluation.run(progress=False))
    record = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert record["source_sha256"] == started


def test_a_package_file_with_a_name_not_in_utf_8_is_digested_by_its_bytes(tmp_path):
    """A file name that is no UTF-8 (``caf\\xe9.txt`` written by a Latin-1 tool) made the
    digest raise UnicodeEncodeError, so no Evaluation could start; it is hashed as the bytes
    the file system holds, and the digest still follows the file's content."""
    import os
    import sys

    import pytest

    from langgraph_moa.eval import provenance as prov

    if sys.platform == "win32":
        pytest.skip("Windows file names are UTF-16: none is outside UTF-8")
    package = tmp_path / "pkg"
    (package / "eval" / "data").mkdir(parents=True)
    (package / "a.py").write_text("A = 1\n")
    odd = package / "eval" / "data" / os.fsdecode(b"caf\xe9.txt")
    odd.write_text("one\n")
    before = prov.source_digest(package)
    odd.write_text("two\n")
    assert prov.source_digest(package) != before


def test_an_unreadable_package_file_is_one_sentence_naming_it(tmp_path, monkeypatch):
    """A package file the user cannot read raised PermissionError with a traceback when an
    Evaluation started; it is now a `MoAError` that names the file and the fix."""
    import pytest

    from langgraph_moa.errors import MoAError
    from langgraph_moa.eval import provenance as prov

    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    locked = package / "sub" / "locked.py"
    locked.write_text("secret: 1\n")
    reads = Path.read_bytes

    def read_bytes(path):
        if path == locked:  # as chmod 000 does (tests may run as root, which reads anyway)
            raise PermissionError(13, "Permission denied", str(path))
        return reads(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(MoAError) as raised:
        prov.source_digest(package)
    message = str(raised.value)
    assert "sub/locked.py" in message and "Permission denied" in message, message
    assert "\n" not in message and message.count(". ") == 0, message


def test_the_source_digest_leaves_out_files_no_wheel_ships(tmp_path):
    """It hashed editor backups and scratch files (``a.py~``, ``#a.py#``, ``a.py.orig``,
    ``notes.bak``, ``scratch.txt``), so the same code digested differently in a checkout
    an editor had touched: only ``*.py`` and pyproject's package-data patterns count."""
    from langgraph_moa.eval import provenance as prov

    package = tmp_path / "pkg"
    (package / "serving" / "static").mkdir(parents=True)
    (package / "a.py").write_text("A = 1\n")
    (package / "serving" / "static" / "app.js").write_text("go()\n")
    before = prov.source_digest(package)
    for name in ("foo.py~", "#a.py#", "a.py.orig", "notes.bak", "scratch.txt", "x.yaml"):
        (package / name).write_text("scratch\n")
    (package / "serving" / "static" / "deep").mkdir()
    (package / "serving" / "static" / "deep" / "x.js").write_text("no\n")
    assert prov.source_digest(package) == before
    (package / "serving" / "static" / "app.js").write_text("stop()\n")
    assert prov.source_digest(package) != before


def test_the_source_digest_patterns_are_pyprojects_package_data():
    """The digest's list of shipped data files is pyproject's, written once more here."""
    import tomllib

    from langgraph_moa.eval import provenance as prov

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"]["langgraph_moa"]
    assert list(prov.PACKAGE_DATA) == shipped
