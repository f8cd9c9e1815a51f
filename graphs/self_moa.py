"""LangGraph server entry point: Self-MoA (k samples of one model, aggregated by it)."""

from langgraph_moa import create_moa_graph
from langgraph_moa.config import RequestLimits

# The limits of `moa serve`, with its defaults: every caller chooses its run's context.
graph = create_moa_graph("local-self-moa", name="self-moa", limits=RequestLimits())
