"""single-proposer, Self-MoA, Self-MoA-Seq and the ranker, from one config."""

import pytest

from langgraph_moa import (
    MoAConfig,
    MoAConfigError,
    ProposerConfig,
    SelfMoASeqConfig,
    create_moa_graph,
    list_presets,
)
from tests.helpers import QUESTION, references_in


def test_self_moa_keeps_all_k_samples_of_one_model(fake, log):
    model = fake("M")
    config = MoAConfig(variant="self-moa", proposers=[{"model": model, "samples": 6}])
    out = create_moa_graph(config).invoke(QUESTION)
    assert len(log.calls) == 7 == config.calls_per_run()
    samples = [c.output for c in log.calls[:6]]
    assert len(set(samples)) == 6
    # All six samples reach the aggregator, which is the same model.
    assert sorted(references_in(log.calls[6])) == sorted(samples)
    assert [c["sample"] for c in out["calls"][:6]] == list(range(6))
    assert out["calls"][-1]["configured_model"] == "M"


def test_self_moa_refuses_a_foreign_aggregator(fake):
    with pytest.raises(ValueError, match="single-proposer"):
        MoAConfig(
            variant="self-moa", proposers=[{"model": fake("M"), "samples": 3}], aggregator=fake("X")
        )


def test_single_proposer_samples_one_model_with_any_aggregator(fake, log):
    config = MoAConfig(
        variant="single-proposer",
        proposers=[{"model": fake("M"), "samples": 3}],
        aggregator=fake("AGG"),
    )
    create_moa_graph(config).invoke(QUESTION)
    assert [c.label for c in log.calls] == ["M", "M", "M", "AGG"]
    assert len(references_in(log.calls[-1])) == 3


def test_self_moa_seq_visits_every_sample_once_and_carries_the_synthesis(fake, log):
    model = fake("M")
    config = MoAConfig(
        variant="self-moa-seq",
        proposers=[{"model": model, "samples": 10}],
        seq=SelfMoASeqConfig(window_size=4),
    )
    out = create_moa_graph(config).invoke(QUESTION)
    # windows: samples 0-3, then 3 new per step: 4-6, 7-9 -> 10 samples + 3 aggregations
    assert config.seq.batches(10) == [range(0, 4), range(4, 7), range(7, 10)]
    assert len(log.calls) == 13 == config.calls_per_run()
    records = out["calls"]
    samples = [r for r in records if r["role"] == "proposer"]
    assert sorted(r["sample"] for r in samples) == list(range(10))
    aggregations = [c for c in log.calls if c.messages and c.messages[0].type == "system"]
    assert len(aggregations) == 3
    sample_text = {r["sample"]: r["output"] for r in samples}
    first, second, third = (references_in(c) for c in aggregations)
    assert first == [sample_text[i] for i in range(4)]
    assert second == [aggregations[0].output] + [sample_text[i] for i in range(4, 7)]
    assert third == [aggregations[1].output] + [sample_text[i] for i in range(7, 10)]
    assert all(len(refs) <= 4 for refs in (first, second, third))
    assert out["messages"][-1].text == aggregations[2].output


def test_self_moa_seq_samples_see_the_bare_conversation(fake, log):
    config = MoAConfig(variant="self-moa-seq", proposers=[{"model": fake("M"), "samples": 5}])
    create_moa_graph(config).invoke(QUESTION)
    samples = [c for c in log.calls if c.messages[0].type == "human"]
    assert len(samples) == 5


def test_self_moa_seq_window_rules():
    with pytest.raises(ValueError, match="window_size - 1"):
        SelfMoASeqConfig(window_size=4, samples_per_step=4)
    assert SelfMoASeqConfig(window_size=6, samples_per_step=3).batches(12) == [
        range(0, 6),
        range(6, 9),
        range(9, 12),
    ]


def test_ranker_returns_the_chosen_proposal_verbatim(fake, log):
    ranker = fake("R", reply=lambda label, n, msgs: "Response 2 is best.")
    config = MoAConfig(
        variant="ranker", proposers=[fake("A"), fake("B"), fake("C")], aggregator=ranker
    )
    out = create_moa_graph(config).invoke(QUESTION)
    answer = out["messages"][-1]
    assert answer.text == "B #1"
    assert answer.response_metadata["moa"]["ranker_choice"] == 2
    ranker_prompt = log.by("R")[0].messages[-1].text
    for text in ("A #1", "B #1", "C #1"):
        assert ranker_prompt.count(text) == 1


