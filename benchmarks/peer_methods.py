"""The fusion methods a practitioner could run instead of Kuoro, all reading a SuggestionStore.

Every method has the same two steps: ``fit(train, validation, seed)`` learns what it learns
from the ensemble-training store (``validation`` only for choices and early stopping) and
returns notes for the report; ``rank(batch)`` turns one batch of stored source rows into each
document's best ``KEEP`` suggestions as a (documents × V) CSR, scores positive, higher first.
Only the ranking matters to the metrics, so a method may rescale its scores monotonically.

Methods that work per candidate read the candidates Kuoro builds (``build_candidates``: the
union of the sources' suggestions per document, with each source's raw score and features).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kuoro.config.params import fusion_params
from kuoro.evaluation.metrics import RankingMetrics
from kuoro.fusion.candidates import Candidates, ConceptPrior, build_candidates, feature_names
from kuoro.fusion.cooccurrence import SubjectCooccurrence
from kuoro.fusion.fit import fit_fusion
from kuoro.fusion.models import create_model
from kuoro.fusion.predictor import top_rows
from kuoro.fusion.tensors import to_batch
from kuoro.store.suggestion_store import StoreBatch, SuggestionStore

KEEP = 100  # suggestions kept per document, as a source's default limit
READ_BATCH = 512  # documents per store read when a method loads a whole store


class PeerMethod:
    """A fusion method: ``fit`` on the training store, then ``rank`` batches of documents."""

    name: str = ""
    seeded: ClassVar[bool] = False  # whether the seed changes anything (else run once)

    def settings(self) -> dict[str, Any]:
        """What, besides the data and the seed, determines the method's results."""
        return {}

    def fit(self, train: SuggestionStore, validation: SuggestionStore, seed: int) -> dict[str, Any]:
        """Learn from ``train`` (``validation`` for choices only); returns notes (may be {})."""
        return {}

    def rank(self, batch: StoreBatch) -> sp.csr_matrix:
        raise NotImplementedError


def rows_from_scores(candidates: Candidates, scores: np.ndarray, n_concepts: int) -> sp.csr_matrix:
    """Each document's ``KEEP`` best candidates by ``scores`` (those > 0) as CSR rows."""
    return top_rows(
        candidates.documents(),
        candidates.concepts,
        np.asarray(scores, dtype=np.float32),
        candidates.n_documents,
        n_concepts,
        KEEP,
    )


