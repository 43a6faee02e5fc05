"""A self-contained HTML report on a trained project and an evaluation corpus: ``kuoro report``.

One pass over the corpus gathers everything: the metrics ``kuoro eval`` prints, precision and
recall over a grid of limits and thresholds, per-subject results, the documents ranked worst
and, for a fusion project, what each source contributes (its learnt gate weight, its share of
the final top 5, its score alone). The training curves come from the model's
``history.jsonl``, the hyperparameter importances from the project's hyperopt storage when a
search was run. Plots are matplotlib PNGs embedded as data URIs: the file needs nothing else.
"""

from __future__ import annotations

import base64
import heapq
import html
import io
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
import scipy.sparse as sp

from kuoro.corpus.documents import Corpus, Document
from kuoro.errors import KuoroError
from kuoro.evaluation.metrics import RankingMetrics
from kuoro.evaluation.optimize import GridAccumulator, GridPoint, best_point
from kuoro.project.fusion_kind import FusionKind
from kuoro.project.model_files import read_model
from kuoro.util.atomic import atomic_write
from kuoro.util.progress import DOC_UNIT, count_documents
from kuoro.util.ranking import rank_row
from kuoro.util.wording import plural

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from kuoro.evaluation.hyperopt import HyperoptResult
    from kuoro.fusion.candidates import Candidates
    from kuoro.fusion.predictor import FusionPredictor
    from kuoro.project.project import Project

log = logging.getLogger(__name__)

LIMITS = tuple(range(1, 21))
TOP = 5  # the top of the list whose sources the contribution section counts
MIN_SUPPORT = 3  # subjects with fewer gold documents are too rare to judge
SUBJECT_ROWS = 25
WORST_DOCUMENTS = 10
EXCERPT_CHARS = 600
# Precision, recall, F1 keep these colours in every plot; sources cycle through the rest.
COLOURS = {"precision": "#1f77b4", "recall": "#ff7f0e", "f1": "#2ca02c"}
SOURCE_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")

# The headline metrics and what they mean, for readers who do not live by them.
HEADLINE = (
    ("NDCG@10", "ranking quality of the first 10 suggestions: 1 = every correct subject first"),
    ("F1@5", "balance of precision and recall in the first 5 suggestions"),
    ("Precision@5", "share of the first 5 suggestions that are correct"),
    ("Recall@5", "share of the correct subjects found among the first 5"),
    ("Precision@1", "share of documents whose first suggestion is correct"),
    ("Precision (doc avg)", "share of the suggestions (up to the limit) that are correct"),
    ("Recall (doc avg)", "share of the correct subjects found (up to the limit)"),
    ("F1 score (doc avg)", "balance of the two above"),
)


# -- gathering ------------------------------------------------------------------------------


@dataclass(order=True)
class _Worst:
    """A badly served document; ordered so that a heap's top is the best served of them."""

    neg_ndcg: float
    neg_position: int
    document: Document = field(compare=False)
    predicted: list[tuple[int, float]] = field(compare=False)


@dataclass
class _Contribution:
    """Per source: gate weights summed over documents, and the final top entries it suggested."""

    names: list[str]
    weights: list[float]
    gate_sum: np.ndarray
    in_top: np.ndarray  # top entries the source had suggested
    hits_in_top: np.ndarray  # ... that were correct
    only_in_top: np.ndarray  # ... that no other source had suggested
    alone: list[RankingMetrics]  # the source's own suggestions, scored
    top_total: int = 0
    hits_total: int = 0
    gated_documents: int = 0


@dataclass
class _Evaluation:
    metrics: RankingMetrics
    grid: GridAccumulator
    worst: list[_Worst] = field(default_factory=list)
    contribution: _Contribution | None = None


@dataclass(frozen=True)
class _Fused:
    """A batch as the fusion model sees it: its rows and what lies behind them."""

    rows: sp.csr_matrix  # as ``FusionPredictor.suggest`` makes them, vocabulary wide
    gate: np.ndarray | None  # (docs, S) each document's gate; None for a model without one
    keys: np.ndarray  # the candidates' document · base + concept, ascending
    base: int  # the concepts the model knows
    present: np.ndarray  # (candidates, S) which sources suggested each candidate


