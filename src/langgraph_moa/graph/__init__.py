"""The compiled Mixture-of-Agents `StateGraph`, its node bodies, streaming and durability."""

from langgraph_moa.graph._builder import (
    TAG_FINAL,
    create_moa_graph,
    final_answer_only,
    parse_choice,
    validate_conversation,
)

__all__ = [
    "TAG_FINAL",
    "create_moa_graph",
    "final_answer_only",
    "parse_choice",
    "validate_conversation",
]
