"""Human-in-the-loop and time travel on a checkpointed MoA: edit a checkpoint, resume from it."""

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from langgraph_moa import MoAConfig, MoAConfigError, create_moa_graph
from tests.helpers import QUESTION

THREAD = {"configurable": {"thread_id": "t"}}


def two_layers(fake):
    return MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2)


def test_references_approved_before_aggregation_reach_the_aggregator(fake, log):
    """update_state at an interrupt before `aggregate` runs the closed layer's router, which
    read the run's context from a runtime LangGraph does not give there (AttributeError)."""
    graph = create_moa_graph(two_layers(fake), checkpointer=InMemorySaver())
    graph.invoke(QUESTION, THREAD, interrupt_before=["aggregate"])
    assert graph.get_state(THREAD).next == ("aggregate",)
    assert sorted(c.label for c in log.calls) == ["A", "B"]
    graph.update_state(THREAD, {"references": ["the approved proposal"]})
    out = graph.invoke(None, THREAD)
    assert len(log.calls) == 3  # only the aggregator ran on resume
    assert "the approved proposal" in " ".join(m.text for m in log.by("AGG")[0].messages)
    assert out["messages"][-1].text == "AGG #1"


def test_a_proposal_edited_in_a_past_checkpoint_reaches_only_the_later_layers(fake, log):
    """Time travel: edit layer 1's proposal before the layer closed; layer 2 reads the edit,
    the record of the call shows it, and layer 1 is not asked again."""
    graph = create_moa_graph(
        MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=3),
        checkpointer=InMemorySaver(),
    )
    graph.invoke(QUESTION, THREAD)
    before = next(
        s
        for s in graph.get_state_history(THREAD)
        if s.next == ("join_layer",) and not s.values.get("layer")
    )
    record = next(c for c in before.values["calls"] if c["configured_model"] == "A")
    edited = graph.update_state(
        before.config, {"calls": [{**record, "output": "an edited proposal"}]}, as_node="propose"
    )
    asked = len(log.calls)
    out = graph.invoke(None, edited)
    assert sorted(c.label for c in log.calls[asked:]) == ["A", "AGG", "B"]
    for call in log.calls[asked:]:  # layer 2's proposers and the aggregator
        assert ("an edited proposal" in " ".join(m.text for m in call.messages)) == (
            call.label != "AGG"
        )
    outputs = [(c["layer"], c["configured_model"], c["output"]) for c in out["calls"]]
    assert outputs[:2] == [(1, "A", "an edited proposal"), (1, "B", "B #1")]
    assert [m.type for m in out["messages"]] == ["human", "ai"]  # the fork's own answer


def test_an_edit_that_would_route_a_run_as_another_moa_is_refused_in_one_sentence(fake, log):
    """update_state routes without the run's context: a run whose context added a layer
    would have been sent to the aggregator after its first layer, skipping the second."""
    graph = create_moa_graph(two_layers(fake), checkpointer=InMemorySaver())
    graph.invoke(QUESTION, THREAD, context={"layers": 3})
    history = list(graph.get_state_history(THREAD))
    closed = next(
        s for s in history if s.values.get("layer") == 1 and s.next == ("propose", "propose")
    )
    with pytest.raises(MoAConfigError) as caught:
        graph.update_state(closed.config, {"references": ["edited"]})
    message = str(caught.value)
    assert "as_node='propose'" in message and "\n" not in message
    # The edit it names routes with the run's context when the run resumes.
    open_layer = next(
        s for s in history if s.values.get("layer") == 0 and s.next == ("join_layer",)
    )
    record = open_layer.values["calls"][0]
    edited = graph.update_state(
        open_layer.config, {"calls": [{**record, "output": "edited"}]}, as_node="propose"
    )
    asked = len(log.calls)
    out = graph.invoke(None, edited, context={"layers": 3})
    assert sorted(c.label for c in log.calls[asked:]) == ["A", "AGG", "B"]
    assert out["messages"][-1].text.startswith("AGG")


@pytest.mark.parametrize(
    "context", [{"temperature": 0.1}, {"max_tokens": 33}, {"aggregator_max_tokens": 44}]
)
def test_an_edit_of_a_run_whose_context_changed_only_sampling_settings_routes(fake, log, context):
    """A context that changes how the same models are asked, not who or how often, routes
    as the base config does: the edit was refused as if the run were another MoA."""
    graph = create_moa_graph(two_layers(fake), checkpointer=InMemorySaver())
    graph.invoke(QUESTION, THREAD, context=context, interrupt_before=["aggregate"])
    graph.update_state(THREAD, {"references": ["the approved proposal"]})
    out = graph.invoke(None, THREAD, context=context)
    assert len(log.calls) == 3  # the two proposers, then on resume only the aggregator
    assert "the approved proposal" in " ".join(m.text for m in log.by("AGG")[0].messages)
    assert out["messages"][-1].text == "AGG #1"


