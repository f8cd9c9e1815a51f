"""`moa eval`: systems over a dataset, results written, reruns served from the call cache."""

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid

import pytest

from langgraph_moa import MoAConfig, MoAConfigError
from langgraph_moa.eval import load_dataset, shipped_dataset
from langgraph_moa.eval.langsmith_eval import evaluate_system
from langgraph_moa.eval.runner import Evaluation, slug
from langgraph_moa.local.catalog import CATALOG
from langgraph_moa.testing import FaultProfile, FaultServer


@pytest.fixture(scope="module")
def backend():
    with FaultServer(default=FaultProfile(latency_s=(0.01, 0.02))) as server:
        yield server


@pytest.fixture
def moa_file(backend, tmp_path):
    """Two proposers and an aggregator on the fault server, one proposer layer."""
    path = tmp_path / "moa.yaml"
    MoAConfig(
        proposers=[f"p1@{backend.url}", f"p2@{backend.url}"],
        aggregator=f"agg@{backend.url}",
        layers=2,
    ).to_file(path)
    return path


def test_systems_run_results_are_written_and_a_rerun_hits_the_cache(backend, moa_file, tmp_path):
    systems = [f"single:p1@{backend.url}", str(moa_file)]
    items = load_dataset(shipped_dataset())[:5]

    first = asyncio.run(
        Evaluation(systems, items, tmp_path / "out", concurrency=3).run(progress=False)
    )
    requests_after_first = sum(backend.requests.values())
    assert requests_after_first == 5 * 1 + 5 * 3
    for name in systems:
        assert (
            first[name]["items"] == 5
            and first[name]["errors"] == 0
            and first[name]["cached_calls"] == 0
        )
    rows = [
        json.loads(line)
        for line in (tmp_path / "out" / "results")
        .glob("*moa.yaml.jsonl")
        .__next__()
        .read_text()
        .splitlines()
    ]
    assert [r["id"] for r in rows] == [i.id for i in items]
    # Per-layer analysis (layers=2: one proposer layer, then the aggregator): the proposals
    # and the final answer were scored, and the final answer was compared with both proposals.
    assert set(rows[0]["stage_scores"]) == {"1", "final"}
    assert len(rows[0]["stage_scores"]["1"]) == 2 and len(rows[0]["proposal_scores"]) == 2
    assert {c["role"] for c in rows[0]["trace"]} == {"proposer", "aggregator"}
    assert set(first[str(moa_file)]["layer_curve"]) == {"1", "final"}
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    assert "| system | correct |" in report and str(moa_file) in report
    assert "![Quality vs cost (Pareto front marked)](quality_vs_cost.png)" in report
    assert "![Quality per layer](quality_per_layer.png)" in report
    for png in ("quality_vs_cost.png", "quality_per_layer.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")
    exported = json.loads(
        next((out / "exports" / "alpaca_eval").glob("*moa.yaml/model_outputs.json")).read_text()
    )
    assert [e["output"] for e in exported] == [r["answer"] for r in rows]
    assert len(list((out / "exports" / "mt_bench" / "model_answer").glob("*.jsonl"))) == 2

    second = asyncio.run(Evaluation(systems, items, tmp_path / "out").run(progress=False))
    assert sum(backend.requests.values()) == requests_after_first  # nothing generated again
    assert all(s["cached_calls"] == s["calls"] for s in second.values())
    assert {k: v["correct"] for k, v in second.items()} == {
        k: v["correct"] for k, v in first.items()
    }


def test_unknown_system_is_a_clear_error(tmp_path):
    with pytest.raises(MoAConfigError, match="single:<model spec>"):
        Evaluation(["gpt-5-ultra"], [], tmp_path)


