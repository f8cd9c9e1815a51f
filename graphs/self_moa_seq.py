"""LangGraph server entry point: Self-MoA-Seq (samples aggregated through a sliding window)."""

from langgraph_moa import create_moa_graph
from langgraph_moa.config import RequestLimits

# The limits of `moa serve`, with its defaults: every caller chooses its run's context.
graph = create_moa_graph("local-self-moa-seq", name="self-moa-seq", limits=RequestLimits())
