"""Measuring MoA on your own data: datasets and scorers (more to come: runner, judge, report)."""

from langgraph_moa.eval.datasets import EvalDatasetError, EvalItem, load_dataset, shipped_dataset
from langgraph_moa.eval.scorers import score

__all__ = ["EvalDatasetError", "EvalItem", "load_dataset", "score", "shipped_dataset"]
