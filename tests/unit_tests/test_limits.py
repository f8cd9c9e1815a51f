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


HUGE = 10**5000  # past the 4,300 digits Python writes an int in
"""Each int field of the config schema, and what the rest of a config needs for it to apply."""
_INT_FIELDS = {
    "budget.max_calls": {},
    "budget.max_tokens": {},
    "layers": {},
    "shuffle_seed": {"reference_order": "shuffled"},
    "min_proposers": {},
    "retry.max_attempts": {},
    "proposers.0.max_tokens": {},
    "proposers.0.context_window": {},
    "proposers.0.samples": {},
    "aggregator.max_tokens": {},
    "aggregator.context_window": {},
    "aggregator_fallbacks.0.max_tokens": {"aggregator_fallbacks": [{"model": "openai:c"}]},
    "aggregator_fallbacks.0.context_window": {"aggregator_fallbacks": [{"model": "openai:c"}]},
    "seq.window_size": {"variant": "self-moa-seq"},
    "seq.samples_per_step": {"variant": "self-moa-seq"},
    "selection.round_size": {"variant": "select"},
    "aggregation.quorum": {"aggregation": {"start": "quorum"}},
    "aggregation.chunk_tokens": {"aggregation": {"start": "chunks"}},
    "aggregation.max_parts": {"aggregation": {"start": "chunks"}},
}


def _int_fields(schema, prefix=""):
    """Yield the dotted path of every int field under `schema` (a list's item as ``.0``)."""
    import typing

    from pydantic import BaseModel

    for name, field in schema.model_fields.items():
        annotation, item = field.annotation, ""
        if typing.get_origin(annotation) is list:
            [annotation], item = typing.get_args(annotation), ".0"
        for arg in typing.get_args(annotation) or (annotation,):
            if arg is int:
                yield f"{prefix}{name}{item}"
            elif isinstance(arg, type) and issubclass(arg, BaseModel):
                yield from _int_fields(arg, f"{prefix}{name}{item}.")


def test_the_table_names_every_int_field_of_the_config():
    assert sorted(_int_fields(MoAConfig)) == sorted(_INT_FIELDS)


@pytest.mark.parametrize("path", list(_INT_FIELDS))
def test_an_int_setting_of_5001_digits_is_refused_naming_it(path):
    # budget.max_calls, shuffle_seed and the rest were taken and failed later in Python's
    # int-to-string error (fingerprint, the run's shuffle), or were refused in that error's
    # words, naming no setting (min_proposers, aggregation.quorum, seq.samples_per_step).
    data = {"proposers": [{"model": "openai:a"}], "aggregator": {"model": "openai:b"}}
    for key, value in _INT_FIELDS[path].items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[leaf] = HUGE
    with pytest.raises(MoAConfigError) as err:
        MoAConfig(**data)
    assert path in str(err.value) and "digits" not in str(err.value)


@pytest.mark.parametrize("field", ["layers", "samples", "max_tokens", "aggregator_max_tokens"])
def test_a_run_context_int_of_5001_digits_is_refused_naming_it(fake, field):
    # The context's cache key wrote it in JSON: the run failed in prepare with Python's error.
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"))
    with pytest.raises(MoAConfigError) as err:
        create_moa_graph(config).invoke(QUESTION, context={field: HUGE})
    assert field in str(err.value) and "digits" not in str(err.value)