def test_ranker_with_unparseable_reply_falls_back_to_the_first_and_says_so(fake):
    ranker = fake("R", reply=lambda label, n, msgs: "I cannot decide.")
    config = MoAConfig(variant="ranker", proposers=[fake("A"), fake("B")], aggregator=ranker)
    answer = create_moa_graph(config).invoke(QUESTION)["messages"][-1]
    assert answer.text == "A #1"
    assert answer.response_metadata["moa"]["ranker_choice"] is None


def test_shuffled_order_is_seeded_and_stable_order_is_config_order(fake, log):
    proposers = [fake(x) for x in "ABCDEF"]

    def order(**kw):
        log.calls.clear()
        create_moa_graph(
            MoAConfig(proposers=proposers, aggregator=fake("AGG"), layers=2, **kw)
        ).invoke(QUESTION)
        return [r[0] for r in references_in(log.by("AGG")[0])]

    assert order() == list("ABCDEF")
    shuffled = order(reference_order="shuffled", shuffle_seed=7)
    assert sorted(shuffled) == list("ABCDEF") and shuffled != list("ABCDEF")
    assert order(reference_order="shuffled", shuffle_seed=7) == shuffled


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_builds_without_network_or_keys(preset):
    graph = create_moa_graph(preset)
    assert graph.name == preset


@pytest.mark.parametrize("variant", ["self-moa", "self-moa-seq"])
def test_the_derived_aggregator_keeps_its_own_token_cap_not_the_proposers(fake, log, variant):
    """moa-spec section 5: a proposer token cap also capped the aggregator.

    Self-MoA builds its aggregator from the proposer's model; it must not take the
    proposer's cap with it.
    """
    config = MoAConfig(
        variant=variant, proposers=[{"model": fake("M"), "samples": 3, "max_tokens": 64}]
    )
    create_moa_graph(config).invoke(QUESTION)
    samples = [c for c in log.calls if c.messages[0].type == "human"]
    finals = [c for c in log.calls if c.messages[0].type == "system"]
    assert {c.max_tokens for c in samples} == {64} and len(samples) == 3
    assert finals and {c.max_tokens for c in finals} == {config.final.max_tokens} == {2048}


@pytest.mark.parametrize("variant", ["self-moa", "self-moa-seq"])
def test_the_derived_aggregator_knows_its_models_context_window(fake, log, variant):
    """The aggregator is the proposer's model, so it has the proposer's context window.

    Without it the one reader of the samples had no known window: its references were never
    trimmed and k long samples overflowed the model's context at the provider.
    """
    wordy = fake("M", reply=lambda *a: "long " * 2000)  # about 3,300 tokens by the rule
    config = MoAConfig(
        variant=variant,
        proposers=[{"model": wordy, "samples": 2, "context_window": 8192}],
    )
    assert config.final.known_context_window() == 8192
    out = create_moa_graph(config).invoke(QUESTION)
    finals = [c for c in log.calls if c.messages[0].type == "system"]
    assert finals and all(r.endswith("[...]") for r in references_in(finals[-1]))
    assert out["messages"][-1].response_metadata["moa"]["trimmed_references"] == 2


@pytest.mark.parametrize("variant", ["self-moa", "self-moa-seq", "single-proposer"])
def test_samples_of_one_model_at_temperature_zero_are_refused(fake, log, variant):
    """moa-spec section 3: one model sampled n times, at a temperature above 0.

    At temperature 0 the k samples are one answer repeated: the run paid k calls for the
    paper's n=1 case, without a word. The config (or a run's context) is refused instead.
    """
    model = fake("M")
    with pytest.raises(MoAConfigError, match=r"temperature 0.*above 0"):
        MoAConfig(
            variant=variant,
            proposers=[{"model": model, "samples": 3, "temperature": 0.0}],
            aggregator=model,
        )
    graph = create_moa_graph(
        MoAConfig(variant=variant, proposers=[{"model": model, "samples": 3}], aggregator=model)
    )
    with pytest.raises(MoAConfigError, match=r"temperature 0.*above 0"):
        graph.invoke(QUESTION, context={"temperature": 0})
    assert log.calls == []
    # One sample at temperature 0 is the greedy answer, and a provider default is no 0.
    MoAConfig(
        variant="single-proposer", proposers=[{"model": model, "temperature": 0}], aggregator=model
    )
    MoAConfig(
        variant=variant,
        proposers=[{"model": model, "samples": 3, "temperature": None}],
        aggregator=model,
    )


