"""Runs one MoA on a thread with a checkpointer; the test kills this process mid-layer.

Usage: durable_worker.py URL STORE THREAD [basic|deadline]
"""

import sys

from langgraph_moa import MoAConfig, RetrySettings, create_moa_graph
from langgraph_moa.graph.durable import open_checkpointer


def config(url: str, mode: str) -> MoAConfig:
    """The system both processes run: the worker, then the test that resumes it."""
    if mode == "deadline":
        # A flaky proposer fails once, then waits out a long backoff (the kill lands there);
        # the layer goes on without the slow one once its deadline passed with 2 answers.
        return MoAConfig(
            proposers=[f"fast@{url}", f"flaky@{url}", f"slow@{url}"],
            aggregator=f"agg@{url}",
            layers=2,
            retry=RetrySettings(max_attempts=3, initial_interval=30.0, jitter=False),
            layer_deadline_s=DEADLINE_S,
            min_proposers=2,
        )
    return MoAConfig(
        proposers=[f"fast1@{url}", f"fast2@{url}", f"slow@{url}"],
        aggregator=f"agg@{url}",
        layers=2,
        retry=RetrySettings(max_attempts=1),
    )


DEADLINE_S = 8.0

if __name__ == "__main__":
    url, store, thread = sys.argv[1], sys.argv[2], sys.argv[3]
    mode = sys.argv[4] if len(sys.argv) > 4 else "basic"
    graph = create_moa_graph(config(url, mode), checkpointer=open_checkpointer(store))
    graph.invoke(
        {"messages": [("user", "Explain durability.")]}, {"configurable": {"thread_id": thread}}
    )
