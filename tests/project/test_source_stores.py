"""Building a store from projects' suggestions: reuse, resume, rebuild, column order, parallel
jobs, and the corpus fingerprint (the store itself: store/test_store.py)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import scipy.sparse as sp

from kuoro.cli import main
from kuoro.config.projects import load_projects
from kuoro.corpus.documents import Corpus
from kuoro.corpus.fingerprint import corpus_fingerprint
from kuoro.project.datadir import DataDir
from kuoro.project.project import Project
from kuoro.project.stores import build_source_store, model_fingerprint
from kuoro.store.suggestion_store import SuggestionStore
from kuoro.vocab.vocabulary import Vocabulary

from support.data import SHARED_DATA, requires_shared_data
from support.stores import assert_same_rows, concat

ARCH = SHARED_DATA / "archaeology"
PROJECTS = """
[arch-tfidf]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
min_df = 1

[arch-tfidf-3]
language = "fi"
vocab = "arch"
backend = "tfidf"
analyzer = "snowball(finnish)"
min_df = 3
top_k = 20
"""


@pytest.fixture(scope="module")
def arch_projects(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Project], Path]:
    """Two trained tfidf sources on the archaeology vocabulary, and a 600-document corpus."""
    work = tmp_path_factory.mktemp("store-build")
    (work / "projects.toml").write_text(PROJECTS, encoding="utf-8")
    base = ["--datadir", str(work / "data"), "--projects", str(work / "projects.toml")]
    assert main([*base, "load-vocab", "arch", str(ARCH / "yso-archaeology.ttl"), "-l", "fi"]) == 0
    for project_id in ("arch-tfidf", "arch-tfidf-3"):
        assert main([*base, "train", project_id, str(ARCH / "documents.tsv")]) == 0
    lines = (ARCH / "documents.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    corpus = work / "corpus.tsv"
    corpus.write_text("".join(lines[:600]), encoding="utf-8")
    configs = load_projects(work / "projects.toml")
    data = DataDir(work / "data")
    return work, [Project(configs[p], data) for p in ("arch-tfidf", "arch-tfidf-3")], corpus


class SuggestCounter:
    """Counts the texts the sources are asked about, and keeps the ids they are given."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts = 0
        self.ids: list[str | None] = []
        original = Project.suggest

        def counting(
            project: Project, texts: list[str], ids: list[str | None] | None = None
        ) -> sp.csr_matrix:
            self.texts += len(texts)
            self.ids += ids or []
            return original(project, texts, ids)

        monkeypatch.setattr(Project, "suggest", counting)


