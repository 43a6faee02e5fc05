"""The tfidf source on real data: quality, invariants, persistence, damage, parameters."""

from __future__ import annotations

import copy
import gzip
import inspect
import itertools
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from kuoro.analyzers import make_analyzer
from kuoro.config.backends import BACKENDS
from kuoro.corpus.documents import Corpus, Document
from kuoro.errors import CorpusError, ModelError
from kuoro.project.model_files import read_model, write_model
from kuoro.sources.tfidf import TfidfSource
from kuoro.vocab.formats import read_vocabulary

from support.data import SHARED_DATA, requires_shared_data
from support.sources import Split, archaeology_split, hits_at

ARCHAEOLOGY = SHARED_DATA / "archaeology"
YSO = SHARED_DATA / "yso-fi"


@pytest.fixture(scope="module")
def archaeology() -> Split:
    return archaeology_split(500, shuffle=True)


@pytest.fixture(scope="module")
def trained(archaeology: Split) -> TfidfSource:
    vocabulary, train, _ = archaeology
    source = TfidfSource(vocabulary, make_analyzer("snowball", "finnish"))
    source.fit(train)
    return source


pytestmark = requires_shared_data


def test_held_out_gold_subject_ranks_high(trained: TfidfSource, archaeology: Split) -> None:
    _, _, held_out = archaeology
    scores = trained.suggest([d.text for d in held_out])
    # Measured: 0.49 in the top 3 and 0.35 first (titles, 1.4 subjects each, 130 concepts).
    assert hits_at(scores, held_out, 3) >= 0.42
    assert hits_at(scores, held_out, 1) >= 0.28


def test_suggestions_are_sparse_bounded_and_empty_for_empty_text(
    archaeology: Split, trained: TfidfSource
) -> None:
    vocabulary, train, held_out = archaeology
    texts = [d.text for d in held_out[:50]] + ["", "qwxyz zzyqq"]
    scores = trained.suggest(texts)
    assert isinstance(scores, sp.csr_matrix)
    assert scores.shape == (len(texts), len(vocabulary))
    assert scores.dtype == np.float32
    assert scores.data.min() > 0 and scores.data.max() <= 1.0 + 1e-6
    assert np.diff(scores.indptr).max() <= trained.top_k
    assert scores[-2:].nnz == 0  # no text, and only unknown words
    assert trained.suggest([]).shape == (0, len(vocabulary))

    few = TfidfSource(vocabulary, trained.analyzer, top_k=3).fit(train)
    top3 = few.suggest(texts)
    assert np.diff(top3.indptr).max() == 3
    # The 3 kept are the 3 best of the full list.
    full_row, row = scores.getrow(0), top3.getrow(0)
    assert set(row.indices) == set(full_row.indices[np.argsort(-full_row.data)][:3])


def test_batches_give_the_same_rows_as_one_by_one(trained: TfidfSource, archaeology: Split) -> None:
    _, _, held_out = archaeology
    texts = [d.text for d in held_out[:300]]  # more than one batch of 256
    together = trained.suggest(texts)
    alone = sp.vstack([trained.suggest([t]) for t in texts[250:260]])
    assert (abs(together[250:260] - alone) > 1e-6).nnz == 0


def test_save_and_load_give_identical_suggestions(
    tmp_path: Path,
    trained: TfidfSource,
    archaeology: Split,
) -> None:
    vocabulary, _, held_out = archaeology
    texts = [d.text for d in held_out[:100]]
    write_model(tmp_path, {"backend": "tfidf", "params": trained.params()}, trained.save_state)
    version_dir, manifest = read_model(tmp_path, "arch")
    assert manifest["params"] == trained.params()
    loaded = TfidfSource(vocabulary, make_analyzer("snowball", "finnish"))
    loaded.load_state(version_dir)
    before, after = trained.suggest(texts), loaded.suggest(texts)
    assert (before != after).nnz == 0


@pytest.mark.parametrize("name", ["profiles.npz", "features.npz", "features.json", "tfidf.json"])
def test_truncated_model_file_is_reported(tmp_path: Path, trained: TfidfSource, name: str) -> None:
    trained.save_state(tmp_path)
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    fresh = TfidfSource(trained.vocabulary, trained.analyzer)
    with pytest.raises(ModelError, match=rf"model file .*{name} is damaged"):
        fresh.load_state(tmp_path)


def test_corrupted_bytes_are_reported(tmp_path: Path, trained: TfidfSource) -> None:
    trained.save_state(tmp_path)
    path = tmp_path / "profiles.npz"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # same size: only the zip's CRC notices
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"profiles\.npz is damaged"):
        TfidfSource(trained.vocabulary, trained.analyzer).load_state(tmp_path)


