"""Early aggregation over real HTTP: the stragglers' requests are hung up on, not awaited."""

import asyncio

from langgraph_moa import MoAConfig, create_moa_graph
from langgraph_moa.testing import FaultProfile, FaultServer


async def test_a_quorum_start_answers_without_waiting_for_a_hung_proposer():
    profiles = {"hung": FaultProfile(latency_s=(60.0, 60.0))}
    with FaultServer(profiles, default=FaultProfile(latency_s=(0.01, 0.02))) as server:
        config = MoAConfig(
            proposers=[f"a@{server.url}", f"b@{server.url}", f"hung@{server.url}"],
            aggregator=f"agg@{server.url}",
            layers=2,
            aggregation={"start": "quorum", "quorum": 2},
        )
        # The hung proposer would take 60 s; the bound only keeps a regression from hanging.
        out = await asyncio.wait_for(
            create_moa_graph(config).ainvoke({"messages": [("user", "q")]}), timeout=30
        )
    answer = out["messages"][-1]
    assert answer.content.startswith("agg answer")
    hung = [c for c in out["calls"] if c["configured_model"].startswith("hung@")]
    assert [c["status"] for c in hung] == ["cancelled"]
    dropped = answer.response_metadata["moa"]["early_start"]["dropped"]
    assert [d["configured_model"] for d in dropped] == [f"hung@{server.url}"]
