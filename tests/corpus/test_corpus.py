"""Reading document corpora: every format, bad input, and the real data sets streamed."""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest

from kuoro.corpus.documents import Corpus, CorpusReport, Document
from kuoro.errors import CorpusError
from kuoro.vocab.formats import read_vocabulary
from kuoro.vocab.vocabulary import Vocabulary

from support.data import SHARED_DATA, requires_shared_data

ARCH = SHARED_DATA / "archaeology"
LIBRARIAN = SHARED_DATA / "kirjastonhoitaja"
YSO = SHARED_DATA / "yso-fi"

EX = "http://example.org/"


class FakeVocabulary:
    """Four concepts a, b, c, d with ids 0..3; English labels alpha, beta, gamma, delta."""

    def __init__(self) -> None:
        self.ids = {f"{EX}{name}": i for i, name in enumerate("abcd")}
        self.labels = {"alpha": 0, "beta": 1, "gamma": 2, "delta": 3}
        self.label_languages: list[str | None] = []

    def id_of(self, uri: str) -> int | None:
        return self.ids.get(uri)

    def id_of_label(self, label: str, language: str | None = None) -> int | None:
        self.label_languages.append(language)
        return self.labels.get(label)

    def current(self, concept_id: int) -> tuple[int, ...]:
        return (concept_id,)


@pytest.fixture
def vocab() -> FakeVocabulary:
    return FakeVocabulary()


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="kuoro.corpus.documents")
    return caplog


