"""The lexical source: label matching, untrained and trained ranking, storage, damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from kuoro.analyzers import SimpleAnalyzer, SimplemmaAnalyzer, make_analyzer
from kuoro.corpus.documents import Corpus, Document
from kuoro.errors import ModelError, SourceError
from kuoro.project.model_files import read_model, write_model
from kuoro.sources.label_index import FEATURES, LabelIndex, label_texts
from kuoro.sources.lexical import LexicalSource
from kuoro.vocab.formats import read_vocabulary
from kuoro.vocab.vocabulary import Vocabulary

from support.data import SHARED_DATA, requires_shared_data
from support.sources import Split, archaeology_split

ARCH = SHARED_DATA / "archaeology"
SIMPLE = make_analyzer("simple")


def small_vocabulary() -> Vocabulary:
    labels = ["rauniot", "linnan rauniot", "kuusi (puu)", "kuusi (luku)", "linnat", "vanha"]
    return Vocabulary(
        "small",
        [f"http://example.org/c{i}" for i in range(len(labels))],
        {"fi": labels},
        deprecated=[False, False, False, False, False, True],
        broader=[[4], [0], [], [], [], []],
    )


TEXT = ["linnan", "rauniot", "ja", "kuusi", "vanhaa", "linnanrauniot"]


def top(matrix: sp.csr_matrix, row: int, k: int) -> list[int]:
    data = matrix.getrow(row)
    return [int(c) for c in data.indices[np.argsort(-data.data, kind="stable")][:k]]


# -- matching -------------------------------------------------------------------------------


def test_index_matches_phrases_qualified_labels_and_compounds() -> None:
    vocab = small_vocabulary()
    index = LabelIndex(vocab, SIMPLE)
    assert ("kuusi",) in index.phrases and index.phrases[("kuusi",)] == (2, 3)
    assert ("vanha",) not in index.phrases, "deprecated concepts are not matched"

    concepts, rows = index.features(TEXT)
    feature = {name: i for i, name in enumerate(FEATURES)}
    got = dict(zip(concepts, rows, strict=True))
    assert set(got) == {0, 1, 2, 3}
    # "rauniot" occurs inside the longer match "linnan rauniot" and as a compound's last part.
    assert got[0][feature["overlapped"]] == 1.0
    assert got[0][feature["compound_occurrences"]] == pytest.approx(np.log(2))
    assert got[1][feature["extra_label_tokens"]] == 1
    assert got[1][feature["overlapped"]] == 0.0
    assert got[1][feature["related_matches"]] == pytest.approx(np.log(2)), "broader 0 matches"
    assert got[2][feature["ambiguity"]] == pytest.approx(np.log(2)), "two senses of kuusi"
    assert got[1][feature["first_position"]] == 0.0
    concepts, rows = index.features([])
    assert concepts == [] and rows.shape == (0, len(FEATURES))


def test_untrained_source_ranks_unambiguous_matches_first() -> None:
    source = LexicalSource(small_vocabulary(), SIMPLE, top_k=3)
    result = source.suggest(["kuusi linnan rauniot, linnan rauniot", "", "ei mitään"])
    assert result.shape == (3, 6) and result.dtype == np.float32
    assert top(result, 0, 1) == [1]
    assert result.getrow(0).nnz == 3, "top_k caps the row"
    assert result.getrow(1).nnz == 0 and result.getrow(2).nnz == 0
    assert result.data.min() > 0 and result.data.max() <= 1


def test_training_without_subjects_fails() -> None:
    source = LexicalSource(small_vocabulary(), SIMPLE)
    with pytest.raises(SourceError, match="no training document"):
        source.fit([Document("linnan rauniot")])


def test_training_without_matches_keeps_the_default_weights() -> None:
    source = LexicalSource(small_vocabulary(), SIMPLE)
    before = source.weights_.copy()
    source.fit([Document("ei osumia", (1,))])
    assert np.array_equal(source.weights_, before)


def test_max_train_documents_limits_training() -> None:
    docs = [Document("linnan rauniot kuusi", (1,)), Document("kuusi", (2,))] * 10
    source = LexicalSource(small_vocabulary(), SIMPLE, max_train_documents=3).fit(docs)
    assert source.matches_.sum() == 4 + 2 + 4  # the first three documents' matches
    assert source.params() == {"top_k": 100, "max_train_documents": 3}


# -- real data --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def archaeology() -> Split:
    return archaeology_split(1000, shuffle=False)


def top3_hit_rate(result: sp.csr_matrix, docs: list[Document]) -> float:
    """Of the documents with any suggestion, how many have a gold subject in the top 3."""
    suggested = [i for i in range(len(docs)) if result.getrow(i).nnz]
    hits = sum(bool(set(top(result, i, 3)) & set(docs[i].subjects)) for i in suggested)
    return hits / len(suggested)


@requires_shared_data
def test_untrained_and_trained_on_archaeology(
    archaeology: tuple[Vocabulary, list[Document], list[Document]], tmp_path: Path
) -> None:
    vocab, train, test = archaeology
    analyzer = make_analyzer("snowball", "finnish")
    texts = [d.text for d in test]
    source = LexicalSource(vocab, analyzer, top_k=10)
    untrained = source.suggest(texts)
    # Measured 0.63: a title rarely names more than one vocabulary label.
    assert top3_hit_rate(untrained, test) > 0.5
    assert (untrained.getnnz(axis=1) > 0).mean() > 0.15, "a label occurs in about a fifth"

    source.fit(train)
    trained = source.suggest(texts)
    assert top3_hit_rate(trained, test) >= top3_hit_rate(untrained, test) - 0.02
    assert not np.array_equal(source.weights_[:-1], np.zeros(len(FEATURES)))
    assert trained.getnnz(axis=1).max() <= 10
    assert trained.data.min() > 0 and trained.data.max() <= 1

    def write_files(directory: Path) -> None:
        source.save_state(directory)

    project = tmp_path / "lexical"
    write_model(project, {"backend": "lexical"}, write_files)
    version_dir, _ = read_model(project, "lexical")
    loaded = LexicalSource(vocab, analyzer, top_k=10)
    loaded.load_state(version_dir)
    again = loaded.suggest(texts)
    assert (again != trained).nnz == 0, "save → load gives identical suggestions"


@requires_shared_data
def test_untrained_ranks_gold_subjects_of_full_texts(
    archaeology: tuple[Vocabulary, list[Document], list[Document]],
) -> None:
    vocab = archaeology[0]
    docs = list(Corpus(ARCH / "fulltext", vocab, language="fi"))
    result = LexicalSource(vocab, make_analyzer("simplemma", "fi")).suggest([d.text for d in docs])
    # Measured 24 of 28 (snowball, whose stems miss more inflected forms: 15 of 28).
    hits = sum(bool(set(top(result, i, 3)) & set(d.subjects)) for i, d in enumerate(docs))
    assert hits >= 20


@requires_shared_data
def test_works_with_a_tsv_vocabulary(tmp_path: Path) -> None:
    tsv = tmp_path / "vocab.tsv"
    tsv.write_text(
        "<http://www.yso.fi/onto/yso/p1265>\tarkeologia\n"
        "<http://www.yso.fi/onto/yso/p8869>\tkivikausi\n"
        "<http://www.yso.fi/onto/yso/p14173>\tkaivaukset\n",
        encoding="utf-8",
    )
    vocab = read_vocabulary(tsv, "fi")
    source = LexicalSource(vocab, make_analyzer("simplemma", "fi"))
    result = source.suggest(["Kivikauden asuinpaikan kaivauksilla löytyi paljon"])
    assert set(result.indices.tolist()) == {1, 2}


# -- storage ----------------------------------------------------------------------------------


def trained_small() -> LexicalSource:
    docs = [
        Document("linnan rauniot ja kuusi", (1,)),
        Document("kuusi ja linnat", (2, 4)),
        Document("rauniot", (0,)),
        Document("kuusi linnat", (3,)),
    ] * 3
    return LexicalSource(small_vocabulary(), SIMPLE).fit(docs)


def test_vocabulary_grown_after_training_still_loads(tmp_path: Path) -> None:
    source = trained_small()
    source.save_state(tmp_path)
    old = small_vocabulary()
    grown = Vocabulary(
        "small",
        [*old.uris, "http://example.org/new"],
        {"fi": [*(old.label(i) or "" for i in range(len(old))), "tornit"]},
    )
    loaded = LexicalSource(grown, SIMPLE)
    loaded.load_state(tmp_path)
    assert loaded.matches_.shape == (7,)
    result = loaded.suggest(["linnan tornit ja rauniot"])
    assert 6 in result.indices and result.shape == (1, 7)


class CountingAnalyzer(SimpleAnalyzer):
    """The simple analyzer, counting the texts it analyzes; a ``version`` goes into its
    identity, as a library's version does."""

    def __init__(self, version: str | None = None) -> None:
        self.version = version
        self.texts = 0

    @property
    def identity(self) -> str:
        return "simple" if self.version is None else f"simple {self.version}"

    def tokens(self, text: str) -> list[str]:
        self.texts += 1
        return super().tokens(text)


