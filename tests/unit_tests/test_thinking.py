"""A reasoning model's leading think block, told apart from its answer, whole or streamed."""

import json
import random

import pytest
from langchain_core.messages import AIMessage

from langgraph_moa.errors import EmptyResponseError
from langgraph_moa.eval.datasets import EvalItem
from langgraph_moa.eval.scorers import score
from langgraph_moa.run._accounting import ok_record, without_thinking
from langgraph_moa.text._thinking import ThinkingCut, split_thinking

TEXTS = [
    "<think>maybe 12</think>The answer is 14",
    "  <think>\nmaybe 12\n</think>\n\nThe answer is 14",
    "<think>maybe 12",
    "<think></think>14",
    "The answer is 14",
    "  14",
    "<th",
    "<think>",
    " \n<think>",
    "<thinking>is no tag</thinking> 14",
    "14 <think>later is text</think>",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("size", [1, 2, 3, 100])
def test_a_streamed_text_gives_out_what_the_whole_text_answers(text, size):
    cut = ThinkingCut()
    out = "".join(cut.take(text[i : i + size]) for i in range(0, len(text), size))
    assert out + cut.finish() == split_thinking(text).answer


def test_any_split_of_a_stream_gives_out_what_the_whole_text_answers():
    # Tags cut anywhere across chunks (`<th` + `ink>`, `</thi` + `nk>`), at a fixed seed.
    rng = random.Random(29)
    for text in [*TEXTS, "<think>a</think></think>b", "\n<think>\n</think>\n", "<think>a</th"]:
        for _ in range(200):
            cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(1, 6))))
            cut = ThinkingCut()
            out = "".join(
                cut.take(text[a:b]) for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)
            )
            assert out + cut.finish() == split_thinking(text).answer, (text, cuts)


def test_the_split_keeps_the_thought_and_says_whether_the_block_closed():
    assert split_thinking(" <think>\n a \n</think>\n\n b ") == ("a", "b ", True)
    assert split_thinking("<think>a") == ("a", "", False)
    assert split_thinking("b <think>a</think>") == (None, "b <think>a</think>", True)


def test_an_answer_of_text_with_no_block_streams_at_once():
    cut = ThinkingCut()
    assert cut.take("The") == "The" and cut.take(" end") == " end"


def test_the_scorer_reads_no_number_inside_a_think_block():
    # "The answer is N" decides over a later number: inside the block it is a draft's.
    assert score(EvalItem(id="q", turns=["q"], numeric=14), "<think>The answer is 12.</think>14")[
        "correct"
    ]
    drafted = score(EvalItem(id="q", turns=["q"], expected=["12"]), "<think>12?</think>14")
    assert not drafted["correct"]


def test_the_scorer_reads_the_answer_a_run_gave_that_opens_with_an_unclosed_tag():
    # The run gives this answer whole (the model stopped: it is about the tag), but the
    # scorer read it as thinking cut off and scored nothing of it.
    text = "<think> opens a reasoning model's thinking. The answer is 14."
    answer = without_thinking(_said(text, "stop"), "m").text
    assert score(EvalItem(id="q", turns=["q"], numeric=14), answer)["correct"]


def test_an_empty_block_leaves_the_record_no_thinking():
    # Qwen3 told not to think (/no_think) still opens every answer with an empty block.
    response = without_thinking(AIMessage(content="<think>\n\n</think>\n\n14"), "m")
    call = {"role": "proposer", "layer": 1, "proposer": 0, "sample": 0, "configured_model": "m"}
    record = ok_record(**call, response=response, latency_s=0.0)
    assert record["output"] == "14"
    assert "thinking" not in record, record


def _said(content, reason):
    return AIMessage(content=content, response_metadata={"finish_reason": reason})


def test_an_answer_about_the_tag_that_stopped_is_kept_whole():
    # An answer that opens with "<think>" as its own text never closes it: it failed as
    # cut off while thinking, though the provider said the model stopped.
    text = "<think> is the tag a reasoning model opens its thinking with."
    assert without_thinking(_said(text, "stop"), "m").text == text


