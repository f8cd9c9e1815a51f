"""A system message's content parts reach every layer, not only the first."""

from langchain_core.messages import HumanMessage, SystemMessage

from langgraph_moa import MoAConfig, create_moa_graph
from tests.helpers import references_in

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def _system_parts(call) -> list:
    system = call.messages[0]
    assert isinstance(system, SystemMessage)
    return system.content if isinstance(system.content, list) else [system.content]


def test_a_system_image_part_reaches_the_later_layers_and_the_aggregator(fake, log):
    system = SystemMessage(content=[{"type": "text", "text": "Describe this:"}, IMAGE])
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=3)
    create_moa_graph(config).invoke({"messages": [system, HumanMessage("What is it?")]})
    for call in [log.by("A")[1], log.by("B")[1], log.by("AGG")[0]]:
        parts = _system_parts(call)
        assert IMAGE in parts
        assert parts[0] == {"type": "text", "text": "Describe this:"}
    assert references_in(log.by("AGG")[0]) == ["A #2", "B #2"]


def test_system_text_parts_stay_apart_in_the_later_layers(fake, log):
    parts = [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in French."}]
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    create_moa_graph(config).invoke(
        {"messages": [SystemMessage(content=parts), HumanMessage("Hi")]}
    )
    seen = _system_parts(log.by("AGG")[0])
    assert seen[:2] == parts  # as the first layer got them, not "Be brief.Answer in French."
    assert "Responses from models:" in seen[2]["text"]


def test_the_ranker_keeps_the_system_message_parts(fake, log):
    system = SystemMessage(content=[{"type": "text", "text": "Describe this:"}, IMAGE])
    config = MoAConfig(
        proposers=[fake("A"), fake("B")],
        aggregator=fake("RANK", responses=["1"]),
        variant="ranker",
    )
    create_moa_graph(config).invoke({"messages": [system, HumanMessage("What is it?")]})
    assert IMAGE in _system_parts(log.by("RANK")[0])


def test_a_plain_system_message_stays_one_string(fake, log):
    config = MoAConfig(proposers=[fake("A")], aggregator=fake("AGG"), layers=2)
    create_moa_graph(config).invoke({"messages": [SystemMessage("Be brief."), HumanMessage("Hi")]})
    content = log.by("AGG")[0].messages[0].content
    assert isinstance(content, str) and content.startswith("Be brief.\n\n")