def same_index(a: LabelIndex, b: LabelIndex) -> bool:
    def parts(index: LabelIndex) -> tuple[object, ...]:
        return (index.phrases, index.phrase_kinds, index.heads, index.lengths, index.family)

    return parts(a) == parts(b)


TEXTS = ["linnan rauniot ja kuusi", "kuusi linnat, linnanrauniot", "rauniot", "", "tornit"]


def test_loading_uses_the_stored_label_index(tmp_path: Path) -> None:
    source = trained_small()
    source.save_state(tmp_path)
    assert (tmp_path / "labels.npz").is_file()
    analyzer = CountingAnalyzer()
    loaded = LexicalSource(small_vocabulary(), analyzer)
    loaded.load_state(tmp_path)
    assert analyzer.texts == 0, "no label is analyzed again"
    assert loaded.index.labels_analyzed == 0
    assert same_index(loaded.index, LabelIndex(small_vocabulary(), SIMPLE))
    assert (loaded.suggest(TEXTS) != source.suggest(TEXTS)).nnz == 0


def test_model_without_stored_label_index_still_loads(tmp_path: Path) -> None:
    source = trained_small()
    source.save_state(tmp_path)
    (tmp_path / "labels.npz").unlink()  # as an older Kuoro wrote it
    analyzer = CountingAnalyzer()
    loaded = LexicalSource(small_vocabulary(), analyzer)
    loaded.load_state(tmp_path)
    assert analyzer.texts == loaded.index.labels_analyzed == 4, "every active label, once each"
    assert (loaded.suggest(TEXTS) != source.suggest(TEXTS)).nnz == 0


