"""An answer its provider's content filter stopped is no reference and no answer, said so."""

import pytest

from langgraph_moa import MoAConfig, RetrySettings, create_moa_graph
from tests.helpers import QUESTION, references_in

ONE_ATTEMPT = RetrySettings(max_attempts=3, initial_interval=0.0, jitter=False)


def filtered(reason="content_filter"):
    return lambda n: reason


@pytest.mark.parametrize(
    "reason",
    [
        "content_filter",
        "SAFETY",
        "refusal",
        # Gemini's other reasons for withholding or cutting the text (langchain-google-genai
        # reports the enum's name): recitation of source material, image filters, blocklists.
        "RECITATION",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
    ],
)
def test_a_filtered_proposal_is_a_failed_call_not_a_reference(fake, log, reason):
    config = MoAConfig(
        proposers=[fake("A", finish=filtered(reason)), fake("B")],
        aggregator=fake("AGG"),
        layers=2,
        retry=ONE_ATTEMPT,
    )
    out = create_moa_graph(config).invoke(QUESTION)
    assert references_in(log.by("AGG")[0]) == ["B #1"]  # not A's cut text
    assert "1 of 2 expected responses are missing" in log.by("AGG")[0].messages[0].text
    [a] = [c for c in out["calls"] if c["configured_model"] == "A"]
    assert a["status"] == "failed" and a["attempts"] == 1  # filtered again if retried
    assert "content filter" in a["error"] and repr(reason) in a["error"]


def test_an_empty_filtered_proposal_names_the_filter_not_an_empty_answer(fake, log):
    config = MoAConfig(
        proposers=[fake("A", finish=filtered(), reply=lambda *a: ""), fake("B")],
        aggregator=fake("AGG"),
        layers=2,
        retry=ONE_ATTEMPT,
    )
    out = create_moa_graph(config).invoke(QUESTION)
    [a] = [c for c in out["calls"] if c["configured_model"] == "A"]
    assert "content filter" in a["error"] and "empty answer" not in a["error"]


def test_a_filtered_aggregator_answer_is_replaced_by_a_labelled_fallback(fake, log):
    config = MoAConfig(
        proposers=[fake("A"), fake("B")],
        aggregator=fake("AGG", finish=filtered()),
        layers=2,
        retry=ONE_ATTEMPT,
    )
    out = create_moa_graph(config).invoke(QUESTION)
    moa = out["messages"][-1].response_metadata["moa"]
    assert out["messages"][-1].content == "A #1"
    assert moa["fallback"] == "best_proposal" and "content filter" in moa["fallback_reason"]


CHUNKS = {"start": "chunks", "chunk_tokens": 2}


async def test_chunkwise_a_filtered_aggregator_part_is_replaced_by_a_labelled_fallback(fake, log):
    # The chunk-wise aggregator's parts were taken as written: a part the filter stopped
    # ended up in the answer, its cut text passed off as the synthesis.
    config = MoAConfig(
        proposers=[fake("A"), fake("B")],
        aggregator=fake("AGG", finish=filtered()),
        layers=2,
        aggregation=CHUNKS,
        retry=ONE_ATTEMPT,
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    moa = out["messages"][-1].response_metadata["moa"]
    assert moa["fallback"] == "best_proposal" and "content filter" in moa["fallback_reason"]
    assert "AGG" not in out["messages"][-1].text
    [agg] = [c for c in moa["calls"] if c["role"] == "aggregator"]
    assert agg["status"] == "failed" and agg["completion_tokens"]  # its tokens counted


async def test_chunkwise_a_filtered_streamed_proposal_is_recorded_as_failed(fake, log):
    config = MoAConfig(
        proposers=[fake("A", finish=filtered("SAFETY")), fake("B")],
        aggregator=fake("AGG"),
        layers=2,
        aggregation=CHUNKS,
        retry=ONE_ATTEMPT,
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    [a] = [c for c in out["calls"] if c["configured_model"] == "A"]
    assert a["status"] == "failed" and "content filter" in a["error"]
