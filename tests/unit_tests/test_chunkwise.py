"""Chunk-wise aggregation with test doubles: routing, records, failures and config errors."""

import pytest
from pydantic import BaseModel

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.errors import AllProposersFailedError, MoAConfigError
from langgraph_moa.graph._chunkwise import prefills

QUESTION = {"messages": [("user", "q")]}
CHUNKS = {"start": "chunks", "chunk_tokens": 2}


def always(exc):
    return lambda n, messages: exc


@pytest.mark.parametrize("layers", [2, 3])
async def test_the_last_layer_runs_in_the_aggregate_node_and_the_rest_as_usual(fake, log, layers):
    config = MoAConfig(
        proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=layers, aggregation=CHUNKS
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    roles = [(c["role"], c["layer"], c["status"]) for c in out["calls"]]
    expected = [("proposer", n, "ok") for n in range(1, layers) for _ in range(2)]
    assert roles == [*expected, ("aggregator", layers, "ok")]
    parts = out["messages"][-1].response_metadata["moa"]["chunkwise"]["parts"]
    assert parts and all(s["complete"] for s in parts[-1]["saw"])
    # The aggregator read the last layer's proposals (a double answers in one chunk).
    assert f"A #{layers - 1}" in log.by("AGG")[-1].messages[0].text


async def test_the_quorum_applies_to_the_layers_before_the_last(fake):
    hung = fake("H", delay=lambda n: 30.0 if n == 1 else 0.0)
    config = MoAConfig(
        proposers=[fake("A"), fake("B"), hung],
        aggregator=fake("AGG"),
        layers=3,
        aggregation={**CHUNKS, "quorum": 2},
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    status = {(c["layer"], c["configured_model"]): c["status"] for c in out["calls"]}
    assert status[(1, "H")] == "cancelled" and status[(2, "H")] == "ok"
    dropped = out["messages"][-1].response_metadata["moa"]["early_start"]["dropped"]
    assert [(d["layer"], d["configured_model"]) for d in dropped] == [(1, "H")]


async def test_a_failing_aggregator_falls_back_to_a_labelled_proposal(fake):
    config = MoAConfig(
        proposers=[fake("A"), fake("B")],
        aggregator=fake("AGG", fail=always(ValueError("bad request"))),
        layers=2,
        aggregation=CHUNKS,
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    meta = out["messages"][-1].response_metadata["moa"]
    assert (
        meta["fallback"] == "best_proposal"
        and "chunk-wise aggregator failed" in meta["fallback_reason"]
    )
    # The fallback is the first proposal to complete; the other, if still running, is
    # cancelled (docs/failure-semantics.md).
    statuses = [c["status"] for c in out["calls"]]
    assert out["messages"][-1].content in ("A #1", "B #1")
    assert statuses[-1] == "failed" and "ok" in statuses[:2]
    assert set(statuses[:2]) <= {"ok", "cancelled"}


async def test_when_every_last_layer_proposal_fails_the_run_says_so(fake):
    bad = always(ValueError("model exploded"))
    config = MoAConfig(
        proposers=[fake("A", fail=bad), fake("B", fail=bad)],
        aggregator=fake("AGG"),
        layers=2,
        aggregation=CHUNKS,
    )
    with pytest.raises(AllProposersFailedError):
        await create_moa_graph(config).ainvoke(QUESTION)


def test_a_structured_answer_is_refused_with_the_fix(fake):
    class Answer(BaseModel):
        text: str

    config = MoAConfig(
        proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2, aggregation=CHUNKS
    )
    with pytest.raises(MoAConfigError, match="response_format"):
        create_moa_graph(config, response_format=Answer).invoke(QUESTION)


def test_self_moa_writes_chunk_wise_too(fake):
    model = fake("M")
    config = MoAConfig(
        variant="self-moa",
        proposers=[{"model": model, "samples": 3}],
        aggregation=CHUNKS,
    )
    out = create_moa_graph(config).invoke(QUESTION)
    assert [c["role"] for c in out["calls"]] == ["proposer"] * 3 + ["aggregator"]
    assert [c["sample"] for c in out["calls"][:3]] == [0, 1, 2]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"variant": "ranker"}, "variant 'ranker' has none"),
        ({"aggregator_fallbacks": ["m@http://127.0.0.1:9/v1"]}, "remove aggregator_fallbacks"),
        ({"aggregation": {**CHUNKS, "every_layer": True}}, "remove every_layer"),
        (
            {"aggregation": {"start": "quorum", "quorum": 1, "continuation": "prefill"}},
            "continuation applies with start 'chunks' only",
        ),
    ],
)
def test_chunk_wise_configs_that_cannot_work_are_refused_with_the_fix(fake, extra, message):
    data = {
        "proposers": [fake("A"), fake("B")],
        "aggregator": fake("AGG"),
        "aggregation": CHUNKS,
        **extra,
    }
    with pytest.raises(MoAConfigError, match=message):
        MoAConfig(**data)


