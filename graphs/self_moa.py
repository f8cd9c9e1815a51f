"""LangGraph server entry point: Self-MoA (k samples of one model, aggregated by it)."""

from langgraph_moa import MoAConfig, create_moa_graph

graph = create_moa_graph(MoAConfig.from_preset("local-self-moa"), name="self-moa")