@requires_shared_data
def test_build_reuse_resume_and_rebuild(
    arch_projects: tuple[Path, list[Project], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, projects, corpus = arch_projects
    vocabulary = projects[0].vocabulary
    counter = SuggestCounter(monkeypatch)
    path = tmp_path / "arch-store"

    def build(**kwargs: object) -> SuggestionStore:
        return build_source_store(
            path, projects, [corpus], vocabulary=vocabulary, language="fi", **kwargs
        )  # type: ignore[arg-type]

    # The CLI used to train the sources stops "kuoro" log records at its own handler.
    monkeypatch.setattr(logging.getLogger("kuoro"), "propagate", True)
    caplog.set_level(logging.INFO, logger="kuoro")
    with build() as store:
        assert len(store) == 600 and store.complete
        assert store.source_names == ("arch-tfidf", "arch-tfidf-3")
        assert store.top_k == 100
        first = next(store.batches(50))
    assert counter.texts == 2 * 600
    documents = list(Corpus([corpus], vocabulary, language="fi"))
    texts = [d.text for d in documents]
    for s, project in enumerate(projects):
        assert_same_rows(first.sources[s], project.suggest(texts[:50]))
    for i in range(50):
        assert tuple(first.gold[i].indices) == documents[i].subjects

    # Same fingerprints: reused, no source runs.
    counter.texts = 0
    caplog.clear()
    with build() as store:
        assert len(store) == 600
    assert counter.texts == 0
    assert f"reusing store {path} (600 documents)" in caplog.text

    # A killed build: an incomplete store with the same fingerprints resumes after it.
    prefix = _partial_store(path, projects, corpus, vocabulary, documents=256)
    counter.texts, counter.ids = 0, []
    caplog.clear()
    with build() as store:
        assert len(store) == 600 and store.complete
        batches = list(store.batches(600))
    assert counter.texts == 2 * (600 - 256)
    assert counter.ids[0] == "257"  # a document without an id is known by its corpus position
    assert "256 documents stored already, skipping them" in caplog.text
    assert_same_rows(batches[0].sources[0][:256], prefix[0])
    assert_same_rows(batches[0].sources[0][256:], projects[0].suggest(texts[256:600]))

    # A retrained source: detected by name, the store rebuilt.
    Project(projects[1].config, projects[1].datadir).train([ARCH / "documents.tsv"])
    retrained = [projects[0], Project(projects[1].config, projects[1].datadir)]
    counter.texts = 0
    caplog.clear()
    with build_source_store(
        path, retrained, [corpus], vocabulary=vocabulary, language="fi"
    ) as store:
        assert store.fingerprints["source:arch-tfidf-3"] == model_fingerprint(retrained[1])
        assert len(store) == 600
    assert "source 'arch-tfidf-3' was retrained since the store was built; rebuilding" in (
        caplog.text
    )
    assert "arch-tfidf' was" not in caplog.text
    assert counter.texts == 2 * 600
    assert not path.with_name("arch-store.new").exists()

    # cached=False rebuilds whatever the fingerprints say.
    counter.texts = 0
    caplog.clear()
    build_source_store(
        path, retrained, [corpus], vocabulary=vocabulary, language="fi", cached=False
    ).close()
    assert "a rebuild was requested; rebuilding" in caplog.text
    assert counter.texts == 2 * 600


@requires_shared_data
def test_source_order_is_the_store_column_order(
    arch_projects: tuple[Path, list[Project], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, projects, corpus = arch_projects
    vocabulary = projects[0].vocabulary
    counter = SuggestCounter(monkeypatch)
    path = tmp_path / "ordered-store"
    backwards = list(reversed(projects))  # not in alphabetical order

    def build(sources: list[Project]) -> SuggestionStore:
        return build_source_store(path, sources, [corpus], vocabulary=vocabulary, language="fi")

    build(backwards).close()
    counter.texts = 0
    with build(backwards) as store:  # the same sources in the same order: reused
        assert store.source_names == ("arch-tfidf-3", "arch-tfidf")
    assert counter.texts == 0
    with build(projects) as store:  # another column order: rebuilt, never reused
        assert store.source_names == ("arch-tfidf", "arch-tfidf-3")
    assert counter.texts == 2 * 600


@requires_shared_data
@pytest.mark.integration
def test_parallel_build_stores_the_same_rows(
    arch_projects: tuple[Path, list[Project], Path], tmp_path: Path
) -> None:
    _, projects, corpus = arch_projects
    vocabulary = projects[0].vocabulary
    stores = [
        build_source_store(
            tmp_path / f"jobs-{jobs}",
            projects,
            [corpus],
            vocabulary=vocabulary,
            language="fi",
            jobs=jobs,
        )
        for jobs in (1, 2)
    ]
    one, two = (concat(store.batches(1000)) for store in stores)
    for store in stores:
        store.close()
    assert len(one) == len(two) == 600
    assert (one.gold != two.gold).nnz == 0
    for a, b in zip(one.sources, two.sources, strict=True):
        assert_same_rows(a, b)


@requires_shared_data
def test_corpus_fingerprint_follows_content(
    arch_projects: tuple[Path, list[Project], Path], tmp_path: Path
) -> None:
    _, _, corpus = arch_projects
    copy = tmp_path / "copy.tsv"
    copy.write_bytes(corpus.read_bytes())
    assert corpus_fingerprint([copy], language="fi") == corpus_fingerprint([corpus], language="fi")
    assert corpus_fingerprint([copy], language="sv") != corpus_fingerprint([corpus], language="fi")
    copy.write_bytes(corpus.read_bytes() + b"uusi\t<http://www.yso.fi/onto/yso/p1>\n")
    assert corpus_fingerprint([copy], language="fi") != corpus_fingerprint([corpus], language="fi")
    fulltext = ARCH / "fulltext"
    assert corpus_fingerprint([fulltext], language="fi") != corpus_fingerprint(
        [corpus], language="fi"
    )


def _partial_store(
    path: Path, projects: list[Project], corpus: Path, vocabulary: Vocabulary, documents: int
) -> list[sp.csr_matrix]:
    """Replace the store at ``path`` by an incomplete one of its first ``documents``."""
    shutil.rmtree(path)
    docs = list(Corpus([corpus], vocabulary, language="fi"))[:documents]
    rows = [p.suggest([d.text for d in docs]) for p in projects]
    fingerprints = {
        "vocabulary": projects[0].vocabulary.fingerprint,
        **{f"source:{p.project_id}": model_fingerprint(p) for p in projects},
        "corpus": corpus_fingerprint([corpus], language="fi"),
    }
    with SuggestionStore.create(
        path,
        source_names=[p.project_id for p in projects],
        vocab_size=len(projects[0].vocabulary),
        fingerprints=fingerprints,
        top_k=100,
    ) as store:
        store.append([d.subjects for d in docs], rows)
    return rows