@pytest.mark.local_models
@pytest.mark.usefixtures("local_models_available")
def test_moa_eval_on_the_local_models(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "langgraph_moa",
        "eval",
        "--system",
        "single:local:qwen2.5-coder-0.5b",
        "--system",
        "local-self-moa",
        "--judge",
        "local:qwen2.5-coder-0.5b",
        "--baseline",
        "single:local:qwen2.5-coder-0.5b",
        "--limit",
        "2",
        "--out",
        str(tmp_path),
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"single:local:qwen2.5-coder-0.5b", "local-self-moa"}
    assert all(s["items"] == 2 and s["errors"] == 0 for s in summary.values())
    # A real judge asked both orders; two items are too few for the length-controlled fit.
    win = summary["local-self-moa"]["win_rate"]
    assert win["items"] == 2 and 0 <= win["rate"] <= 100 and "at least 5" in win["lc_note"]
    # Self-MoA's three samples were scored as its layer, next to the final answer.
    assert set(summary["local-self-moa"]["layer_curve"]) == {"1", "final"}
    assert summary["local-self-moa"]["layer_curve"]["1"]["items"] == 2
    report = (tmp_path / "report.md").read_text()
    assert (
        "## Verdict" in report
        and "vs the best single model (single:local:qwen2.5-coder-0.5b)" in report
    )
    for png in ("quality_vs_cost.png", "quality_per_layer.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert (
        tmp_path / "exports" / "alpaca_eval" / "local-self-moa" / "model_outputs.json"
    ).is_file()
    assert "## Verdict" in first.stdout  # the report is printed too
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0
    again = json.loads((tmp_path / "summary.json").read_text())
    assert all(s["cached_calls"] == s["calls"] for s in again.values())
    # The same command again: the same scores, and a record that names the model's file.
    assert {n: s["correct"] for n, s in again.items()} == {
        n: s["correct"] for n, s in summary.items()
    }
    record = json.loads((tmp_path / "provenance.json").read_text())
    pinned = CATALOG["qwen2.5-coder-0.5b"].sha256
    assert record["systems"]["single:local:qwen2.5-coder-0.5b"]["models"] == [
        {"spec": "local:qwen2.5-coder-0.5b", "sha256": pinned}
    ]
    assert record["judge"] == {"spec": "local:qwen2.5-coder-0.5b", "sha256": pinned}
    assert record["command"].startswith("moa eval --system single:local:qwen2.5-coder-0.5b")
    assert record["dataset"]["items"] == 2 and len(record["dataset"]["ids"]) == 2


def test_pairwise_judge_against_a_baseline_and_cached_rescoring(backend, tmp_path):
    systems = [f"single:p1@{backend.url}", f"single:p2@{backend.url}"]
    items = load_dataset(shipped_dataset())[:6]
    judge = f"judge@{backend.url}"
    summary = asyncio.run(
        Evaluation(systems, items, tmp_path, judge=judge, baseline=systems[0]).run(progress=False)
    )
    # The fault server's judge never names A or B: every verdict is unreadable, hence a tie.
    assert summary[systems[1]]["win_rate"] == {
        "baseline": systems[0],
        "judge": judge,
        "rate": 50.0,
        "ci95": [50.0, 50.0],
        "items": 6,
        "length_controlled": {"rate": 50.0, "standard_error": 0.0},
        "consistent": 0,
        "first_position": 0.0,
        "unreadable": 12,
    }
    assert "win_rate" not in summary[systems[0]]
    assert backend.requests["judge"] >= 12  # both orders for every item
    before = dict(backend.requests)
    asyncio.run(
        Evaluation(systems, items, tmp_path, judge=judge, baseline=systems[0]).run(progress=False)
    )
    # The answers come from the rows and the call cache; an unreadable verdict is not cached,
    # so each is asked again (a readable one is served from the cache: test_judge.py).
    assert (backend.requests["p1"], backend.requests["p2"]) == (before["p1"], before["p2"])
    assert backend.requests["judge"] == 2 * before["judge"]
    assert "Pairwise win rate against" in (tmp_path / "report.md").read_text()


def test_judge_needs_a_baseline_among_the_systems(tmp_path):
    with pytest.raises(MoAConfigError, match="needs both --judge"):
        Evaluation(["local-moa"], [], tmp_path, judge="local:qwen2.5-coder-0.5b")
    with pytest.raises(MoAConfigError, match="must be one of the systems"):
        Evaluation(
            ["local-moa"], [], tmp_path, judge="local:qwen2.5-coder-0.5b", baseline="moa-lite"
        )


def _examples(n):
    from langsmith.schemas import Example

    dataset = uuid.uuid4()
    items = load_dataset(shipped_dataset())[:n]
    return items, [
        Example(
            id=uuid.uuid4(),
            dataset_id=dataset,
            inputs={"question": item.turns[0]},
            outputs={"expected": item.expected, "numeric": item.numeric, "pattern": item.pattern},
        )
        for item in items
    ]


def test_langsmith_evaluate_runs_a_system_with_the_verifiable_scorers(
    backend, recorder, moa_file, tmp_path
):
    from langsmith import Client

    url, _ = recorder
    _, examples = _examples(3)
    client = Client(api_url=url, api_key="test-key")
    before = sum(backend.requests.values())

    results = evaluate_system(
        str(moa_file), examples, client=client, cache_dir=tmp_path / "cache", upload_results=False
    )
    rows = list(results)
    assert len(rows) == 3 and sum(backend.requests.values()) - before == 3 * 3
    for row in rows:
        assert row["run"].outputs["calls"] == 3 and row["run"].outputs["answer"]
        [verdict] = row["evaluation_results"]["results"]
        assert verdict.key == "correct" and verdict.score in (0, 1)

    # A second experiment on the same data is served from the call cache.
    again = list(
        evaluate_system(
            str(moa_file),
            examples,
            client=client,
            cache_dir=tmp_path / "cache",
            upload_results=False,
        )
    )
    assert len(again) == 3 and sum(backend.requests.values()) - before == 3 * 3
    client.flush()  # traces go to the loopback recorder before it stops


