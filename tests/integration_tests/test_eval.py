"""`moa eval`: systems over a dataset, results written, reruns served from the call cache."""

import asyncio
import json
import subprocess
import sys

import pytest

from langgraph_moa import MoAConfig, MoAConfigError
from langgraph_moa.eval import load_dataset, shipped_dataset
from langgraph_moa.eval.runner import Evaluation
from langgraph_moa.testing import FaultProfile, FaultServer


@pytest.fixture(scope="module")
def backend():
    with FaultServer(default=FaultProfile(latency_s=(0.01, 0.02))) as server:
        yield server


def test_systems_run_results_are_written_and_a_rerun_hits_the_cache(backend, tmp_path):
    moa_file = tmp_path / "moa.yaml"
    MoAConfig(
        proposers=[f"p1@{backend.url}", f"p2@{backend.url}"],
        aggregator=f"agg@{backend.url}",
        layers=2,
    ).to_file(moa_file)
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
    assert set(rows[0]["layers"]) == {"1", "2"}  # per-layer outputs kept for layer analysis
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| system | correct |" in report and str(moa_file) in report

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
        "single:local:smollm2-135m",
        "--system",
        "local-self-moa",
        "--limit",
        "2",
        "--out",
        str(tmp_path),
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"single:local:smollm2-135m", "local-self-moa"}
    assert all(s["items"] == 2 and s["errors"] == 0 for s in summary.values())
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0
    again = json.loads((tmp_path / "summary.json").read_text())
    assert all(s["cached_calls"] == s["calls"] for s in again.values())


def test_pairwise_judge_against_a_baseline_and_cached_rescoring(backend, tmp_path):
    systems = [f"single:p1@{backend.url}", f"single:p2@{backend.url}"]
    items = load_dataset(shipped_dataset())[:4]
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
        "items": 4,
    }
    assert "win_rate" not in summary[systems[0]]
    assert backend.requests["judge"] >= 8  # both orders for every item
    before = backend.requests["judge"]
    asyncio.run(
        Evaluation(systems, items, tmp_path, judge=judge, baseline=systems[0]).run(progress=False)
    )
    assert backend.requests["judge"] == before  # verdicts come from the call cache
    assert "Pairwise win rate against" in (tmp_path / "report.md").read_text()


def test_judge_needs_a_baseline_among_the_systems(tmp_path):
    with pytest.raises(MoAConfigError, match="needs both --judge"):
        Evaluation(["local-moa"], [], tmp_path, judge="local:qwen2.5-coder-0.5b")
    with pytest.raises(MoAConfigError, match="must be one of the systems"):
        Evaluation(
            ["local-moa"], [], tmp_path, judge="local:qwen2.5-coder-0.5b", baseline="moa-lite"
        )
