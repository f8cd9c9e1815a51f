"""budget.max_tokens: once a run's recorded tokens reach it, no new call starts."""

import pytest

from langgraph_moa import BudgetExhaustedError, MoAConfig, create_moa_graph
from tests.helpers import QUESTION


def fallback_of(out):
    return out["messages"][-1].response_metadata["moa"]


def test_a_spent_budget_skips_the_remaining_layers_and_answers_labelled(fake, log):
    config = MoAConfig(
        proposers=[fake("A"), fake("B")],
        aggregator=fake("AGG"),
        layers=3,
        budget={"max_tokens": 1},
    )
    out = create_moa_graph(config).invoke(QUESTION)
    assert sorted(c.label for c in log.calls) == ["A", "B"]  # no layer 2, no aggregator
    meta = fallback_of(out)
    assert out["messages"][-1].text == "A #1" and meta["fallback"] == "budget"
    assert "budget.max_tokens of 1" in meta["fallback_reason"]
    assert out["usage"]["total"]["calls"] == 2


def test_a_budget_that_is_not_reached_changes_nothing(fake, log):
    config = MoAConfig(
        proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), budget={"max_tokens": 10**6}
    )
    out = create_moa_graph(config).invoke(QUESTION)
    assert len(log.calls) == config.calls_per_run()
    assert "fallback" not in fallback_of(out)


def test_self_moa_seq_stops_between_windows_with_its_synthesis(fake, log):
    model = fake("M")
    config = MoAConfig(
        variant="self-moa-seq",
        proposers=[{"model": model, "samples": 5}],
        seq={"window_size": 3},
        budget={"max_tokens": 13},  # the first window's samples use 12
    )
    out = create_moa_graph(config).invoke(QUESTION)
    assert len(log.calls) == 4  # the first window (3 samples) and its aggregation
    meta = fallback_of(out)
    assert meta["fallback"] == "budget" and meta["answered_by"] == "M"
    synthesis = next(c for c in out["calls"] if c["role"] == "aggregator")
    assert out["messages"][-1].text == synthesis["output"]


def test_where_no_fallback_may_answer_the_run_raises_with_its_calls(fake, log):
    config = MoAConfig(
        proposers=[fake("A"), fake("B")],
        aggregator=fake("AGG"),
        layers=2,
        on_aggregator_failure="raise",
        budget={"max_tokens": 1},
    )
    with pytest.raises(BudgetExhaustedError, match=r"budget\.max_tokens of 1") as caught:
        create_moa_graph(config).invoke(QUESTION)
    assert len(caught.value.calls) == 2 and len(log.calls) == 2


def test_a_run_asking_for_a_structure_raises_rather_than_answer_free_text(fake, log):
    # The run's own response_format (final_kwargs, as moa serve sends it) counts like the
    # graph's: a spent budget may not answer with a proposal's free text.
    config = MoAConfig(
        proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), budget={"max_tokens": 1}
    )
    structured = {**QUESTION, "final_kwargs": {"response_format": {"type": "json_object"}}}
    with pytest.raises(BudgetExhaustedError):
        create_moa_graph(config).invoke(structured)
    assert len(log.calls) == 2


def test_a_budget_reached_exactly_is_spent(fake, log):
    """`max_tokens` is the most a run uses: at exactly that many tokens no new call starts."""

    def config(budget):
        return MoAConfig(
            proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=3, budget=budget
        )

    free = create_moa_graph(config({})).invoke(QUESTION)
    first_layer = sum(c["total_tokens"] for c in free["calls"] if c["layer"] == 1)
    log.calls.clear()
    out = create_moa_graph(config({"max_tokens": first_layer})).invoke(QUESTION)
    assert sorted(c.label for c in log.calls) == ["A", "B"]  # no layer 2, no aggregator
    assert fallback_of(out)["fallback"] == "budget"