def reciprocal_ranks(documents: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """1 / (rank within its document by ``scores``, any reals): positive, as top_rows needs,
    and exactly in the order of the scores, which a squashing into float32 might not keep."""
    order = np.lexsort((-np.asarray(scores, dtype=np.float64), documents))
    per_doc = np.bincount(documents)
    start = np.cumsum(per_doc) - per_doc
    ranks = np.empty(len(order), np.float64)
    ranks[order] = np.arange(len(order)) - start[documents[order]] + 1
    return (1.0 / ranks).astype(np.float32)


def source_column(candidates: Candidates, source: int, feature: str) -> np.ndarray:
    """Column ``s{source}_{feature}`` of the candidates' features."""
    names = feature_names(candidates.scores.shape[1])
    return candidates.features[:, names.index(f"s{source}_{feature}")]


# -- no training ---------------------------------------------------------------------------


class SourceAlone(PeerMethod):
    """One source's own suggestions, unchanged."""

    def __init__(self, index: int, source_name: str) -> None:
        self.index = index
        self.name = f"source:{source_name}"

    def settings(self) -> dict[str, Any]:
        return {"source": self.name}

    def rank(self, batch: StoreBatch) -> sp.csr_matrix:
        rows = sp.csr_matrix(batch.sources[self.index], dtype=np.float32)
        return top_rows(*_entries(rows), rows.shape[0], rows.shape[1], KEEP)


class Mean(PeerMethod):
    """Kuoro's ``mean`` family with equal weights: the plain mean of scores, absent = 0."""

    name = "mean"

    def rank(self, batch: StoreBatch) -> sp.csr_matrix:
        candidates = build_candidates(batch.sources)
        n_sources = len(batch.sources)
        model = create_model("mean", n_concepts=batch.gold.shape[1], n_sources=n_sources)
        with torch.no_grad():
            scores = model.predict_scores(to_batch(candidates)).numpy()
        return rows_from_scores(candidates, scores, batch.gold.shape[1])


class WeightedMean(PeerMethod):
    """The weighted mean, weights chosen on the validation store's nDCG@10 from a grid over
    the simplex (every weight a multiple of ``step``; ties go to the weights nearest equal)."""

    name = "weighted-mean"

    def __init__(self, step: float = 0.1) -> None:
        self.step = step
        self.weights: np.ndarray | None = None

    def settings(self) -> dict[str, Any]:
        return {"step": self.step}

    def fit(self, train: SuggestionStore, validation: SuggestionStore, seed: int) -> dict[str, Any]:
        parts = [(build_candidates(b.sources), b.gold) for b in validation.batches(READ_BATCH)]
        n_sources = len(validation.source_names)
        best: tuple[float, float] | None = None
        for weights in simplex_grid(n_sources, round(1 / self.step)):
            metrics = RankingMetrics(limit=10)
            for candidates, gold in parts:
                rows = rows_from_scores(candidates, candidates.scores @ weights, gold.shape[1])
                metrics.update(rows, gold_sets(gold))
            key = (metrics.compute()["NDCG@10"], -float(np.abs(weights - 1 / n_sources).sum()))
            if best is None or key > best:
                best, self.weights = key, weights
        assert best is not None and self.weights is not None
        return {
            "weights": {
                n: round(float(w), 3) for n, w in zip(train.source_names, self.weights, strict=True)
            },
            "validation NDCG@10": round(best[0], 4),
        }

    def rank(self, batch: StoreBatch) -> sp.csr_matrix:
        assert self.weights is not None, "fit first"
        candidates = build_candidates(batch.sources)
        return rows_from_scores(candidates, candidates.scores @ self.weights, batch.gold.shape[1])


def simplex_grid(n_sources: int, divisions: int) -> Iterator[np.ndarray]:
    """Every weight vector of non-negative multiples of 1/divisions that sums to 1."""
    # Stars and bars: choose where the n_sources - 1 bars go among divisions + n - 1 places.
    for bars in itertools.combinations(range(divisions + n_sources - 1), n_sources - 1):
        edges = np.array([-1, *bars, divisions + n_sources - 1])
        yield (np.diff(edges) - 1).astype(np.float32) / divisions


class ReciprocalRankFusion(PeerMethod):
    """Σ over the sources that suggested a concept of 1 / (k + its rank there)."""

    name = "rrf"

    def __init__(self, k: float = 60.0) -> None:
        self.k = k

    def settings(self) -> dict[str, Any]:
        return {"k": self.k}

    def rank(self, batch: StoreBatch) -> sp.csr_matrix:
        candidates = build_candidates(batch.sources)
        total = np.zeros(len(candidates.concepts), np.float64)
        for s in range(len(batch.sources)):
            reciprocal_rank = source_column(candidates, s, "rrank")  # 1 / rank, 0 when absent
            present = reciprocal_rank > 0
            total[present] += 1.0 / (self.k + np.rint(1.0 / reciprocal_rank[present]))
        return rows_from_scores(candidates, total, batch.gold.shape[1])


class CombMNZ(PeerMethod):
    """(Σ of the sources' normalised scores) × (the number of sources that suggested it).

    Normalisation, per source and document: (score − min) / (max − min) over that source's
    suggestions for the document, 1 when they all score the same; so each source's best is 1
    and its last 0.
    """

    name = "combmnz"

    def rank(self, batch: StoreBatch) -> sp.csr_matrix:
        candidates = build_candidates(batch.sources)
        documents = candidates.documents()
        n_docs = candidates.n_documents
        total = np.zeros(len(documents), np.float64)
        voters = np.zeros(len(documents), np.float64)
        for s in range(len(batch.sources)):
            score = candidates.scores[:, s].astype(np.float64)
            present = score > 0
            low, high = np.full(n_docs, np.inf), np.full(n_docs, -np.inf)
            np.minimum.at(low, documents[present], score[present])
            np.maximum.at(high, documents[present], score[present])
            span = (high - low)[documents[present]]
            lowest = low[documents[present]]
            normalised = np.ones(int(present.sum()))
            spread = span > 0
            normalised[spread] = (score[present][spread] - lowest[spread]) / span[spread]
            total[present] += normalised
            voters[present] += 1.0
        return rows_from_scores(candidates, total * voters, batch.gold.shape[1])


class Oracle(PeerMethod):
    """The bound of any reordering of the sources' union: its gold concepts first (then the
    rest by the mean), so that its predictions are as many as a real method's."""

    name = "oracle"

    def rank(self, batch: StoreBatch) -> sp.csr_matrix:
        candidates = build_candidates(batch.sources, batch.gold)
        assert candidates.labels is not None
        scores = 2.0 * candidates.labels + candidates.scores.mean(axis=1)
        return rows_from_scores(candidates, scores, batch.gold.shape[1])


# -- LightGBM LambdaMART -------------------------------------------------------------------


class LambdaMART(PeerMethod):
    """LightGBM's LambdaMART over Kuoro's candidate features: documents are queries.

    The concept prior is counted on the training store; its own label is left out of each
    training candidate's prior (``prior_counted_batch``), as Kuoro trains. Bagging (0.8 of the
    rows and of the features per tree) makes the seed matter, as it does for a neural model.
    """

    name = "lambdamart"
    seeded = True

    def __init__(
        self,
        *,
        n_estimators: int = 500,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 20,
        early_stopping: int = 50,
        n_jobs: int = 2,
        cooccurrence: SubjectCooccurrence | None = None,
    ) -> None:
        self.params: dict[str, Any] = {
            "n_estimators": n_estimators,
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_child_samples": min_child_samples,
            "subsample": 0.8,
            "subsample_freq": 1,
            "colsample_bytree": 0.8,
        }
        self.early_stopping, self.n_jobs = early_stopping, n_jobs
        self.cooccurrence = cooccurrence
        self.model: Any = None
        self.prior: ConceptPrior | None = None
        self.top_k = 100

    def settings(self) -> dict[str, Any]:
        return {
            **self.params,
            "early_stopping": self.early_stopping,
            **cooccurrence_setting(self.cooccurrence),
        }

    def _matrix(
        self, store: SuggestionStore, *, training: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features, labels, candidates per document) of the whole store."""
        features, labels, groups = [], [], []
        for part in store.batches(READ_BATCH):
            c = build_candidates(
                part.sources,
                part.gold,
                self.prior,
                top_k=self.top_k,
                prior_counted_batch=training,
                cooccurrence=self.cooccurrence,
            )
            assert c.labels is not None
            features.append(c.features)
            labels.append(c.labels.astype(np.int32))
            groups.append(np.diff(c.doc_offsets))
        group = np.concatenate(groups)
        # A document without candidates is an empty query, which LightGBM refuses.
        return np.concatenate(features), np.concatenate(labels), group[group > 0]

    def fit(self, train: SuggestionStore, validation: SuggestionStore, seed: int) -> dict[str, Any]:
        import lightgbm

        self.top_k = train.top_k
        self.prior = ConceptPrior.from_counts(train.prior())
        x, y, group = self._matrix(train, training=True)
        x_val, y_val, group_val = self._matrix(validation, training=False)
        self.model = lightgbm.LGBMRanker(
            objective="lambdarank", random_state=seed, n_jobs=self.n_jobs, verbose=-1, **self.params
        )
        self.model.fit(
            x,
            y,
            group=group,
            eval_X=(x_val,),
            eval_y=(y_val,),
            eval_group=[group_val],
            eval_at=[10],
            callbacks=[lightgbm.early_stopping(self.early_stopping, verbose=False)],
        )
        return {"best_iteration": int(self.model.best_iteration_), "training_rows": len(y)}

    def rank(self, batch: StoreBatch) -> sp.csr_matrix:
        assert self.model is not None, "fit first"
        candidates = build_candidates(
            batch.sources, None, self.prior, top_k=self.top_k, cooccurrence=self.cooccurrence
        )
        if not len(candidates.concepts):
            return sp.csr_matrix(batch.gold.shape, dtype=np.float32)
        scores = self.model.predict(candidates.features)  # the best iteration's trees
        ranks = reciprocal_ranks(candidates.documents(), scores)
        return rows_from_scores(candidates, ranks, batch.gold.shape[1])


# -- the Keras-era dense ensemble, in PyTorch ----------------------------------------------


class DenseNetwork(nn.Module):
    """sqrt-scores (V × S, flattened, sparse) → dropout → Dense(hidden, relu) → dropout →
    Dense(V, zero-initialised), added to the mean of the inputs per concept."""

    def __init__(self, n_concepts: int, n_sources: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.n_concepts, self.n_sources, self.dropout = n_concepts, n_sources, dropout
        inputs = n_concepts * n_sources
        # Keras's Dense defaults: Glorot-uniform kernel, zero bias.
        limit = math.sqrt(6.0 / (inputs + hidden))
        self.hidden_weight = nn.Parameter(torch.empty(inputs, hidden).uniform_(-limit, limit))
        self.hidden_bias = nn.Parameter(torch.zeros(hidden))
        self.output = nn.Linear(hidden, n_concepts)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, flat: Tensor, mean: Tensor) -> Tensor:
        """``flat``: sparse (n, V·S) sqrt-scores at concept · S + source; ``mean``: (n, V)."""
        if self.training and self.dropout > 0:
            # Dropout on the flattened input only touches its nonzeros: the zeros stay zero.
            flat = torch.sparse_coo_tensor(
                flat.indices(),
                F.dropout(flat.values(), self.dropout, True),
                flat.shape,
                check_invariants=False,
                is_coalesced=True,
            )
        hidden = torch.relu(torch.sparse.mm(flat, self.hidden_weight) + self.hidden_bias)
        delta: Tensor = self.output(F.dropout(hidden, self.dropout, self.training))
        return mean + delta


class DensePeer(PeerMethod):
    """The Keras-era dense ensemble (Annif 1.4's ``nn_ensemble`` architecture), in PyTorch.

    Output = mean of the inputs + delta, trained with binary cross-entropy on the output
    clipped to [1e-7, 1 − 1e-7], as Keras's ``binary_crossentropy`` on probabilities does
    (no gradient where the output is clipped: a concept that no source suggests stays at 0
    until its weights are learnt on documents where some source did). Adam (lr 0.001),
    batch 32, a fixed number of epochs, no early stopping. Its suggestions are its
    top ``KEEP`` over the whole vocabulary, so they may lie outside the sources' union.
    """

    name = "dense"
    seeded = True
    CLIP = 1e-7

    def __init__(
        self,
        *,
        hidden: int = 100,
        dropout: float = 0.2,
        epochs: int = 10,
        batch_size: int = 32,
        learning_rate: float = 0.001,
        progress: bool = False,
    ) -> None:
        self.hidden, self.dropout, self.epochs = hidden, dropout, epochs
        self.batch_size, self.learning_rate, self.progress = batch_size, learning_rate, progress
        self.network: DenseNetwork | None = None

    def settings(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "dropout": self.dropout,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
        }

    @staticmethod
    def inputs(sources: Sequence[sp.spmatrix]) -> tuple[Tensor, Tensor]:
        """(sparse flat sqrt-scores (n, V·S), dense mean of the sqrt-scores (n, V))."""
        n_sources = len(sources)
        n_docs, n_concepts = sources[0].shape
        rows, columns, values = [], [], []
        mean = np.zeros((n_docs, n_concepts), np.float32)
        for s, matrix in enumerate(sources):
            m = sp.coo_matrix(matrix)
            root = np.sqrt(np.maximum(m.data, 0.0)).astype(np.float32)
            rows.append(m.row)
            columns.append(m.col.astype(np.int64) * n_sources + s)
            values.append(root)
            np.add.at(mean, (m.row, m.col), root / n_sources)
        index = torch.from_numpy(np.stack([np.concatenate(rows), np.concatenate(columns)]))
        flat = torch.sparse_coo_tensor(
            index.long(),
            torch.from_numpy(np.concatenate(values)),
            (n_docs, n_concepts * n_sources),
            check_invariants=True,
        ).coalesce()
        return flat, torch.from_numpy(mean)

    def fit(self, train: SuggestionStore, validation: SuggestionStore, seed: int) -> dict[str, Any]:
        from tqdm import tqdm

        torch.manual_seed(seed)
        network = DenseNetwork(
            train.vocab_size, len(train.source_names), self.hidden, self.dropout
        ).train()
        # Keras's Adam: epsilon 1e-7.
        optimizer = torch.optim.Adam(network.parameters(), lr=self.learning_rate, eps=1e-7)
        steps = math.ceil(len(train) / self.batch_size) * self.epochs
        losses = []
        with tqdm(total=steps, desc="dense peer", unit="step", disable=not self.progress) as bar:
            for epoch in range(self.epochs):
                total, count = 0.0, 0
                for part in train.batches(self.batch_size, shuffle=True, seed=seed + epoch):
                    flat, mean = self.inputs(part.sources)
                    gold = torch.from_numpy(part.gold.toarray())
                    output = network(flat, mean).clamp(self.CLIP, 1 - self.CLIP)
                    loss = F.binary_cross_entropy(output, gold)
                    optimizer.zero_grad()
                    torch.autograd.backward(loss)
                    optimizer.step()
                    total, count = total + loss.item() * len(part), count + len(part)
                    bar.update(1)
                losses.append(round(total / max(count, 1), 6))
        self.network = network.eval()
        return {"epochs": self.epochs, "last_loss": losses[-1] if losses else None}

    def rank(self, batch: StoreBatch) -> sp.csr_matrix:
        assert self.network is not None, "fit first"
        n_docs, n_concepts = batch.gold.shape
        with torch.no_grad():
            output = self.network(*self.inputs(batch.sources))
            scores, concepts = torch.topk(output, min(KEEP, n_concepts), dim=1)
        documents = np.repeat(np.arange(n_docs), scores.shape[1])
        return top_rows(
            documents,
            concepts.numpy().ravel(),
            scores.numpy().ravel().astype(np.float32),
            n_docs,
            n_concepts,
            KEEP,
        )


# -- Kuoro's own models --------------------------------------------------------------------


class KuoroModel(PeerMethod):
    """A Kuoro fusion family with its default parameters (``members`` changed if given),
    early stopping on the validation store, scored like ``kuoro suggest`` does."""

    seeded = True

    def __init__(
        self,
        family: str,
        members: int | None = None,
        progress: bool = False,
        cooccurrence: SubjectCooccurrence | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.family, self.members, self.progress = family, members, progress
        self.cooccurrence, self.params = cooccurrence, dict(params or {})
        suffix = "" if members is None else f"-m{members}"
        self.name = f"kuoro-{family}{suffix}"
        self.model: nn.Module | None = None
        self.prior: ConceptPrior | None = None
        self.top_k = 100

    def settings(self) -> dict[str, Any]:
        # Every parameter with its effective value, so that a changed default is a new result.
        raw: dict[str, object] = {**self.params}
        if self.members is not None:
            raw["members"] = self.members
        effective = dataclasses.asdict(fusion_params(self.family, raw))
        effective.pop("seed", None)
        return {
            "family": self.family,
            "members": self.members,
            "params": effective,
            **cooccurrence_setting(self.cooccurrence),
        }

    def fit(self, train: SuggestionStore, validation: SuggestionStore, seed: int) -> dict[str, Any]:
        raw: dict[str, object] = {"seed": seed, **self.params}
        if self.members is not None:
            raw["members"] = self.members
        params = fusion_params(self.family, raw)
        self.model, info = fit_fusion(
            train,
            params,
            [1.0] * len(train.source_names),
            progress=self.progress,
            validation_store=validation,
            cooccurrence=self.cooccurrence,
        )
        self.prior = ConceptPrior.from_counts(info.prior_counts)
        self.top_k = train.top_k
        return {
            "epochs": info.epochs,
            "best_epoch": info.best_epoch,
            "validation NDCG@10": round(info.metrics.get("ndcg@10", float("nan")), 4),
        }

    def rank(self, batch: StoreBatch) -> sp.csr_matrix:
        assert self.model is not None, "fit first"
        candidates = build_candidates(
            batch.sources, None, self.prior, top_k=self.top_k, cooccurrence=self.cooccurrence
        )
        with torch.no_grad():
            scores: Tensor = self.model.predict_scores(to_batch(candidates))  # type: ignore[operator]
        return rows_from_scores(candidates, scores.numpy(), batch.gold.shape[1])


# -- helpers -------------------------------------------------------------------------------


def cooccurrence_setting(table: SubjectCooccurrence | None) -> dict[str, Any]:
    """What identifies a co-occurrence table in a method's settings (nothing without one)."""
    if table is None:
        return {}
    return {"cooccurrence": f"{table.documents} documents, {table.conditional.nnz} pairs"}


def gold_sets(gold: sp.csr_matrix) -> list[np.ndarray]:
    """Each document's gold concept ids, as RankingMetrics.update takes them."""
    return [gold.indices[gold.indptr[i] : gold.indptr[i + 1]] for i in range(gold.shape[0])]


def _entries(rows: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(document, concept, score) of every stored entry of a CSR."""
    documents = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    return documents, rows.indices, rows.data