def test_selection_refuses_chunk_wise(fake):
    with pytest.raises(MoAConfigError, match="variant 'select' has none"):
        MoAConfig(variant="select", proposers=[fake("A"), fake("B")], aggregation=CHUNKS)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_proposal_with_no_first_chunk_by_the_deadline_is_dropped_and_recorded(fake, mode):
    config = MoAConfig(
        # A hung model that answers whole (its astream is its cancellable ainvoke; the
        # double's own stream would sleep in a thread no cancel reaches).
        proposers=[fake("A"), fake("B"), fake("H", delay=lambda n: 30.0, disable_streaming=True)],
        aggregator=fake("AGG"),
        layers=2,
        # A and B must write their first chunk by then: leave room for a stalled machine.
        aggregation={**CHUNKS, "first_chunk_s": 2.0},
    )
    graph = create_moa_graph(config)
    out = graph.invoke(QUESTION) if mode == "sync" else await graph.ainvoke(QUESTION)
    hung = [c for c in out["calls"] if c["configured_model"] == "H"]
    assert [c["status"] for c in hung] == ["cancelled"]
    assert "no first chunk within 2s" in hung[0]["error"]
    parts = out["messages"][-1].response_metadata["moa"]["chunkwise"]["parts"]
    assert [s["proposer"] for s in parts[0]["saw"]] == [0, 1]
    assert out["messages"][-1].content.startswith("AGG")


@pytest.mark.parametrize(
    ("aggregator", "continuation", "prefilled"),
    [
        ("local:qwen2.5-coder-1.5b", "auto", True),
        ("agg@http://127.0.0.1:9/v1", "auto", False),
        ("agg@http://127.0.0.1:9/v1", "prefill", True),
        ("local:qwen2.5-coder-1.5b", "instruction", False),
    ],
)
def test_auto_continuation_prefills_for_a_local_aggregator_only(
    aggregator, continuation, prefilled
):
    config = MoAConfig(
        proposers=["a@http://127.0.0.1:9/v1", "b@http://127.0.0.1:9/v1"],
        aggregator=aggregator,
        aggregation={**CHUNKS, "continuation": continuation},
    )
    assert prefills(config) is prefilled


def test_the_parts_usage_keeps_their_token_details():
    """A chunk-wise answer's parts were summed into input, output and total tokens only: the
    cache reads and reasoning tokens the parts reported were lost from the run's usage."""
    from langchain_core.messages import AIMessage

    from langgraph_moa.graph._chunkwise import _summed

    def part(text, cached, reasoning):
        usage = {
            "input_tokens": 10,
            "output_tokens": 4,
            "total_tokens": 14,
            "input_token_details": {"cache_read": cached},
            "output_token_details": {"reasoning": reasoning},
        }
        return AIMessage(content=text, usage_metadata=usage)

    whole = _summed("ab", [part("a", 6, 1), AIMessage(content="x"), part("b", 8, 2)])
    assert whole.usage_metadata == {
        "input_tokens": 20,
        "output_tokens": 8,
        "total_tokens": 28,
        "input_token_details": {"cache_read": 14},
        "output_token_details": {"reasoning": 3},
    }
    assert _summed("x", [AIMessage(content="x")]).usage_metadata is None


def test_parts_with_an_empty_thought_add_no_thinking_to_the_record():
    """Two parts that each opened with an empty block (Qwen3 told not to think) recorded
    their joined thinking as "\\n\\n": a thought where there was none."""
    from langchain_core.messages import AIMessage

    from langgraph_moa.graph._chunkwise import _summed

    def part(thought):
        return AIMessage(content="x", additional_kwargs={"reasoning_content": thought})

    assert _summed("xx", [part(""), part("")]).additional_kwargs == {}
    joined = _summed("xxx", [part("a"), part(""), part("b")]).additional_kwargs
    assert joined == {"reasoning_content": "a\n\nb"}


