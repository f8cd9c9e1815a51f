"""An OpenAI-compatible server that reports no usage: its calls are estimated, and said to be.

`ScriptedServer`'s `no_usage` models send no ``usage``, streamed (they ignore
``stream_options``, as an older Ollama does) or not (as a proxy that drops it does).
Recorded as 0 tokens they never reached a token budget and cost nothing.
"""

import pytest

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.testing import ScriptedServer


@pytest.fixture(scope="module")
def backend():
    with ScriptedServer(no_usage=frozenset({"silent"})) as server:
        yield server


@pytest.mark.parametrize("stream", [False, True])
def test_a_server_that_sends_no_usage_is_estimated_and_counts_for_the_budget(backend, stream):
    url = backend.url
    config = MoAConfig(
        proposers=[f"silent@{url}", f"loud@{url}"],
        aggregator=f"agg@{url}",
        layers=3,
        budget={"max_tokens": 1},
    )
    graph, question = create_moa_graph(config), {"messages": [("user", "Explain X")]}
    if stream:  # "messages" makes each model stream: the server ignores stream_options
        modes = graph.stream(question, stream_mode=["messages", "values"])
        out = [chunk for mode, chunk in modes if mode == "values"][-1]
    else:
        out = graph.invoke(question)
    calls = {c["configured_model"]: c for c in out["calls"]}
    silent, loud = calls[f"silent@{url}"], calls[f"loud@{url}"]
    assert silent["usage_estimated"] is True and silent["completion_tokens"] > 0
    assert "usage_estimated" not in loud and loud["completion_tokens"] > 0
    assert out["usage"]["total"]["estimated_calls"] == 1
    meta = out["messages"][-1].response_metadata["moa"]
    assert meta["fallback"] == "budget" and "1 of its calls estimated" in meta["fallback_reason"]
