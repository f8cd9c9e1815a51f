"""Images reach every proposer over real HTTP; a model that cannot take them is named."""

import pytest
from langchain_core.messages import HumanMessage

from langgraph_moa import AllProposersFailedError, MoAChatModel, MoAConfig
from langgraph_moa.testing import ScriptedServer

IMAGE = HumanMessage(
    content=[
        {"type": "text", "text": "Describe this image."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
)


@pytest.fixture(scope="module")
def servers():
    with ScriptedServer() as seeing, ScriptedServer(multimodal=False) as blind:
        yield seeing, blind


def test_the_image_reaches_the_proposers_and_the_aggregator_with_text_references(servers):
    seeing, blind = servers
    config = MoAConfig(
        proposers=[f"eyes@{seeing.url}", f"text-only@{blind.url}"],
        aggregator=f"agg@{seeing.url}",
        layers=2,
    )
    answer = MoAChatModel(config=config).invoke([IMAGE])
    calls = {
        c["configured_model"].split("@")[0]: c for c in answer.response_metadata["moa"]["calls"]
    }
    assert calls["eyes"]["status"] == "ok"
    assert calls["text-only"]["status"] == "failed"
    error = calls["text-only"]["error"]  # the model named, the fix, then the provider's words
    assert error.startswith("UnsupportedContentError: text-only@"), error
    assert "vision model" in error and "image input is not supported" in error
    agg = seeing.bodies("agg")[-1]["messages"]
    assert agg[-1]["content"][1]["type"] == "image_url"  # the original message
    assert "eyes answers" in agg[0]["content"]  # and the proposal, as a text reference


def test_when_no_proposer_can_take_the_image_the_error_says_so(servers):
    _, blind = servers
    config = MoAConfig(proposers=[f"text-only@{blind.url}"], aggregator=f"agg@{blind.url}")
    with pytest.raises(AllProposersFailedError) as failed:
        MoAChatModel(config=config, max_retries=0).invoke([IMAGE])
    assert "text-only@" in failed.value.summary  # moa serve's one line names the model
    assert "cannot read images" in failed.value.summary


def test_a_system_messages_parts_reach_the_aggregator_as_the_proposers_got_them(servers):
    """From layer 2 on the system message was rebuilt from its text: its image dropped and
    its text parts run together. Over HTTP it now arrives as parts, the references last."""
    from langchain_core.messages import SystemMessage

    seeing, _ = servers
    parts = [
        {"type": "text", "text": "Be brief."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    config = MoAConfig(
        proposers=[f"sys-eyes@{seeing.url}"], aggregator=f"sys-agg@{seeing.url}", layers=2
    )
    MoAChatModel(config=config).invoke([SystemMessage(content=parts), "What is it?"])
    first = seeing.bodies("sys-eyes")[-1]["messages"][0]["content"]
    system = seeing.bodies("sys-agg")[-1]["messages"][0]["content"]
    assert first == parts
    assert system[:2] == parts and "sys-eyes answers" in system[2]["text"]
