"""The report's plots: matplotlib figures drawn by Agg, as PNG data URIs.

Precision, recall and F1 keep their colours in every plot; sources cycle through the rest.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import offset_copy
from optuna.trial import TrialState

from kuoro.evaluation.optimize import GridPoint, best_point
from kuoro.evaluation.report.gather import LIMITS, TOP, Contribution
from kuoro.evaluation.search_results import MIN_IMPORTANCE_TRIALS, HyperoptResult
from kuoro.util.reliability import ReliabilityBins
from kuoro.util.wording import plural

COLOURS = {"precision": "#1f77b4", "recall": "#ff7f0e", "f1": "#2ca02c"}
SOURCE_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")


def _figure(width: float, height: float, panels: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure of ``panels`` side by side, drawn by Agg without touching pyplot's state."""
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    axes = [figure.add_subplot(1, panels, i + 1) for i in range(panels)]
    for ax in axes:
        ax.grid(True, color="#e5e5e5", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return figure, axes


def _legend_below(figure: Figure, ax: Axes) -> None:
    """The legend under the axes and their x label, where it hides nothing."""
    below = offset_copy(ax.transAxes, fig=figure, y=-34, units="points")
    ax.legend(
        frameon=False, loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below, ncols=2
    )


@dataclass(frozen=True)
class Plot:
    """A figure as a PNG data URI, and what it shows in words (for the ``alt`` text)."""

    alt: str
    uri: str


def png(figure: Figure, alt: str) -> Plot:
    """The figure as a PNG, inline in a data URI."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return Plot(alt, f"data:image/png;base64,{data}")


def plot_training(history: Sequence[Mapping[str, Any]], best_epoch: int | None) -> Plot:
    def series(value: Any) -> list[float]:
        return [float("nan") if v is None else float(v) for v in value]

    epochs = [int(r["epoch"]) for r in history]
    figure, (loss_ax, score_ax) = _figure(10, 3.6, panels=2)
    loss_ax.plot(epochs, series(r.get("train_loss") for r in history), "o-", label="training loss")
    if any(r.get("val_loss") is not None for r in history):
        val_loss = series(r.get("val_loss") for r in history)
        loss_ax.plot(epochs, val_loss, "s--", label="held-out loss")
    loss_ax.set(title="Loss per epoch (lower is better)", xlabel="Epoch", ylabel="Loss")
    ndcg = series((r.get("metrics") or {}).get("ndcg@10") for r in history)
    score_ax.plot(epochs, ndcg, "o-", color=COLOURS["f1"], label="held-out nDCG@10")
    score_ax.set(title="Held-out nDCG@10 per epoch (higher is better)", xlabel="Epoch")
    score_ax.set_ylabel("nDCG@10")
    if best_epoch in epochs:
        value = ndcg[epochs.index(best_epoch)]
        for ax in (loss_ax, score_ax):
            ax.axvline(best_epoch, color="#888888", linestyle=":", linewidth=1.2)
        if np.isfinite(value):
            score_ax.plot(
                [best_epoch], [value], "*", color="#d62728", markersize=16,
                label=f"best epoch {best_epoch} (kept)",
            )  # fmt: skip
    for ax in (loss_ax, score_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(frameon=False)
    return png(figure, "training and held-out loss and held-out nDCG@10 per epoch")


def plot_grid(points: Sequence[GridPoint], limit: int) -> Plot:
    by_limit = [p for p in points if p.threshold == 0.0]
    at_limit = [p for p in points if p.limit == limit]
    figure, (limit_ax, threshold_ax) = _figure(10, 3.8, panels=2)
    for ax, series, attribute in (
        (limit_ax, by_limit, "limit"),
        (threshold_ax, at_limit, "threshold"),
    ):
        xs = [getattr(p, attribute) for p in series]
        for metric, marker in (("precision", "o"), ("recall", "s"), ("f1", "^")):
            label = "F1" if metric == "f1" else metric
            ax.plot(
                xs, [getattr(p, metric) for p in series], marker=marker, markersize=4,
                color=COLOURS[metric], label=label,
            )  # fmt: skip
        best = best_point(series, "f1")
        ax.plot(
            [getattr(best, attribute)],
            [best.f1],
            "*",
            color="#d62728",
            markersize=15,
            label="best F1",
        )
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("Document average")
    for ax in (limit_ax, threshold_ax):
        ax.legend(frameon=False)
    limit_ax.axvline(limit, color="#888888", linestyle=":", linewidth=1.2, label=f"limit {limit}")
    limit_ax.set(
        title="Against the number of suggestions (threshold 0)",
        xlabel="Suggestions per document (limit)",
    )
    limit_ax.set_xticks([x for x in LIMITS if x == 1 or x % 2 == 0])
    threshold_ax.set(
        title=f"Against the score threshold (limit {limit})",
        xlabel="Minimum score of a suggestion (threshold)",
    )
    return png(figure, "precision, recall and F1 against the limit and against the threshold")


def plot_sources(found: Contribution) -> Plot:
    names = found.names
    y = np.arange(len(names))
    figure, (weight_ax, top_ax) = _figure(10, 1.5 + 0.5 * len(names), panels=2)
    colours = [SOURCE_COLOURS[i % len(SOURCE_COLOURS)] for i in range(len(names))]
    weights = np.asarray(found.weights, dtype=float)
    if found.gated_documents:
        gate = found.gate_sum / found.gated_documents
        weight_ax.barh(y + 0.2, gate, height=0.4, color=colours, label="learnt gate (mean)")
        weight_ax.barh(
            y - 0.2, weights, height=0.4, color="white", edgecolor=colours, hatch="//",
            label="configured weight",
        )  # fmt: skip
        weight_ax.set_title("Mean learnt weight per document")
    else:
        weight_ax.barh(y, weights, height=0.5, color=colours, label="configured weight")
        weight_ax.set_title("Configured weight (the model has no gate)")
    weight_ax.set(xlabel="Weight (sums to 1 over the sources)", xlim=(0, 1))
    _legend_below(figure, weight_ax)
    total, hits = max(found.top_total, 1), max(found.hits_total, 1)
    top_ax.barh(y + 0.2, found.in_top / total, height=0.4, color=colours, label="of all top 5")
    top_ax.barh(
        y - 0.2, found.hits_in_top / hits, height=0.4, color="white", edgecolor=colours,
        hatch="..", label="of the correct ones",
    )  # fmt: skip
    top_ax.set(title=f"Share of the final top {TOP} it suggested", xlabel="Share", xlim=(0, 1))
    _legend_below(figure, top_ax)
    for ax in (weight_ax, top_ax):
        ax.set_yticks(y, names)
        ax.invert_yaxis()
    return png(figure, "each source's weight and its share of the final top 5")


def plot_search(result: HyperoptResult, trials: Sequence[Any]) -> Plot:
    figure, (history_ax, importance_ax) = _figure(10, 3.8, panels=2)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    history_ax.plot(
        [t.number for t in complete], [t.value for t in complete], "o", color=COLOURS["precision"],
        label="completed trial",
    )  # fmt: skip
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        history_ax.plot(
            [t.number for t in pruned], last, "x", color="#999999", label="pruned (last epoch)"
        )
    best, running = [], -np.inf
    for t in complete:
        running = max(running, float(t.value))
        best.append(running)
    history_ax.step(
        [t.number for t in complete], best, where="post", color=COLOURS["f1"], label="best so far"
    )
    if result.baseline_value is not None:
        history_ax.axhline(
            result.baseline_value, color="#d62728", linestyle=":", label="baseline (trial 0)"
        )
    history_ax.set(title="Held-out nDCG@10 of each trial", xlabel="Trial", ylabel="nDCG@10")
    history_ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are numbered
    _legend_below(figure, history_ax)
    names = list(result.importances)
    if names:
        y = np.arange(len(names))
        importance_ax.barh(y, [result.importances[n] for n in names], color=COLOURS["precision"])
        importance_ax.set_yticks(y, names)
        importance_ax.invert_yaxis()
    else:
        importance_ax.text(
            0.5, 0.5, "too few trials for importances\n"
            f"({plural(result.complete, 'completed trial')}, at least {MIN_IMPORTANCE_TRIALS} "
            "needed)", ha="center", va="center",
            transform=importance_ax.transAxes,
        )  # fmt: skip
    importance_ax.set(title="Parameter importance (fANOVA)", xlabel="Share of the variation")
    return png(figure, "trial scores and parameter importances of the hyperparameter search")


def plot_reliability(bins: ReliabilityBins, limit: int) -> Plot:
    """The reliability diagram: each score bin's share of correct suggestions against its mean
    score (the diagonal is perfect calibration), and how many suggestions fall in each bin."""
    figure, (diagram_ax, count_ax) = _figure(10, 3.8, panels=2)
    edges = np.linspace(0, 1, bins.n_bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    width = 1 / bins.n_bins
    filled = bins.counts > 0
    diagram_ax.plot([0, 1], [0, 1], ":", color="#888888", label="perfect calibration")
    diagram_ax.bar(
        centres[filled], bins.accuracy()[filled], width=width * 0.9, color=COLOURS["precision"],
        alpha=0.75, label="share correct",
    )  # fmt: skip
    diagram_ax.plot(
        bins.confidence()[filled], bins.accuracy()[filled], "o-", color=COLOURS["recall"],
        markersize=4, label="at the bin's mean score",
    )  # fmt: skip
    diagram_ax.set(
        title=f"Share correct against score (ECE {bins.ece():.3f})",
        xlabel="Score of a suggestion",
        ylabel="Share of them correct",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    diagram_ax.legend(frameon=False, loc="upper left")
    count_ax.bar(centres, bins.counts, width=width * 0.9, color=COLOURS["f1"])
    count_ax.set(
        title=f"Suggestions per score bin (each document's {limit} best)",
        xlabel="Score of a suggestion",
        ylabel="Suggestions",
        xlim=(0, 1),
    )
    return png(figure, "reliability diagram: share of correct suggestions against their score")
