"""Length-controlled win rate, computed by the `alpaca-eval` package itself.

AlpacaEval 2.0 corrects a judge's taste for long answers with a GLM: the preference is
regressed on the (tanh of the standardized) length difference plus a model term, and the
win rate is predicted as if both answers had the same length. We hand our pairwise verdicts
to `alpaca_eval.metrics.get_length_controlled_winrate` rather than re-deriving its fit.

One deliberate choice: the GLM is alpaca-eval's ``length_controlled_minimal`` formula. The
leaderboard's ``length_controlled_v1`` adds an instruction-difficulty term and a
regularization towards "gamed" baselines, both fitted on AlpacaEval's own 805 instructions
and fetched from a hub at run time; on your data they do not exist, and this package never
downloads at run time. For leaderboard numbers on AlpacaEval itself, export
``model_outputs.json`` (see `langgraph_moa.eval.export`) and run the official harness.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from langgraph_moa._forklock import ForkSafeLock
from langgraph_moa.errors import MoAError

GLM_NAME = "length_controlled_minimal"
MIN_ITEMS = 5
"""alpaca-eval cross-validates its GLM over 5 folds of items, so it needs at least 5."""

_LOCK = ForkSafeLock()


@dataclass(frozen=True)
class Judged:
    """One judged pair: the candidate's score in [0, 1] and both answers (for their lengths)."""

    instruction: str
    candidate: str
    baseline: str
    score: float


def to_annotations(
    judged: Sequence[Judged], candidate: str, baseline: str, annotator: str
) -> list[dict[str, Any]]:
    """AlpacaEval's annotation rows: ``output_1`` is the baseline, ``output_2`` the model.

    AlpacaEval's preference is 1 when the baseline wins and 2 when the model wins, so a
    candidate score ``s`` in [0, 1] (a tie is 0.5) is the preference ``1 + s``.
    """
    return [
        {
            "index": i,
            "instruction": j.instruction,
            "output_1": j.baseline,
            "output_2": j.candidate,
            "generator_1": baseline,
            "generator_2": candidate,
            "annotator": annotator,
            "preference": 1.0 + j.score,
        }
        for i, j in enumerate(judged)
    ]


def length_controlled_win_rate(
    judged: Sequence[Judged], candidate: str, baseline: str, annotator: str = "judge"
) -> dict[str, float]:
    """Win rate and length-controlled win rate (percent) with their standard errors.

    Raises:
        MoAError: the `eval` extra is not installed, or fewer than 5 items were judged.
    """
    if len(judged) < MIN_ITEMS:
        raise MoAError(
            f"The length-controlled win rate needs at least {MIN_ITEMS} judged items "
            f"(alpaca-eval cross-validates over 5 folds); got {len(judged)}."
        )
    glm_winrate = _alpaca_eval_glm()
    import pandas as pd

    annotations = pd.DataFrame(to_annotations(judged, candidate, baseline, annotator))
    if len({len(j.candidate) - len(j.baseline) for j in judged}) == 1:
        # alpaca-eval divides the length difference by its spread: where every difference is
        # the same there is no length to control for, and it gave NaN (equal lengths) or a
        # feature the intercept already is (a 75% win read as 50%). The rate is the win rate.
        raw = glm_winrate.get_winrate(annotations)
        rate, error = float(raw["win_rate"]), float(raw["standard_error"])
        return {
            "win_rate": rate,
            "standard_error": error,
            "length_controlled_win_rate": rate,
            "lc_standard_error": error,
        }
    with _LOCK, tempfile.TemporaryDirectory() as tmp:
        # alpaca-eval reads a per-instruction difficulty table from a hub before it fits any
        # formula. The minimal formula never uses it, so a neutral local table stands in and
        # nothing is downloaded.
        neutral = Path(tmp) / "df_gamed.csv"
        pd.DataFrame(
            {
                "index": range(len(judged)),
                "instruction_difficulty": 0.0,
                "model": "none",
                "not_gamed_baseline": True,
                "preference": 1.5,
            }
        ).to_csv(neutral, index=False)
        with (
            mock.patch.object(glm_winrate, "hf_hub_download", lambda **_: str(neutral)),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            metrics = glm_winrate.get_length_controlled_winrate(
                annotations,
                glm_name=GLM_NAME,
                save_weights_dir=None,
                is_add_glm_preference_inplace=False,
                is_warn_extreme_changes=False,
            )
    return {
        "win_rate": float(metrics["win_rate"]),
        "standard_error": float(metrics["standard_error"]),
        "length_controlled_win_rate": float(metrics["length_controlled_winrate"]),
        "lc_standard_error": float(metrics["lc_standard_error"]),
    }


def _alpaca_eval_glm() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # alpaca-eval imports the deprecated pkg_resources
            from alpaca_eval.metrics import glm_winrate
    except ImportError as exc:
        raise MoAError(
            "The length-controlled win rate uses the alpaca-eval package: "
            "pip install 'langgraph-moa[eval]'"
            f" ({exc})."
        ) from None
    return glm_winrate
