"""What the report shows, gathered: one pass of the project over the corpus, the model's
training history and the project's hyperparameter search.

The pass scores the project's suggestions with ``kuoro.evaluation.evaluate`` (the metrics
``kuoro eval`` prints) and, batch by batch, adds precision and recall over a grid of limits
and thresholds and the documents ranked worst; for a fusion project it runs the sources
once, fuses their rows here and counts what each source contributes (its learnt gate
weight, its share of the final top 5, its score alone).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeGuard

import numpy as np
import scipy.sparse as sp
from optuna.trial import FrozenTrial
from tqdm import tqdm

from kuoro.corpus.documents import Corpus, Document
from kuoro.evaluation.evaluate import Evaluation, evaluate
from kuoro.evaluation.hyperopt import SEARCH_SPACES
from kuoro.evaluation.metrics import RankingMetrics
from kuoro.evaluation.optimize import GridAccumulator
from kuoro.evaluation.search_results import HyperoptResult, default_storage, load_search
from kuoro.fusion.export import export_arrays
from kuoro.fusion.numpy_model import NumpyFusion
from kuoro.fusion.predictor import FusionPredictor, top_rows
from kuoro.project.batch import Engine, suggest_corpus_all
from kuoro.project.explaining import suggest_explained
from kuoro.project.fusion_files import HISTORY
from kuoro.project.fusion_kind import FusionKind
from kuoro.project.model_files import read_model
from kuoro.project.project import Project
from kuoro.util.progress import DOC_UNIT, count_documents
from kuoro.util.ranking import rank_row

LIMITS = tuple(range(1, 21))
TOP = 5  # the top of the list whose sources the contribution section counts
WORST_DOCUMENTS = 10


@dataclass(order=True)
class Worst:
    """A badly served document; ordered so that a heap's top is the best served of them."""

    neg_ndcg: float
    neg_position: int
    document: Document = field(compare=False)
    predicted: list[tuple[int, float]] = field(compare=False)
    # Why each predicted concept scored so (fusion projects; ``explain_worst``).
    explanations: list[Any] | None = field(default=None, compare=False)


@dataclass
class Contribution:
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


@dataclass(frozen=True)
class History:
    """The model's training history: its epochs (and how many lines of the file were not
    one), or why there is none."""

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    absent: Literal["source project", "mean backend", "no file", "empty"] | None = None


@dataclass(frozen=True)
class Search:
    """The project's hyperparameter search: its storage and what it found, if one was run;
    ``storage`` is None for a backend without hyperparameters to search."""

    storage: Path | None
    result: HyperoptResult | None = None
    trials: Sequence[FrozenTrial] = ()


@dataclass
class Gathered:
    """Everything the report shows, for a project evaluated on a corpus."""

    evaluation: Evaluation
    grid: GridAccumulator
    worst: list[Worst]
    contribution: Contribution | None
    reading: str  # how reading the corpus went
    manifest: Mapping[str, Any]
    history: History
    search: Search


def gather(
    project: Project,
    corpus_paths: Sequence[Path],
    *,
    limit: int,
    jobs: int,
    progress: bool,
    storage: Path | None,
    engine: Engine | None = None,
) -> Gathered:
    """Evaluate ``project`` on the corpora and read its training history and search.

    ``storage``: the hyperopt storage to read (default: the project's, if it exists).
    """
    version_dir, manifest = read_model(project.model_dir, project.project_id, project.config.kind)
    documents = Corpus(list(corpus_paths), project.vocabulary, language=project.config.language)
    width = len(project.vocabulary)
    predictor = _fusion_predictor(project)
    contribution = None if predictor is None else _contribution(project, predictor, limit)
    grid = GridAccumulator(LIMITS)
    worst: list[Worst] = []
    position = 0
    total = count_documents(documents.paths)
    with tqdm(desc="evaluating", unit=DOC_UNIT, total=total, disable=not progress) as bar:

        def on_batch(batch: Sequence[Document], rows: sp.csr_matrix) -> None:
            nonlocal position
            grid.update(rows, [d.subjects for d in batch])
            _keep_worst(worst, batch, rows, position, limit)
            position += len(batch)
            bar.update(len(batch))

        batches = _scored_batches(project, predictor, contribution, documents, width, jobs, engine)
        evaluation = evaluate(batches, limit=limit, n_concepts=width, on_batch=on_batch)
        bar.total = bar.n  # the count was of lines or files
    explain_worst(project, worst)
    return Gathered(
        evaluation,
        grid,
        worst,
        contribution,
        documents.report.summary(),
        manifest,
        read_history(project, version_dir),
        read_search(project, storage),
    )


# -- one pass over the corpus ---------------------------------------------------------------


@dataclass(frozen=True)
class _Fused:
    """A batch as the fusion model sees it: its rows and what lies behind them."""

    rows: sp.csr_matrix  # as ``FusionPredictor.suggest`` makes them, vocabulary wide
    gate: np.ndarray | None  # (docs, S) each document's gate; None for a model without one
    keys: np.ndarray  # the candidates' document · base + concept, ascending
    base: int  # the concepts the model knows
    present: np.ndarray  # (candidates, S) which sources suggested each candidate


def _fusion_predictor(project: Project) -> FusionPredictor | None:
    predictor = project.model
    return predictor if isinstance(predictor, FusionPredictor) else None


