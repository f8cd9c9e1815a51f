"""LangGraph server entry point: Self-MoA-Seq (samples aggregated through a sliding window)."""

from langgraph_moa import MoAConfig, create_moa_graph

graph = create_moa_graph(MoAConfig.from_preset("local-self-moa-seq"), name="self-moa-seq")