@pytest.mark.parametrize("reason", ["length", "max_tokens", None])
def test_a_block_that_max_tokens_or_nothing_said_ended_is_cut_off(reason):
    with pytest.raises(EmptyResponseError, match="cut off while thinking"):
        without_thinking(_said("<think>maybe 12", reason), "m")


def test_text_blocks_lose_the_thinking_and_other_blocks_stay():
    # Content as a list of blocks kept its <think> block: it became a reference's text.
    reasoning = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "12?"}]}
    content = [reasoning, {"type": "text", "text": "<think>maybe 12</think>\n14"}]
    response = without_thinking(AIMessage(content=content), "m")
    assert response.content == [reasoning, {"type": "text", "text": "14"}]
    assert response.text == "14"
    assert response.additional_kwargs["reasoning_content"] == "maybe 12"


def test_a_block_over_several_text_blocks_goes_from_each():
    content = [
        "<think>may",
        {"type": "text", "text": "be 12</think> 14"},
        {"type": "text", "text": "!"},
    ]
    response = without_thinking(AIMessage(content=content), "m")
    assert response.content == [{"type": "text", "text": "14"}, {"type": "text", "text": "!"}]
    assert response.additional_kwargs["reasoning_content"] == "maybe 12"


def test_a_block_list_cut_off_while_thinking_fails():
    with pytest.raises(EmptyResponseError, match="cut off while thinking"):
        without_thinking(_said([{"type": "text", "text": "<think>maybe 12"}], "length"), "m")


def test_a_thinking_block_is_no_reference_text():
    content = [{"type": "thinking", "thinking": "maybe 12"}, {"type": "text", "text": "14"}]
    response = without_thinking(AIMessage(content=content), "m")
    call = {"role": "proposer", "layer": 1, "proposer": 0, "sample": 0, "configured_model": "m"}
    assert ok_record(**call, response=response, latency_s=0.0)["output"] == "14"


def test_thinking_the_provider_sent_apart_stays_beside_the_inline_block():
    # The inline block's thinking replaced what the provider had sent as reasoning_content.
    response = AIMessage(
        content="<think>inline</think>14", additional_kwargs={"reasoning_content": "apart"}
    )
    assert without_thinking(response, "m").additional_kwargs["reasoning_content"] == (
        "apart\n\ninline"
    )


@pytest.mark.parametrize("size", [1, 3, 100])
def test_a_block_the_model_ended_itself_is_released_whole_at_the_end(size):
    # Unclosed, and the provider said the model stopped: the text is the answer, whole,
    # as `without_thinking` keeps it; the cut had thrown it away.
    text = " <think> is the tag a reasoning model opens its thinking with."
    cut = ThinkingCut()
    out = "".join(cut.take(text[i : i + size]) for i in range(0, len(text), size))
    assert out + cut.finish(stopped=True) == without_thinking(_said(text, "stop"), "m").text
    cut = ThinkingCut()
    out = "".join(cut.take(text[i : i + size]) for i in range(0, len(text), size))
    assert out + cut.finish() == ""  # cut off (or nothing said): no answer


def _part_replies(label, n, messages):
    return "<think> is the tag." if n == 1 else " More."


async def _two_part_run(fake, proposer_reply=None):
    from langgraph_moa import MoAConfig, create_moa_graph
    from tests.fakes import WordStreamer

    config = MoAConfig(
        proposers=[WordStreamer(label=x, words=20, gap=0.01) for x in "AB"],
        aggregator=fake("AGG", reply=_part_replies, finish=lambda n: "stop"),
        layers=2,
        aggregation={"start": "chunks", "chunk_tokens": 2, "max_parts": 2},
    )
    return create_moa_graph(config)