@pytest.mark.parametrize("variant", ["moa", "ranker", "select"])
def test_samples_of_a_proposer_at_temperature_zero_are_refused_in_every_variant(fake, log, variant):
    """The same rule for any proposer that draws k > 1 samples: at temperature 0 they are
    one answer repeated. Self-consistency at T = 0 voted k copies of the greedy answer and
    reported full agreement; moa and ranker paid k calls for one proposal. Only the
    one-model variants were refused. A greedy proposer beside sampled ones (local-vote's
    anchor) is no such case."""
    a, b = fake("A"), fake("B")
    final = {} if variant == "select" else {"aggregator": a}
    with pytest.raises(MoAConfigError, match=r"'B' draws 3 samples.*temperature 0.*above 0"):
        MoAConfig(
            variant=variant,
            proposers=[a, {"model": b, "samples": 3, "temperature": 0.0}],
            **final,
        )
    graph = create_moa_graph(
        MoAConfig(variant=variant, proposers=[a, {"model": b, "samples": 3}], **final)
    )
    with pytest.raises(MoAConfigError, match=r"temperature 0.*above 0"):
        graph.invoke(QUESTION, context={"temperature": 0})
    assert log.calls == []
    MoAConfig(
        variant=variant,
        proposers=[{"model": a, "temperature": 0}, {"model": b, "samples": 3}],
        **final,
    )
    MoAConfig.from_preset("local-vote")


@pytest.mark.parametrize("variant", ["self-moa", "self-moa-seq", "moa"])
def test_a_runs_seed_gives_each_sample_its_own_seed(fake, log, variant):
    """moa-spec section 3: the k samples of one model must differ.

    A run's ``seed`` (an OpenAI client's, `MoAChatModel`'s) went to every call as it was:
    k samples of one model with one prompt and one seed are one answer repeated. Each
    proposal of a layer now gets the seed plus its position; the run stays reproducible.
    """
    model = fake("M")
    proposers = [{"model": model, "samples": 3}]
    if variant == "moa":  # the same model listed twice, after a proposer of two samples
        proposers = [{"model": fake("A"), "samples": 2}, model, model]
    config = MoAConfig(variant=variant, proposers=proposers, aggregator=model)
    seeds = []
    for _ in range(2):
        log.calls.clear()
        create_moa_graph(config).invoke({**QUESTION, "call_kwargs": {"seed": 7}})
        first_layer = [c for c in log.calls if c.messages[0].type == "human"]
        seeds.append(sorted(c.kwargs["seed"] for c in first_layer))
    assert seeds[0] == seeds[1] == [7, 8, 9] + ([10] if variant == "moa" else [])
    aggregation = [c for c in log.calls if c.messages[0].type == "system"][-1]
    assert aggregation.kwargs["seed"] == 7  # the aggregator keeps the run's own


def test_every_window_and_every_sampling_round_draws_new_seeds(fake, log):
    """Self-MoA-Seq's windows and adaptive selection's rounds draw later samples of the same
    model: each gets a seed no earlier sample had, or a window would repeat the one before."""
    model = fake("M")
    seq = MoAConfig(
        variant="self-moa-seq",
        proposers=[{"model": model, "samples": 7}],
        seq=SelfMoASeqConfig(window_size=3),
    )
    create_moa_graph(seq).invoke({**QUESTION, "call_kwargs": {"seed": 7}})
    samples = [c for c in log.calls if c.messages[0].type == "human"]
    assert sorted(c.kwargs["seed"] for c in samples) == list(range(7, 14))
    log.calls.clear()
    votes = MoAConfig(
        variant="select",
        proposers=[{"model": fake("G"), "temperature": 0}, {"model": model, "samples": 6}],
        selection={"method": "vote", "stop_agreement": 0.99, "round_size": 2},
    )
    create_moa_graph(votes).invoke({**QUESTION, "call_kwargs": {"seed": 7}})
    assert len(log.calls) == 7  # fake answers never agree: every round is drawn
    assert sorted(c.kwargs["seed"] for c in log.calls) == list(range(7, 14))


