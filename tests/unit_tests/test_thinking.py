"""A reasoning model's leading think block, told apart from its answer, whole or streamed."""

import random

import pytest
from langchain_core.messages import AIMessage

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


def test_an_empty_block_leaves_the_record_no_thinking():
    # Qwen3 told not to think (/no_think) still opens every answer with an empty block.
    response = without_thinking(AIMessage(content="<think>\n\n</think>\n\n14"), "m")
    call = {"role": "proposer", "layer": 1, "proposer": 0, "sample": 0, "configured_model": "m"}
    record = ok_record(**call, response=response, latency_s=0.0)
    assert record["output"] == "14"
    assert "thinking" not in record, record