def _fuse(predictor: FusionPredictor, rows: Sequence[sp.csr_matrix], width: int) -> _Fused:
    """What ``predictor.fuse(rows)`` does, keeping the candidates and the gate it computes."""
    from kuoro.fusion.candidates import build_candidates
    from kuoro.fusion.predictor import top_rows

    base = predictor.n_concepts
    cut = [sp.csr_matrix(r)[:, :base] for r in rows]
    n = cut[0].shape[0]
    candidates = build_candidates(cut, None, predictor.prior, top_k=predictor.top_k)
    documents = candidates.documents()
    scores = predictor.candidate_scores(candidates)
    fused = top_rows(documents, candidates.concepts, scores, n, base, predictor.keep)
    fused.resize((n, width))  # concepts appended to the vocabulary after training
    keys = documents * base + candidates.concepts.astype(np.int64)
    gate = _gate(predictor.model, candidates)
    return _Fused(fused, gate, keys, base, candidates.scores > 0)


def _gate(model: Any, candidates: Candidates) -> np.ndarray | None:
    """(docs, S) each document's gate over the sources, averaged over the members; None for a
    model without a gate (mean, linear)."""
    from kuoro.fusion.numpy_model import NumpyFusion

    if isinstance(model, NumpyFusion):
        # The served numpy model; its family object holds the gate when it has one.
        family = model._family
        if not hasattr(family, "gate_weights"):
            return None
        return np.asarray(family.gate_weights(model._checked(candidates)).mean(axis=0))
    import torch

    from kuoro.fusion.members import MemberEnsemble
    from kuoro.fusion.tensors import to_batch

    batch = to_batch(candidates)
    with torch.no_grad():
        if isinstance(model, MemberEnsemble):
            try:
                return np.asarray(model._call("gate_weights", batch).mean(0).numpy())
            except AttributeError:
                return None
        if hasattr(model, "gate_weights"):
            return np.asarray(model.gate_weights(batch).numpy())
    return None


def _evaluate(
    project: Project, documents: Corpus, limit: int, jobs: int, progress: bool
) -> _Evaluation:
    from tqdm import tqdm

    from kuoro.project.batch import suggest_corpus_all

    width = len(project.vocabulary)
    evaluation = _Evaluation(RankingMetrics(limit=limit, n_concepts=width), GridAccumulator(LIMITS))
    predictor = _fusion_predictor(project)
    if predictor is not None:
        sources: Sequence[Any] = predictor.sources
        n = len(sources)
        evaluation.contribution = _Contribution(
            names=[s.project_id for s in sources],
            weights=[ref.weight for ref in project.config.sources],
            gate_sum=np.zeros(n),
            in_top=np.zeros(n, np.int64),
            hits_in_top=np.zeros(n, np.int64),
            only_in_top=np.zeros(n, np.int64),
            alone=[RankingMetrics(limit=limit, n_concepts=width) for _ in range(n)],
        )
    else:
        sources = [project]
    position = 0
    total = count_documents(documents.paths)
    with tqdm(desc="evaluating", unit=DOC_UNIT, total=total, disable=not progress) as bar:
        for batch, rows in suggest_corpus_all(sources, documents, jobs=jobs):
            gold = [d.subjects for d in batch]
            if predictor is not None:
                fusion = _fuse(predictor, rows, width)
                assert evaluation.contribution is not None
                _count_contribution(evaluation.contribution, rows, fusion, gold)
                fused = fusion.rows
            else:
                fused = rows[0]
            evaluation.metrics.update(fused, gold)
            evaluation.grid.update(fused, gold)
            _keep_worst(evaluation.worst, batch, fused, position, limit)
            position += len(batch)
            bar.update(len(batch))
        bar.total = bar.n  # the count was of lines or files
    if not evaluation.metrics.documents:
        raise KuoroError("no documents to evaluate")
    return evaluation


def _fusion_predictor(project: Project) -> FusionPredictor | None:
    from kuoro.fusion.predictor import FusionPredictor

    predictor = project.model
    return predictor if isinstance(predictor, FusionPredictor) else None


