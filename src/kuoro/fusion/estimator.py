"""``Fusion``: a fusion model over fitted sources as a scikit-learn style estimator.

No projects.toml and no data directory: give it sources (fitted ``Source`` estimators, or
anything with ``suggest``, ``vocabulary`` and ``top_k``), fit it on documents with gold
subjects, and it suggests like a source does::

    fusion = Fusion([tfidf, lexical], max_epochs=20).fit(train, store="work/train.store")
    rows = fusion.suggest(["Kirjastojen historia Suomessa"])
    fusion.save("work/fusion")
    same = Fusion.load("work/fusion", [tfidf, lexical])

``fit`` runs the sources over the documents once into a suggestion store at ``store`` and
trains there; a later ``fit`` with the same source objects and documents (in the same
process) reuses the store, so trying other parameters costs the training alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
from torch import nn

from kuoro.config.params import FusionParams, fusion_params
from kuoro.corpus.documents import Corpus, Document
from kuoro.corpus.fingerprint import corpus_fingerprint
from kuoro.errors import KuoroError, ModelError
from kuoro.fusion.calibration import Calibration
from kuoro.fusion.calibration_points import calibrate_on_held_out
from kuoro.fusion.candidates import ConceptPrior
from kuoro.fusion.cooccurrence import SubjectCooccurrence
from kuoro.fusion.export import export_arrays
from kuoro.fusion.fit import FitInfo, fit_fusion
from kuoro.fusion.numpy_model import NumpyFusion
from kuoro.fusion.predictor import FusionPredictor
from kuoro.store.builder import (
    CORPUS_FINGERPRINT,
    VOCABULARY_FINGERPRINT,
    RowBatch,
    StoreSpec,
    build_store,
    source_fingerprint_key,
)
from kuoro.store.suggestion_store import SuggestionStore
from kuoro.training.callbacks import Callback
from kuoro.util.atomic import atomic_write
from kuoro.vocab.vocabulary import Vocabulary

__all__ = ["Fusion"]

_BATCH = 64
# Identifies this process's source objects in store fingerprints: a store is reused for the
# same objects within a process, never for others that may hold other models.
_SESSION = uuid.uuid4().hex
log = logging.getLogger(__name__)
_SAVED = "fusion.json"
_NUMPY, _PRIOR, _CALIBRATION = "fusion.npz", "prior.npz", "calibration.npz"
_COOCCURRENCE = "cooccurrence.npz"


class FittedSource(Protocol):
    """What a fusion model needs of a source: suggestions over a vocabulary, at most top_k a
    document."""

    vocabulary: Vocabulary
    top_k: int

    def suggest(
        self, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
    ) -> sp.csr_matrix: ...


class Fusion:
    """A fusion model of ``backend`` ("kuoro", "linear" or "mean") over ``sources``.

    ``weights``: each source's weight in the mean the model starts from (equal by default;
    normalised). Every other keyword is a parameter of the backend, as in projects.toml
    (``validation``, ``seed``, ``hidden_size``, ``max_epochs``, …), checked when given; the
    rest have the catalogue's defaults. Learnt state ends in ``_``.
    """

    def __init__(
        self,
        sources: Sequence[FittedSource],
        *,
        backend: str = "kuoro",
        weights: Sequence[float] | None = None,
        **params: object,
    ) -> None:
        self.sources = list(sources)
        self.backend = backend
        self.weights = None if weights is None else [float(w) for w in weights]
        self.params = dict(params)
        self._checked()

    def _checked(self) -> FusionParams:
        if not self.sources:
            raise KuoroError("a fusion model needs at least one source")
        if self.weights is not None and (
            len(self.weights) != len(self.sources) or min(self.weights) < 0 or not any(self.weights)
        ):
            raise KuoroError("weights: one non-negative weight per source, not all zero")
        sizes = {len(source.vocabulary) for source in self.sources}
        if len(sizes) != 1:
            raise KuoroError("the sources suggest over vocabularies of different sizes")
        return fusion_params(self.backend, self.params)

    # -- scikit-learn's estimator protocol -------------------------------------------------

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        """The parameters as given to ``__init__`` (the backend's own under their names)."""
        return {
            "sources": self.sources,
            "backend": self.backend,
            "weights": self.weights,
            **self.params,
        }

    def set_params(self, **params: Any) -> Fusion:
        """Change parameters (checked); a fitted model keeps its state until ``fit``."""
        for key in ("sources", "backend", "weights"):
            if key in params:
                setattr(self, key, params.pop(key))
        self.params.update(params)
        self._checked()
        return self

    def __repr__(self) -> str:
        given = "".join(f", {k}={v!r}" for k, v in sorted(self.params.items()))
        return f"Fusion({len(self.sources)} sources, backend={self.backend!r}{given})"

    # -- fitting ---------------------------------------------------------------------------

    @property
    def vocabulary(self) -> Vocabulary:
        return self.sources[0].vocabulary

    @property
    def top_k(self) -> int:
        return max(source.top_k for source in self.sources)

    def fit(
        self,
        documents: Iterable[Document],
        *,
        store: str | Path,
        validation_documents: Iterable[Document] | None = None,
        callbacks: Sequence[Callback] = (),
        progress: bool = False,
        device: str = "cpu",
    ) -> Fusion:
        """Train on ``documents`` (with gold subjects) and return self.

        The sources run over the documents once, into the suggestion store at ``store`` (a
        directory). The held-out documents that stop training early are
        ``validation_documents`` (stored at ``store`` + ".validation"), or else a random share
        of ``documents`` as the ``validation`` parameter says. ``callbacks`` run in the
        training loop after the built-in ones (early stopping, progress bar).
        """
        params = self._checked()
        store_path = Path(store)
        self.cooccurrence_ = self._cooccurrence_table(params)
        with self._store(documents, store_path, progress) as train:
            held_out = None
            if validation_documents is not None:
                held_out = self._store(
                    validation_documents, store_path.with_name(store_path.name + ".validation"),
                    progress,
                )  # fmt: skip
            try:
                model, info = fit_fusion(
                    train,
                    params,
                    self._weights(),
                    progress=progress,
                    device=device,
                    validation_store=held_out,
                    callbacks=callbacks,
                    cooccurrence=self.cooccurrence_,
                )
                self._set_state(model, info, train.top_k)
                # Calibrated on the held-out documents, never on those trained on.
                if held_out is not None:
                    store_of, positions = held_out, np.arange(len(held_out), dtype=np.int64)
                else:
                    store_of, positions = train, info.validation_positions
                self.calibration_ = calibrate_on_held_out(
                    self.numpy_model_,
                    store_of,
                    positions,
                    ConceptPrior.from_counts(self.prior_),
                    requested=params.calibration,
                    seed=params.seed,
                    cooccurrence=self.cooccurrence_,
                )
                self._predictor.calibration = self._calibration()
            finally:
                if held_out is not None:
                    held_out.close()
        return self

    def _cooccurrence_table(self, params: FusionParams) -> SubjectCooccurrence | None:
        """The table the ``cooccurrence`` parameter names: a corpus path is counted over the
        vocabulary; "sources" takes the sources' ``cooccurrence_`` tables (sources fitted in
        Python carry none: a fusion project's sources record theirs when trained)."""
        setting = str(getattr(params, "cooccurrence", "none"))
        if setting == "none":
            return None
        n_concepts = len(self.vocabulary)
        if setting != "sources":
            return SubjectCooccurrence.from_corpus(setting, self.vocabulary)
        tables = [getattr(s, "cooccurrence_", None) for s in self.sources]
        found = [t for t in tables if isinstance(t, SubjectCooccurrence)]
        if not found:
            log.info(
                "the sources carry no subject co-occurrence table: the co-occurrence "
                "columns stay 0 (set cooccurrence to the path of their training corpus)"
            )
            return None
        return max(found, key=lambda t: t.documents).resized(n_concepts)

    def _calibration(self) -> Calibration | None:
        chosen = self.calibration_.calibration
        return None if chosen.method == "none" else chosen

    def _weights(self) -> list[float]:
        weights = self.weights or [1.0] * len(self.sources)
        return [w / sum(weights) for w in weights]

    def _set_state(self, model: nn.Module, info: FitInfo, top_k: int) -> None:
        self.model_ = model
        self.info_ = info
        self.numpy_model_ = NumpyFusion.from_arrays(export_arrays(model))
        self.prior_ = np.asarray(info.prior_counts, dtype=np.int64)
        self._predictor = FusionPredictor(
            self.sources,
            self.numpy_model_,
            ConceptPrior.from_counts(self.prior_),
            n_concepts=len(self.prior_),
            top_k=top_k,
            cooccurrence=getattr(self, "cooccurrence_", None),
        )

    def _store(self, documents: Iterable[Document], path: Path, progress: bool) -> SuggestionStore:
        names = tuple(f"source-{i}" for i in range(len(self.sources)))
        listed: list[Document] | None = None
        if isinstance(documents, Corpus):
            corpus = corpus_fingerprint(documents.paths, language=documents.language or "")
        else:  # documents in memory: their content identifies them
            listed = list(documents)
            corpus = _documents_fingerprint(listed)
        fingerprints = {
            VOCABULARY_FINGERPRINT: self.vocabulary.fingerprint,
            CORPUS_FINGERPRINT: corpus,
            **{
                source_fingerprint_key(name): _source_fingerprint(source)
                for name, source in zip(names, self.sources, strict=True)
            },
        }
        spec = StoreSpec(names, len(self.vocabulary), self.top_k, fingerprints)
        stream = documents if listed is None else listed

        def batches(skip: int) -> Iterator[RowBatch]:
            pending: list[Document] = []
            for position, document in enumerate(stream):
                if position < skip:
                    continue
                pending.append(document)
                if len(pending) == _BATCH:
                    yield self._rows(pending)
                    pending = []
            if pending:
                yield self._rows(pending)

        return build_store(path, spec, batches, progress=progress)

    def _rows(self, documents: Sequence[Document]) -> RowBatch:
        texts = [d.text for d in documents]
        ids = [d.document_id for d in documents]
        width = len(self.vocabulary)
        blocks = []
        for source in self.sources:
            block = sp.csr_matrix(source.suggest(texts, ids), dtype=np.float32)
            if block.shape[1] != width:
                block.resize((block.shape[0], width))
            blocks.append(block)
        return [d.subjects for d in documents], blocks

    # -- suggesting ------------------------------------------------------------------------

    def suggest(
        self, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
    ) -> sp.csr_matrix:
        """One sparse row of fused scores per text over the vocabulary (numpy, no torch)."""
        if not hasattr(self, "_predictor"):
            raise KuoroError("this Fusion is not fitted yet: call fit() or load() first")
        rows = self._predictor.suggest(texts, document_ids)
        if rows.shape[1] != len(self.vocabulary):
            rows.resize((rows.shape[0], len(self.vocabulary)))
        return rows

    # -- saving and loading ----------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Write the fitted model (numpy arrays and JSON, no pickle) into ``directory``."""
        if not hasattr(self, "_predictor"):
            raise KuoroError("this Fusion is not fitted yet: there is nothing to save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.numpy_model_.save(directory / _NUMPY)
        with atomic_write(directory / _PRIOR) as out:
            np.savez(out, counts=self.prior_)
        (directory / _CALIBRATION).unlink(missing_ok=True)
        if self._predictor.calibration is not None:
            self._predictor.calibration.save(directory / _CALIBRATION)
        (directory / _COOCCURRENCE).unlink(missing_ok=True)
        if self._predictor.cooccurrence is not None:
            self._predictor.cooccurrence.save(directory / _COOCCURRENCE)
        described = {
            "format": "kuoro-fusion-estimator",
            "format_version": 1,
            "backend": self.backend,
            "weights": self.weights,
            "params": asdict(fusion_params(self.backend, self.params)),
            "sources": [type(source).__name__ for source in self.sources],
            "top_k": self._predictor.top_k,
        }
        with atomic_write(directory / _SAVED) as out:
            out.write(json.dumps(described, indent=2).encode("utf-8"))

    @classmethod
    def load(cls, directory: str | Path, sources: Sequence[FittedSource]) -> Fusion:
        """A model ``save`` wrote, over ``sources`` (the same kinds, in the same order, as it
        was fitted with); it suggests without torch."""
        directory = Path(directory)
        try:
            described = json.loads((directory / _SAVED).read_text(encoding="utf-8"))
            if described.get("format") != "kuoro-fusion-estimator":
                raise ValueError("not a saved Fusion")
            with np.load(directory / _PRIOR, allow_pickle=False) as saved:
                prior = np.asarray(saved["counts"], dtype=np.int64)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{directory}: no saved fusion model there ({exc})") from exc
        kinds = [type(source).__name__ for source in sources]
        if kinds != described["sources"]:
            raise ModelError(
                f"{directory} fuses {', '.join(described['sources'])}; given {', '.join(kinds)}"
            )
        fusion = cls(
            sources,
            backend=described["backend"],
            weights=described["weights"],
            **described["params"],
        )
        fusion.numpy_model_ = NumpyFusion.load(directory / _NUMPY)
        fusion.prior_ = prior
        fusion.cooccurrence_ = (
            SubjectCooccurrence.load(directory / _COOCCURRENCE).resized(len(prior))
            if (directory / _COOCCURRENCE).is_file()
            else None
        )
        fusion._predictor = FusionPredictor(
            fusion.sources,
            fusion.numpy_model_,
            ConceptPrior.from_counts(prior),
            n_concepts=len(prior),
            top_k=int(described["top_k"]),
            cooccurrence=fusion.cooccurrence_,
            calibration=(
                Calibration.load(directory / _CALIBRATION)
                if (directory / _CALIBRATION).is_file()
                else None
            ),
        )
        return fusion


def _source_fingerprint(source: FittedSource) -> str:
    described = f"{type(source).__name__}:{getattr(source, 'params', dict)()}:{id(source)}"
    return hashlib.sha256(f"{_SESSION}:{described}".encode()).hexdigest()[:16]


def _documents_fingerprint(documents: Sequence[Document]) -> str:
    digest = hashlib.sha256()
    for document in documents:
        digest.update(json.dumps([document.text, list(document.subjects)]).encode("utf-8"))
    return digest.hexdigest()[:16]
