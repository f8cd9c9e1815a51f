"""The LLM-Ranker baseline of the MoA paper: an LLM picks the best proposal, verbatim."""

from __future__ import annotations

from langgraph_moa.variants._base import RANK, Plan


class Ranker(Plan):
    """The LLM-Ranker baseline: an LLM picks the best proposal, returned verbatim."""

    name = "ranker"
    description = "an LLM picks the best proposal, returned verbatim (the paper's baseline)"
    final_node = RANK
    final_role = "ranker"
    chunkable = False