def _count_contribution(
    found: _Contribution,
    rows: Sequence[sp.csr_matrix],
    fusion: _Fused,
    gold: Sequence[Sequence[int]],
) -> None:
    for metrics, source_rows in zip(found.alone, rows, strict=True):
        metrics.update(source_rows, gold)
    if fusion.gate is not None:
        found.gate_sum += fusion.gate.sum(axis=0)
        found.gated_documents += len(fusion.gate)
    fused = fusion.rows
    for i, gold_ids in enumerate(gold):
        start, end = fused.indptr[i], fused.indptr[i + 1]
        top, _ = rank_row(fused.indices[start:end], fused.data[start:end], TOP)
        if not len(top):
            continue
        at = np.searchsorted(fusion.keys, i * fusion.base + top.astype(np.int64))
        sources = fusion.present[at]  # (k, S): who suggested each of the top
        hits = np.isin(top, np.asarray(gold_ids, dtype=np.int64))
        found.in_top += sources.sum(axis=0)
        found.hits_in_top += sources[hits].sum(axis=0)
        found.only_in_top += sources[sources.sum(axis=1) == 1].sum(axis=0)
        found.top_total += len(top)
        found.hits_total += int(hits.sum())


def _keep_worst(
    worst: list[_Worst], batch: Sequence[Document], rows: sp.csr_matrix, first: int, limit: int
) -> None:
    """Keep the WORST_DOCUMENTS documents of lowest nDCG@10 seen so far (earliest on ties)."""
    for i, document in enumerate(batch):
        if not document.subjects:
            continue  # nothing to get wrong
        start, end = rows.indptr[i], rows.indptr[i + 1]
        ids, scores = rank_row(rows.indices[start:end], rows.data[start:end], max(limit, 10))
        ndcg = RankingMetrics().document_metrics(ids[:10], set(document.subjects))["NDCG@10"]
        predicted = list(zip(ids[:limit].tolist(), scores[:limit].tolist(), strict=True))
        entry = _Worst(-ndcg, -(first + i), document, predicted)
        if len(worst) < WORST_DOCUMENTS:
            heapq.heappush(worst, entry)
        elif entry > worst[0]:
            heapq.heapreplace(worst, entry)


# -- plots ----------------------------------------------------------------------------------