@pytest.mark.local_models
@pytest.mark.usefixtures("local_models_available")
def test_langsmith_evaluate_on_the_local_model(recorder, tmp_path):
    from langsmith import Client

    url, _ = recorder
    _, examples = _examples(2)
    client = Client(api_url=url, api_key="test-key")
    results = list(
        evaluate_system(
            "single:local:qwen2.5-coder-0.5b",
            examples,
            client=client,
            cache_dir=tmp_path,
            upload_results=False,
        )
    )
    assert len(results) == 2
    assert all(r["run"].outputs["answer"].strip() for r in results)
    assert all(r["evaluation_results"]["results"][0].score in (0, 1) for r in results)
    client.flush()


def test_without_uploads_no_run_leaves_the_machine(backend, recorder, moa_file, tmp_path):
    """The default LangSmith endpoint is the recorder here: it must receive no runs."""
    url, sent = recorder
    script = f"""
import uuid
from langsmith.schemas import Example
from langgraph_moa.eval import evaluate_system
data = [Example(id=uuid.uuid4(), dataset_id=uuid.uuid4(), inputs={{"question": "2+2?"}},
                outputs={{"expected": "4"}})]
rows = list(evaluate_system({str(moa_file)!r}, data, cache_dir={str(tmp_path)!r}, upload_results=False))
assert len(rows) == 1 and rows[0]["run"].outputs["answer"]
"""
    env = {
        **os.environ,
        "LANGSMITH_ENDPOINT": url,
        "LANGSMITH_API_KEY": "test-key",
        "LANGSMITH_TRACING": "true",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert not [s for s in sent if s["method"] in ("POST", "PATCH") and "runs" in s["path"]]


@pytest.mark.local_models
@pytest.mark.usefixtures("local_models_available")
def test_judge_layers_on_the_local_models(tmp_path):
    data = tmp_path / "open.json"  # AlpacaEval format: no expected answer to check
    data.write_text(json.dumps([{"instruction": "Name one primary colour.", "output": "Red."}]))
    systems = ["single:local:qwen2.5-coder-0.5b", "local-self-moa"]
    evaluation = Evaluation(
        systems,
        load_dataset(data),
        tmp_path / "out",
        judge="local:qwen2.5-coder-0.5b",
        baseline=systems[0],
        judge_layers=True,
    )
    summary = asyncio.run(evaluation.run(progress=False))
    curve = summary["local-self-moa"]["layer_curve"]
    assert set(curve) == {"1", "final"} and curve["1"]["items"] == 1
    assert all(0.0 <= v["mean"] <= v["best"] <= 1.0 for v in curve.values())
    assert summary["local-self-moa"]["similarity"]["levenshtein"]["pairs"] == 3


def test_moa_eval_reads_the_packaged_gsm8k_sample_by_name(backend, tmp_path):
    """`moa eval --dataset gsm8k`: the 300 packaged test items, scored by their `#### N`."""
    cmd = [
        sys.executable,
        "-m",
        "langgraph_moa",
        "eval",
        "--system",
        f"single:p1@{backend.url}",
        "--dataset",
        "gsm8k",
        "--limit",
        "3",
        "--no-plots",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [rows] = [p.read_text().splitlines() for p in (tmp_path / "results").glob("*.jsonl")]
    items = load_dataset("gsm8k")[:3]
    assert [json.loads(r)["id"] for r in rows] == [i.id for i in items]
    # The fake model answers "p1 answer 3 w0 ... w8": scored by its last number against the
    # item's '#### N' (the third item's answer is 8).
    for row, item in zip(map(json.loads, rows), items, strict=True):
        assert set(row["scores"]) == {"numeric", "correct"}
        assert row["scores"]["correct"] == (item.numeric == 8.0), (row["answer"], item.numeric)
    cmd[cmd.index("gsm8k")] = "gsm9k"
    missing = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert missing.returncode != 0
    assert "packaged dataset by name (verifiable, gsm8k)" in missing.stderr + missing.stdout
    assert "Traceback" not in missing.stderr


def test_an_interrupted_chunk_wise_eval_resumes_with_the_items_it_finished(tmp_path):
    """Ctrl-C in `moa eval` of a system no cache can replay: the rerun answers only the rest.

    Chunk-wise aggregation races its streamed proposals, so its calls are never replayed
    from the call cache; the rows written as each item finished are what carries over, to a
    rerun and to a longer run alike.
    """
    streamed = FaultProfile(reply_words=12, token_s=0.02, honor_max_tokens=True)
    with FaultServer(default=streamed) as server:
        config = tmp_path / "chunks.yaml"
        MoAConfig(
            name="chunks",
            proposers=[f"a@{server.url}", f"b@{server.url}"],
            aggregator=f"agg@{server.url}",
            layers=2,
            aggregation={"start": "chunks", "chunk_tokens": 4},
        ).to_file(config)
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "langgraph_moa", "eval", "--system", str(config)]
        cmd += ["--limit", "8", "--no-plots", "--out", str(out)]
        stored = out / "results" / "chunks.rows.jsonl"
        run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        # The digest line and two finished items, then Ctrl-C.
        while not (stored.is_file() and len(stored.read_text().splitlines()) >= 3):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 130 and "Interrupted" in stderr
        assert "run the same command again to answer only the rest" in " ".join(stderr.split())
        finished = [json.loads(line)["id"] for line in stored.read_text().splitlines()[1:]]
        assert 2 <= len(finished) < 8 and not (out / "results" / "chunks.jsonl").exists()

        before = server.requests["a"]
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert server.requests["a"] - before == 8 - len(finished)  # the rest, and only it
        said = " ".join(again.stdout.split())
        assert f"chunks: {len(finished)} of 8 items kept from an earlier run" in said
        rows = [json.loads(x) for x in (out / "results" / "chunks.jsonl").read_text().splitlines()]
        assert len(rows) == 8 and all(r["error"] is None and r["answer"] for r in rows)

        before = server.requests["a"]
        longer = subprocess.run(
            [*cmd[:-5], "--limit", "10", *cmd[-3:]], capture_output=True, text=True, timeout=300
        )
        assert longer.returncode == 0, longer.stderr
        assert server.requests["a"] - before == 2  # items 9 and 10 only
        assert "chunks: 8 of 10 items kept from an earlier run" in " ".join(longer.stdout.split())


def test_an_interrupted_eval_says_what_it_finished_and_the_command_that_resumes_it(tmp_path):
    """Ctrl-C in `moa eval`: one line with each system's finished items and the command to
    go on; that command answers only the rest, and its report is an uninterrupted run's.

    The line said "run the same command again", with no count and no command: after a long
    run the user had neither what was done nor the command at hand.
    """
    fixed = FaultProfile(latency_s=(0.2, 0.2), reply_text="The answer is 4.")
    with FaultServer(default=fixed) as server:
        config = tmp_path / "mix.yaml"
        MoAConfig(
            name="mix",
            proposers=[f"a@{server.url}", f"b@{server.url}"],
            aggregator=f"agg@{server.url}",
            layers=2,
        ).to_file(config)
        single = f"single:a@{server.url}"
        out = tmp_path / "out"
        moa = [sys.executable, "-m", "langgraph_moa"]
        cmd = [*moa, "eval", "-s", str(config), "-s", single, "--limit", "6", "--no-plots"]
        run = subprocess.Popen(
            [*cmd, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        assert run.stderr is not None
        lines: list[str] = []
        while not any(line.startswith("mix: 2/6 items") for line in lines):  # one per item
            line = run.stderr.readline()
            assert line, lines
            lines.append(line)
        run.send_signal(signal.SIGINT)
        lines += run.stderr.read().splitlines()  # read on from the same buffer, to the end
        run.wait(timeout=60)
        finished = sum(line.startswith("mix: ") for line in lines)
        said = " ".join(lines[-1].split())
        assert run.returncode == 130 and said.startswith("Interrupted."), lines
        assert f"Finished: mix {finished} of 6 items, {single} 0 of 6." in said, lines
        assert "a stopped run writes no summary or report" in said
        assert not any((out / n).exists() for n in ("summary.json", "report.md", "provenance.json"))
        words = shlex.split(said.split("run the same command again to answer only the rest: ")[1])
        assert words[:2] == ["moa", "eval"] and "--no-plots" in words

        before = server.requests["agg"]
        again = subprocess.run([*moa, *words[1:]], capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert server.requests["agg"] - before == 6 - finished  # the finished items cost nothing
        whole = subprocess.run(
            [*cmd, "--out", str(tmp_path / "whole")], capture_output=True, text=True, timeout=300
        )
        assert whole.returncode == 0, whole.stderr
    for name in ("mix", slug(single)):
        resumed, uninterrupted = (
            [
                (r["id"], r["answer"], r["scores"])
                for r in map(json.loads, (o / "results" / f"{name}.jsonl").read_text().splitlines())
            ]
            for o in (out, tmp_path / "whole")
        )
        assert len(resumed) == 6 and resumed == uninterrupted
    summaries = [json.loads((o / "summary.json").read_text()) for o in (out, tmp_path / "whole")]
    for summary in summaries:
        for s in summary.values():
            for varying in ("cached_items", "cached_calls", "median_item_s", "wall_s"):
                s.pop(varying)
    assert summaries[0] == summaries[1]