def _contribution(project: Project, predictor: FusionPredictor, limit: int) -> Contribution:
    sources: Sequence[Any] = predictor.sources  # the source projects, loaded
    n, width = len(sources), len(project.vocabulary)
    return Contribution(
        names=[s.project_id for s in sources],
        weights=[ref.weight for ref in project.config.sources],
        gate_sum=np.zeros(n),
        in_top=np.zeros(n, np.int64),
        hits_in_top=np.zeros(n, np.int64),
        only_in_top=np.zeros(n, np.int64),
        alone=[RankingMetrics(limit=limit, n_concepts=width) for _ in range(n)],
    )


def _scored_batches(
    project: Project,
    predictor: FusionPredictor | None,
    contribution: Contribution | None,
    documents: Corpus,
    width: int,
    jobs: int,
    engine: Engine | None,
) -> Iterator[tuple[list[Document], sp.csr_matrix]]:
    """The documents in batches with the project's rows for them. A fusion project's sources
    run here and their rows are fused here, counting what each source contributes."""
    if predictor is None or contribution is None:
        for batch, rows in suggest_corpus_all([project], documents, jobs=jobs, engine=engine):
            yield batch, rows[0]
        return
    sources: Sequence[Any] = predictor.sources
    gate_model = _gate_model(predictor.model)
    for batch, rows in suggest_corpus_all(sources, documents, jobs=jobs, engine=engine):
        fusion = _fuse(predictor, gate_model, rows, width)
        _count_contribution(contribution, rows, fusion, [d.subjects for d in batch])
        yield batch, fusion.rows


def _gate_model(model: Any) -> NumpyFusion:
    """The fusion model as the numpy model, whose gate the report reads: a torch model (the
    torch engine's) is exported once, as training exports it."""
    if isinstance(model, NumpyFusion):
        return model
    return NumpyFusion.from_arrays(export_arrays(model))


def _fuse(
    predictor: FusionPredictor,
    gate_model: NumpyFusion,
    rows: Sequence[sp.csr_matrix],
    width: int,
) -> _Fused:
    """What ``predictor.fuse(rows)`` does, keeping the candidates and the gate it computes."""
    base = predictor.n_concepts
    cut = [sp.csr_matrix(r)[:, :base] for r in rows]
    n = cut[0].shape[0]
    candidates = predictor.candidates(cut)
    documents = candidates.documents()
    scores = predictor.candidate_scores(candidates)
    fused = top_rows(documents, candidates.concepts, scores, n, base, predictor.keep)
    fused.resize((n, width))  # concepts appended to the vocabulary after training
    keys = documents * base + candidates.concepts.astype(np.int64)
    # (docs, S) each document's gate, averaged over the members; None without a gate.
    gate = gate_model.gate_weights(candidates)
    mean_gate = None if gate is None else np.asarray(gate.mean(axis=0))
    return _Fused(fused, mean_gate, keys, base, candidates.scores > 0)


def _count_contribution(
    found: Contribution,
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
    worst: list[Worst], batch: Sequence[Document], rows: sp.csr_matrix, first: int, limit: int
) -> None:
    """Keep the WORST_DOCUMENTS documents of lowest nDCG@10 seen so far (earliest on ties)."""
    for i, document in enumerate(batch):
        if not document.subjects:
            continue  # nothing to get wrong
        start, end = rows.indptr[i], rows.indptr[i + 1]
        ids, scores = rank_row(rows.indices[start:end], rows.data[start:end], max(limit, 10))
        ndcg = RankingMetrics().document_metrics(ids[:10], set(document.subjects))["NDCG@10"]
        predicted = list(zip(ids[:limit].tolist(), scores[:limit].tolist(), strict=True))
        entry = Worst(-ndcg, -(first + i), document, predicted)
        if len(worst) < WORST_DOCUMENTS:
            heapq.heappush(worst, entry)
        elif entry > worst[0]:
            heapq.heapreplace(worst, entry)


def explain_worst(project: Project, worst: Sequence[Worst]) -> None:
    """Explain each worst document's suggestions (a fusion project's): its sources run again
    over these few documents, known by the ids they had in the pass."""
    if not isinstance(project.kind, FusionKind) or not worst:
        return
    texts = [w.document.text for w in worst]
    ids = [w.document.document_id or str(-w.neg_position + 1) for w in worst]
    _, explainer = suggest_explained(project, texts, ids)
    for i, entry in enumerate(worst):
        entry.explanations = explainer.explain(i, [c for c, _ in entry.predicted])


# -- the training history and the search ----------------------------------------------------


def read_history(project: Project, version_dir: Path) -> History:
    """The epochs of the model's ``history.jsonl``, or why there are none."""
    if not isinstance(project.kind, FusionKind):
        return History(absent="source project")
    if project.config.backend == "mean":
        return History(absent="mean backend")
    path = version_dir / HISTORY
    if not path.is_file():
        return History(absent="no file")
    records, skipped = _history_records(path)
    if not records:
        return History(absent="empty")
    return History(records, skipped)


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


def read_search(project: Project, storage: Path | None) -> Search:
    """The project's search in ``storage`` (default: the project's own storage)."""
    if project.config.backend not in SEARCH_SPACES:  # source backends are not searched
        return Search(None)
    storage = storage or default_storage(project)
    found = load_search(storage, project.project_id)
    if found is None:
        return Search(storage)
    result, trials = found
    return Search(storage, result, trials)
