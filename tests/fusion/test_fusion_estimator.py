"""``kuoro.Fusion``: the fusion model as an estimator over fitted sources, no projects.toml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

import kuoro
from kuoro.errors import ConfigError, KuoroError, ModelError

from support.data import SHARED_DATA, requires_shared_data

pytestmark = [requires_shared_data, pytest.mark.usefixtures("torch_one_thread")]


class Counting:
    """A source that counts the texts it is asked about."""

    def __init__(self, source: Any) -> None:
        self.source, self.texts = source, 0
        self.vocabulary, self.top_k = source.vocabulary, source.top_k

    def suggest(self, texts: Any, document_ids: Any = None) -> sp.csr_matrix:
        self.texts += len(texts)
        return self.source.suggest(texts, document_ids)


@pytest.fixture(scope="module")
def fitted() -> tuple[Any, list[Any], list[Any]]:
    data = SHARED_DATA / "archaeology"
    vocab = kuoro.read_vocabulary(data / "yso-archaeology.ttl", language="fi")
    documents = list(kuoro.read_corpus(data / "documents.tsv", vocab))
    stem = kuoro.TfidfSource(vocab, kuoro.make_analyzer("snowball", "finnish"), min_df=1)
    words = kuoro.TfidfSource(vocab, kuoro.make_analyzer("simple"), ngram_max=2)
    sources = [source.fit(documents[2000:]) for source in (stem, words)]
    return vocab, sources, documents[:2000]


def test_parameters_are_checked_given_back_and_changed(fitted: Any) -> None:
    _, sources, _ = fitted
    fusion = kuoro.Fusion(sources, hidden_size=8, max_epochs=2)
    params = fusion.get_params()
    assert params["hidden_size"] == 8 and params["backend"] == "kuoro"
    assert fusion.set_params(hidden_size=16) is fusion and fusion.get_params()["hidden_size"] == 16
    with pytest.raises(ConfigError, match="parameter 'hidden_size' must be an integer"):
        kuoro.Fusion(sources, hidden_size=0)
    with pytest.raises(ConfigError, match=r"unknown parameter 'nodes'.*Did you mean 'hidden_size'"):
        kuoro.Fusion(sources, nodes=100)
    with pytest.raises(KuoroError, match="one non-negative weight per source"):
        kuoro.Fusion(sources, weights=[1.0])
    with pytest.raises(KuoroError, match="not fitted yet"):
        kuoro.Fusion(sources).suggest(["x"])


def test_fit_suggest_save_load_and_the_store_is_built_once(fitted: Any, tmp_path: Path) -> None:
    vocab, sources, documents = fitted
    counting = [Counting(source) for source in sources]
    fusion = kuoro.Fusion(counting, max_epochs=3, hidden_size=8, batch_size=128)
    assert fusion.fit(documents[:1200], store=tmp_path / "store") is fusion
    assert [c.texts for c in counting] == [1200, 1200]
    assert fusion.info_.train_documents == 1000 and fusion.info_.validation_documents == 200
    rows = fusion.suggest(["Kivikauden asuinpaikan kaivaukset", ""])
    assert rows.shape == (2, len(vocab)) and rows[0].nnz > 0
    asked = [c.texts for c in counting]

    # Other parameters, the same sources and documents: the store is reused.
    fusion.set_params(hidden_size=4, max_epochs=1).fit(documents[:1200], store=tmp_path / "store")
    assert [c.texts for c in counting] == asked

    # Held-out documents of their own.
    fusion.fit(
        documents[:1200], store=tmp_path / "store", validation_documents=documents[1200:1500]
    )
    assert fusion.info_.validation_documents == 300 and fusion.info_.train_documents == 1200

    fusion.save(tmp_path / "saved")
    loaded = kuoro.Fusion.load(tmp_path / "saved", counting)
    texts = ["rautakauden hautalöydöt", "Kivikauden asuinpaikan kaivaukset"]
    expected, got = fusion.suggest(texts), loaded.suggest(texts)
    assert np.array_equal(expected.indices, got.indices)
    assert np.allclose(expected.data, got.data, atol=1e-6)
    with pytest.raises(ModelError, match="fuses Counting, Counting; given TfidfSource"):
        kuoro.Fusion.load(tmp_path / "saved", sources[:1])


def test_the_fusion_beats_its_sources_on_held_out_documents(fitted: Any, tmp_path: Path) -> None:
    vocab, sources, documents = fitted
    fusion = kuoro.Fusion(sources, max_epochs=5).fit(documents[:1500], store=tmp_path / "s")
    test = documents[1500:2000]
    scores = {
        name: kuoro.evaluate(kuoro.suggestion_batches(model, test), n_concepts=len(vocab))[
            "NDCG@10"
        ]
        for name, model in [("stem", sources[0]), ("words", sources[1]), ("fusion", fusion)]
    }
    assert scores["fusion"] > max(scores["stem"], scores["words"]), scores


def test_cooccurrence_from_a_corpus_path_is_read_saved_and_loaded(
    fitted: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, sources, documents = fitted
    # The sources' training documents (documents.tsv from line 2001) as the corpus to count.
    lines = (SHARED_DATA / "archaeology" / "documents.tsv").read_text("utf-8").splitlines(True)
    corpus = tmp_path / "sources-train.tsv"
    corpus.write_text("".join(lines[2000:]), encoding="utf-8")
    fusion = kuoro.Fusion(sources, max_epochs=2, hidden_size=8, cooccurrence=str(corpus))
    fusion.fit(documents[:600], store=tmp_path / "s")
    table = fusion.cooccurrence_
    assert table is not None and table.documents > 3000
    from kuoro.fusion.candidates import feature_names

    rows = [s.suggest([d.text for d in documents[1500:1510]]) for s in sources]
    candidates = fusion._predictor.candidates(rows)
    assert candidates.features[:, feature_names(2).index("implied")].max() > 0
    fusion.save(tmp_path / "saved")
    again = kuoro.Fusion.load(tmp_path / "saved", sources)
    assert again.cooccurrence_ is not None and again.cooccurrence_.documents == table.documents
    texts = [d.text for d in documents[1500:1520]]
    assert (again.suggest(texts) != fusion.suggest(texts)).nnz == 0

    # "sources" (the default): sources fitted in Python carry no table, and it says so.
    with caplog.at_level("INFO", logger="kuoro.fusion.estimator"):
        plain = kuoro.Fusion(sources, max_epochs=1, hidden_size=8)
        plain.fit(documents[:300], store=tmp_path / "p")
    assert plain.cooccurrence_ is None and "no subject co-occurrence table" in caplog.text
