"""The synthesis prompt and its injection, exactly as the spec describes."""

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from langgraph_moa.prompts import (
    AGGREGATE_AND_SYNTHESIZE_PROMPT,
    inject_references,
    render_references,
)

PAPER_PROMPT = (
    "You have been provided with a set of responses from various open-source models to the latest user query. "
    "Your task is to synthesize these responses into a single, high-quality response. It is crucial to critically "
    "evaluate the information provided in these responses, recognizing that some of it may be biased or incorrect. "
    "Your response should not simply replicate the given answers but should offer a refined, accurate, and "
    "comprehensive reply to the instruction. Ensure your response is well-structured, coherent, and adheres to the "
    "highest standards of accuracy and reliability.\n\nResponses from models:"
)


def test_default_prompt_is_the_papers_verbatim():
    assert AGGREGATE_AND_SYNTHESIZE_PROMPT == PAPER_PROMPT


def test_references_are_numbered_from_one_as_whole_strings():
    refs = ["first answer\nwith two lines", "second"]
    assert render_references("P", refs) == "P\n1. first answer\nwith two lines\n2. second"


def test_a_single_string_is_refused_not_numbered_per_character():
    with pytest.raises(TypeError, match="not one string"):
        render_references("P", "an answer")


def test_none_is_refused_not_rendered():
    with pytest.raises(TypeError, match="None"):
        render_references("P", ["ok", None])


def test_injection_adds_a_system_message_and_keeps_user_turns():
    convo = [HumanMessage("q1"), AIMessage("a1"), HumanMessage("q2")]
    out = inject_references(convo, ["r1", "r2"])
    assert isinstance(out[0], SystemMessage)
    assert out[0].text == PAPER_PROMPT + "\n1. r1\n2. r2"
    assert out[1:] == convo
    assert len(convo) == 3  # the input list is untouched


def test_injection_appends_to_an_existing_system_message_after_a_blank_line():
    convo = [SystemMessage("You are terse."), HumanMessage("q")]
    out = inject_references(convo, ["r"])
    assert out[0].text == "You are terse.\n\n" + PAPER_PROMPT + "\n1. r"
    assert convo[0].text == "You are terse."


def test_no_references_no_injection():
    convo = [HumanMessage("q")]
    out = inject_references(convo, [])
    assert out == convo and out is not convo