def test_self_moa_seq_falls_back_to_the_running_synthesis_not_the_last_windows_samples(fake):
    """moa-spec section 3: the synthesis carries every earlier sample forward.

    Where the last window's aggregation fails, the first window's synthesis (of 3 samples)
    answers, not one of the 2 new samples alone: it is the running answer the last
    aggregation would have improved on.
    """
    config = MoAConfig(
        variant="self-moa-seq",
        # Calls 1-3 are window 1, 4 its aggregation, 5-6 window 2, 7 its aggregation.
        proposers=[
            {
                "model": fake("M", fail=lambda n, m: ValueError("down") if n == 7 else None),
                "samples": 5,
            }
        ],
        seq=SelfMoASeqConfig(window_size=3, samples_per_step=2),
        retry={"max_attempts": 1},
    )
    answer = create_moa_graph(config).invoke(QUESTION)["messages"][-1]
    moa = answer.response_metadata["moa"]
    assert moa["fallback"] == "best_proposal" and answer.text == "M #4"


@pytest.mark.parametrize(
    ("cut", "answers"),
    [({7}, {"M #4"}), ({4, 7}, {"M #8", "M #9"}), ({4, 7, 8, 9}, {"M #7"}), (set(), {"M #7"})],
)
def test_a_cut_off_synthesis_answers_a_fallback_only_where_nothing_finished(fake, cut, answers):
    """A synthesis that max_tokens cut ends mid-sentence: as a cut proposal, it gives way.

    The newest synthesis that finished answers, else the last window's first finished
    sample, and the newest cut synthesis only where those samples were cut too: the cut
    window-2 synthesis answered over window 1's finished one.
    """
    config = MoAConfig(
        variant="self-moa-seq",
        # Calls 1-3 are window 1, 4 its aggregation, 5-6 window 2, 7 its aggregation,
        # 8-9 window 3 (drawn at once: either may be its first sample), 10 its aggregation.
        proposers=[
            {
                "model": fake(
                    "M",
                    fail=lambda n, m: ValueError("down") if n == 10 else None,
                    cut_off=lambda n: n in cut,
                ),
                "samples": 7,
            }
        ],
        seq=SelfMoASeqConfig(window_size=3, samples_per_step=2),
        retry={"max_attempts": 1},
    )
    reply = create_moa_graph(config).invoke(QUESTION)["messages"][-1]
    assert reply.response_metadata["moa"]["fallback"] == "best_proposal"
    assert reply.text in answers


def test_self_moa_seq_goes_on_past_a_window_whose_samples_all_failed(fake, log):
    """moa-spec section 3: the synthesized answer is carried forward.

    A window with no sample has nothing new to aggregate: no aggregation is paid for, the
    running synthesis is kept as reference 1 of the next window, and the failures stay on
    record.
    """
    # Windows run one after the other: calls 1-3 are window 1, 4 its aggregation, 5-6 window 2.
    model = fake("M", fail=lambda n, msgs: ValueError(f"down {n}") if n in (5, 6) else None)
    config = MoAConfig(
        variant="self-moa-seq",
        proposers=[{"model": model, "samples": 7}],
        seq=SelfMoASeqConfig(window_size=3, samples_per_step=2),
        retry={"max_attempts": 1},
    )
    out = create_moa_graph(config).invoke(QUESTION)
    aggregations = [c for c in log.calls if c.messages[0].type == "system"]
    assert [c.output for c in aggregations] == ["M #4", "M #9"]
    synthesis, *samples = references_in(aggregations[1])  # samples of a window race
    assert (synthesis, sorted(samples)) == ("M #4", ["M #7", "M #8"])
    assert out["messages"][-1].text == "M #9"
    failed = [c for c in out["calls"] if c["status"] == "failed"]
    assert [(c["layer"], c["sample"]) for c in failed] == [(2, 3), (2, 4)]


def _drawing(*samples: int) -> list[ProposerConfig]:
    """A layer's proposers, drawing `samples` each."""
    return [ProposerConfig(model="openai:gpt-4o-mini", samples=n) for n in samples]