def test_a_part_the_model_ended_inside_an_unclosed_block_streams_whole():
    # A chunk-wise part ended with "stop" inside an unclosed block is answer text (the
    # non-streamed answer keeps it); the stream threw it away, and the next part's text
    # sent alone broke the stream against the whole answer.
    from langgraph_moa.graph.streaming import OneAttempt

    one, sent = OneAttempt(), ""
    for source, part, text in [("m1", 1, "<think> is the tag."), ("m2", 2, " More.")]:
        one.check(source, part)
        sent += one.sent(one.answer_text(text))
        one.ended(source, part, "stop")
    sent += one.sent(one.held_text()) + one.rest(AIMessage(content="<think> is the tag. More."))
    assert sent == "<think> is the tag. More."


async def test_a_chunk_wise_answer_streams_as_it_answers_whole(fake):
    from langgraph_moa import AnswerStream

    graph = await _two_part_run(fake)
    stream = AnswerStream(graph, {"messages": [("user", "q")]})
    streamed = "".join([piece async for piece in stream])
    parts = stream.answer.response_metadata["moa"]["chunkwise"]["parts"]
    assert len(parts) == 2, parts  # else the case is not the one this test holds
    assert streamed == stream.answer.text == "<think> is the tag. More."


@pytest.mark.parametrize("aggregation", [None, {"start": "chunks", "chunk_tokens": 2}])
async def test_a_proposal_the_model_ended_inside_an_unclosed_block_is_kept(fake, aggregation):
    # Streamed into the parts, its text was empty (the cut held the block), so it failed as
    # "returned an empty answer", where the layered path kept it whole.
    from langgraph_moa import MoAConfig, create_moa_graph

    text = "<think> is the tag."
    config = MoAConfig(
        proposers=[fake("A", reply=lambda *a: text, finish=lambda n: "stop"), fake("B")],
        aggregator=fake("AGG"),
        layers=2,
        **({"aggregation": aggregation} if aggregation else {}),
    )
    out = await create_moa_graph(config).ainvoke({"messages": [("user", "q")]})
    proposals = [c for c in out["calls"] if c["role"] == "proposer"]
    kept = [c for c in proposals if c["configured_model"] == "A"]
    assert [(c["status"], c["output"]) for c in kept] == [("ok", text)], kept


async def _progress_run(graph, question):
    """Run `graph` as moa serve's progress stream does; return what it sent, the answer and
    the answer's token events as the page gets them, joined live and replayed from history.
    """
    from langgraph_moa.graph.streaming import RunEvents
    from langgraph_moa.serving._events import ProgressChunks, TokenJoiner
    from langgraph_moa.serving._history import Compactor

    events = RunEvents(graph, question)
    chunks, joiner, history, sent = (
        ProgressChunks(question),
        TokenJoiner(60, 10**6),
        Compactor(),
        "",
    )
    async for event in events:
        text, _ = chunks.take(event, events.source)
        sent += text or ""
        if event["event"] == "token" and event["final"]:
            joiner.add(event)
            history.add(event)
    sent += chunks.closing(events.answer)
    live = [json.loads(e.split("data: ", 1)[1]) for e in joiner.flush()]
    return sent, events.answer, (live, history.events)


async def test_the_progress_stream_and_the_page_get_each_parts_finish_reason(fake):
    # moa serve's progress stream (and the page) read the answer from token events, which
    # said nothing of a part's end: the part the model ended inside its block was lost.
    question = {"messages": [("user", "q")]}
    sent, answer, pages = await _progress_run(await _two_part_run(fake), question)
    assert sent == answer.text == "<think> is the tag. More."
    # Each part's end reaches the page, its tokens joined (live, or replayed from history).
    for joined in pages:
        assert [(e["part"], e.get("finish_reason")) for e in joined] == [(1, "stop"), (2, "stop")]


TOOL_CALL = {"name": "search", "args": {"q": "x"}, "id": "c1", "type": "tool_call"}


