"""A `MoAConfig` budget: a run that would make too many calls is refused before the first one."""

import pytest

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.config._limits import Budget, RequestLimits
from langgraph_moa.errors import LimitExceededError, MoAConfigError
from tests.helpers import QUESTION


def test_a_config_past_its_call_budget_is_refused_in_one_sentence():
    with pytest.raises(LimitExceededError) as err:
        MoAConfig(
            proposers=["openai:a", "openai:b", "openai:c"],
            aggregator="openai:d",
            layers=3,
            budget={"max_calls": 6},
        )
    message = str(err.value)
    assert "7 model calls" in message and "limit of 6" in message
    assert "budget.max_calls" in message and "\n" not in message
    assert isinstance(err.value, MoAConfigError)  # callers catching config errors still do


def test_a_config_within_its_budget_keeps_it_through_overrides():
    config = MoAConfig(
        proposers=["openai:a"], aggregator="openai:b", budget=Budget(max_calls=3, max_tokens=9000)
    )
    assert config.calls_per_run() == 3 and config.budget.max_tokens == 9000
    assert config.with_overrides(layers=2).budget.max_calls == 3
    with pytest.raises(LimitExceededError, match=r"budget\.max_calls"):
        config.with_overrides(layers=4)


def test_a_run_context_past_the_budget_fails_before_any_call(fake, log):
    config = MoAConfig(
        proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2, budget={"max_calls": 5}
    )
    graph = create_moa_graph(config)
    assert graph.invoke(QUESTION)["messages"][-1].text.startswith("AGG #")
    log.calls.clear()
    with pytest.raises(LimitExceededError, match="would make 9 model calls"):
        graph.invoke(QUESTION, context={"samples": 4})
    assert log.calls == []


def test_a_budget_must_be_positive():
    with pytest.raises(MoAConfigError, match=r"budget\.max_calls"):
        MoAConfig(proposers=["openai:a"], aggregator="openai:b", budget={"max_calls": 0})


def test_request_limits_cover_the_served_config_and_nothing_more():
    served = MoAConfig(proposers=[{"model": "openai:a", "samples": 10}], aggregator="openai:b")
    limits = RequestLimits().covering(served)
    assert (limits.max_samples, limits.max_calls, limits.max_layers) == (10, 64, 4)
    limits.check_config(served)
    with pytest.raises(LimitExceededError, match="--max-samples"):
        limits.check_config(served.with_overrides(proposers=[{"model": "openai:a", "samples": 11}]))
    with pytest.raises(LimitExceededError, match="--max-messages"):
        limits.check_conversation(messages=257, chars=10)
    with pytest.raises(LimitExceededError, match="--max-chars"):
        limits.check_conversation(messages=1, chars=200_001)


@pytest.mark.parametrize("tokens", [10**5000, 2**63], ids=["5001 digits", "2**63"])
def test_a_token_budget_past_its_range_is_refused_where_it_is_made(tokens):
    """A budget of 10**5000 tokens was taken, then a run failed in `prepare` writing it."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_tokens") as err:
        Budget(max_tokens=tokens)
    assert "less than or equal to 9223372036854775807" in str(err.value)
    with pytest.raises(ValidationError, match="max_run_tokens"):
        RequestLimits(max_run_tokens=tokens)
    with pytest.raises(MoAConfigError, match=r"budget\.max_tokens"):
        MoAConfig(proposers=["openai:a"], aggregator="openai:b", budget={"max_tokens": tokens})


def test_the_largest_token_budget_runs(fake):
    config = MoAConfig(
        proposers=[fake("A")], aggregator=fake("AGG"), budget={"max_tokens": 2**63 - 1}
    )
    assert create_moa_graph(config).invoke(QUESTION)["messages"][-1].text.startswith("AGG #")