def test_an_edited_layer_is_trimmed_with_the_max_tokens_of_the_runs_context(fake, log):
    """update_state builds the next layer's sends without the run's context: the references
    were fitted to the proposers' context window with the config's max_tokens (10), not the
    run's (3000), and went whole to models that had no room for them."""
    from langgraph_moa import ProposerConfig

    def proposer(label):
        return ProposerConfig(model=fake(label), context_window=4000, max_tokens=10)

    config = MoAConfig(proposers=[proposer("A"), proposer("B")], aggregator=fake("AGG"), layers=3)
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    context = {"max_tokens": 3000}
    graph.invoke(QUESTION, THREAD, context=context)
    closed = next(
        s
        for s in graph.get_state_history(THREAD)
        if s.values.get("layer") == 1 and s.next == ("propose", "propose")
    )
    long = "word " * 1200  # fits 3990 tokens of room, not 1000
    edited = graph.update_state(closed.config, {"references": [long, "short"]})
    asked = len(log.calls)
    graph.invoke(None, edited, context=context)
    layer_two = [c for c in log.calls[asked:] if c.label != "AGG"]
    assert len(layer_two) == 2
    for call in layer_two:
        prompt = " ".join(m.text for m in call.messages)
        assert long.strip() not in prompt and "[...]" in prompt and "short" in prompt


def test_an_edit_of_a_thread_no_run_prepared_names_the_edit_that_starts_one(fake, log):
    """An edit as a node after `prepare` on a new thread routed a state no run had prepared,
    and ended in `KeyError: 'run_token'`. The error says in one sentence to give the input
    as '__start__' instead; that edit runs when the thread resumes."""
    graph = create_moa_graph(two_layers(fake), checkpointer=InMemorySaver())
    with pytest.raises(MoAConfigError) as caught:
        graph.update_state(THREAD, QUESTION, as_node="prepare")
    message = str(caught.value)
    assert "as_node='__start__'" in message and "\n" not in message
    graph.update_state(THREAD, QUESTION, as_node="__start__")
    assert graph.invoke(None, THREAD)["messages"][-1].text == "AGG #1"
    assert sorted(c.label for c in log.calls) == ["A", "AGG", "B"]


def test_an_edit_as_prepare_of_a_finished_run_is_refused_naming_the_edit_that_starts_one(fake, log):
    """An edit as 'prepare' of a thread whose run had finished kept that run's token, layer
    count, proposals and call records: the next run asked layer 1 only, then aggregated the
    last run's layer-2 proposals (answers to the earlier question) and listed both runs'
    calls as one. It is refused in one sentence; the edit it names starts a fresh run."""
    graph = create_moa_graph(
        MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=3),
        checkpointer=InMemorySaver(),
    )
    graph.invoke(QUESTION, THREAD)
    again = {"messages": [("user", "a second question")]}
    with pytest.raises(MoAConfigError) as caught:
        graph.update_state(THREAD, again, as_node="prepare")
    message = str(caught.value)
    assert "as_node='__start__'" in message and "\n" not in message
    graph.update_state(THREAD, again, as_node="__start__")
    asked = len(log.calls)
    out = graph.invoke(None, THREAD)
    assert sorted(c.label for c in log.calls[asked:]) == ["A", "A", "AGG", "B", "B"]
    assert [(c["layer"], c["configured_model"]) for c in out["calls"]] == [
        (1, "A"),
        (1, "B"),
        (2, "A"),
        (2, "B"),
        (3, "AGG"),
    ]
    assert {c["output"] for c in out["calls"]} == {"A #3", "B #3", "A #4", "B #4", "AGG #2"}


def test_an_edit_as_prepare_of_a_run_just_prepared_still_routes(fake, log):
    """The human-in-the-loop edit after 'prepare' (interrupt_after) is the run's own: kept."""
    graph = create_moa_graph(two_layers(fake), checkpointer=InMemorySaver())
    graph.invoke(QUESTION, THREAD, interrupt_after=["prepare"])
    graph.update_state(THREAD, {"messages": [("user", "and briefly")]})
    out = graph.invoke(None, THREAD)
    assert sorted(c.label for c in log.calls) == ["A", "AGG", "B"]
    assert "and briefly" in " ".join(m.text for m in log.by("A")[0].messages)
    assert out["messages"][-1].text == "AGG #1"