def test_labels_changed_since_training_are_analyzed_again(tmp_path: Path) -> None:
    trained_small().save_state(tmp_path)
    old = small_vocabulary()
    labels = [old.label(i) or "" for i in range(len(old))]
    labels[1] = "linnan tornit"  # relabelled
    changed = Vocabulary(
        "small", [*old.uris, "http://example.org/new"], {"fi": [*labels, "tornit"]},
        deprecated=[False] * 5 + [True, False], broader=[[4], [0], [], [], [], [], []],
    )  # fmt: skip
    analyzer = CountingAnalyzer()
    loaded = LexicalSource(changed, analyzer)
    loaded.load_state(tmp_path)
    assert analyzer.texts == 2, "only the new and the changed label"
    assert same_index(loaded.index, LabelIndex(changed, SIMPLE))
    assert set(loaded.suggest(["linnan tornit"]).indices) == {1, 6}
    assert {text for _, _, text in label_texts(changed)} <= set(loaded.index.analyzed)


def test_label_index_of_another_analyzer_version_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    docs = [Document("linnan rauniot ja kuusi", (1,)), Document("kuusi", (2,))] * 3
    LexicalSource(small_vocabulary(), CountingAnalyzer("1")).fit(docs).save_state(tmp_path)
    analyzer = CountingAnalyzer("2")
    loaded = LexicalSource(small_vocabulary(), analyzer)
    loaded.load_state(tmp_path)
    assert analyzer.texts == 4
    assert "analyzed by simple 1, not by simple 2" in caplog.text
    same = CountingAnalyzer("1")
    LexicalSource(small_vocabulary(), same).load_state(tmp_path)
    assert same.texts == 0


