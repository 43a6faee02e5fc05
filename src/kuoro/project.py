"""A configured project: its vocabulary, analyzer and source, trained, saved and loaded."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from kuoro.analyzers import Analyzer, make_analyzer
from kuoro.config import ProjectConfig, parse_analyzer
from kuoro.corpus import Corpus
from kuoro.datadir import DataDir
from kuoro.errors import KuoroError, ModelError
from kuoro.model_files import read_model, write_model
from kuoro.ranking import rank_row
from kuoro.sources.base import Source, Suggester
from kuoro.sources.registry import source_class
from kuoro.vocab import Vocabulary

if TYPE_CHECKING:
    from kuoro.fusion.fit import FitInfo
    from kuoro.fusion.predictor import FusionPredictor

log = logging.getLogger(__name__)

# Parameters that only shape what a trained source returns, not what it learnt.
_SUGGEST_TIME_PARAMS = {"top_k"}


@dataclass(frozen=True)
class Suggestion:
    """One suggested subject, as Kuoro prints it and the REST API returns it."""

    uri: str
    label: str | None
    notation: str | None
    score: float


@dataclass(frozen=True)
class TrainingSummary:
    documents: int
    seconds: float
    model_dir: Path
    report: str


class Project:
    """A project of ``projects.toml`` bound to a data directory.

    A fusion project needs its sources' configurations: ``projects`` (all configured projects)
    to train; to suggest without it, those saved with its model are used.
    """

    def __init__(
        self,
        config: ProjectConfig,
        datadir: DataDir,
        projects: Mapping[str, ProjectConfig] | None = None,
    ) -> None:
        self.config = config
        self.datadir = datadir
        self.projects = projects
        self.last_fit: FitInfo | None = None  # what the latest fusion training did

    @property
    def project_id(self) -> str:
        return self.config.project_id

    @cached_property
    def vocabulary(self) -> Vocabulary:
        return self.datadir.load_vocabulary(self.config.vocab)

    @cached_property
    def analyzer(self) -> Analyzer:
        return make_analyzer(*parse_analyzer(self.config.analyzer))

    @property
    def model_dir(self) -> Path:
        return self.datadir.project_dir(self.project_id)

    def _require_source_project(self) -> None:
        if self.config.kind != "source":
            raise KuoroError(
                f"project '{self.project_id}' is a fusion project (backend "
                f"'{self.config.backend}'), not a source"
            )

    def new_source(self) -> Source:
        """An untrained source built from the configured parameters."""
        self._require_source_project()
        params: dict[str, Any] = dict(self.config.params)
        return source_class(self.config.backend)(self.vocabulary, self.analyzer, **params)

    # -- training --------------------------------------------------------------------------

    def train(
        self,
        corpus_paths: Sequence[Path],
        *,
        jobs: int = 1,
        progress: bool = False,
        cached: bool = True,
        device: str = "auto",
    ) -> TrainingSummary:
        """Train on the corpora and save the result as the project's current model.

        A fusion project runs its (trained) sources over the corpora into a suggestion store,
        reused while they and the corpora are unchanged when ``cached``, and trains on it.
        """
        if self.config.kind == "fusion":
            return self._train_fusion(corpus_paths, jobs, progress, cached, device)
        source = self.new_source()
        corpus = Corpus(corpus_paths, self.vocabulary, language=self.config.language)
        started = time.perf_counter()
        if source.needs_training:
            log.info("training %s on %s", self.project_id, ", ".join(map(str, corpus_paths)))
        source.fit(corpus, jobs=jobs, progress=progress)
        seconds = time.perf_counter() - started
        metadata = {
            "project_id": self.project_id,
            "kind": "source",
            "backend": self.config.backend,
            "params": source.params(),
            "analyzer": self.analyzer.spec,
            "language": self.config.language,
            "vocabulary": {
                "name": self.vocabulary.name,
                "size": len(self.vocabulary),
                "fingerprint": self.vocabulary.fingerprint,
            },
            "training": {
                "corpus": [str(p) for p in corpus_paths],
                "documents": corpus.report.documents,
                "seconds": round(seconds, 3),
                "report": corpus.report.summary(),
            },
            "libraries": source.library_versions(),
        }
        model_dir = write_model(self.model_dir, metadata, source.save_state)
        self.__dict__.pop("source", None)
        return TrainingSummary(corpus.report.documents, seconds, model_dir, corpus.report.summary())

    # -- fusion projects -------------------------------------------------------------------

    def source_projects(self) -> list[Project]:
        """A fusion project's sources, as configured now."""
        if self.projects is None:
            raise KuoroError(
                f"fusion project '{self.project_id}' needs the configuration of its sources"
            )
        return [Project(self.projects[ref.project_id], self.datadir) for ref in self.config.sources]

    @property
    def store_path(self) -> Path:
        """Where a fusion project keeps its sources' suggestions for the training corpus."""
        return self.model_dir.parent / f"{self.project_id}.store"

    def _train_fusion(
        self, corpus_paths: Sequence[Path], jobs: int, progress: bool, cached: bool, device: str
    ) -> TrainingSummary:
        from kuoro.fusion.fit import fit_fusion
        from kuoro.store_builder import build_store, model_fingerprint

        sources = self.source_projects()
        for source in sources:
            if not source.is_trained:
                raise KuoroError(
                    f"source '{source.project_id}' of fusion project '{self.project_id}' is not "
                    f"trained yet; train it first with: kuoro train {source.project_id}"
                )
        params = dict(self.config.params)
        started = time.perf_counter()

        def store_for(path: Path, corpus: Sequence[Path]) -> Any:
            return build_store(
                path,
                sources,
                corpus,
                vocabulary=self.vocabulary,
                language=self.config.language,
                jobs=jobs,
                cached=cached,
                progress=progress,
            )

        validation = params.get("validation")
        with (
            store_for(self.store_path, corpus_paths) as store,
            tempfile.TemporaryDirectory(prefix=f"kuoro-{self.project_id}-") as scratch,
        ):
            held_out = None
            if isinstance(validation, str):
                held_out = store_for(
                    self.store_path.with_suffix(".validation.store"), [Path(validation)]
                )
            try:
                log.info("training fusion model '%s' on %d documents", self.project_id, len(store))
                model, info = fit_fusion(
                    store,
                    params,
                    self.config.backend,
                    [ref.weight for ref in self.config.sources],
                    seed=int(params.get("seed", 0)),  # type: ignore[call-overload]
                    progress=progress,
                    device=device,
                    validation_store=held_out,
                    history_path=Path(scratch) / "history.jsonl",
                )
            finally:
                if held_out is not None:
                    held_out.close()
            self.last_fit = info
            seconds = time.perf_counter() - started
            metadata = self._fusion_metadata(
                sources, [model_fingerprint(s) for s in sources], corpus_paths, store, info, seconds
            )
            metadata["model"] = {
                "family": self.config.backend,
                "n_concepts": store.vocab_size,
                "top_k": store.top_k,
                "members": int(params.get("members", 1)),  # type: ignore[call-overload]
            }
            history = Path(scratch) / "history.jsonl"

            def write_files(directory: Path) -> None:
                import torch

                torch.save(model.state_dict(), directory / "model.pt")
                np.savez(directory / "prior.npz", counts=info.prior_counts)
                if history.is_file():
                    shutil.copyfile(history, directory / "history.jsonl")

            model_dir = write_model(self.model_dir, metadata, write_files)
            documents = len(store)
        self.__dict__.pop("source", None)
        report = (
            f"{info.train_documents} training and {info.validation_documents} held-out "
            f"documents; {info.epochs} epochs, best {info.best_epoch}; "
            + ", ".join(f"{k} {v:.4f}" for k, v in info.metrics.items())
        )
        log.info("%s", report)
        return TrainingSummary(documents, seconds, model_dir, report)

    def _fusion_metadata(
        self,
        sources: Sequence[Project],
        fingerprints: Sequence[str],
        corpus_paths: Sequence[Path],
        store: Any,
        info: Any,
        seconds: float,
    ) -> dict[str, Any]:
        import torch

        return {
            "project_id": self.project_id,
            "kind": "fusion",
            "backend": self.config.backend,
            "params": dict(self.config.params),
            "language": self.config.language,
            "vocabulary": {
                "name": self.vocabulary.name,
                "size": len(self.vocabulary),
                "fingerprint": self.vocabulary.fingerprint,
            },
            "sources": [
                {
                    "project_id": ref.project_id,
                    "weight": ref.weight,
                    "fingerprint": fingerprint,
                    "config": _config_dict(source.config),
                }
                for ref, source, fingerprint in zip(
                    self.config.sources, sources, fingerprints, strict=True
                )
            ],
            "training": {
                "corpus": [str(p) for p in corpus_paths],
                "documents": len(store),
                "store": str(store.path),
                "seconds": round(seconds, 3),
                **info.summary(),
            },
            # Kuoro's and Python's versions are in every manifest already (model_files).
            "libraries": {"torch": torch.__version__, "numpy": np.__version__},
        }

    def _load_fusion(self, version_dir: Path, manifest: dict[str, Any]) -> FusionPredictor:
        import torch

        from kuoro.fusion.candidates import ConceptPrior
        from kuoro.fusion.fit import build_model
        from kuoro.fusion.predictor import FusionPredictor
        from kuoro.store_builder import model_fingerprint

        pid = self.project_id
        trained = manifest["sources"]
        trained_ids = [s["project_id"] for s in trained]
        configured = [ref.project_id for ref in self.config.sources]
        if trained_ids != configured:
            raise ModelError(
                f"project '{pid}' was trained with sources {', '.join(trained_ids)} but is "
                f"configured with {', '.join(configured)}; retrain '{pid}'"
            )
        sources = []
        for saved in trained:
            sid = saved["project_id"]
            if self.projects is not None and sid in self.projects:
                config = self.projects[sid]
            else:
                config = _config_from_dict(saved["config"])
            source = Project(config, self.datadir)
            if not source.is_trained:
                raise ModelError(
                    f"source '{sid}' of project '{pid}' is not trained; train it with: "
                    f"kuoro train {sid}, then retrain '{pid}'"
                )
            if model_fingerprint(source) != saved["fingerprint"]:
                raise ModelError(
                    f"source '{sid}' was retrained after this model was trained (or its top_k "
                    f"changed); retrain '{pid}'"
                )
            sources.append(source)
        spec = manifest["model"]
        try:
            model = build_model(
                spec["family"],
                manifest["params"],
                int(spec["n_concepts"]),
                [s["weight"] for s in trained],
                seed=0,
            )
            state = torch.load(version_dir / "model.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            with np.load(version_dir / "prior.npz", allow_pickle=False) as prior:
                counts = prior["counts"]
        except Exception as exc:  # a damaged file, or one written by an incompatible version
            raise ModelError(
                f"project '{pid}': cannot load the fusion model in {version_dir}: {exc}; "
                f"retrain '{pid}'"
            ) from exc
        return FusionPredictor(
            sources,
            model,
            ConceptPrior.from_counts(counts),
            n_concepts=int(spec["n_concepts"]),
            top_k=int(spec["top_k"]),
        )

    # -- loading and suggesting ------------------------------------------------------------

    @property
    def is_trained(self) -> bool:
        return (self.model_dir / "CURRENT").is_file()

    @cached_property
    def source(self) -> Suggester:
        """The trained model, loaded once; it is checked against the vocabulary and config."""
        version_dir, manifest = read_model(self.model_dir, self.project_id)
        self._check_manifest(manifest)
        if self.config.kind == "fusion":
            return self._load_fusion(version_dir, manifest)
        # The model is what was trained: its analyzer and learnt-state parameters win over a
        # configuration edited since, which only takes effect after retraining.
        params = dict(manifest["params"])
        for key in _SUGGEST_TIME_PARAMS & set(self.config.params):
            params[key] = self.config.params[key]
        cls = source_class(self.config.backend)
        source = cls(
            self.vocabulary, make_analyzer(*parse_analyzer(manifest["analyzer"])), **params
        )
        try:
            source.load_state(version_dir)
        except ModelError:
            raise
        except Exception as exc:  # a library's own error on a file it cannot read
            raise ModelError(
                f"project '{self.project_id}': cannot load the model in {version_dir}: {exc}; "
                "retrain the project"
            ) from exc
        return source

    def _check_manifest(self, manifest: dict[str, Any]) -> None:
        pid = self.project_id
        if manifest.get("backend") != self.config.backend:
            raise ModelError(
                f"project '{pid}' was trained with backend '{manifest.get('backend')}' but is "
                f"configured with '{self.config.backend}'; retrain it"
            )
        trained_vocab = manifest["vocabulary"]
        size = int(trained_vocab["size"])
        if size > len(self.vocabulary) or (
            self.vocabulary.prefix_fingerprint(size) != trained_vocab["fingerprint"]
        ):
            raise ModelError(
                f"project '{pid}' was trained on vocabulary '{trained_vocab['name']}' "
                f"(fingerprint {trained_vocab['fingerprint']}, {size} concepts), but vocabulary "
                f"'{self.vocabulary.name}' now assigns different concepts to those ids "
                f"(fingerprint {self.vocabulary.prefix_fingerprint(size)}); retrain it"
            )
        changed = [
            f"{key} {manifest['params'].get(key)!r} → {value!r}"
            for key, value in self.config.params.items()
            if key not in _SUGGEST_TIME_PARAMS and manifest["params"].get(key) != value
        ]
        if self.config.kind == "source" and manifest.get("analyzer") != self.analyzer.spec:
            changed.append(f"analyzer {manifest.get('analyzer')} → {self.analyzer.spec}")
        if changed:
            log.warning(
                "project '%s' changed since it was trained (%s); retrain to apply",
                pid,
                "; ".join(changed),
            )

    def suggest(
        self, texts: Sequence[str], document_ids: Sequence[str | None] | None = None
    ) -> sp.csr_matrix:
        """One sparse row of scores per text over the current vocabulary."""
        matrix = sp.csr_matrix(self.source.suggest(texts, document_ids))
        if matrix.shape[1] != len(self.vocabulary):  # trained before concepts were appended
            matrix.resize((matrix.shape[0], len(self.vocabulary)))
        return matrix

    def ranked(self, row: sp.csr_matrix, *, limit: int, threshold: float = 0.0) -> list[Suggestion]:
        """One document's suggestions as (uri, label, notation, score), best first."""
        ids, scores = rank_row(row.indices, row.data, limit, threshold)
        vocab = self.vocabulary
        language = self.config.language if self.config.language in vocab.languages else None
        return [
            Suggestion(
                vocab.uri(int(i)), vocab.label(int(i), language), vocab.notation(int(i)), float(s)
            )
            for i, s in zip(ids, scores, strict=True)
        ]


def _config_dict(config: ProjectConfig) -> dict[str, Any]:
    """A source project's configuration as JSON, saved with a fusion model that uses it."""
    return {
        "project_id": config.project_id,
        "name": config.name,
        "language": config.language,
        "vocab": config.vocab,
        "backend": config.backend,
        "analyzer": config.analyzer,
        "limit": config.limit,
        "access": config.access,
        "allow_learn": config.allow_learn,
        "params": dict(config.params),
    }


def _config_from_dict(data: Mapping[str, Any]) -> ProjectConfig:
    return ProjectConfig(**{**data, "params": dict(data["params"]), "sources": ()})
