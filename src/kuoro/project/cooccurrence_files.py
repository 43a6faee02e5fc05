"""Subject co-occurrence tables on disk: recorded by sources, read by fusion models.

A source trained on a corpus records which subjects go together in it
(``cooccurrence.npz`` in its model directory): its training corpus is the large one a fusion
model never sees. A fusion project's ``cooccurrence`` parameter says where its table comes
from: ``"sources"`` (the default: its sources' tables, each distinct corpus counted once),
``"none"``, or a corpus path (counted once and kept in the data directory, keyed by the
corpus's fingerprint). The table a fusion model trained with is saved beside it, so that
suggesting reads the same one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from kuoro.corpus.fingerprint import corpus_fingerprint
from kuoro.fusion.cooccurrence import SubjectCooccurrence
from kuoro.project.model_files import read_model

if TYPE_CHECKING:
    from kuoro.project.project import Project

log = logging.getLogger(__name__)

COOCCURRENCE = "cooccurrence.npz"


def count_corpus(project: Project, corpus_paths: Sequence[Path]) -> SubjectCooccurrence:
    """The co-occurrence of subjects in the corpora, over the project's vocabulary."""
    return SubjectCooccurrence.from_corpus(
        list(corpus_paths), project.vocabulary, language=project.config.language
    )


def load_table(version_dir: Path, n_concepts: int) -> SubjectCooccurrence | None:
    """The table saved in a model directory (grown to ``n_concepts``), or None."""
    path = version_dir / COOCCURRENCE
    if not path.is_file():
        return None
    table = SubjectCooccurrence.load(path)
    if table.n_concepts > n_concepts:
        return SubjectCooccurrence(
            sp.csr_matrix(table.conditional[:n_concepts, :n_concepts]),
            table.counts[:n_concepts],
            table.documents,
        )
    return table.resized(n_concepts)


def table_for_training(
    project: Project, sources: Sequence[Project], n_concepts: int
) -> SubjectCooccurrence | None:
    """The table a fusion project trains with, as its ``cooccurrence`` parameter says."""
    setting = str(project.config.params.get("cooccurrence", "none"))
    if setting == "none":
        return None
    if setting != "sources":
        return _counted_corpus(project, Path(setting), n_concepts)
    tables: dict[str, SubjectCooccurrence] = {}
    for source in sources:
        version_dir, _ = read_model(source.model_dir, source.project_id, "source")
        table = load_table(version_dir, n_concepts)
        if table is not None:
            # Sources trained on the same corpus recorded the same table: count it once.
            key = hashlib.sha256(table.counts.tobytes()).hexdigest() + str(table.documents)
            tables.setdefault(key, table)
    if not tables:
        log.info(
            "project '%s': its sources recorded no subject co-occurrence (trained before "
            "Kuoro recorded it); the co-occurrence features stay 0. Retrain a source, or set "
            "cooccurrence to the path of its training corpus",
            project.project_id,
        )
        return None
    return merge(list(tables.values()))


def merge(tables: Sequence[SubjectCooccurrence]) -> SubjectCooccurrence:
    """One table counting the documents of all ``tables``."""
    if len(tables) == 1:
        return tables[0]
    pairs = sum((pair_counts(t) for t in tables), sp.csr_matrix(tables[0].conditional.shape))
    return SubjectCooccurrence.from_pair_counts(
        sp.csr_matrix(pairs), sum(t.documents for t in tables)
    )


def pair_counts(table: SubjectCooccurrence) -> sp.csr_matrix:
    """The symmetric document counts behind a table (its diagonal: each concept's count)."""
    pairs = sp.diags(table.counts.astype(np.float64)) @ table.conditional.astype(np.float64)
    pairs = sp.csr_matrix(pairs)
    pairs.data = np.rint(pairs.data)
    return sp.csr_matrix(pairs + sp.diags(table.counts.astype(np.float64)))


def _counted_corpus(project: Project, path: Path, n_concepts: int) -> SubjectCooccurrence:
    """The table of a corpus, counted once per corpus content and vocabulary."""
    language = project.config.language
    key = hashlib.sha256(
        f"{corpus_fingerprint([path], language=language)}:{project.vocabulary.fingerprint}".encode()
    ).hexdigest()[:24]
    cached = project.datadir.root / "stores" / f"cooccurrence-{key}.npz"
    if cached.is_file():
        return SubjectCooccurrence.load(cached).resized(n_concepts)
    log.info("counting which subjects go together in %s", path)
    table = count_corpus(project, [path]).resized(n_concepts)
    cached.parent.mkdir(parents=True, exist_ok=True)
    table.save(cached)
    return table
