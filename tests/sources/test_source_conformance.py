"""Every source estimator keeps the same contract, as scikit-learn's ``check_estimator`` checks
its estimators: parameters are ``__init__``'s keyword arguments, named and defaulted as in the
catalogue, given back by ``get_params`` and changed by ``set_params``; ``fit`` returns the
estimator; ``suggest`` gives one sparse row per text over the whole vocabulary, at most
``top_k`` scores in (0, 1], sorted concept ids; a saved state loads to the same suggestions.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from kuoro.analyzers import make_analyzer
from kuoro.config.backends import BACKENDS
from kuoro.corpus.documents import Corpus, Document
from kuoro.sources.base import Source
from kuoro.sources.registry import SOURCE_CLASSES, source_class
from kuoro.vocab.formats import read_vocabulary
from kuoro.vocab.vocabulary import Vocabulary

from support.data import SHARED_DATA, requires_shared_data

# A source that needs a remote service is checked without one; test_source_annif runs it
# against a real Annif server.
NEEDS_A_SERVER = {"annif"}
FITTED = sorted(set(SOURCE_CLASSES) - NEEDS_A_SERVER)
TEXTS = ["Kivikauden asuinpaikan kaivaukset ja löydöt", "rautakauden hautalöydöt", "x"]


@pytest.mark.parametrize("backend", sorted(SOURCE_CLASSES))
def test_parameters_are_the_catalogues(backend: str) -> None:
    cls = source_class(backend)
    assert cls.backend == backend
    signature = inspect.signature(cls.__init__)
    declared = {
        name: p.default for name, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY
    }
    catalogue = BACKENDS[backend].params
    assert set(declared) == set(catalogue)
    for name, spec in catalogue.items():
        if not spec.required:
            assert declared[name] == spec.default, name
    required = {name: "x" for name, spec in catalogue.items() if spec.required}
    if backend == "annif":
        required["endpoint"] = "http://127.0.0.1:9/v1"
    vocab = Vocabulary("v", ["http://x/a"], {"fi": ["a"]})
    source = cls(vocab, make_analyzer("simple"), **required)
    params = source.get_params()
    assert set(params) == set(catalogue)
    assert source.set_params(top_k=7) is source and source.get_params()["top_k"] == 7
    with pytest.raises(ValueError, match="has no parameter nope"):
        source.set_params(nope=1)
    assert repr(source).startswith(cls.__name__ + "(")


@pytest.fixture(scope="module")
def archaeology(tmp_path_factory: pytest.TempPathFactory) -> tuple[Vocabulary, list[Document]]:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data not found: real-data tests need the shared data")
    vocab = read_vocabulary(SHARED_DATA / "archaeology" / "yso-archaeology.ttl", "fi")
    documents = list(Corpus(SHARED_DATA / "archaeology" / "documents.tsv", vocab))
    return vocab, documents[:1500]


def _suggestions_file(vocab: Vocabulary, documents: list[Document], path: Path) -> Path:
    """What a file source reads: each training document's gold, scored."""
    lines = [
        f"{i + 1}\t<{vocab.uri(c)}>\t{1.0 / (rank + 1):.3f}\n"
        for i, document in enumerate(documents)
        for rank, c in enumerate(document.subjects)
    ]
    path.write_text("".join(lines), encoding="utf-8")
    return path


@requires_shared_data
@pytest.mark.parametrize("backend", FITTED)
def test_fit_suggest_save_and_load(
    backend: str, archaeology: tuple[Vocabulary, list[Document]], tmp_path: Path
) -> None:
    vocab, documents = archaeology
    params: dict[str, object] = {"top_k": 5}
    if backend == "file":
        params["path"] = str(_suggestions_file(vocab, documents, tmp_path / "s.tsv"))
    if backend in ("tfidf", "omikuji"):
        params["min_df"] = 1
    cls = source_class(backend)
    source: Source = cls(vocab, make_analyzer("snowball", "finnish"), **params)
    assert source.fit(documents) is source
    rows = sp.csr_matrix(source.suggest(TEXTS, ["1", "2", "3"]))
    assert rows.shape == (len(TEXTS), len(vocab))
    assert rows.dtype == np.float32 and rows.has_sorted_indices
    assert int(np.diff(rows.indptr).max()) <= 5 and rows.nnz > 0
    assert rows.data.min() > 0 and rows.data.max() <= 1
    empty = sp.csr_matrix(source.suggest([], []))
    assert empty.shape == (0, len(vocab))

    (tmp_path / "state").mkdir()
    source.save_state(tmp_path / "state")
    loaded = cls(vocab, make_analyzer("snowball", "finnish"), **params)
    loaded.load_state(tmp_path / "state")
    again = sp.csr_matrix(loaded.suggest(TEXTS, ["1", "2", "3"]))
    assert np.array_equal(again.indptr, rows.indptr) and np.array_equal(again.indices, rows.indices)
    assert np.allclose(again.data, rows.data, atol=1e-6)