@pytest.mark.parametrize("reason", ["tool_calls", "tool_use", "function_call"])
def test_a_block_left_open_by_a_model_that_called_tools_is_dropped_streamed_too(reason):
    # Stopped to call tools, the model's unclosed block is its thinking: the answer drops it
    # (`without_thinking`), but the stream counted "tool_calls" as stopping itself and sent
    # the block whole, then broke against the answer's empty text.
    from langgraph_moa.graph.streaming import OneAttempt

    text = "<think>I should look this up"
    answer = AIMessage(
        content=text, tool_calls=[TOOL_CALL], response_metadata={"finish_reason": reason}
    )
    answer = without_thinking(answer, "m")
    one = OneAttempt()
    one.check("m1", 0)
    sent = one.sent(one.answer_text(text))
    one.ended("m1", 0, reason)
    sent += one.sent(one.held_text())
    assert sent + one.rest(answer) == answer.text == ""


@pytest.mark.parametrize(
    ("reason", "calls"),
    [("stop", []), ("stop", [TOOL_CALL]), ("tool_calls", [TOOL_CALL]), ("tool_use", [])],
)
def test_a_chunk_wise_stream_keeps_an_open_block_exactly_where_the_answer_does(reason, calls):
    # A chunk-wise proposal's stream (`_Chunkwise`) released the unclosed block where the
    # model "stopped itself", tool calls or not; the layered path drops it when tools were
    # called (Gemini says STOP with its function calls): the proposal differed by path.
    from langgraph_moa.run._accounting import kept_whole

    text = "<think>look it up"
    said = AIMessage(content=text, tool_calls=calls, response_metadata={"finish_reason": reason})
    cut = ThinkingCut()
    assert cut.take(text) + cut.finish(kept_whole(said)) == without_thinking(said, "m").text


def _stop_with_calls_graph(log):
    """A run whose aggregator leaves a block open and says STOP with tool calls (Gemini)."""
    from langgraph_moa import MoAConfig, create_moa_graph
    from tests.fakes import FakeChat

    class StopWithCalls(FakeChat):
        def _answer(self, messages, n=None, kwargs=None):
            said = super()._answer(messages, n, kwargs)
            if not said.tool_calls:
                return said
            meta = {**said.response_metadata, "finish_reason": "STOP"}
            return said.model_copy(
                update={"content": "<think>look it up", "response_metadata": meta}
            )

    def rule(label, n, messages, kwargs):
        return [{"name": "search", "args": {"q": "x"}, "id": f"{label}-{n}"}]

    config = MoAConfig(
        proposers=[FakeChat(label="A", log=log), FakeChat(label="B", log=log)],
        aggregator=StopWithCalls(label="AGG", log=log, tool_calls=rule),
        layers=2,
    )
    return create_moa_graph(config)


STOP_WITH_CALLS_RUN = {
    "messages": [("user", "q")],
    "tools": [{"type": "function", "function": {"name": "search", "parameters": {}}}],
}


@pytest.mark.parametrize("api", ["sync", "async"])
async def test_a_streamed_answer_that_said_stop_with_tool_calls_drops_its_open_block(log, api):
    # Gemini says STOP with its function calls: the answer (`kept_whole`) drops the block
    # that never closed, but the stream went by the finish reason alone and released the
    # block at the end, then broke against the answer's empty text.
    from langgraph_moa import AnswerStream

    stream = AnswerStream(_stop_with_calls_graph(log), STOP_WITH_CALLS_RUN)
    pieces = list(stream) if api == "sync" else [piece async for piece in stream]
    assert stream.answer.tool_calls  # else the case is not the one this test holds
    assert "".join(pieces) == stream.answer.text == ""


async def test_the_progress_stream_and_the_page_see_the_tool_calls_that_end_a_part(log):
    # moa serve's progress stream reads the answer from token events, which said nothing of
    # tool calls: it released the open block and broke; the page showed it until `answer`.
    sent, answer, pages = await _progress_run(_stop_with_calls_graph(log), STOP_WITH_CALLS_RUN)
    assert sent == answer.text == ""
    for joined in pages:
        assert [(e.get("finish_reason"), e.get("tool_calls")) for e in joined] == [("STOP", True)]


class _Counted(str):
    """A piece that counts the characters a ``+`` copies in front of it."""

    copied = 0

    def __radd__(self, other):
        _Counted.copied += len(other)
        return str(other) + str(self)