async def test_a_streamed_proposals_separate_reasoning_content_is_in_its_record(log):
    """A proposal streamed into the parts was rebuilt without its chunks' additional_kwargs:
    the reasoning_content a provider's LangChain class keeps apart from the text was lost."""
    from tests.fakes import FakeChat

    class Reasoning(FakeChat):
        def _stream(self, messages, stop=None, run_manager=None, **kwargs):
            for chunk in super()._stream(messages, stop, run_manager, **kwargs):
                chunk.message.additional_kwargs = {"reasoning_content": "hm "}
                yield chunk

    config = MoAConfig(
        proposers=[Reasoning(label="A", log=log), Reasoning(label="B", log=log)],
        aggregator=FakeChat(label="AGG", log=log),
        layers=2,  # the one layer of proposals streams into the parts
        aggregation=CHUNKS,
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    proposals = [c for c in out["calls"] if c["role"] == "proposer"]
    assert [c.get("thinking") for c in proposals] == ["hm hm ", "hm hm "], proposals


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": -1000, "output_tokens": 5, "total_tokens": -995},
        {"input_tokens": 1000, "output_tokens": 5, "total_tokens": 0},
    ],
)
def test_a_parts_usage_never_lowers_the_tokens_its_budget_counts(usage):
    # A part's usage is the model server's word: its total was summed as given into the
    # tokens a chunk-wise run had used, so a negative or short one kept the run under
    # budget.max_tokens, as the call records (`_tokens`) no longer let it.
    from langchain_core.messages import AIMessage

    from langgraph_moa.graph._chunkwise import _total_tokens

    part = AIMessage("five words of an answer", usage_metadata=usage)
    assert _total_tokens(part) == max(0, usage["input_tokens"]) + usage["output_tokens"]


def test_one_parts_negative_usage_does_not_cancel_the_other_parts_in_the_answers_record():
    # The parts' usages were summed as given into the answer's one record: a part that
    # reported -1,000,000 prompt tokens cancelled what the other parts had read.
    from langchain_core.messages import AIMessage

    from langgraph_moa.graph._chunkwise import _summed
    from langgraph_moa.run._accounting import counted_tokens

    hostile = {"input_tokens": -1_000_000, "output_tokens": 5, "total_tokens": -999_995}
    honest = {"input_tokens": 500, "output_tokens": 5, "total_tokens": 505}
    parts = [AIMessage("one", usage_metadata=hostile), AIMessage("two", usage_metadata=honest)]
    answer = _summed("one two", parts)
    assert counted_tokens(answer) == (500, 10, 5 + 505)
    assert answer.usage_metadata["input_tokens"] == 500


async def test_a_streamed_layer_counts_each_written_character_once(monkeypatch):
    # The wait for a part counted every live proposal's words from its start again each time
    # any proposal wrote a chunk: work that grew with the square of the proposals' length.
    from langgraph_moa.graph import _chunkwise
    from tests.fakes import WordStreamer

    scanned = []
    spaceless = _chunkwise._SPACELESS

    class Counted:
        def findall(self, text):
            scanned.append(len(text))
            return spaceless.findall(text)

        def sub(self, repl, text):
            scanned.append(len(text))
            return spaceless.sub(repl, text)

    monkeypatch.setattr(_chunkwise, "_SPACELESS", Counted())
    proposers = [WordStreamer(label="A", words=300), WordStreamer(label="B", words=300)]
    config = MoAConfig(
        proposers=proposers,
        aggregator=WordStreamer(label="AGG"),
        layers=2,
        aggregation={"start": "chunks", "chunk_tokens": 1000},
    )
    out = await create_moa_graph(config).ainvoke(QUESTION)
    written = sum(len(c["output"] or "") for c in out["calls"] if c["role"] == "proposer")
    assert written > 2 * 300 * 2
    assert sum(scanned) <= 4 * written


@pytest.mark.parametrize(
    "text", ["Air scatters  blue light.\n", " two\twords ", "\u4e2d\u6587 \u5b57\u0e01x", ""]
)
def test_a_proposal_counted_piece_by_piece_has_the_words_counted_whole(text):
    from langgraph_moa.graph._chunkwise import _WordCount, _words

    for cut in range(len(text) + 1):
        for second in range(cut, len(text) + 1):
            count = _WordCount()
            for piece in (text[:cut], text[cut:second], text[second:]):
                count.add(piece)
            assert count.words == _words(text), (cut, second)
