"""The lexical source: finds the vocabulary's labels in the text and scores each match.

Every label of a concept is matched: preferred, alternative and hidden labels, and notations
(see :mod:`kuoro.sources.label_index`). Each matched concept gets a few features (how often
and where it occurs, through which kind of label, how long and how ambiguous its label is,
whether its broader, narrower or related concepts match too, how often its matches were right
in training), and a logistic regression learnt from training documents turns them into a
score. Until it is trained it uses hand-set weights, so the source works from the vocabulary
alone.

A trained model stores the weights and per-concept counts (``lexical.npz``), the analyzed
labels (``labels.npz``: each label's text and its tokens, and the analyzer's identity) and the
analyzer's own files, if it has any (simplemma's dictionary as arrays mapped from disk), all
without pickle. Loading it analyzes only the labels that changed since training, so it takes
a fraction of a second instead of lemmatising the whole vocabulary again; a model without
``labels.npz`` (written by an older Kuoro) or of another analyzer version analyzes them all.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice, pairwise
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from kuoro.analyzers import Analyzer, SimplemmaAnalyzer, simplemma_version
from kuoro.corpus.documents import Document
from kuoro.errors import ModelError, SourceError
from kuoro.sources.base import Source, rows_to_csr
from kuoro.sources.label_index import FEATURES, LABEL_KINDS, LabelIndex
from kuoro.util.wording import plural
from kuoro.vocab.vocabulary import Vocabulary

log = logging.getLogger(__name__)

# Weights used before training, set by hand (bias last): mostly "more matches, earlier, of a
# longer, unambiguous label, better its preferred one than an alternative or hidden one, or
# its notation" and a mild discount for long texts, where one match means little.
_DEFAULT_WEIGHTS = np.array(
    [1.5, 0.7, -1.0, 0.3, 0.3, -1.0, -1.5, 0.5, -0.3, -0.2, -0.5, 0.8, 0.3, 0.0, -0.5]
)
# Pseudo-counts that pull a rarely matched concept's precision towards the global rate.
_PRIOR_STRENGTH = 2.0
_STATE_FILE = "lexical.npz"
_STATE_FORMAT = "kuoro-lexical-1"
_LABELS_FILE = "labels.npz"
_LABELS_FORMAT = "kuoro-lexical-labels-1"
_BATCH = 256
# What a model saved before the other kinds of labels were matched matched, and read.
_PREFERRED_ONLY = ("preferred",)
_FEATURES_BEFORE_KINDS = (*FEATURES[:9], FEATURES[-1])


class LexicalSource(Source):
    """Label matching with learnt match scores; usable without training.

    Labels are the vocabulary's preferred labels in its first language, which is the
    project's language when the vocabulary was read with :func:`read_vocabulary`.
    """

    backend = "lexical"

    def __init__(
        self,
        vocabulary: Vocabulary,
        analyzer: Analyzer,
        *,
        top_k: int = 100,
        max_train_documents: int = 20000,
    ) -> None:
        super().__init__(vocabulary, analyzer, top_k=top_k)
        self.max_train_documents = max_train_documents
        size = len(vocabulary)
        # Learned state: feature standardisation, weights (bias last), per-concept counts.
        self.mean_ = np.zeros(len(FEATURES))
        self.scale_ = np.ones(len(FEATURES))
        self.weights_ = _DEFAULT_WEIGHTS.copy()
        self.matches_ = np.zeros(size, np.int64)
        self.hits_ = np.zeros(size, np.int64)
        self.base_rate_ = 0.5
        # What the model matches and reads: every kind of label and feature, but a model saved
        # before alternative labels were matched keeps to what it was trained with.
        self.label_kinds_: tuple[str, ...] = LABEL_KINDS
        self.features_: tuple[str, ...] = FEATURES
        self._index: LabelIndex | None = None

    def library_versions(self) -> dict[str, str]:
        # The model holds simplemma's dictionary and labels lemmatised by it.
        if isinstance(self.analyzer, SimplemmaAnalyzer):
            return {"simplemma": simplemma_version()}
        return {}

    @property
    def index(self) -> LabelIndex:
        """The label index, built from the vocabulary on first use."""
        if self._index is None:
            self._index = LabelIndex(self.vocabulary, self.analyzer, kinds=self.label_kinds_)
        return self._index

    def _features(self, text: str) -> tuple[list[int], np.ndarray]:
        """The concepts matched in ``text`` and the model's features of each."""
        concepts, features = self.index.features(self.analyzer.tokens(text), text)
        if self.features_ != FEATURES:
            features = features[:, [FEATURES.index(name) for name in self.features_]]
        return concepts, features

    def fit(
        self, corpus: Iterable[Document], *, jobs: int = 1, progress: bool = False
    ) -> LexicalSource:
        # Matching is pure Python and quick; `jobs` has nothing to parallelise here.
        from sklearn.linear_model import LogisticRegression

        if (self.label_kinds_, self.features_) != (LABEL_KINDS, FEATURES):
            # A model loaded from an older Kuoro learns anew with every kind of label.
            self.label_kinds_, self.features_, self._index = LABEL_KINDS, FEATURES, None
            self.weights_ = _DEFAULT_WEIGHTS.copy()
            self.mean_, self.scale_ = np.zeros(len(FEATURES)), np.ones(len(FEATURES))
        concept_blocks: list[np.ndarray] = []
        feature_blocks: list[np.ndarray] = []
        gold_blocks: list[np.ndarray] = []
        documents = tqdm(corpus, desc="lexical: matching", unit=" doc", disable=not progress)
        used = 0
        for document in islice(documents, self.max_train_documents):
            if not document.subjects:
                continue
            used += 1
            matched, block = self._features(document.text)
            if matched:
                subjects = set(document.subjects)
                concept_blocks.append(np.asarray(matched, np.int64))
                feature_blocks.append(block)
                gold_blocks.append(np.array([c in subjects for c in matched]))
        documents.close()
        if not used:
            raise SourceError("lexical: no training document has subjects")
        if not concept_blocks:
            log.warning("lexical: no label matched in %d training documents; not trained", used)
            return self
        concepts = np.concatenate(concept_blocks)
        features = np.concatenate(feature_blocks)
        gold = np.concatenate(gold_blocks)
        size = len(self.vocabulary)
        self.matches_ = np.bincount(concepts, minlength=size)
        self.hits_ = np.bincount(concepts, weights=gold, minlength=size).astype(np.int64)
        self.base_rate_ = float(np.clip(gold.mean(), 0.01, 0.99))
        if gold.all() or not gold.any():
            log.warning("lexical: every match in training was %s; not trained", gold[0])
            return self
        # Leave each document's own matches out of its concept precision, or the feature
        # would look more telling in training than it is on new text.
        features[:, -1] = self._precision_logit(
            self.hits_[concepts] - gold, self.matches_[concepts] - 1
        )
        self.mean_ = features.mean(axis=0)
        self.scale_ = np.where(features.std(axis=0) > 1e-9, features.std(axis=0), 1.0)
        model = LogisticRegression(max_iter=1000)
        model.fit((features - self.mean_) / self.scale_, gold)
        self.weights_ = np.append(model.coef_[0], model.intercept_[0])
        log.info(
            "lexical: trained on %s in %s",
            plural(len(gold), "match", "matches"),
            plural(used, "document"),
        )
        return self

    def _precision_logit(self, hits: np.ndarray, matches: np.ndarray) -> np.ndarray:
        prior = self.base_rate_ * _PRIOR_STRENGTH
        precision = (hits + prior) / (matches + _PRIOR_STRENGTH)
        return np.asarray(np.log(precision / (1.0 - precision)))

    def suggest(
        self, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
    ) -> sp.csr_matrix:
        rows: list[tuple[Sequence[int], Sequence[float]]] = []
        for text in texts:
            concepts, features = self._features(text)
            if not concepts:
                rows.append(([], []))
                continue
            ids = np.asarray(concepts, np.int64)
            features[:, -1] = self._precision_logit(self.hits_[ids], self.matches_[ids])
            logits = ((features - self.mean_) / self.scale_) @ self.weights_[:-1]
            scores = 1.0 / (1.0 + np.exp(-(logits + self.weights_[-1])))
            rows.append((concepts, scores.tolist()))
        blocks = [
            rows_to_csr(rows[start : start + _BATCH], len(self.vocabulary), self.top_k)
            for start in range(0, len(rows), _BATCH)
        ]
        if not blocks:
            return sp.csr_matrix((0, len(self.vocabulary)), dtype=np.float32)
        return sp.csr_matrix(sp.vstack(blocks, format="csr"), dtype=np.float32)

    def save_state(self, directory: Path) -> None:
        meta = {
            "format": _STATE_FORMAT,
            "features": list(self.features_),
            "label_kinds": list(self.label_kinds_),
            "base_rate": self.base_rate_,
        }
        np.savez_compressed(
            directory / _STATE_FILE,
            meta=np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8),
            mean=self.mean_,
            scale=self.scale_,
            weights=self.weights_,
            matches=self.matches_,
            hits=self.hits_,
        )
        _save_labels(directory / _LABELS_FILE, self.analyzer.identity, self.index.analyzed)
        self.analyzer.save_files(directory)

    def load_state(self, directory: Path) -> None:
        path = directory / _STATE_FILE
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(data["meta"].tobytes().decode("utf-8"))
                arrays = {k: data[k] for k in ("mean", "scale", "weights", "matches", "hits")}
        except FileNotFoundError:
            raise ModelError(
                f"lexical: model file {path} is missing; retrain the project"
            ) from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelError(
                f"lexical: model file {path} is damaged ({exc}); retrain the project"
            ) from exc
        features = tuple(meta.get("features", ())) if isinstance(meta, dict) else ()
        n = len(features)
        shapes = {"mean": (n,), "scale": (n,), "weights": (n + 1,)}
        if (
            not isinstance(meta, dict)
            or meta.get("format") != _STATE_FORMAT
            or features not in (FEATURES, _FEATURES_BEFORE_KINDS)
            or not set(meta.get("label_kinds", _PREFERRED_ONLY)) <= set(LABEL_KINDS)
            or not isinstance(meta.get("base_rate"), float)
            or any(arrays[k].shape != shape for k, shape in shapes.items())
            or not all(np.issubdtype(a.dtype, np.number) for a in arrays.values())
            or not all(np.isfinite(arrays[k]).all() for k in shapes)
            or arrays["matches"].shape != arrays["hits"].shape
            or arrays["matches"].ndim != 1
            or len(arrays["matches"]) > len(self.vocabulary)
        ):
            raise ModelError(
                f"lexical: model file {path} is damaged or of another format; retrain the project"
            )
        # Concepts added to the vocabulary since training have no counts yet.
        pad = len(self.vocabulary) - len(arrays["matches"])
        self.mean_, self.scale_, self.weights_ = arrays["mean"], arrays["scale"], arrays["weights"]
        self.matches_ = np.pad(arrays["matches"].astype(np.int64), (0, pad))
        self.hits_ = np.pad(arrays["hits"].astype(np.int64), (0, pad))
        self.base_rate_ = float(meta["base_rate"])
        self.features_ = features
        self.label_kinds_ = tuple(meta.get("label_kinds", _PREFERRED_ONLY))
        # Built now, so that the first suggestion does not wait for it: from the stored labels
        # and with the analyzer's stored files, when the model has them.
        try:
            self.analyzer.load_files(directory)
        except ValueError as exc:
            raise ModelError(f"lexical: {exc}; retrain the project") from exc
        stored = _load_labels(directory / _LABELS_FILE, self.analyzer.identity)
        self._index = LabelIndex(
            self.vocabulary, self.analyzer, analyzed=stored, kinds=self.label_kinds_
        )
        if stored is None:
            log.info(
                "lexical: %s has no label index of analyzer %s (a model of an older Kuoro, or "
                "of another analyzer version): analyzed %d labels; retrain to store them",
                directory, self.analyzer.identity, self._index.labels_analyzed,
            )  # fmt: skip
        elif self._index.labels_analyzed:
            log.info(
                "lexical: analyzed %d labels that changed since training",
                self._index.labels_analyzed,
            )