def test_a_seed_that_means_random_or_sits_at_the_top_of_its_range_stays_valid():
    """-1 is llama.cpp's "a random seed": kept as it is for every proposal.
    A seed at the top of a 64-bit integer's range is moved down, not past it."""
    from langgraph_moa.run._options import proposal_options

    top = 2**63 - 1
    seeds = {
        seed: [
            proposal_options({"call_kwargs": {"seed": seed}}, _drawing(3), 0, s)["call_kwargs"][
                "seed"
            ]
            for s in range(3)
        ]
        for seed in (-1, 0, top)
    }
    assert seeds == {-1: [-1, -1, -1], 0: [0, 1, 2], top: [top, top - 1, top - 2]}


def test_a_negative_seed_other_than_minus_one_is_a_fixed_seed_and_gives_distinct_seeds():
    """Only -1 asks llama.cpp for a random seed; any other negative seed is a fixed one
    (OpenAI takes any 64-bit integer, llama.cpp reads -5 as 2**32 - 5). Kept as it was for
    every proposal, k samples of one model were one answer repeated again. Such a seed
    moves away from -1 (down), and at the bottom of the range up, never out of it."""
    from langgraph_moa.run._options import proposal_options

    bottom = -(2**63)

    def seeds(seed: int) -> list[int]:
        options = {"call_kwargs": {"seed": seed}}
        return [
            proposal_options(options, _drawing(2, 2), i, s)["call_kwargs"]["seed"]
            for i, s in [(0, 0), (0, 1), (1, 0), (1, 1)]
        ]

    assert seeds(-1) == [-1, -1, -1, -1]
    assert seeds(-5) == [-5, -6, -7, -8]
    assert seeds(-2) == [-2, -3, -4, -5]  # never -1, which would be a random seed
    assert seeds(bottom) == [bottom, bottom + 1, bottom + 2, bottom + 3]
    assert seeds(bottom + 1) == [bottom + 1, bottom, bottom + 3, bottom + 4]


@pytest.mark.parametrize("variant", ["single-proposer", "self-moa", "self-moa-seq", "ranker"])
def test_the_system_prompt_and_history_reach_every_call_of_every_variant(fake, log, variant):
    """moa-spec section 2: the user turns are unchanged; a system message takes the block
    after a blank line. Every sample, window and ranking reads the whole conversation."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    model = fake(
        "M", reply=lambda label, n, msgs: "1" if "candidate" in msgs[-1].text else f"M {n}"
    )
    config = MoAConfig(
        variant=variant,
        proposers=[{"model": model, "samples": 4}],
        aggregator=model,
        seq=SelfMoASeqConfig(window_size=2),
    )
    history = [
        SystemMessage("Be brief."),
        HumanMessage("2+2?"),
        AIMessage("4"),
        HumanMessage("x3?"),
    ]
    create_moa_graph(config).invoke({"messages": history})
    assert len(log.calls) == config.calls_per_run()
    for call in log.calls:
        assert call.messages[0].type == "system" and call.messages[0].text.startswith("Be brief.")
        assert call.messages[1:4] == history[1:]
    readers = [c for c in log.calls if c.messages[0].text != "Be brief."]
    assert readers and all(c.messages[0].text.startswith("Be brief.\n\n") for c in readers)


@pytest.mark.parametrize("variant", ["self-moa", "self-moa-seq"])
def test_self_moa_of_one_sample_is_refused(fake, variant):
    """One sample aggregated by its own model is that sample rewritten: no mixture at all."""
    with pytest.raises(MoAConfigError, match=r"needs samples >= 2"):
        MoAConfig(variant=variant, proposers=[{"model": fake("M"), "samples": 1}])


def test_a_ranker_reply_with_a_run_of_thousands_of_digits_still_picks_a_candidate(fake):
    """A ranker (a small model looping on one digit, or a hostile one) may write a number of
    thousands of digits: int() refuses one over 4,300 digits, and the run failed with
    ValueError, losing every proposal. Such a run names no candidate; the next number does."""
    reply = "1" * 5000 + " no: Response 2."
    ranker = fake("R", reply=lambda label, n, msgs: reply)
    config = MoAConfig(variant="ranker", proposers=[fake("A"), fake("B")], aggregator=ranker)
    answer = create_moa_graph(config).invoke(QUESTION)["messages"][-1]
    assert answer.text == "B #1"
    assert answer.response_metadata["moa"]["ranker_choice"] == 2
