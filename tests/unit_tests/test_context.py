"""Per-run settings through the graph's context schema (what LangGraph server sends)."""

import pytest

from langgraph_moa import MoAConfig, MoAConfigError, MoAContext, create_moa_graph
from langgraph_moa.config.context import apply_context
from tests.helpers import QUESTION


def test_context_changes_layers_samples_and_limits_per_run(fake, log):
    graph = create_moa_graph(
        MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=3)
    )
    graph.invoke(
        QUESTION, context=MoAContext(layers=2, samples=2, max_tokens=99, aggregator_max_tokens=777)
    )
    assert sorted(c.label for c in log.calls) == ["A", "A", "AGG", "B", "B"]
    assert {c.max_tokens for c in log.calls[:4]} == {99}
    assert log.calls[-1].max_tokens == 777
    log.calls.clear()
    graph.invoke(QUESTION)  # the base config is untouched
    assert len(log.calls) == 5


def test_context_as_a_dict_switches_variant(fake, log):
    graph = create_moa_graph(
        MoAConfig(
            proposers=[{"model": fake("M"), "samples": 3}],
            aggregator=fake("AGG"),
            variant="single-proposer",
        )
    )
    out = graph.invoke(QUESTION, context={"variant": "self-moa"})
    assert [c.label for c in log.calls] == ["M", "M", "M", "M"]
    assert out["messages"][-1].response_metadata["moa"]["variant"] == "self-moa"


def test_context_model_strings_are_validated(fake):
    graph = create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    with pytest.raises(MoAConfigError, match="Unknown model provider"):
        graph.invoke(QUESTION, context={"proposers": ["nonsense-model"]})
    with pytest.raises(MoAConfigError, match="layer: unknown setting"):
        graph.invoke(QUESTION, context={"layer": 3})


def test_an_aggregator_on_a_select_config_is_a_config_error_not_an_assert(fake):
    from langgraph_moa.cli._app import build_config

    vote = MoAConfig(variant="select", proposers=[{"model": fake("A"), "samples": 3}])
    with pytest.raises(MoAConfigError, match="remove 'aggregator'"):
        apply_context(vote, MoAContext(aggregator="openai:gpt-4o-mini"))
    with pytest.raises(MoAConfigError, match="--aggregator has no effect with variant select"):
        build_config("self-consistency", None, aggregator="openai:gpt-4o-mini")
    graph = create_moa_graph(vote)
    with pytest.raises(MoAConfigError, match="remove 'aggregator'"):
        graph.invoke({"messages": [("user", "q")]}, context={"aggregator": "openai:gpt-4o"})
    # Leaving 'select' for a variant that aggregates gets an aggregator of its own.
    moa = apply_context(vote, MoAContext(variant="single-proposer", aggregator="openai:gpt-4o"))
    assert moa.final.model == "openai:gpt-4o"


def test_a_model_named_by_the_run_does_not_take_the_old_models_context_window(fake, log):
    """A context window belongs to its model, as a display name does.

    A run that named other proposers (or another aggregator) gave them the configured
    model's window: references were trimmed to, or overflowed, a window not theirs.
    """
    base = MoAConfig(
        variant="self-moa",
        proposers=[{"model": "old@http://127.0.0.1:9/v1", "samples": 2, "context_window": 4096}],
    )
    assert base.final.context_window == 4096
    swapped = apply_context(base, MoAContext(proposers=["new@http://127.0.0.1:9/v1"]))
    assert swapped.proposers[0].context_window is None
    assert (
        swapped.final.context_window is None and swapped.final.model == swapped.proposers[0].model
    )
    moa = MoAConfig(
        proposers=[{"model": "old@http://127.0.0.1:9/v1", "context_window": 4096}],
        aggregator={"model": "old@http://127.0.0.1:9/v1", "context_window": 4096},
    )
    other = apply_context(moa, MoAContext(aggregator="new@http://127.0.0.1:9/v1"))
    assert other.final.context_window is None
    # The same model named again keeps what the config says about it.
    same = apply_context(base, MoAContext(samples=3))
    assert same.proposers[0].context_window == same.final.context_window == 4096


def test_a_run_contexts_proposers_are_refused_as_the_contexts_naming_the_field_and_fix(fake, log):
    """An empty `proposers` list reached the config and was refused as "Invalid MoA
    configuration: proposers: ...", which the caller's config does not hold; a bad spec
    in it was blamed on a field `model` the context does not have."""
    graph = create_moa_graph(MoAConfig(proposers=[fake("A")], aggregator=fake("AGG")))
    with pytest.raises(MoAConfigError) as empty:
        graph.invoke(QUESTION, context={"proposers": []})
    assert str(empty.value).startswith("Invalid run context: proposers: ")
    assert "leave 'proposers' out" in str(empty.value)
    with pytest.raises(MoAConfigError) as bad:
        graph.invoke(QUESTION, context={"proposers": ["openai:gpt-4o-mini", "nonsense"]})
    assert str(bad.value).startswith("Invalid run context: proposers.1: Unknown model provider")
    assert log.calls == []
