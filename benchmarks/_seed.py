"""What the eval benchmarks share: ``--seed`` read as ``moa eval --seed`` reads it."""

from __future__ import annotations

import argparse
from typing import Any

from langgraph_moa.errors import MoAConfigError
from langgraph_moa.eval.runner import check_eval_seed


def call_seed(text: str) -> int:
    """Read ``--seed`` as ``moa eval --seed`` does (`check_eval_seed`): a bad one is a usage error.

    Unchecked, -1 or 2**64 ended in a traceback after the dataset had loaded.
    """
    try:
        seed: Any = int(text)
    except ValueError:
        seed = text  # refused below, as no whole number
    try:
        check_eval_seed(seed)
    except MoAConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return int(seed)
