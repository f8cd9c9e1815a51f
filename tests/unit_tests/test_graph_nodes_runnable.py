"""The model-calling nodes run as LangGraph's own node runnable, in both `invoke` and `ainvoke`."""

from langgraph._internal._runnable import RunnableCallable

from langgraph_moa import MoAConfig, create_moa_graph


def test_model_calling_nodes_are_langgraphs_own_untraced_node_runnables(fake):
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2)
    graph = create_moa_graph(config)
    for name in ("propose", "aggregate", "rank"):
        bound = graph.builder.nodes[name].runnable
        assert isinstance(bound, RunnableCallable) and not bound.trace, name
        assert bound.func is not None and bound.afunc is not None, name
    sync = graph.invoke({"messages": [("user", "q")]})
    assert sync["messages"][-1].content


async def test_the_async_body_runs_under_ainvoke(fake, monkeypatch):
    from langgraph_moa.graph._nodes import MoANodes

    def no_sync(self, state):
        raise AssertionError("the sync body ran under ainvoke")

    for name in ("propose", "aggregate"):
        monkeypatch.setattr(MoANodes, name, no_sync)
    config = MoAConfig(proposers=[fake("A"), fake("B")], aggregator=fake("AGG"), layers=2)
    result = await create_moa_graph(config).ainvoke({"messages": [("user", "q")]})
    assert [c["status"] for c in result["calls"]] == ["ok", "ok", "ok"]
