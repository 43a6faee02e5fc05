"""The file source: precomputed suggestions read from a TSV file and kept inside the model."""

from __future__ import annotations

import gzip
import logging
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from kuoro.analyzers import make_analyzer
from kuoro.corpus.documents import Corpus
from kuoro.errors import ModelError, SourceError
from kuoro.project.model_files import read_model, write_model
from kuoro.sources.file import FileSource
from kuoro.vocab.formats import read_vocabulary
from kuoro.vocab.vocabulary import Vocabulary

from support.data import SHARED_DATA, requires_shared_data

ARCH = SHARED_DATA / "archaeology"
YSO = "http://www.yso.fi/onto/yso/"

pytestmark = requires_shared_data


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return read_vocabulary(ARCH / "yso-archaeology.ttl", "fi")


@pytest.fixture(scope="module")
def gold(vocab: Vocabulary) -> list[tuple[int, ...]]:
    """Subjects of the first 300 archaeology documents; their ids are their ordinals 1..300."""
    return [doc.subjects for doc in islice(Corpus(ARCH / "documents.tsv", vocab), 300)]


@pytest.fixture(scope="module")
def suggestions_file(tmp_path_factory: pytest.TempPathFactory, vocab: Vocabulary, gold) -> Path:
    """What an external system might have written: each document's gold subjects first (with
    bare and bracketed URIs), then two wrong concepts with lower scores."""
    path = tmp_path_factory.mktemp("file-source") / "suggestions.tsv"
    lines = ["document_id\turi\tscore"]
    for ordinal, subjects in enumerate(gold, start=1):
        for rank, concept in enumerate(subjects):
            uri = vocab.uri(concept)
            lines.append(f"{ordinal}\t{f'<{uri}>' if rank % 2 else uri}\t{0.9 - rank * 0.01}")
        for offset, score in ((1, 0.4), (2, 0.2)):
            wrong = (subjects[0] + offset) % len(vocab)
            lines.append(f"{ordinal}\t{vocab.uri(wrong)}\t{score}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make(vocab: Vocabulary, path: Path, top_k: int = 100) -> FileSource:
    return FileSource(vocab, make_analyzer("simple"), top_k=top_k, path=str(path))


def ids_of(n: int) -> list[str]:
    return [str(i) for i in range(1, n + 1)]


def test_round_trip_puts_the_gold_subjects_first(vocab, gold, suggestions_file):
    source = make(vocab, suggestions_file).fit([])
    result = source.suggest([""] * len(gold), ids_of(len(gold)))
    assert result.shape == (len(gold), len(vocab))
    assert result.dtype == np.float32
    assert len(source.document_ids_) == len(gold)
    assert source.skipped_ == {"bad_lines": 0, "unknown_uri_suggestions": 0}
    for row, subjects in enumerate(gold):
        scores = result[row].toarray().ravel()
        top = np.argsort(-scores)[: len(subjects)]
        assert set(top) == set(subjects)
        wrong = {(subjects[0] + offset) % len(vocab) for offset in (1, 2)}
        assert result[row].nnz == len(set(subjects) | wrong)
    assert result.data.min() > 0 and result.data.max() <= 1


def test_top_k_and_document_order(vocab, gold, suggestions_file):
    source = make(vocab, suggestions_file, top_k=1).fit([])
    ids = ["3", "1", "2"]
    result = source.suggest(["a", "b", "c"], ids)
    assert np.diff(result.indptr).tolist() == [1, 1, 1]
    for row, doc_id in enumerate(ids):
        # Each document's best suggestion is its first gold subject (score 0.9).
        assert result[row].indices.tolist() == [gold[int(doc_id) - 1][0]]
        assert result[row].data.tolist() == pytest.approx([0.9])


def test_missing_ids_give_empty_rows_and_one_warning(vocab, suggestions_file, caplog):
    source = make(vocab, suggestions_file).fit([])
    with caplog.at_level(logging.WARNING, logger="kuoro.sources.file"):
        result = source.suggest(["x", "y", "z", "w"], ["1", None, "no-such-doc", "2"])
    assert np.diff(result.indptr).tolist()[1:3] == [0, 0]
    assert result[0].nnz > 0 and result[3].nnz > 0
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "2 of 4 documents" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kuoro.sources.file"):
        assert source.suggest(["x", "y"]).nnz == 0
    assert "2 of 2 documents" in caplog.text
    assert source.suggest([], []).shape == (0, len(vocab))


def test_bad_lines_are_reported_with_file_and_line(vocab, tmp_path, caplog):
    uri = f"{YSO}p4624"
    assert vocab.id_of(uri) is not None
    path = tmp_path / "bad.tsv"
    path.write_text(
        f"a\t{uri}\t0.5\n"  # 1: good
        f"a\t{uri}\n"  # 2: two fields
        f"b\t{uri}\tmuch\n"  # 3: not a number
        f"c\t{uri}\tnan\n"  # 4: not finite
        "\n"  # 5: blank, ignored
        f"\t{uri}\t0.5\n"  # 6: no document id
        f"d\t{uri}\t0.7\textra\n"  # 7: four fields
        f"e\t<{uri}>\t1.5\n"  # 8: good, score clipped to 1
        f"f\t{uri}\t-0.3\n",  # 9: good, non-positive score dropped
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="kuoro.sources.file"):
        source = make(vocab, path).fit([])
    for lineno in (2, 3, 4, 6, 7):
        assert f"{path}:{lineno}:" in caplog.text
    for lineno in (1, 5, 8, 9):
        assert f"{path}:{lineno}:" not in caplog.text
    assert source.skipped_["bad_lines"] == 5
    result = source.suggest(["", "", ""], ["a", "e", "f"])
    assert result[0].data.tolist() == [0.5]
    assert result[1].data.tolist() == [1.0]
    assert result[2].nnz == 0  # known document, nothing above zero


def test_many_bad_lines_are_summarised(vocab, tmp_path, caplog):
    path = tmp_path / "bad.tsv"
    path.write_text("garbage\n" * 50 + f"a\t{YSO}p4624\t0.5\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="kuoro.sources.file"):
        source = make(vocab, path).fit([])
    assert len(caplog.records) == 11
    assert "50 bad lines skipped in all" in caplog.records[-1].getMessage()
    assert source.suggest(["t"], ["a"]).nnz == 1


def test_unknown_uris_are_counted_and_reported_once(vocab, tmp_path, caplog):
    path = tmp_path / "unknown.tsv"
    known = vocab.uri(5)
    rows = [f"d{i}\thttp://example.org/c{i % 3}\t0.5" for i in range(10)]
    path.write_text("\n".join([*rows, f"d0\t{known}\t0.25"]) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="kuoro.sources.file"):
        source = make(vocab, path).fit([])
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "10 suggestions of 3 URIs not in vocabulary" in message
    assert source.skipped_["unknown_uri_suggestions"] == 10
    result = source.suggest(["", ""], ["d0", "d1"])
    assert result[0].indices.tolist() == [5] and result[1].nnz == 0


def test_duplicates_keep_the_best_score_and_gzip_is_read(vocab, tmp_path):
    path = tmp_path / "dup.tsv.gz"
    a, b = vocab.uri(1), vocab.uri(2)
    text = f"x\t{a}\t0.3\nx\t<{a}>\t0.8\nx\t{b}\t0.5\nx\t{a}\t0.1\n"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(text)
    result = make(vocab, path).fit([]).suggest(["t"], ["x"])
    assert result.indices.tolist() == [1, 2]
    assert result.data.tolist() == pytest.approx([0.8, 0.5])


def test_save_load_gives_identical_suggestions_without_the_file(
    vocab, gold, suggestions_file, tmp_path
):
    copy = tmp_path / "copy.tsv"
    copy.write_bytes(suggestions_file.read_bytes())
    source = make(vocab, copy, top_k=3).fit([])
    write_model(tmp_path / "proj", {"backend": "file"}, source.save_state)
    copy.unlink()  # the model holds its own copy
    version_dir, _ = read_model(tmp_path / "proj", "proj")
    loaded = make(vocab, copy, top_k=3)
    loaded.load_state(version_dir)
    ids = [*ids_of(len(gold)), "unknown"]
    before = source.suggest([""] * len(ids), ids)
    after = loaded.suggest([""] * len(ids), ids)
    assert (before != after).nnz == 0
    assert before.dtype == after.dtype == np.float32
    assert loaded.document_ids_ == source.document_ids_


def test_damaged_model_files_give_model_errors(vocab, suggestions_file, tmp_path):
    source = make(vocab, suggestions_file).fit([])
    write_model(tmp_path / "proj", {"backend": "file"}, source.save_state)
    version_dir, _ = read_model(tmp_path / "proj", "proj")
    npz = version_dir / "suggestions.npz"
    data = npz.read_bytes()

    # Truncated: the model directory's size check catches it before the source reads it.
    npz.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"suggestions\.npz is damaged"):
        read_model(tmp_path / "proj", "proj")
    with pytest.raises(ModelError, match=r"model file .*suggestions.npz is damaged"):
        make(vocab, suggestions_file).load_state(version_dir)

    # Same size, bytes changed in the middle: the checksum tells, and so does the source.
    broken = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 64):
        broken[i] ^= 0xFF
    npz.write_bytes(bytes(broken))
    with pytest.raises(ModelError, match=r"suggestions\.npz is damaged \(its contents changed"):
        read_model(tmp_path / "proj", "proj")
    with pytest.raises(ModelError, match=r"model file .*suggestions.npz is damaged"):
        make(vocab, suggestions_file).load_state(version_dir)

    npz.write_bytes(data)
    (version_dir / "file-source.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match=r"file-source.json is damaged"):
        make(vocab, suggestions_file).load_state(version_dir)


def test_model_for_a_larger_vocabulary_is_rejected(vocab, suggestions_file, tmp_path):
    source = make(vocab, suggestions_file).fit([])
    source.save_state(tmp_path)
    smaller = Vocabulary("small", vocab.uris[:10], {"fi": [""] * 10})
    with pytest.raises(ModelError, match="outside the vocabulary of 10 concepts"):
        make(smaller, suggestions_file).load_state(tmp_path)


def test_missing_path_and_unfitted_use_are_clear_errors(vocab, tmp_path):
    with pytest.raises(SourceError, match="parameter 'path' is required"):
        FileSource(vocab, make_analyzer("simple")).fit([])
    with pytest.raises(SourceError, match="no such file"):
        make(vocab, tmp_path / "nowhere.tsv").fit([])
    with pytest.raises(SourceError, match="not trained"):
        make(vocab, tmp_path / "nowhere.tsv").suggest(["t"], ["1"])
    assert FileSource.needs_training
    assert make(vocab, tmp_path / "x.tsv", top_k=7).params() == {
        "top_k": 7,
        "path": str(tmp_path / "x.tsv"),
    }
