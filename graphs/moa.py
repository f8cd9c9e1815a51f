"""LangGraph server entry point: a layered Mixture-of-Agents.

Built on the embedded local models by default, so `langgraph dev` serves it offline; pick
other models, layers or limits per assistant or per run through the context schema
(`MoAContext`): for example ``{"preset": "moa-lite"}`` or
``{"proposers": ["openai:gpt-4o-mini", "together:Qwen/Qwen2.5-72B-Instruct-Turbo"],
"aggregator": "openai:gpt-4o", "layers": 2}``.
"""

from langgraph_moa import create_moa_graph
from langgraph_moa.config import RequestLimits

# The limits of `moa serve`, with its defaults: every caller chooses its run's context.
graph = create_moa_graph("local-moa", name="moa", limits=RequestLimits())