def test_other_analyzer_than_in_training_is_refused(tmp_path: Path, trained: TfidfSource) -> None:
    trained.save_state(tmp_path)
    other = TfidfSource(trained.vocabulary, make_analyzer("simple"))
    with pytest.raises(ModelError, match=r"analyzer snowball\(finnish\).*retrain"):
        other.load_state(tmp_path)


def test_untrained_source_says_so(
    archaeology: Split,
) -> None:
    source = TfidfSource(archaeology[0], make_analyzer("simple"))
    with pytest.raises(ModelError, match="not trained"):
        source.suggest(["text"])


def test_training_needs_documents_with_subjects(
    archaeology: Split,
) -> None:
    vocabulary, train, _ = archaeology
    source = TfidfSource(vocabulary, make_analyzer("simple"))
    with pytest.raises(CorpusError, match="no training document has subjects"):
        source.fit([Document(d.text, ()) for d in train[:100]])
    with pytest.raises(CorpusError, match="no features in the training documents"):
        source.fit([Document("a b", d.subjects) for d in train[:100]])


def test_deprecated_concepts_are_not_suggested(trained: TfidfSource, archaeology: Split) -> None:
    vocabulary, _, held_out = archaeology
    texts = [d.text for d in held_out[:100]]
    before = trained.suggest(texts)
    popular = int(np.bincount(before.indices).argmax())
    updated = copy.copy(vocabulary)
    updated.deprecated = vocabulary.deprecated.copy()
    updated.deprecated[popular] = True
    source = copy.copy(trained)
    source.vocabulary = updated
    after = source.suggest(texts)
    assert popular not in after.indices
    assert after.nnz > 0


def test_parameters_match_the_catalogue(trained: TfidfSource) -> None:
    spec = BACKENDS["tfidf"].params
    signature = inspect.signature(TfidfSource.__init__).parameters
    keywords = {n: p.default for n, p in signature.items() if p.kind is p.KEYWORD_ONLY}
    assert keywords == {name: p.default for name, p in spec.items()}
    assert trained.params() == keywords
    assert set(trained.library_versions()) == {"scikit-learn", "scipy"}


def test_parameters_change_the_features(archaeology: Split, trained: TfidfSource) -> None:
    vocabulary, train, held_out = archaeology
    assert trained.features_ is not None
    analyzer = trained.analyzer
    bigrams = TfidfSource(vocabulary, analyzer, ngram_max=2).fit(train)
    assert bigrams.features_ is not None
    assert any(" " in term for term in bigrams.features_.terms_)
    assert not any(" " in term for term in trained.features_.terms_)
    # The default keeps every word (min_df 1); min_df 2 drops those of a single document.
    frequent = TfidfSource(vocabulary, analyzer, min_df=2).fit(train)
    assert frequent.features_ is not None
    assert frequent.features_.n_features < trained.features_.n_features
    raw = TfidfSource(vocabulary, analyzer, sublinear_tf=False).fit(train)
    texts = [d.text for d in held_out[:50]]
    assert abs(raw.suggest(texts) - trained.suggest(texts)).max() > 1e-4


@pytest.mark.integration
def test_yso_scale_with_finna_titles(tmp_path: Path) -> None:
    """20,000 finna titles and the 36k-concept YSO: held-out titles and librarian answers."""
    vocabulary = read_vocabulary(YSO / "vocab.tsv", "fi")
    with gzip.open(YSO / "finna-titles.tsv.gz", "rt", encoding="utf-8") as lines:
        head = list(itertools.islice(lines, 21000))
    (tmp_path / "train.tsv").write_text("".join(head[:20000]), encoding="utf-8")
    (tmp_path / "held.tsv").write_text("".join(head[20000:]), encoding="utf-8")
    source = TfidfSource(vocabulary, make_analyzer("snowball", "finnish"))
    source.fit(Corpus(tmp_path / "train.tsv", vocabulary))
    held_out = [d for d in Corpus(tmp_path / "held.tsv", vocabulary) if d.subjects]
    scores = source.suggest([d.text for d in held_out])
    assert scores.shape == (len(held_out), len(vocabulary))
    # Measured 0.10: the titles' subject lists are samples, so most "misses" are not wrong.
    assert hits_at(scores, held_out, 10) >= 0.07
    librarian = list(Corpus(SHARED_DATA / "kirjastonhoitaja" / "test.tsv", vocabulary))
    answers = source.suggest([d.text for d in librarian])
    assert hits_at(answers, librarian, 10) >= 0.15  # measured 0.21
