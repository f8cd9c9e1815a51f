"""Work that grows with the size of a run: counted (never timed) at n and 2n.

A researcher's runs are large (24 proposers, Self-MoA with 64 samples, Self-MoA-Seq over
200): the package's own work per run must grow with the calls it makes, not with their
square. Each test counts the function calls that did grow faster.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.constants import TASKS

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.run import _calls, state
from langgraph_moa.run.state import CallRecord, merge_calls
from langgraph_moa.text import _prompts
from langgraph_moa.text._selection import Candidate, SelectionConfig, select
from tests.fakes import FakeChat

QUESTION = {"messages": [("user", "Why is the sky blue?")]}


def record(layer: int, proposer: int, sample: int = 0, role: str = "proposer") -> CallRecord:
    return {"role": role, "layer": layer, "proposer": proposer, "sample": sample}  # type: ignore[typeddict-item]


def counting(monkeypatch: Any, module: Any, name: str) -> list[int]:
    """Wrap `module.name` so that each call adds one to the returned counter."""
    counter = [0]
    real = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return counter


def merged_one_by_one(records: list[CallRecord]) -> list[CallRecord]:
    """Merge `records` as LangGraph applies a layer's writes: one task's list at a time."""
    calls: list[CallRecord] = []
    for r in records:
        calls = merge_calls(calls, [r])
    return calls


def test_records_arriving_in_order_are_merged_with_work_linear_in_their_number(monkeypatch):
    # Each write re-keyed and re-sorted every record so far: a Self-MoA-Seq run over 200
    # samples keyed its call records ~68,000 times (4x for 2x the samples).
    keyed = counting(monkeypatch, state, "call_key")
    for n in (100, 200):
        keyed[0] = 0
        records = [record(1 + k // 10, 0, k) for k in range(n)]
        assert merged_one_by_one(records) == records
        assert keyed[0] <= 3 * n


def test_merging_keeps_its_order_and_upserts_whatever_order_records_come_in():
    out_of_order = [record(2, 0), record(1, 1), record(3, 0, role="aggregator"), record(1, 0)]
    assert merged_one_by_one(out_of_order) == [
        record(1, 0),
        record(1, 1),
        record(2, 0),
        record(3, 0, role="aggregator"),
    ]
    retried = {**record(1, 1), "status": "ok"}
    assert merge_calls([record(1, 0), record(1, 1)], [retried]) == [record(1, 0), retried]
    tied = [record(2, 0, role="aggregator"), record(2, 0, role="ranker")]
    assert merged_one_by_one(tied) == tied  # equal sort keys keep their arrival order
    assert merge_calls([record(1, 0)], [record(1, 2), record(1, 1)]) == [
        record(1, 0),
        record(1, 1),
        record(1, 2),
    ]
    assert merge_calls([record(1, 0)], None) == []


def test_draw_offsets_ask_each_proposer_for_its_settings_once(monkeypatch):
    # Every proposer was compared with every earlier one, asking both for their call
    # parameters and LangChain cache keys again: 256 model instances took over a second
    # of a config's first call, the square of the proposers.
    for n in (16, 32):
        asked = counting(monkeypatch, FakeChat, "_get_llm_string")
        proposers = [FakeChat(label=f"P{i}", temperature=0.7) for i in range(n)]
        cfg = MoAConfig(proposers=proposers, aggregator=FakeChat(label="AGG"))
        # FakeChat reports no settings that tell its instances apart: LangChain's cache keys
        # them alike, so each proposer's draw goes on from the ones before it.
        assert _calls.draw_offsets(cfg) == tuple(range(n))
        assert asked[0] <= n
        monkeypatch.undo()


def test_consensus_scores_each_pair_of_proposals_once(monkeypatch):
    # Minimum Bayes risk compares every pair, and token-set similarity is symmetric, yet
    # each pair was scored twice: 64 Self-MoA samples of 4k tokens each took ~20 s of CPU.
    from rapidfuzz import fuzz

    scored = counting(monkeypatch, fuzz, "token_set_ratio")
    for n in (8, 16):
        scored[0] = 0
        pool = [
            Candidate(index=k, model="m", text=f"the answer is {k % 3} because {k}")
            for k in range(n)
        ]
        decision = select(pool, SelectionConfig(method="consensus"))
        assert decision.winner in range(n)
        assert len(decision.tally) == n
        assert scored[0] == n * (n - 1) // 2


def checkpointed_task_bytes(n: int, answer_chars: int = 2000) -> tuple[int, bytes]:
    """Run 3 layers of `n` proposers on a checkpointer; return its proposer tasks' bytes."""
    proposers = [
        FakeChat(label=f"P{i}", reply=lambda label, k, _: f"{label}/{k} " * (answer_chars // 8))
        for i in range(n)
    ]
    saver = InMemorySaver()
    graph = create_moa_graph(
        MoAConfig(proposers=proposers, aggregator=FakeChat(label="AGG"), layers=3),
        checkpointer=saver,
    )
    graph.invoke(QUESTION, {"configurable": {"thread_id": "t"}})
    tasks = [w[2][1] for d in saver.writes.values() for w in d.values() if w[1] == TASKS]
    tasks += [blob for (_, _, channel, _), (_, blob) in saver.blobs.items() if channel == TASKS]
    return sum(map(len, tasks)), b"".join(tasks)


def test_a_layers_proposer_tasks_do_not_each_carry_every_reference():
    # Each proposer task of a layer after the first carried the whole prompt, every
    # reference included, and the checkpointer stores each task (twice): n proposers wrote
    # n x n answers per layer (24 proposers of 4k-token answers: ~18 MB a layer; 4x for 2x).
    size, tasks = checkpointed_task_bytes(4)
    double, _ = checkpointed_task_bytes(8)
    assert b"P0/1" not in tasks  # layer 1's answers are references of layer 2
    assert double <= 2.5 * size


def test_the_proposers_of_a_layer_share_one_built_input(monkeypatch):
    # Read from the state, the references are fenced once a layer, not once per proposer.
    fenced = counting(monkeypatch, _prompts, "neutralize_markers")
    counts = []
    for n in (4, 8):
        fenced[0] = 0
        checkpointed_task_bytes(n, answer_chars=80)
        counts.append(fenced[0])
    assert counts[1] <= 2.5 * counts[0]


def self_moa_seq(samples: int) -> MoAConfig:
    return MoAConfig(
        variant="self-moa-seq",
        proposers=[
            {"model": FakeChat(label="M", reply=lambda *_: "word " * 40), "samples": samples}
        ],
    )


def checkpointed_seq_run(samples: int) -> tuple[list[Any], int]:
    """Run Self-MoA-Seq on a checkpointer; return its call records read back, and the bytes
    its checkpoints and writes hold."""
    saver = InMemorySaver()
    graph = create_moa_graph(self_moa_seq(samples), checkpointer=saver)
    thread = {"configurable": {"thread_id": "t"}}
    out = graph.invoke(QUESTION, thread)
    assert graph.get_state(thread).values["calls"] == out["calls"]  # read back whole
    stored = sum(len(blob) for _, blob in saver.blobs.values())
    stored += sum(len(w[2][1]) for d in saver.writes.values() for w in d.values())
    return out["calls"], stored


def test_self_moa_seq_checkpoints_grow_with_its_samples_not_their_square():
    # Each window's checkpoint held every call record of the run so far (the channel of
    # the records was saved whole at each step that wrote it): 48 samples stored 6x what
    # 12 did (~250 kB for ~40 kB). Now a step saves what it wrote.
    calls, size = checkpointed_seq_run(12)
    _, four_times = checkpointed_seq_run(48)
    assert four_times <= 4.5 * size
    # The records read the same as a run's without a checkpointer.
    plain = create_moa_graph(self_moa_seq(12)).invoke(QUESTION)["calls"]
    shown = ("role", "layer", "proposer", "sample", "output", "status")
    assert [[c[k] for k in shown] for c in calls] == [[c[k] for k in shown] for c in plain]
