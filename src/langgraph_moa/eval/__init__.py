"""Measuring MoA on your own data: does it beat the best single model, and at what cost?

`Evaluation` (and ``moa eval``) runs systems over a dataset and writes results, a summary,
plots, harness exports and a Markdown report; every model call is cached on disk. The
optional parts (plots, similarity, the length-controlled win rate) need the ``eval`` extra.
"""

from langgraph_moa.errors import EvalDatasetError
from langgraph_moa.eval.datasets import EvalItem, load_dataset, shipped_dataset
from langgraph_moa.eval.langsmith_eval import evaluate_system, load_langsmith_dataset
from langgraph_moa.eval.length_control import Judged, length_controlled_win_rate
from langgraph_moa.eval.runner import Evaluation
from langgraph_moa.eval.scorers import score

__all__ = [
    "EvalDatasetError",
    "EvalItem",
    "Evaluation",
    "Judged",
    "evaluate_system",
    "length_controlled_win_rate",
    "load_dataset",
    "load_langsmith_dataset",
    "score",
    "shipped_dataset",
]
