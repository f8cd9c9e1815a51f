"""Early aggregation: the final step starts once a quorum of the last layer answered."""

import pytest

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.errors import MoAConfigError

QUESTION = {"messages": [("user", "q")]}
FAST = {"max_attempts": 1}
HUNG_S = 30.0  # far longer than any test: a hung proposal must be cancelled, not awaited


def _proposers(fake, hung: int, total: int = 4):
    """`total - hung` prompt proposers, then `hung` that would take HUNG_S."""
    quick = [fake(f"Q{i}") for i in range(total - hung)]
    slow = [fake(f"H{i}", delay=lambda n: HUNG_S) for i in range(hung)]
    return quick + slow


def _last_layer_slow(fake, label):
    """A proposal that is quick in layer 1 (its first call) and hangs in layer 2."""
    return fake(label, delay=lambda n: HUNG_S if n >= 2 else 0.0)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_the_aggregator_starts_with_the_quorum_and_the_stragglers_are_recorded(
    fake, log, mode
):
    proposers = [fake("Q0"), fake("Q1"), _last_layer_slow(fake, "H0"), _last_layer_slow(fake, "H1")]
    config = MoAConfig(
        proposers=proposers,
        aggregator=fake("AGG"),
        layers=3,
        aggregation={"start": "quorum", "quorum": 2},
        retry=FAST,
    )
    graph = create_moa_graph(config)
    out = graph.invoke(QUESTION) if mode == "sync" else await graph.ainvoke(QUESTION)
    calls = out["calls"]
    assert all(c["status"] == "ok" for c in calls if c["layer"] == 1)  # not the last layer
    last = [c for c in calls if c["role"] == "proposer" and c["layer"] == 2]
    assert [(c["configured_model"], c["status"]) for c in last] == [
        ("Q0", "ok"),
        ("Q1", "ok"),
        ("H0", "cancelled"),
        ("H1", "cancelled"),
    ]
    assert all("started early: 2 proposals had answered" in c["error"] for c in last[2:])
    # The aggregator saw the quorum's proposals only, and said so.
    prompt = log.by("AGG")[0].messages[0].text
    assert "Q0 #2" in prompt and "Q1 #2" in prompt and "H0" not in prompt
    assert "2 of 4 expected responses are missing" in prompt
    early = out["messages"][-1].response_metadata["moa"]["early_start"]
    assert early["quorum"] == 2 and not early["every_layer"]
    assert [(d["layer"], d["configured_model"]) for d in early["dropped"]] == [
        (2, "H0"),
        (2, "H1"),
    ]
    assert out["usage"]["total"]["cancelled"] == 2


async def test_only_the_last_layer_starts_early_unless_every_layer_is_asked(fake):
    proposers = [fake("Q0"), fake("Q1"), _last_layer_slow(fake, "S0")]
    config = MoAConfig(
        proposers=proposers,
        aggregator=fake("AGG"),
        layers=3,
        aggregation={"start": "quorum", "quorum": 2},
        retry=FAST,
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    status = {(c["layer"], c["configured_model"]): c["status"] for c in out["calls"]}
    assert status[(1, "S0")] == "ok"  # layer 1 waited for it (it was quick there)
    assert status[(2, "S0")] == "cancelled"


async def test_every_layer_applies_the_quorum_to_each_proposer_layer(fake):
    config = MoAConfig(
        proposers=_proposers(fake, hung=1, total=3),
        aggregator=fake("AGG"),
        layers=3,
        aggregation={"start": "quorum", "quorum": 2, "every_layer": True},
        retry=FAST,
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    cancelled = [
        (c["layer"], c["configured_model"]) for c in out["calls"] if c["status"] == "cancelled"
    ]
    assert cancelled == [(1, "H0"), (2, "H0")]
    dropped = out["messages"][-1].response_metadata["moa"]["early_start"]["dropped"]
    assert [(d["layer"], d["configured_model"]) for d in dropped] == cancelled


async def test_selection_picks_among_the_quorums_proposals(fake):
    same = lambda label, n, messages: "42"  # noqa: E731
    config = MoAConfig(
        variant="select",
        proposers=[fake("A", reply=same), fake("B", reply=same), fake("H", delay=lambda n: HUNG_S)],
        aggregation={"start": "quorum", "quorum": 2},
        retry=FAST,
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    meta = out["messages"][-1].response_metadata["moa"]
    assert out["messages"][-1].content == "42"
    assert [d["configured_model"] for d in meta["early_start"]["dropped"]] == ["H"]
    assert "selection" in meta


async def test_without_an_early_start_every_proposal_is_awaited(fake):
    slowish = fake("S", delay=lambda n: 0.3)
    config = MoAConfig(proposers=[fake("A"), slowish], aggregator=fake("AGG"), layers=2)
    out = await create_moa_graph(config).ainvoke(QUESTION)
    assert [c["status"] for c in out["calls"]] == ["ok", "ok", "ok"]
    assert "early_start" not in out["messages"][-1].response_metadata["moa"]


@pytest.mark.parametrize(
    ("aggregation", "extra", "message"),
    [
        ({"start": "quorum"}, {}, "needs aggregation.quorum"),
        ({"quorum": 2}, {}, "apply with start 'quorum' only"),
        ({"start": "quorum", "quorum": 5}, {}, r"cannot exceed the 2 proposals"),
        ({"start": "quorum", "quorum": 1}, {"min_proposers": 2}, "below min_proposers"),
    ],
)
def test_a_bad_aggregation_start_is_a_config_error_that_names_the_fix(
    fake, aggregation, extra, message
):
    with pytest.raises(MoAConfigError, match=message):
        MoAConfig(
            proposers=[fake("A"), fake("B")],
            aggregator=fake("AGG"),
            aggregation=aggregation,
            **extra,
        )
