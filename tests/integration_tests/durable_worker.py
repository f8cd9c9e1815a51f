"""Runs one MoA on a thread with a checkpointer; the test kills this process mid-layer."""

import sys

from langgraph_moa import MoAConfig, RetrySettings, create_moa_graph
from langgraph_moa.durable import open_checkpointer

url, store, thread = sys.argv[1], sys.argv[2], sys.argv[3]
config = MoAConfig(
    proposers=[f"fast1@{url}", f"fast2@{url}", f"slow@{url}"],
    aggregator=f"agg@{url}",
    layers=2,
    retry=RetrySettings(max_attempts=1),
)
graph = create_moa_graph(config, checkpointer=open_checkpointer(store))
graph.invoke(
    {"messages": [("user", "Explain durability.")]}, {"configurable": {"thread_id": thread}}
)
