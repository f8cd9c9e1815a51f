"""AnswerStream, the one adapter from graph stream parts to answer text, and apply_context,
the one validated override path."""

import pytest

from langgraph_moa import MoAChatModel, MoAConfig, MoAConfigError, create_moa_graph
from langgraph_moa.config.context import MoAContext, apply_context
from langgraph_moa.graph.streaming import AnswerStream
from tests.helpers import QUESTION

LONG = lambda label, n, msgs: f"{label} says one two three"  # noqa: E731
PICK = lambda label, n, msgs: "Response 2 is best."  # noqa: E731


@pytest.fixture
def moa(fake):
    config = MoAConfig(
        proposers=[fake("A", reply=LONG), fake("B", reply=LONG)], aggregator=fake("AGG", reply=LONG)
    )
    return create_moa_graph(config)


@pytest.fixture
def ranker(fake):
    config = MoAConfig(
        variant="ranker",
        proposers=[fake("A", reply=LONG), fake("B", reply=LONG)],
        aggregator=fake("R", reply=PICK),
    )
    return create_moa_graph(config)


def test_yields_the_final_answers_tokens_only_and_keeps_the_final_state(moa):
    stream = AnswerStream(moa, QUESTION)
    pieces = list(stream)
    assert len(pieces) >= 4 and "".join(pieces) == "AGG says one two three"
    assert stream.streamed and stream.answer.text == "AGG says one two three"
    assert stream.answer.usage_metadata["total_tokens"] > 0
    assert len(stream.final["calls"]) == 5


async def test_async_iteration_gives_the_same_pieces(moa):
    stream = AnswerStream(moa, QUESTION)
    pieces = [p async for p in stream]
    assert "".join(pieces) == "AGG says one two three" and stream.streamed


@pytest.mark.parametrize("use_async", [False, True])
async def test_a_pick_that_streams_nothing_arrives_whole_once(ranker, use_async):
    stream = AnswerStream(ranker, QUESTION)
    pieces = [p async for p in stream] if use_async else list(stream)
    assert pieces == ["B says one two three"]  # the ranker's own reply never leaks
    assert not stream.streamed


def test_progress_events_go_to_the_handler_and_only_when_asked(moa):
    events: list[dict] = []
    assert "".join(AnswerStream(moa, QUESTION, on_progress=events.append)) != ""
    assert {e["event"] for e in events} == {"started", "finished"}
    assert len([e for e in events if e["event"] == "finished"]) == 5
    # Without a handler the custom stream is still read (its `discarded` events tell the
    # answer's attempts apart), but nothing is passed on: there is no one to pass it to.
    assert "".join(AnswerStream(moa, QUESTION)) != ""


def test_the_run_context_reaches_the_graph(fake, log):
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"))
    stream = AnswerStream(create_moa_graph(config), QUESTION, context={"temperature": 0.1})
    list(stream)
    assert log.by("A")[0].temperature == 0.1


# --- one validated override path ------------------------------------------------------------


def test_chat_model_parameters_are_validated_like_every_other_override(fake):
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"))
    with pytest.raises(MoAConfigError, match="max_attempts"):
        _ = MoAChatModel(config=config, max_retries=-1).moa_config
    with pytest.raises(MoAConfigError, match="temperature"):
        _ = MoAChatModel(config=config, temperature=5).moa_config
    with pytest.raises(MoAConfigError, match="max_tokens"):
        _ = MoAChatModel(config=config, max_tokens=0).moa_config


def test_apply_context_changes_nothing_without_settings(fake):
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), name="mine")
    assert apply_context(config, None) is config
    assert apply_context(config, MoAContext()) is config
    tuned = apply_context(config, call_timeout_s=3, max_attempts=2)
    assert (tuned.call_timeout_s, tuned.retry.max_attempts) == (3, 2)
    assert tuned.name == "mine (customized)" and config.call_timeout_s != 3


@pytest.mark.parametrize("use_async", [False, True])
async def test_chat_model_cuts_a_pick_sent_whole_at_the_stop_and_ends_with_usage(fake, use_async):
    config = MoAConfig(
        variant="ranker",
        proposers=[fake("A", reply=LONG), fake("B", reply=LONG)],
        aggregator=fake("R", reply=PICK),
    )
    llm = MoAChatModel(config=config)
    if use_async:
        chunks = [c async for c in llm.astream("hi", stop=["three"])]
    else:
        chunks = list(llm.stream("hi", stop=["three"]))
    assert [c.text for c in chunks] == ["B says one two ", ""]
    assert chunks[-1].usage_metadata["total_tokens"] > 0