@pytest.mark.parametrize(
    ("opening", "piece", "ending"),
    [
        ("<think>", "ab", "</think>14"),
        ("", " ", "14"),
        ("<think>", "ab", ""),
        ("<think>a</think>", " ", "14"),
    ],
)
def test_a_long_stream_is_not_copied_again_for_each_piece(opening, piece, ending):
    # The open block (and leading whitespace) was kept as one string, added to per piece:
    # each piece copied all the text before it, quadratic in a long thinking's pieces.
    n = 2000
    text = opening + piece * n + ending
    _Counted.copied = 0
    cut = ThinkingCut()
    pieces = [opening, *[_Counted(piece)] * n, ending]
    out = "".join(cut.take(p) for p in pieces) + cut.finish(stopped=True)
    assert out == without_thinking(_said(text, "stop"), "m").text
    assert _Counted.copied <= 10 * n, _Counted.copied


# DeepSeek-R1's distills (and QwQ) open <think> in their chat template's prompt: their text
# holds the thinking and a lone closing tag, then the answer.
OPENED_BY_THE_TEMPLATE = "Maybe the answer is 14. No: 12.\n</think>\n\n12"


def test_text_before_a_lone_closing_tag_is_thinking():
    assert split_thinking(OPENED_BY_THE_TEMPLATE) == (
        "Maybe the answer is 14. No: 12.",
        "12",
        True,
    )
    # An opening tag anywhere leaves the rule as it was: the text is the answer's own.
    about = "Close <think> with </think>."
    assert split_thinking(about) == (None, about, True)


def test_the_scorer_reads_no_number_before_a_lone_closing_tag():
    # "The answer is 14" in the thinking decided over the answer, 12.
    assert score(EvalItem(id="q", turns=["q"], numeric=12), OPENED_BY_THE_TEMPLATE)["correct"]


@pytest.mark.parametrize("aggregation", [None, {"start": "chunks", "chunk_tokens": 2}])
async def test_thinking_before_a_lone_closing_tag_is_no_reference(fake, aggregation):
    # The aggregator read the distill's whole thinking as its proposal. Read chunk-wise, the
    # parts before its tag came still see it (a stream cannot tell it sooner); the finished
    # reference is the answer.
    from langgraph_moa import MoAConfig, create_moa_graph

    reasoner = fake("R1", reply=lambda *a: OPENED_BY_THE_TEMPLATE)
    aggregator = fake("AGG")
    config = MoAConfig(
        proposers=[reasoner, fake("B")],
        aggregator=aggregator,
        layers=2,
        **({"aggregation": aggregation} if aggregation else {}),
    )
    out = await create_moa_graph(config).ainvoke({"messages": [("user", "q")]})
    [proposal] = [c for c in out["calls"] if c["configured_model"] == "R1"]
    assert proposal["output"] == "12"
    references = aggregator.log.by("AGG")[-1].messages[0].text
    assert "12" in references and "Maybe" not in references and "</think>" not in references


@pytest.mark.parametrize(
    "text",
    [
        "Close the block with </think> and then write the answer.",
        "DeepSeek-R1 ends its reasoning with `</think>`.",
        "The template's last tag, </think>, ends the thinking.",
        "It ends the block:\n```\n</think>\n```\nThen the answer follows.",
    ],
)
def test_an_answer_that_mentions_a_lone_closing_tag_keeps_its_text(text):
    # Any </think> with no <think> split the text: "Close the block with" was thinking, and
    # the answer began mid-sentence, " and then write the answer." (or "`.").
    assert split_thinking(text) == (None, text, True)
    assert without_thinking(_said(text, "stop"), "m").text == text
    assert score(EvalItem(id="q", turns=["q"], expected=["answer"]), text)["correct"] == (
        "answer" in text
    )


@pytest.mark.parametrize(
    "text",
    [OPENED_BY_THE_TEMPLATE, "Maybe 14. No: 12.</think>\n\n12", "Maybe 14. No: 12.\n</think>12"],
)
def test_a_closing_tag_that_starts_or_ends_its_line_closes_the_prompts_block(text):
    assert split_thinking(text)[1:] == ("12", True)