def test_an_edit_as_propose_of_a_thread_no_run_prepared_names_the_edit_that_starts_one(fake, log):
    """`propose`'s edge routes nothing, so its edit of a new thread was taken; resuming it
    said the run was "checkpointed mid-run by an earlier version of langgraph-moa", which
    no version had done. It says there is no run yet, and which edit starts one."""
    graph = create_moa_graph(two_layers(fake), checkpointer=InMemorySaver())
    graph.update_state(THREAD, QUESTION, as_node="propose")
    with pytest.raises(MoAConfigError) as caught:
        graph.invoke(None, THREAD)
    message = str(caught.value)
    assert "as_node='__start__'" in message and "earlier version" not in message
    assert log.calls == []


def test_an_edit_routes_with_the_token_budget_of_the_runs_context(fake, log, monkeypatch):
    """A run whose context named a preset with its own token budget spent it in layer 1 and
    went to the aggregator; an edit of that closed layer routed with the base config, which
    has no budget, and sent a second layer of paid calls past the run's budget."""
    from langgraph_moa.config._limits import Budget

    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=3)
    tight = config.with_overrides(budget=Budget(max_tokens=1))
    monkeypatch.setattr(MoAConfig, "from_preset", classmethod(lambda cls, name, **_: tight))
    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    context = {"preset": "tight"}
    graph.invoke(QUESTION, THREAD, context=context)
    assert sorted(c.label for c in log.calls) == ["A", "B"]  # the budget ended the run
    closed = next(
        s for s in graph.get_state_history(THREAD) if s.values.get("layer") == 1 and s.next
    )
    edited = graph.update_state(closed.config, {"references": ["edited"]})
    assert graph.get_state(edited).next == ("aggregate",)
    out = graph.invoke(None, edited, context=context)
    assert sorted(c.label for c in log.calls) == ["A", "B"]  # no call past the budget
    assert out["messages"][-1].response_metadata["moa"]["fallback"] == "budget"


def test_an_edit_of_a_run_token_written_before_the_budget_was_recorded_still_routes(fake, log):
    """A token of an earlier version (id, route digest, shape digest) has no budget: the
    edit routes with the config's, as it did."""
    graph = create_moa_graph(two_layers(fake), checkpointer=InMemorySaver())
    graph.invoke(QUESTION, THREAD, interrupt_before=["aggregate"])
    run_id, budget, route, shape = graph.get_state(THREAD).values["run_token"].split("/")
    assert budget == ""  # the config has no budget
    old = {"run_token": f"{run_id}/{route}/{shape}", "references": ["the approved proposal"]}
    graph.update_state(THREAD, old)
    out = graph.invoke(None, THREAD)
    assert out["messages"][-1].text == "AGG #1"


@pytest.mark.parametrize("stored", ["built prompt", "references_of"])
def test_a_layer_task_stored_before_tasks_read_their_references_resumes_with_them_once(
    fake, log, monkeypatch, stored
):
    """A checkpoint written before `reads_references` holds layer 2's tasks either with the
    whole prompt built (a run) or with `references_of` (an edit's routing): resumed by this
    version, each proposer is asked with layer 1's answers, once each, not twice or none."""
    from langgraph_moa.run._references import reference_inputs, with_references
    from langgraph_moa.variants import _base

    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=3)
    real = _base.Plan._send

    def earlier_send(state, layer, proposer, sample, messages, started, *, reads=False):
        send = real(state, layer, proposer, sample, messages, started)
        if reads and stored == "built prompt":
            send.arg["messages"] = with_references(config, messages, state, config.proposers)[0]
        elif reads:
            send.arg["references_of"] = reference_inputs(state)
        return send

    graph = create_moa_graph(config, checkpointer=InMemorySaver())
    monkeypatch.setattr(_base.Plan, "_send", staticmethod(earlier_send))
    graph.invoke(QUESTION, THREAD, interrupt_after=["join_layer"])
    monkeypatch.undo()
    assert graph.get_state(THREAD).next == ("propose", "propose")
    asked = len(log.calls)
    assert graph.invoke(None, THREAD)["messages"][-1].text == "AGG #1"
    layer_two = [c for c in log.calls[asked:] if c.label != "AGG"]
    assert sorted(c.label for c in layer_two) == ["A", "B"]
    for call in layer_two:
        prompt = " ".join(m.text for m in call.messages)
        assert prompt.count("A #1") == prompt.count("B #1") == 1