def _save_labels(path: Path, analyzer: str, analyzed: Mapping[str, tuple[str, ...]]) -> None:
    """Store analyzed labels (label text → tokens) and the identity of the analyzer."""
    texts = list(analyzed)
    tokens = [token for text in texts for token in analyzed[text]]
    meta = {"format": _LABELS_FORMAT, "analyzer": analyzer}
    np.savez_compressed(
        path,
        meta=np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8),
        texts=_pack(texts),
        text_ends=_ends(texts),
        tokens=_pack(tokens),
        token_ends=_ends(tokens),
        token_counts=np.array([len(analyzed[text]) for text in texts], np.int64),
    )


def _load_labels(path: Path, analyzer: str) -> dict[str, tuple[str, ...]] | None:
    """The analyzed labels stored in ``path``; None when there are none (a model written
    before Kuoro stored them) or they come from another analyzer (or version of it)."""
    names = ("texts", "text_ends", "tokens", "token_ends", "token_counts")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode("utf-8"))
            arrays = {name: data[name] for name in names}
        texts = _unpack(arrays["texts"], arrays["text_ends"])
        tokens = _unpack(arrays["tokens"], arrays["token_ends"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelError(
            f"lexical: model file {path} is damaged ({exc}); retrain the project"
        ) from exc
    counts = arrays["token_counts"]
    if (
        not isinstance(meta, dict)
        or meta.get("format") != _LABELS_FORMAT
        or counts.shape != (len(texts),)
        or not np.issubdtype(counts.dtype, np.integer)
        or (counts < 0).any()
        or int(counts.sum()) != len(tokens)
    ):
        raise ModelError(
            f"lexical: model file {path} is damaged or of another format; retrain the project"
        )
    if meta.get("analyzer") != analyzer:
        log.warning(
            "lexical: the labels in %s were analyzed by %s, not by %s as now; analyzing them again",
            path, meta.get("analyzer"), analyzer,
        )  # fmt: skip
        return None
    ends = np.cumsum(counts).tolist()
    starts = [0, *ends[:-1]]
    return {
        text: tuple(tokens[start:end]) for text, start, end in zip(texts, starts, ends, strict=True)
    }


def _pack(strings: Sequence[str]) -> np.ndarray:
    return np.frombuffer("".join(strings).encode("utf-8"), np.uint8)


def _ends(strings: Sequence[str]) -> np.ndarray:
    """Where each of the joined ``strings`` ends, in characters."""
    return np.cumsum(np.fromiter(map(len, strings), np.int64, count=len(strings)), dtype=np.int64)


def _unpack(blob: np.ndarray, ends: np.ndarray) -> list[str]:
    """The strings :func:`_pack` joined into ``blob``; ValueError when they do not fit."""
    if blob.dtype != np.uint8 or ends.ndim != 1 or not np.issubdtype(ends.dtype, np.integer):
        raise ValueError("not a string array")
    joined = blob.tobytes().decode("utf-8")
    bounds = [0, *ends.tolist()]
    if bounds[-1] != len(joined) or any(a > b for a, b in pairwise(bounds)):
        raise ValueError("string ends do not fit")
    return [joined[a:b] for a, b in pairwise(bounds)]


__all__ = ["FEATURES", "LexicalSource"]
