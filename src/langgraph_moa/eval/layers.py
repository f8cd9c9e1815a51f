"""Per-layer analysis: how good each MoA layer's outputs are, and whom the aggregator follows.

Two of the MoA paper's mechanism checks, on your data:

- Figure 4a, quality per layer: the outputs of each proposer layer are scored like final
  answers, so a curve shows whether refining layers help (mean over proposals) and how good
  the best proposal was (an oracle picker), next to the final answer.
- Figure 4b, similarity vs quality: the final answer is compared with each proposal the
  aggregator saw (BLEU from sacrebleu, TF-IDF cosine from scikit-learn, Levenshtein ratio
  from rapidfuzz); a positive Spearman correlation (scipy) between similarity and proposal
  quality means the aggregator leans on the better proposals.

Proposal quality is the item's verifiable score (`langgraph_moa.eval.scorers`), or, for
items without an expected answer and with ``judge_layers``, the judge's pairwise score
against the baseline's answer.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from langgraph_moa.errors import MoAError

FINAL = "final"
SIMILARITY_METRICS = ("bleu", "tfidf_cosine", "levenshtein")


def stages(calls: Sequence[dict[str, Any]], final_answer: str) -> dict[str, list[str]]:
    """Group one answer's outputs by stage: ``"1"``, ``"2"``... (proposer layers), ``final``.

    `calls` are the compact call records of one turn (see `runner`). A single model has no
    proposer layers; its only stage is ``final``. Failed or cancelled proposals have no output
    and are left out.
    """
    by_layer: dict[int, list[str]] = {}
    for call in calls:
        if call["role"] == "proposer" and call.get("output"):
            by_layer.setdefault(int(call["layer"]), []).append(call["output"])
    out = {str(layer): by_layer[layer] for layer in sorted(by_layer)}
    out[FINAL] = [final_answer]
    return out


def layer_curve(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Quality per stage over items: mean proposal score and best-proposal (oracle) score.

    `rows` carry ``stage_scores``: stage -> list of 0/1 scores of that stage's outputs.
    """
    mean: dict[str, list[float]] = {}
    best: dict[str, list[float]] = {}
    for row in rows:
        for stage, scores in (row.get("stage_scores") or {}).items():
            if scores:
                mean.setdefault(stage, []).append(statistics.fmean(scores))
                best.setdefault(stage, []).append(max(scores))
    order = sorted(mean, key=lambda s: (s == FINAL, int(s) if s != FINAL else 0))
    return {
        stage: {
            "mean": round(statistics.fmean(mean[stage]), 4),
            "best": round(statistics.fmean(best[stage]), 4),
            "items": len(mean[stage]),
        }
        for stage in order
    }


def similarities(final: str, proposals: Sequence[str]) -> dict[str, list[float]]:
    """Similarity of the final answer to each proposal, by metric (higher is closer)."""
    sacrebleu, tfidf, cosine, levenshtein = _similarity_libraries()
    if not proposals:
        return {name: [] for name in SIMILARITY_METRICS}
    texts = [final, *proposals]
    try:  # one-character words count: sklearn's default pattern dropped the answer "5"
        matrix = tfidf(token_pattern=r"(?u)\b\w+\b").fit_transform(texts)
        tf = [float(v) for v in cosine(matrix[0], matrix[1:])[0]]
    except ValueError:  # no text has a word (empty, or punctuation only)
        tf = [0.0] * len(proposals)
    # A text without a word has no vector: identical to the final answer is still 1, not 0.
    tf = [1.0 if p.strip() == final.strip() else v for p, v in zip(proposals, tf, strict=True)]
    return {
        "bleu": [sacrebleu.sentence_bleu(final, [p]).score / 100 for p in proposals],
        "tfidf_cosine": tf,
        "levenshtein": [levenshtein.normalized_similarity(final, p) for p in proposals],
    }


def similarity_vs_quality(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Spearman correlation between similarity to the final answer and proposal quality.

    Pooled over every (item, proposal) pair, because with two or three proposers a
    correlation within one item is mostly undefined. `rows` carry ``proposal_similarity``
    (metric -> list) and ``proposal_scores`` (0/1 per proposal, same order). A correlation
    is None when either side is constant (for example every proposal was right).
    """
    spearman = _spearman()
    out: dict[str, dict[str, float | None]] = {}
    for metric in SIMILARITY_METRICS:
        xs: list[float] = []
        ys: list[float] = []
        for row in rows:
            sims = (row.get("proposal_similarity") or {}).get(metric) or []
            scores = row.get("proposal_scores") or []
            if len(sims) == len(scores):
                xs.extend(sims)
                ys.extend(scores)
        rho: float | None = None
        p_value: float | None = None
        if len(xs) >= 3 and len(set(xs)) > 1 and len(set(ys)) > 1:
            result = spearman(xs, ys)
            rho, p_value = float(result.statistic), float(result.pvalue)
            if math.isnan(rho):
                rho = p_value = None
        out[metric] = {
            "spearman": None if rho is None else round(rho, 4),
            "p_value": None if p_value is None else round(p_value, 4),
            "pairs": len(xs),
            "mean_similarity": round(statistics.fmean(xs), 4) if xs else None,
        }
    return out


def _similarity_libraries() -> tuple[Any, Callable[..., Any], Any, Any]:
    try:
        import sacrebleu
        from rapidfuzz.distance import Levenshtein
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.metrics.pairwise import cosine_similarity
    except ImportError as exc:
        raise MoAError(
            f"Similarity analysis needs the eval extra: pip install 'langgraph-moa[eval]' ({exc})."
        ) from None
    return sacrebleu, TfidfVectorizer, cosine_similarity, Levenshtein


def _spearman() -> Callable[..., Any]:
    try:
        from scipy.stats import spearmanr
    except ImportError as exc:
        raise MoAError(
            f"Spearman correlation needs the eval extra: pip install 'langgraph-moa[eval]' ({exc})."
        ) from None

    def run(xs: Sequence[float], ys: Sequence[float]) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return spearmanr(xs, ys)

    return run
