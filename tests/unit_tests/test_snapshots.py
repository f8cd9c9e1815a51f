"""The graph's drawing and its input, output and context schemas, as reviewed snapshots.

LangGraph server, Studio and clients read these; a change to them is a change to the
package's interface, so it must show up in review (``make snapshots`` accepts it).
"""

import pydantic
import pytest

from langgraph_moa import MoAConfig, create_moa_graph


@pytest.fixture
def graph(fake):
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=3)
    return create_moa_graph(config)


def test_drawn_graph(graph, snapshot):
    assert graph.get_graph().draw_mermaid(with_styles=False) == snapshot


@pytest.mark.parametrize("variant", ["ranker", "select", "self-moa", "self-moa-seq"])
def test_every_variant_runs_on_the_same_graph(fake, graph, variant):
    one_model = variant.startswith("self-moa")
    config = MoAConfig(
        variant=variant,
        proposers=[{"model": fake("A"), "samples": 4}] if one_model else [fake("A"), fake("B")],
        aggregator=None if variant == "select" or one_model else fake("AGG"),
    )
    drawn = create_moa_graph(config).get_graph().draw_mermaid(with_styles=False)
    assert drawn == graph.get_graph().draw_mermaid(with_styles=False)


# The schemas' text is pydantic's. Before 2.12 it writes the same schema another way: a
# single-value Literal as `enum` beside its `const`, and no `additionalProperties: true` (the
# default) on the messages' open models and TypedDicts. At the floor (2.7.4) the two differ in
# exactly those spellings, so the snapshot (written on 2.12+) is checked where it was written.
pydantic_writes_the_snapshots_text = pytest.mark.skipif(
    tuple(int(n) for n in pydantic.VERSION.split(".")[:2]) < (2, 12),
    reason="pydantic < 2.12 spells the same JSON schema differently (enum beside const, "
    "additionalProperties left at its default)",
)


@pydantic_writes_the_snapshots_text
def test_input_schema(graph, snapshot):
    assert graph.get_input_jsonschema() == snapshot


@pydantic_writes_the_snapshots_text
def test_output_schema(graph, snapshot):
    assert graph.get_output_jsonschema() == snapshot


def test_context_schema(graph, snapshot):
    assert graph.get_context_jsonschema() == snapshot