@pytest.mark.parametrize("damage", ["garbage", "token counts", "format"])
def test_damaged_label_index_gives_model_error(tmp_path: Path, damage: str) -> None:
    trained_small().save_state(tmp_path)
    path = tmp_path / "labels.npz"
    if damage == "garbage":
        path.write_bytes(b"\x00not a model" * 40)
    else:
        with np.load(path) as data:
            arrays = dict(data)
        if damage == "token counts":
            arrays["token_counts"] = arrays["token_counts"] + 1
        else:
            arrays["meta"] = np.frombuffer(b'{"format": "kuoro-lexical-labels-9"}', np.uint8)
        np.savez(path, **arrays)
    with pytest.raises(ModelError, match=r"model file .*labels\.npz is damaged"):
        LexicalSource(small_vocabulary(), SIMPLE).load_state(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing", "wrong shape"])
def test_damaged_state_gives_model_error(tmp_path: Path, damage: str) -> None:
    source = trained_small()
    source.save_state(tmp_path)
    path = tmp_path / "lexical.npz"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a model" * 40)
    elif damage == "missing":
        path.unlink()
    else:
        source.weights_ = np.zeros(3)
        source.save_state(tmp_path)
    fresh = LexicalSource(small_vocabulary(), SIMPLE)
    with pytest.raises(ModelError, match=r"model file .*lexical\.npz is (damaged|missing)"):
        fresh.load_state(tmp_path)


def test_object_arrays_are_not_loaded(tmp_path: Path) -> None:
    source = trained_small()
    source.save_state(tmp_path)
    with np.load(tmp_path / "lexical.npz") as data:
        arrays = dict(data)
    arrays["weights"] = np.array([object()] * (len(FEATURES) + 1), dtype=object)
    np.savez(tmp_path / "lexical.npz", **arrays)
    with pytest.raises(ModelError, match="damaged"):
        LexicalSource(small_vocabulary(), SIMPLE).load_state(tmp_path)


# -- stored index and lemma table on real data -------------------------------------------------


def same_suggestions_stored_and_rebuilt(
    vocab: Vocabulary, texts: list[str], train: list[Document], tmp_path: Path
) -> None:
    """A simplemma source trained and saved, loaded as saved (stored labels and simplemma's
    dictionary as a table) and as an older Kuoro saved it (neither): identical suggestions."""
    source = LexicalSource(vocab, make_analyzer("simplemma", "fi"), top_k=20).fit(train)
    expected = source.suggest(texts)
    assert expected.nnz > len(texts) / 4, "enough matches to compare"
    source.save_state(tmp_path)
    assert source.library_versions()["simplemma"][0].isdigit()

    analyzer = make_analyzer("simplemma", "fi")
    stored = LexicalSource(vocab, analyzer, top_k=20)
    stored.load_state(tmp_path)
    assert isinstance(analyzer, SimplemmaAnalyzer) and analyzer.table is not None
    assert stored.index.labels_analyzed == 0
    assert (stored.suggest(texts) != expected).nnz == 0

    (tmp_path / "labels.npz").unlink()
    for path in (tmp_path / "simplemma-fi").iterdir():
        path.unlink()
    (tmp_path / "simplemma-fi").rmdir()
    analyzer = make_analyzer("simplemma", "fi")
    rebuilt = LexicalSource(vocab, analyzer, top_k=20)
    rebuilt.load_state(tmp_path)
    assert isinstance(analyzer, SimplemmaAnalyzer) and analyzer.table is None
    assert rebuilt.index.labels_analyzed > 0.9 * vocab.active_count
    assert (rebuilt.suggest(texts) != expected).nnz == 0


def librarian_texts(name: str) -> list[str]:
    with (SHARED_DATA / "kirjastonhoitaja" / name).open(encoding="utf-8") as lines:
        return [line.split("\t")[0] for line in lines]


@requires_shared_data
def test_stored_index_gives_identical_suggestions_on_archaeology(
    archaeology: Split, tmp_path: Path
) -> None:
    vocab, train, test = archaeology
    texts = [d.text for d in test] + librarian_texts("test.tsv")
    same_suggestions_stored_and_rebuilt(vocab, texts, train[:2000], tmp_path)


@pytest.mark.slow
@requires_shared_data
def test_stored_index_gives_identical_suggestions_on_yso(tmp_path: Path) -> None:
    vocab = read_vocabulary(SHARED_DATA / "yso-fi" / "vocab.tsv", "fi")
    train = list(Corpus(SHARED_DATA / "kirjastonhoitaja" / "train.tsv", vocab))
    texts = librarian_texts("test.tsv") + librarian_texts("validate.tsv")
    same_suggestions_stored_and_rebuilt(vocab, texts, train, tmp_path)