def write(path: Path, content: str | bytes) -> Path:
    data = content.encode("utf-8") if isinstance(content, str) else content
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def warned(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- documents and reports ---------------------------------------------------------------------


def test_document_normalises_subjects_and_freezes_metadata() -> None:
    metadata = {"year": "2017"}
    doc = Document("text", (3, 1, 3), "d1", metadata)
    metadata["year"] = "1999"
    assert doc.subjects == (1, 3)
    assert doc.metadata == {"year": "2017"}
    with pytest.raises(TypeError):
        doc.metadata["year"] = "x"  # type: ignore[index]
    assert Document("text").metadata == {}
    assert hash(doc) == hash(Document("text", (1, 3), "d1", {"other": "x"}))


def test_summary_names_skips_and_unknown_subjects() -> None:
    report = CorpusReport(documents=2625)
    report.skipped.update({"empty text": 2, "line without a tab": 1})
    report.unknown_subjects.update({f"<{EX}x>": 3, f"<{EX}y>": 1})
    assert report.summary() == (
        "2625 documents read; skipped 3 (2 empty text, 1 line without a tab); "
        f"4 subject references not in the vocabulary (2 distinct, e.g. <{EX}x>, <{EX}y>)"
    )
    assert CorpusReport(documents=1).summary() == "1 document read"
    labels = CorpusReport(documents=1, unknown_subjects=Counter({"tarinat": 1}))
    assert labels.summary().endswith('(1 distinct, e.g. "tarinat")')


# -- short-text TSV ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["docs.tsv", "docs.tsv.gz", "docs.txt"])
def test_tsv_reads_bracketed_and_bare_uris(
    tmp_path: Path, vocab: FakeVocabulary, name: str
) -> None:
    path = write(
        tmp_path / name,
        f"\ufeffFirst title\t<{EX}c> <{EX}a> {EX}c\r\n"
        f"Second\t{EX}d\t{EX}b\n"  # only the first tab separates the text
        "Third\t\n"
        "\n",
    )
    corpus = Corpus(path, vocab)
    docs = list(corpus)
    assert docs == [
        Document("First title", (0, 2)),
        Document("Second", (1, 3)),
        Document("Third", ()),
    ]
    assert corpus.report.documents == 3
    assert corpus.report.documents_without_subjects == 1
    assert not corpus.report.skipped and not corpus.report.unknown_subjects


def test_tsv_for_indexing(tmp_path: Path, vocab: FakeVocabulary) -> None:
    path = write(tmp_path / "new.tsv", f"no subjects here\nwith subjects\t<{EX}b>\n")
    assert [(d.text, d.subjects) for d in Corpus(path, vocab, subjects=False)] == [
        ("no subjects here", ()),
        ("with subjects", (1,)),
    ]
    assert [(d.text, d.subjects) for d in Corpus(path, subjects=False)] == [
        ("no subjects here", ()),
        ("with subjects", ()),
    ]


def test_line_without_a_tab_is_skipped_with_a_warning(
    tmp_path: Path, vocab: FakeVocabulary, warnings: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "train.tsv", f"good\t<{EX}a>\njust text\nalso good\t<{EX}b>\n")
    corpus = Corpus(path, vocab)
    assert [d.text for d in corpus] == ["good", "also good"]
    assert f"{path}:2: line without a tab; skipped" in warned(warnings)
    assert corpus.report.skipped == {"line without a tab": 1}
    assert "skipped 1 (1 line without a tab)" in warned(warnings)[-1]  # the summary


def test_invalid_utf8_skips_only_that_line(
    tmp_path: Path, vocab: FakeVocabulary, warnings: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path / "docs.tsv.gz",
        f"ok\t<{EX}a>\n".encode() + b"caf\xe9\t<http://example.org/b>\n" + "säilyy\t\n".encode(),
    )
    corpus = Corpus(path, vocab)
    assert [d.text for d in corpus] == ["ok", "säilyy"]
    # Line 2 starts at offset 26; its bad byte is the 4th (offsets count from 0, as in xxd).
    assert f"{path}:2: invalid UTF-8 at byte 29 of the file; skipped" in warned(warnings)
    assert corpus.report.skipped == {"invalid UTF-8": 1}


def test_empty_text_is_skipped(
    tmp_path: Path, vocab: FakeVocabulary, warnings: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "docs.tsv", f"  \t<{EX}a>\nreal\t<{EX}b>\n")
    corpus = Corpus(path, vocab)
    assert [d.text for d in corpus] == ["real"]
    assert f"{path}:1: empty text; skipped" in warned(warnings)
    assert corpus.report.skipped == {"empty text": 1}


def test_warnings_are_capped_per_file_and_reason(
    tmp_path: Path, vocab: FakeVocabulary, warnings: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "docs.tsv", "no tab\n" * 25 + "fine\t\n")
    corpus = Corpus(path, vocab)
    assert len(list(corpus)) == 1
    messages = warned(warnings)
    assert sum("line without a tab; skipped" in m for m in messages) == 10
    assert f"{path}: … and 15 more skipped (line without a tab)" in messages
    assert corpus.report.skipped == {"line without a tab": 25}


def test_unknown_subjects_are_counted_not_warned_per_line(
    tmp_path: Path, vocab: FakeVocabulary, warnings: pytest.LogCaptureFixture
) -> None:
    lines = [f"doc {i}\t<{EX}a> <{EX}zzz> {EX}yyy" for i in range(30)]
    path = write(tmp_path / "docs.tsv", "\n".join(lines))
    corpus = Corpus(path, vocab)
    assert all(d.subjects == (0,) for d in corpus)
    report = corpus.report
    assert report.unknown_subjects == {f"<{EX}zzz>": 30, f"<{EX}yyy>": 30}
    assert warned(warnings) == [f"{path}: {report.summary()}"]  # one line for the corpus
    assert "60 subject references not in the vocabulary (2 distinct" in report.summary()


def test_each_iteration_reads_again_with_a_fresh_report(
    tmp_path: Path, vocab: FakeVocabulary
) -> None:
    path = write(tmp_path / "docs.tsv", f"a\t<{EX}a>\nb\t<{EX}zzz>\n")
    corpus = Corpus(path, vocab)
    first = list(corpus)
    assert list(corpus) == first
    assert corpus.report.documents == 2
    assert sum(corpus.report.unknown_subjects.values()) == 1


def test_documents_are_streamed(tmp_path: Path, vocab: FakeVocabulary) -> None:
    path = write(tmp_path / "docs.tsv", "".join(f"doc {i}\t<{EX}a>\n" for i in range(1000)))
    corpus = Corpus(path, vocab)
    assert [d.text for d in islice(corpus, 2)] == ["doc 0", "doc 1"]
    assert corpus.report.documents == 2


def test_several_paths_are_read_in_sequence(tmp_path: Path, vocab: FakeVocabulary) -> None:
    first = write(tmp_path / "one.tsv", f"one\t<{EX}a>\n")
    second = write(tmp_path / "two.jsonl", json.dumps({"text": "two", "subjects": []}) + "\n")
    assert [d.text for d in Corpus([first, str(second), first], vocab)] == ["one", "two", "one"]


# -- unusable input ------------------------------------------------------------------------------


def test_missing_path_fails_at_construction(tmp_path: Path, vocab: FakeVocabulary) -> None:
    good = write(tmp_path / "docs.tsv", "a\t\n")
    missing = tmp_path / "nope.tsv"
    with pytest.raises(CorpusError, match=re.escape(f"{missing}: no such file or directory")):
        Corpus([good, missing], vocab)


def test_corpus_without_usable_documents_fails(tmp_path: Path, vocab: FakeVocabulary) -> None:
    path = write(tmp_path / "x.tsv", "one\ntwo\nthree\n")
    message = f"no usable documents in {path}: skipped 3 (3 line without a tab)"
    with pytest.raises(CorpusError, match=re.escape(message)):
        list(Corpus(path, vocab))


@pytest.mark.parametrize("name", ["empty.tsv", "empty.csv", "empty.jsonl", "empty.tsv.gz"])
def test_empty_file_fails(tmp_path: Path, vocab: FakeVocabulary, name: str) -> None:
    path = write(tmp_path / name, "")
    with pytest.raises(
        CorpusError, match=re.escape(f"no usable documents in {path}: it holds no documents")
    ):
        list(Corpus(path, vocab))


def test_truncated_gzip_fails_naming_the_file(tmp_path: Path, vocab: FakeVocabulary) -> None:
    path = tmp_path / "docs.tsv.gz"
    path.write_bytes(gzip.compress(b"a\t\n" * 1000)[:-20])
    with pytest.raises(CorpusError, match=re.escape(f"{path}: cannot read")):
        list(Corpus(path, vocab))


# -- full-text directories --------------------------------------------------------------------


def test_fulltext_directory(tmp_path: Path, vocab: FakeVocabulary) -> None:
    write(tmp_path / "b.txt", "\ufeffSecond document.\r\nTwo lines.\n")
    write(tmp_path / "b.key", "beta\ngamma\nunheard of\n")
    write(tmp_path / "a.txt", b"First \xff document.")
    write(tmp_path / "a.tsv", f"<{EX}d>\tdelta\n{EX}c\n alpha \tignored\n\n")
    write(tmp_path / "a.key", "beta\n")  # the .tsv wins
    write(tmp_path / "notes.md", "not a document")
    corpus = Corpus(tmp_path, vocab, language="en")
    assert list(corpus) == [
        Document("First \ufffd document.", (0, 2, 3), "a"),
        Document("Second document.\nTwo lines.", (1, 2), "b"),
    ]
    assert corpus.report.unknown_subjects == {"unheard of": 1}
    assert set(vocab.label_languages) == {"en"}


def test_fulltext_document_without_subject_file(
    tmp_path: Path, vocab: FakeVocabulary, warnings: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "a.txt", "has subjects")
    write(tmp_path / "a.key", "alpha\n")
    write(tmp_path / "b.txt", "has none")
    write(tmp_path / "c.txt", "   ")
    write(tmp_path / "c.key", "alpha\n")
    corpus = Corpus(tmp_path, vocab)
    assert [d.document_id for d in corpus] == ["a"]
    messages = warned(warnings)
    assert f"{tmp_path / 'b.txt'}: missing subject file (b.tsv or b.key); skipped" in messages
    assert f"{tmp_path / 'c.txt'}: empty text; skipped" in messages
    assert corpus.report.skipped == {"missing subject file": 1, "empty text": 1}
    # For indexing, subject files are optional.
    assert [d.document_id for d in Corpus(tmp_path, vocab, subjects=False)] == ["a", "b"]


# -- CSV ----------------------------------------------------------------------------------------


def test_csv_columns_and_metadata(tmp_path: Path, vocab: FakeVocabulary) -> None:
    path = write(
        tmp_path / "docs.csv.gz",
        "\ufefftext,subject_uris,document_id,year\r\n"
        f'"Multi\nline, quoted",<{EX}b> {EX}a,d1,2017\r\n'
        f"Plain,,,\r\n"
        f"Short row,<{EX}c>\r\n",
    )
    assert list(Corpus(path, vocab)) == [
        Document("Multi\nline, quoted", (0, 1), "d1", {"year": "2017"}),
        Document("Plain", (), None, {"year": ""}),
        Document("Short row", (2,), None, {"year": ""}),
    ]


def test_csv_line_numbers_count_physical_lines(
    tmp_path: Path, vocab: FakeVocabulary, warnings: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "docs.csv", 'text,subject_uris\n"two\nlines",\n"",<x>\nok,\n')
    assert [d.text for d in Corpus(path, vocab)] == ["two\nlines", "ok"]
    assert f"{path}:4: empty text; skipped" in warned(warnings)


def test_csv_without_text_column_fails(tmp_path: Path, vocab: FakeVocabulary) -> None:
    path = write(tmp_path / "docs.csv", "title,subject_uris\nx,\n")
    with pytest.raises(
        CorpusError, match=re.escape(f"{path}: the CSV header has no 'text' column")
    ):
        list(Corpus(path, vocab))


def test_csv_without_subject_column(tmp_path: Path, vocab: FakeVocabulary) -> None:
    path = write(tmp_path / "docs.csv", "text\nx\n")
    with pytest.raises(CorpusError, match=re.escape("no 'subject_uris' column")):
        list(Corpus(path, vocab))
    assert [d.text for d in Corpus(path, vocab, subjects=False)] == ["x"]


# -- JSON lines -----------------------------------------------------------------------------------


def test_jsonl_documents(tmp_path: Path, vocab: FakeVocabulary) -> None:
    records = [
        {
            "document_id": "j1",
            "text": "Labels and URIs",
            "metadata": {"source": "test", "year": 2017},
            "subjects": [{"uri": f"<{EX}d>"}, {"label": "alpha"}, {"label": "unknown"}],
        },
        {"document_id": 7, "text": "Numeric id", "subjects": []},
    ]
    path = write(tmp_path / "docs.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    corpus = Corpus(path, vocab, language="en")
    assert list(corpus) == [
        Document("Labels and URIs", (0, 3), "j1", {"source": "test", "year": "2017"}),
        Document("Numeric id", (), "7"),
    ]
    assert corpus.report.unknown_subjects == {"unknown": 1}


def test_jsonl_invalid_lines_are_skipped(
    tmp_path: Path, vocab: FakeVocabulary, warnings: pytest.LogCaptureFixture
) -> None:
    lines = [
        '{"text": "fine", "subjects": [{"uri": "http://example.org/a"}]}',
        '{"text": "broken", ',
        '["not", "an", "object"]',
        '{"text": "no subjects"}',
        '{"text": "bad subjects", "subjects": ["http://example.org/a"]}',
        '{"text": "  ", "subjects": []}',
    ]
    path = write(tmp_path / "docs.jsonl", "\n".join(lines))
    corpus = Corpus(path, vocab)
    assert [d.text for d in corpus] == ["fine"]
    messages = warned(warnings)
    assert any(m.startswith(f"{path}:2: invalid JSON (") for m in messages)
    assert f"{path}:3: not a JSON object; skipped" in messages
    assert f"{path}:4: no subjects; skipped" in messages
    assert any(m.startswith(f"{path}:5: invalid subjects") for m in messages)
    assert f"{path}:6: empty text; skipped" in messages
    assert corpus.report.skipped["invalid JSON"] == 1
    assert [d.text for d in Corpus(path, subjects=False)] == ["fine", "no subjects"]


# -- real data -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yso() -> Vocabulary:
    return read_vocabulary(YSO / "vocab.tsv", "fi")


@pytest.fixture(scope="module")
def archaeology() -> Vocabulary:
    return read_vocabulary(ARCH / "yso-archaeology.ttl", "fi")


@requires_shared_data
def test_archaeology_formats_agree(archaeology: Vocabulary) -> None:
    corpora = [Corpus(ARCH / f"documents.{ext}", archaeology) for ext in ("tsv", "csv", "jsonl")]
    count = 0
    refs = 0
    for tsv, csv, jsonl in zip(*corpora, strict=True):
        assert tsv == csv == jsonl
        count += 1
        refs += len(tsv.subjects)
    assert count == 6404
    assert refs == 9060
    for corpus in corpora:
        # The only reference outside the 130-concept vocabulary is a deliberate dummy.
        assert corpus.report.unknown_subjects == {"<http://example.org/dummy_subject>": 2}
        assert corpus.report.documents_without_subjects == 2
    first = next(iter(corpora[0]))
    assert first.text == "Läntinen kristillistymisprosessi vuoden 1000 jälkeen"
    assert [archaeology.uri(i) for i in first.subjects] == ["http://www.yso.fi/onto/yso/p2557"]


@requires_shared_data
def test_archaeology_fulltext_tsv_and_key_subjects(tmp_path: Path, yso: Vocabulary) -> None:
    by_tsv = list(Corpus(ARCH / "fulltext", yso))
    assert len(by_tsv) == 28
    assert sum(len(d.subjects) for d in by_tsv) == 132
    # The same documents with only their .key files: labels looked up in Finnish.
    for path in (ARCH / "fulltext").glob("*"):
        if path.suffix != ".tsv":
            shutil.copy(path, tmp_path)
    key_corpus = Corpus(tmp_path, yso, language="fi")
    by_key = list(key_corpus)
    assert [d.document_id for d in by_key] == [d.document_id for d in by_tsv]
    same = sum(k.subjects == t.subjects for k, t in zip(by_key, by_tsv, strict=True))
    assert same == 27
    # The one difference: a label of an older YSO version ("antiikin mytologia" now).
    assert "mytologia -- antiikki" in key_corpus.report.unknown_subjects


@requires_shared_data
@pytest.mark.parametrize(
    ("split", "count", "refs", "unknown"),
    [("train", 2625, 12422, 10), ("validate", 213, 944, 1), ("test", 312, 1418, 0)],
)
def test_librarian_splits(yso: Vocabulary, split: str, count: int, refs: int, unknown: int) -> None:
    for path in (LIBRARIAN / f"{split}.tsv", LIBRARIAN / "fulltext" / split):
        corpus = Corpus(path, yso)
        assert sum(len(d.subjects) for d in corpus) == refs
        assert corpus.report.documents == count
        assert sum(corpus.report.unknown_subjects.values()) == unknown
        assert not corpus.report.skipped
        assert corpus.report.documents_without_subjects == 0


@requires_shared_data
def test_librarian_splits_read_in_sequence(yso: Vocabulary) -> None:
    corpus = Corpus([LIBRARIAN / "validate.tsv", LIBRARIAN / "fulltext" / "test"], yso)
    docs = list(corpus)
    assert len(docs) == 213 + 312
    assert docs[212].document_id is None and docs[213].document_id is not None


@requires_shared_data
@pytest.mark.slow
def test_finna_titles_streamed_end_to_end(yso: Vocabulary) -> None:
    # Counted independently with: zcat finna-titles.tsv.gz | awk -F'\t' '{n += split($2, a, " ")}'
    # and the unknown ones by checking each against the first column of vocab.tsv.
    corpus = Corpus(YSO / "finna-titles.tsv.gz", yso)
    resolved = sum(len(d.subjects) for d in corpus)
    report = corpus.report
    assert report.documents == 1_055_704
    assert sum(report.unknown_subjects.values()) == 16_342
    assert len(report.unknown_subjects) == 181
    assert resolved + 16_342 == 2_356_865
    assert not report.skipped