def _figure(width: float, height: float, panels: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure of ``panels`` side by side, drawn by Agg without touching pyplot's state."""
    from matplotlib.figure import Figure

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
    from matplotlib.transforms import offset_copy

    below = offset_copy(ax.transAxes, fig=figure, y=-34, units="points")
    ax.legend(
        frameon=False, loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below, ncols=2
    )


def _png(figure: Figure, alt: str) -> str:
    """The figure as an <img> with the PNG inline."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _plot_training(history: Sequence[Mapping[str, Any]], best_epoch: int | None) -> str:
    from matplotlib.ticker import MaxNLocator

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
    return _png(figure, "training and held-out loss and held-out nDCG@10 per epoch")


def _plot_grid(points: Sequence[GridPoint], limit: int) -> str:
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
    return _png(figure, "precision, recall and F1 against the limit and against the threshold")


def _plot_sources(found: _Contribution) -> str:
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
    return _png(figure, "each source's weight and its share of the final top 5")


def _plot_search(result: HyperoptResult, trials: Sequence[Any]) -> str:
    from matplotlib.ticker import MaxNLocator
    from optuna.trial import TrialState

    from kuoro.evaluation.hyperopt import MIN_IMPORTANCE_TRIALS

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
    return _png(figure, "trial scores and parameter importances of the hyperparameter search")


# -- HTML -----------------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _number(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int]) -> str:
    """An HTML table; cells are HTML already, columns in ``numeric`` right-aligned."""
    head = "".join(
        f'<th class="num">{h}</th>' if i in numeric else f"<th>{h}</th>"
        for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Labels:
    """Concept ids as the reader knows them: the label in the project's language."""

    def __init__(self, project: Project) -> None:
        self.vocabulary = project.vocabulary
        language = project.config.language
        self.language = language if language in self.vocabulary.languages else None

    def __call__(self, concept: int) -> str:
        label = self.vocabulary.label(concept, self.language)
        return _e(label) if label else f"<code>{_e(self.vocabulary.uri(concept))}</code>"

    def with_uri(self, concept: int) -> str:
        uri = _e(self.vocabulary.uri(concept))
        return f'{self(concept)}<div class="uri">{uri}</div>'


def _facts(facts: Sequence[tuple[str, str]]) -> str:
    """Name: value lines; the values are HTML already."""
    items = "".join(f"<dt>{_e(name)}</dt><dd>{value}</dd>" for name, value in facts)
    return f'<dl class="facts">{items}</dl>'


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _headline(evaluation: _Evaluation, corpus: str, reading: str, limit: int) -> str:
    results = evaluation.metrics.compute()
    cards = "".join(
        f'<div class="card"><div class="value">{_number(results[name], 3)}</div>'
        f'<div class="name">{_e(name)}</div></div>'
        for name, _ in HEADLINE[:4]
    )
    rows = [
        [_e(name), _number(results[name]), _e(meaning)]
        for name, meaning in HEADLINE
        if name in results
    ]
    counts = evaluation.metrics.counts()
    best = best_point(evaluation.grid.points(), "f1")
    return (
        f'<div class="cards">{cards}</div>'
        + _table(["Metric", "Value", "What it says"], rows, numeric=[1])
        + _note(
            f"{plural(counts['Documents evaluated'], 'document')} of {_e(corpus)}; each "
            f"document's {limit} best suggestions (score above 0), as <code>kuoro eval --limit "
            f"{limit}</code> and <code>annif eval</code> count them. "
            f"{plural(counts['True positives'], 'correct suggestion')}, "
            f"{counts['False positives']} wrong, "
            f"{plural(counts['False negatives'], 'correct subject')} missed. The best "
            "document-average F1 over limits 1–20 and thresholds 0–0.95 is "
            f"{_number(best.f1)} at limit {best.limit}, threshold {best.threshold:.2f}."
        )
        + _note(f"Reading the corpus: {_e(reading)}. Subjects outside the vocabulary are left out.")
    )


def _training_section(project: Project, manifest: Mapping[str, Any], version_dir: Path) -> str:
    if not isinstance(project.kind, FusionKind):
        return _note("A source project has no epoch-by-epoch training history.")
    if project.config.backend == "mean":
        return _note("The <code>mean</code> backend trains nothing: there are no curves.")
    path = version_dir / "history.jsonl"
    if not path.is_file():
        return _note("The model was saved without a training history.")
    records, skipped = _history_records(path)
    if not records:
        return _note("The training history is empty or unreadable.")
    training = manifest.get("training", {})
    best = training.get("best_epoch")
    facts = (
        f"{training.get('train_documents', '?')} training and "
        f"{training.get('validation_documents', '?')} held-out documents; "
        f"{plural(len(records), 'epoch')} run"
    )
    if best is not None:
        facts += f"; the weights of epoch {best} were kept (the best on the held-out documents)"
    if skipped:
        facts += f"; {skipped} unreadable line{'s' if skipped > 1 else ''} of the history left out"
    return _plot_training(records, best) + _note(_e(facts) + ".")


def _history_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The epochs of a ``history.jsonl`` (one JSON object per line, with an integer
    ``epoch``, numbers or null for losses, an object of metrics) and how many lines were not
    such a record."""
    records, skipped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if _is_epoch_record(record):
            records.append(record)
        else:
            skipped += 1
    return records, skipped


def _is_epoch_record(record: object) -> TypeGuard[dict[str, Any]]:
    if not isinstance(record, dict) or type(record.get("epoch")) is not int:
        return False
    losses = (record.get("train_loss"), record.get("val_loss"))
    metrics = record.get("metrics") or {}
    numbers = [*losses, *metrics.values()] if isinstance(metrics, dict) else [object()]
    return all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in numbers
    )


def _limits_section(evaluation: _Evaluation, limit: int) -> str:
    points = evaluation.grid.points()
    return _plot_grid(points, limit) + _note(
        "Left: more suggestions per document find more correct subjects (recall) but a "
        "smaller share of them is correct (precision). Right: a higher score threshold drops "
        f"doubtful suggestions. The dotted line is the limit of this report ({limit}); the "
        "star marks the best F1 (balance of precision and recall) on each curve."
    )


def _sources_section(evaluation: _Evaluation) -> str:
    found = evaluation.contribution
    if found is None:
        return _note("Only fusion projects combine sources.")
    fused = evaluation.metrics.compute()
    rows = []
    for i, name in enumerate(found.names):
        alone = found.alone[i].compute()
        gate = (
            _number(found.gate_sum[i] / found.gated_documents, 3) if found.gated_documents else "–"
        )
        rows.append(
            [
                f'<span class="name">{_e(name)}</span>',
                _number(found.weights[i], 3),
                gate,
                f"{found.in_top[i] / max(found.top_total, 1):.0%}",
                f"{found.hits_in_top[i] / max(found.hits_total, 1):.0%}",
                f"{found.only_in_top[i] / max(found.top_total, 1):.0%}",
                _number(alone["NDCG@10"]),
                _number(alone["F1@5"]),
            ]
        )
    strong = [f"<strong>{_number(fused[name])}</strong>" for name in ("NDCG@10", "F1@5")]
    rows.append(["<strong>Fusion</strong>", "", "", "", "", "", *strong])
    header = [
        "Source",
        "Configured weight",
        "Learnt weight",
        f"In the top {TOP}",
        "In the correct ones",
        "Only from it",
        "nDCG@10 alone",
        "F1@5 alone",
    ]
    return (
        _plot_sources(found)
        + _table(header, rows, numeric=list(range(1, 8)))
        + _note(
            "Learnt weight: the gate the model gives the source, averaged over the documents "
            "(it adapts to each document). In the top 5: the share of the final top 5 "
            "suggestions that the source had suggested too; a subject suggested by several "
            "sources counts for each, so the shares add up to more than 100%. Only from it: "
            "suggestions in the top 5 that no other source had. Alone: the source's own "
            "suggestions, scored like the fusion's."
        )
    )


def _subjects_section(evaluation: _Evaluation, labels: _Labels) -> str:
    results = evaluation.metrics.subject_results()
    gold = [r for r in results if r.support > 0]
    frequent = [r for r in gold if r.support >= MIN_SUPPORT]
    cutoff = MIN_SUPPORT if frequent else 1
    chosen = sorted(frequent or gold, key=lambda r: (r.f1, -r.support, r.concept))
    rows = [
        [
            labels.with_uri(r.concept),
            str(r.support),
            str(r.predicted),
            str(r.hits),
            _number(r.precision, 2),
            _number(r.recall, 2),
            _number(r.f1, 2),
        ]
        for r in chosen[:SUBJECT_ROWS]
    ]
    never = sum(1 for r in gold if r.hits == 0)
    header = ["Subject", "Documents", "Suggested", "Correct", "Precision", "Recall", "F1"]
    summary = (
        f"{plural(len(gold), 'subject')} in the corpus, {never} of them never suggested "
        f"correctly. Shown: the {len(rows)} worst served of those with at least {cutoff} "
        "documents, lowest F1 first. Documents: how many documents have the subject; "
        "Suggested: how often it was suggested (within the limit); Correct: how often rightly."
    )
    if not rows:
        return _note("No document of the corpus has a subject of the vocabulary.")
    return _note(_e(summary)) + _table(header, rows, numeric=list(range(1, 7)))


def _search_section(project: Project, storage: Path | None) -> str:
    from kuoro.evaluation.hyperopt import (
        SEARCH_SPACES,
        default_storage,
        format_toml_snippet,
        load_search,
    )

    if project.config.backend not in SEARCH_SPACES:  # source backends are not searched
        return _note("No hyperparameters to search for this backend.")
    storage = storage or default_storage(project)
    found = load_search(storage, project.project_id)
    if found is None:
        return _note(
            "No hyperparameter search has been run for this project "
            f"(<code>kuoro hyperopt {_e(project.project_id)} CORPUS</code>)."
        )
    result, trials = found
    facts = [
        ("Trials", f"{result.complete} complete, {result.pruned} pruned, {result.failed} failed"),
        ("Best held-out nDCG@10", f"{_number(result.best_value)} (trial {result.best_trial})"),
    ]
    if result.baseline_value is not None:
        facts.append(("Baseline held-out nDCG@10", _number(result.baseline_value)))
    importance = result.importances
    names = sorted(result.best_params, key=lambda n: (-importance.get(n, -1.0), n))
    rows = [
        [
            f"<code>{_e(name)}</code>",
            _e(_short(result.baseline_params.get(name, "–"))),
            _e(_short(result.best_params[name])),
            _e(_short(project.config.params.get(name, "–"))),
            _number(importance[name], 3) if name in importance else "–",
        ]
        for name in names
    ]
    done = result.complete + result.pruned
    comment = f"best of {plural(done, 'trial')}: held-out nDCG@10 {result.best_value:.4f}"
    snippet = format_toml_snippet(project.project_id, result.best_params, comment=comment)
    return (
        _plot_search(result, trials)
        + _facts(facts)
        + _table(
            ["Parameter", "Baseline", "Best", "Configured now", "Importance"], rows, numeric=[4]
        )
        + _note(
            f"From {_e(storage.name)}. Baseline: the parameters configured when the search "
            "began, its first trial. Configured now: what projects.toml says today. "
            "Importance: the parameter's share of the variation of the held-out score over "
            "the completed trials. The best parameters for projects.toml:"
        )
        + f"<pre>{_e(snippet)}</pre>"
    )


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _documents_section(evaluation: _Evaluation, labels: _Labels) -> str:
    worst = sorted(evaluation.worst, reverse=True)  # lowest nDCG first, then corpus order
    if not worst:
        return _note("No document has gold subjects.")
    parts = [
        _note(
            f"The {plural(len(worst), 'document')} with the lowest nDCG@10. "
            "<span class='hit'>✔</span> "
            "marks a suggestion that is among the document's subjects and a subject that was "
            "suggested."
        )
    ]
    for entry in worst:
        document = entry.document
        gold = set(document.subjects)
        suggested = {c for c, _ in entry.predicted}
        name = f"Document {document.document_id or -entry.neg_position + 1}"
        text = document.text.strip()
        if len(text) > EXCERPT_CHARS:
            text = text[:EXCERPT_CHARS].rsplit(" ", 1)[0] + " …"
        gold_items = "".join(
            f"<li>{_mark(c in suggested)}{labels(c)}</li>" for c in sorted(gold, key=labels)
        )
        suggested_items = (
            "".join(
                f"<li>{_mark(c in gold)}{labels(c)} <span class='score'>{score:.2f}</span></li>"
                for c, score in entry.predicted
            )
            or "<li class='note'>nothing suggested</li>"
        )
        parts.append(
            '<div class="doc">'
            f"<h3>{_e(name)} <span class='score'>nDCG@10 {-entry.neg_ndcg:.3f}</span></h3>"
            f'<blockquote>{_e(text)}</blockquote><div class="columns">'
            f"<div><h4>Its subjects</h4><ul>{gold_items}</ul></div>"
            f"<div><h4>Suggested, best first</h4><ol>{suggested_items}</ol></div>"
            "</div></div>"
        )
    return "".join(parts)


def _mark(hit: bool) -> str:
    return "<span class='hit'>✔</span> " if hit else "<span class='miss'>✘</span> "


STYLE = """
body { margin: 0; background: #fff; color: #1f2328; line-height: 1.5;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 36px 72px; }
h1 { font-size: 1.9rem; margin: 0 0 4px; }
h2 { font-size: 1.35rem; margin: 44px 0 12px; padding-bottom: 6px;
  border-bottom: 2px solid #d0d7de; }
h3 { font-size: 1.05rem; margin: 0 0 6px; }
h4 { font-size: .9rem; margin: 8px 0 4px; color: #57606a; text-transform: uppercase;
  letter-spacing: .04em; }
.subtitle { color: #57606a; margin: 0 0 16px; }
nav { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 14px; }
nav { display: flex; flex-wrap: wrap; gap: 4px 18px; }
nav a { color: #0969da; text-decoration: none; white-space: nowrap; }
table { border-collapse: collapse; margin: 12px 0; font-size: .95rem; }
th { background: #f6f8fa; font-weight: 600; }
th, td { padding: 5px 12px; border-bottom: 1px solid #e6e9ed; text-align: left;
  vertical-align: top; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #57606a; font-size: .92rem; max-width: 880px; }
.name { white-space: nowrap; }
.uri { color: #8c959f; font-size: .78rem; }
img.plot { display: block; max-width: 100%; height: auto; margin: 8px 0; }
.cards { display: flex; gap: 14px; flex-wrap: wrap; margin: 12px 0 8px; }
.card { border: 1px solid #d0d7de; border-radius: 8px; padding: 10px 18px; min-width: 150px; }
.card .value { font-size: 1.8rem; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .name { color: #57606a; }
.doc { border: 1px solid #d0d7de; border-radius: 8px; padding: 14px 18px; margin: 16px 0; }
pre { display: inline-block; min-width: 360px; margin: 4px 0; background: #f6f8fa;
  border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 14px;
  font-size: .9rem; overflow-x: auto; }
blockquote { margin: 6px 0 8px; padding: 6px 12px; background: #f6f8fa;
  border-left: 3px solid #d0d7de; font-size: .92rem; white-space: pre-wrap; }
.columns { display: grid; grid-template-columns: 1fr 1fr; gap: 24px; }
ul, ol { margin: 0; padding-left: 22px; }
ul { list-style: none; padding-left: 0; }
.hit { color: #1a7f37; font-weight: 700; }
.miss { color: #cf222e; font-weight: 700; }
.score { color: #8c959f; font-size: .85rem; font-weight: normal; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 0; }
dl.facts dt { color: #57606a; } dl.facts dd { margin: 0; }
"""

SECTIONS = (
    ("summary", "Summary"),
    ("training", "Training"),
    ("limits", "Precision and recall against limit and threshold"),
    ("sources", "What each source contributes"),
    ("subjects", "Subjects served worst"),
    ("search", "Hyperparameter search"),
    ("documents", "Documents served worst"),
)


def write_report(
    project: Project,
    corpus_paths: Sequence[Path],
    output: Path,
    *,
    limit: int = 10,
    jobs: int = 1,
    progress: bool = False,
    storage: Path | None = None,
) -> Path:
    """Evaluate ``project`` on the corpora and write the HTML report to ``output``.

    ``storage``: the hyperopt storage to read (default: the project's, if it exists).
    """
    version_dir, manifest = read_model(project.model_dir, project.project_id, project.config.kind)
    started = time.perf_counter()
    documents = Corpus(list(corpus_paths), project.vocabulary, language=project.config.language)
    evaluation = _evaluate(project, documents, limit, jobs, progress)
    log.info("evaluated in %.1f s", time.perf_counter() - started)
    labels = _Labels(project)
    corpus = ", ".join(str(p) for p in corpus_paths)
    bodies = {
        "summary": _headline(evaluation, corpus, documents.report.summary(), limit),
        "training": _training_section(project, manifest, version_dir),
        "limits": _limits_section(evaluation, limit),
        "sources": _sources_section(evaluation),
        "subjects": _subjects_section(evaluation, labels),
        "search": _search_section(project, storage),
        "documents": _documents_section(evaluation, labels),
    }
    config = project.config
    sources = ", ".join(f"{r.project_id} ({r.weight:.2f})" for r in config.sources)
    facts = [
        ("Backend", f"<code>{_e(config.backend)}</code>"),
        ("Vocabulary", f"{_e(config.vocab)} ({plural(len(project.vocabulary), 'concept')})"),
        ("Model trained", _e(manifest.get("written_at", "?"))),
        ("Evaluated on", _e(corpus)),
    ]
    if sources:
        facts.insert(1, ("Sources (weight)", _e(sources)))
    nav = "".join(f'<a href="#{anchor}">{_e(title)}</a>' for anchor, title in SECTIONS)
    sections = "".join(_section(a, t, bodies[a]) for a, t in SECTIONS)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Kuoro report: {_e(config.name)}</title><style>{STYLE}</style></head>"
        f"<body><main><h1>{_e(config.name)}</h1>"
        f'<p class="subtitle">Kuoro report on project <code>{_e(project.project_id)}</code>, '
        f"written {time.strftime('%Y-%m-%d %H:%M')}</p>"
        f"{_facts(facts)}<nav>{nav}</nav>{sections}</main></body></html>\n"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(output) as out:
        out.write(page.encode("utf-8"))
    return output
