"""PNG plots for the report: quality vs cost with the Pareto front, and quality per layer.

Drawn with matplotlib's non-interactive Agg backend, so they work on a server or in CI with
no display.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langgraph_moa.errors import MoAError
from langgraph_moa.eval.layers import FINAL


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MoAError(
            f"Plots need the eval extra: pip install 'langgraph-moa[eval]' ({exc})."
        ) from None
    return plt


def quality_vs_cost(
    points: Mapping[str, tuple[float, float]],
    front: list[str],
    path: Path,
    *,
    cost_label: str,
    quality_label: str,
    intervals: Mapping[str, tuple[float, float] | list[float]] | None = None,
) -> Path:
    """Scatter each system at (cost, quality) and join the Pareto-optimal ones (Figure 5).

    Each point carries its 95% interval as an error bar where `intervals` gives one (in the
    quality's units). Points are numbered and the names listed in a legend beside the plot:
    long system names written next to close points used to overlap.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    for number, (name, (cost, quality)) in enumerate(points.items(), start=1):
        optimal = name in front
        color = "tab:red" if optimal else "tab:blue"
        interval = (intervals or {}).get(name)
        if interval is not None:
            low, high = interval
            ax.errorbar(
                cost,
                quality,
                yerr=[[max(0.0, quality - low)], [max(0.0, high - quality)]],
                fmt="none",
                ecolor=color,
                alpha=0.5,
                capsize=3,
                zorder=2,
            )
        ax.scatter(
            cost,
            quality,
            s=60,
            marker="*" if optimal else "o",
            color=color,
            zorder=3,
            label=f"{number}. {name}",
        )
        ax.annotate(
            str(number), (cost, quality), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
    if len(front) > 1:
        xs = [points[n][0] for n in front]
        ys = [points[n][1] for n in front]
        ax.plot(xs, ys, "--", color="tab:red", label="Pareto front", zorder=2)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    ax.margins(x=0.15, y=0.12)  # room for the numbers
    ax.set_xlabel(cost_label)
    ax.set_ylabel(quality_label)
    ax.set_title("Quality vs cost")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def quality_per_layer(curves: Mapping[str, Mapping[str, Mapping[str, float]]], path: Path) -> Path:
    """One line per system over its stages (layer 1, 2, ..., final), mean and best proposal."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    stage_names: list[str] = []
    for curve in curves.values():
        for stage in curve:
            if stage not in stage_names and stage != FINAL:
                stage_names.append(stage)
    stage_names.sort(key=int)
    axis = [*stage_names, FINAL]
    for i, (name, curve) in enumerate(curves.items()):
        color = f"C{i}"
        xs = [axis.index(s) for s in curve]
        if len(curve) == 1:  # one model alone: a single point at the final answer
            ax.plot(xs, [v["mean"] for v in curve.values()], "s", color=color, label=name)
            continue
        ax.plot(xs, [v["mean"] for v in curve.values()], "o-", color=color, label=f"{name} (mean)")
        ax.plot(xs, [v["best"] for v in curve.values()], "^:", color=color, label=f"{name} (best)")
    ax.set_xticks(range(len(axis)), [f"layer {s}" if s != FINAL else s for s in axis])
    ax.set_ylabel("score of the stage's outputs")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Quality per layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
