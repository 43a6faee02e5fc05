"""Every label and link of a SKOS vocabulary is kept, stored, shown and used by the lexical
source; deprecated concepts are never suggested, and their replacements take their place."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import kuoro
from kuoro.cli import main
from kuoro.corpus.documents import Corpus
from kuoro.project.datadir import DataDir
from kuoro.sources.label_index import FEATURES
from kuoro.vocab.formats import read_vocabulary
from kuoro.vocab.vocabulary import Vocabulary

from support.data import SHARED_DATA, requires_shared_data

ARCH = SHARED_DATA / "archaeology"
TURTLE = """
@prefix skos: <http://www.w3.org/2004/02/skos/core#> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix dct: <http://purl.org/dc/terms/> .
@prefix ex: <http://example.org/> .

ex:boat a skos:Concept ; skos:prefLabel "boat"@en, "vene"@fi ;
    skos:altLabel "vessel"@en, "ship"@en ; skos:hiddenLabel "boaat"@en ;
    skos:notation "B12" ; skos:related ex:sea .
ex:sea a skos:Concept ; skos:prefLabel "sea"@en ; skos:broader ex:water .
ex:water a skos:Concept ; skos:prefLabel "water"@en .
ex:old a skos:Concept ; skos:prefLabel "old boat"@en ; owl:deprecated true ;
    dct:isReplacedBy ex:boat .
"""


@pytest.fixture
def small(tmp_path: Path) -> Vocabulary:
    path = tmp_path / "small.ttl"
    path.write_text(TURTLE, encoding="utf-8")
    return read_vocabulary(path, "en")


def test_every_label_and_link_is_read_and_stored(small: Vocabulary, tmp_path: Path) -> None:
    boat, old, sea, water = (
        small.id_of(f"http://example.org/{n}") for n in ("boat", "old", "sea", "water")
    )
    assert small.alt_labels(boat) == ("ship", "vessel")
    assert small.hidden_labels(boat) == ("boaat",) and small.alt_labels(boat, "fi") == ()
    assert small.notation(boat) == "B12" and small.related(boat) == (sea,)
    assert small.broader(sea) == (water,) and small.narrower(water) == (sea,)
    assert small.deprecated[old] and small.replaced_by(old) == (boat,)
    assert small.current(old) == (boat,) and small.current(sea) == (sea,)
    assert small.label_counts() == {"preferred": 5, "alternative": 2, "hidden": 1}
    small.save(tmp_path / "small.npz")
    again = Vocabulary.load(tmp_path / "small.npz")
    assert again.columns().difference(small.columns()) == ""
    assert again.alt_labels(boat) == small.alt_labels(boat) and again.related(boat) == (sea,)


def test_a_vocabulary_file_of_before_loads_without_the_new_columns(
    small: Vocabulary, tmp_path: Path
) -> None:
    small.save(tmp_path / "new.npz")
    kept = ("meta", "uris", "notations", "deprecated", "broader_indptr", "broader_indices")
    with np.load(tmp_path / "new.npz") as data:
        arrays = {k: data[k] for k in data.files if k in kept or k.startswith("labels_")}
    meta = json.loads(arrays["meta"].tobytes().decode())
    for key in ("alt_languages", "hidden_languages"):
        del meta[key]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez_compressed(tmp_path / "old.npz", **arrays)
    old = Vocabulary.load(tmp_path / "old.npz")
    assert len(old) == len(small) and old.label_counts()["alternative"] == 0
    assert old.broader(small.id_of("http://example.org/sea") or 0) == small.broader(
        small.id_of("http://example.org/sea") or 0
    )
    with zipfile.ZipFile(tmp_path / "new.npz") as stored:
        assert "alt_0.npy" in stored.namelist()


def test_a_replaced_gold_subject_means_its_replacement(small: Vocabulary, tmp_path: Path) -> None:
    corpus = tmp_path / "c.tsv"
    corpus.write_text("an old boat\t<http://example.org/old>\n", encoding="utf-8")
    (document,) = Corpus(corpus, small)
    assert document.subjects == (small.id_of("http://example.org/boat"),)


@requires_shared_data
def test_archaeology_alternative_labels_are_counted_and_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vocab = read_vocabulary(ARCH / "yso-archaeology.ttl", "fi")
    counts = vocab.label_counts()
    assert counts["alternative"] == 98 and counts["hidden"] == 0
    arkeologia = vocab.id_of_label("arkeologia", "fi")
    assert arkeologia is not None and "muinaistutkimus" in vocab.alt_labels(arkeologia, "fi")
    data = ["--datadir", str(tmp_path / "data")]
    assert main([*data, "load-vocab", "arch", str(ARCH / "yso-archaeology.ttl"), "-l", "fi"]) == 0
    capsys.readouterr()
    assert main([*data, "list-vocabs"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:6] == ["name", "concepts", "active", "languages", "labels", "alt"]
    assert row.split()[4:7] == ["390", "98", "0"]


def test_the_lexical_source_matches_alternative_and_hidden_labels_and_notations(
    small: Vocabulary,
) -> None:
    lexical = kuoro.LexicalSource(small, kuoro.make_analyzer("simple"))
    boat = small.id_of("http://example.org/boat")
    old = small.id_of("http://example.org/old")
    for text in ("a vessel at sea", "the boaat", "see class B12 for these"):
        row = lexical.suggest([text])
        assert row[0, boat] > 0, text
    # The deprecated concept is never matched, though "old boat" is its label.
    assert lexical.suggest(["an old boat"])[0, old] == 0
    concepts, features = lexical._features("a vessel at sea")
    sea = small.id_of("http://example.org/sea")
    rows = dict(zip(concepts, features, strict=True))
    assert rows[boat][FEATURES.index("alternative_label")] == 1.0
    assert rows[boat][FEATURES.index("associated_matches")] > 0  # sea, related, matched too
    assert rows[sea][FEATURES.index("alternative_label")] == 0.0


def test_a_deprecated_concept_is_never_suggested_by_a_project(
    small: Vocabulary, tmp_path: Path
) -> None:
    datadir = DataDir(tmp_path / "data")
    datadir.store_vocabulary(small)
    (tmp_path / "projects.toml").write_text(
        '[words]\nlanguage = "en"\nvocab = "small"\nbackend = "tfidf"\nmin_df = 1\n'
    )
    corpus = tmp_path / "train.tsv"
    # The deprecated concept as gold of a training document: tfidf learns it as its replacement.
    corpus.write_text(
        "an old boat on water\t<http://example.org/old>\n"
        "the sea and the water\t<http://example.org/sea>\n"
        "water water\t<http://example.org/water>\n",
        encoding="utf-8",
    )
    project = kuoro.open_project("words", projects=tmp_path / "projects.toml", datadir=datadir)
    project.train([corpus])
    row = project.suggest(["an old boat on water"])
    assert row[0, small.id_of("http://example.org/old")] == 0
    assert row[0, small.id_of("http://example.org/boat")] > 0
