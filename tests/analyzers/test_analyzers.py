"""Analyzers: tokens, stemming and lemmatisation, and languages checked where configured."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from kuoro.analyzers import (
    Analyzer,
    LemmaTable,
    SimplemmaAnalyzer,
    analyzer_languages,
    make_analyzer,
)
from kuoro.config.projects import parse_analyzer
from kuoro.errors import ConfigError

from support.data import SHARED_DATA, requires_shared_data

TEXT = "Kirjastoissa on paljon kirjoja 1990-luvulla, esim. Helsingin kaupunginkirjastossa!"


def test_simple_lowercases_and_drops_short_words_and_numbers() -> None:
    tokens = make_analyzer("simple").tokens(TEXT)
    assert tokens == [
        "kirjastoissa", "paljon", "kirjoja", "luvulla", "esim", "helsingin",
        "kaupunginkirjastossa",
    ]  # fmt: skip


def test_snowball_stems_finnish() -> None:
    tokens = make_analyzer("snowball", "finnish").tokens(TEXT)
    assert tokens[:3] == ["kirjasto", "palj", "kirj"]
    assert "kaupunginkirjasto" in tokens


def test_simplemma_lemmatises_finnish() -> None:
    tokens = make_analyzer("simplemma", "fi").tokens(TEXT)
    assert tokens[:3] == ["kirjasto", "paljon", "kirja"]
    assert "helsinki" in tokens


def test_analyzer_is_callable_and_caches_per_instance() -> None:
    analyzer = make_analyzer("snowball", "finnish")
    assert analyzer("kirjastoissa kirjastoissa") == ["kirjasto", "kirjasto"]
    assert analyzer.spec == "snowball(finnish)" and repr(analyzer) == "<analyzer snowball(finnish)>"


def test_unsupported_language_is_a_clear_error() -> None:
    with pytest.raises(
        ConfigError, match=r"'snowball' does not support language 'klingon'.*finnish"
    ):
        make_analyzer("snowball", "klingon")
    with pytest.raises(ConfigError, match=r"'simplemma' does not support language 'xx'.*\bfi\b"):
        parse_analyzer("simplemma(xx)")
    assert "fi" in analyzer_languages("simplemma") and "finnish" in analyzer_languages("snowball")
    assert parse_analyzer("snowball(finnish)") == ("snowball", "finnish")


def test_snowball_stems_the_same_from_many_threads_at_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    words = [f"{stem}{ending}" for stem in ("talo", "kirja", "kaupunki", "kivi", "sota")
             for ending in ("ssa", "lla", "sta", "jen", "iden", "ihin", "kin")] * 40  # fmt: skip
    expected = [make_analyzer("snowball", "finnish").normalize(w) for w in words]

    def stem_all(analyzer: Analyzer) -> list[str]:
        return [analyzer.normalize(w) for w in words]

    shared = make_analyzer("snowball", "finnish")  # one analyzer, as the server shares it
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(stem_all, [shared] * 16))
    assert all(result == expected for result in results)


# -- simplemma's dictionary as a table of the model's files ---------------------------------


def test_lemma_table_looks_up_like_a_dict(tmp_path: Path) -> None:
    entries = {
        "kirjastoissa": "kirjasto", "kirjoja": "kirja", "Helsingin": "Helsinki",
        "ääniä": "ääni", "plumless": "a", "buckeroo": "b",  # the same CRC-32
    }  # fmt: skip
    assert zlib.crc32(b"plumless") == zlib.crc32(b"buckeroo")
    encoded = {k.encode(): v.encode() for k, v in entries.items()}
    LemmaTable.from_entries("fi", "9.9", encoded).save(tmp_path / "table")
    table = LemmaTable.load(tmp_path / "table")
    assert (table.language, table.version, len(table)) == ("fi", "9.9", 6)
    assert {k: table[k] for k in table} == entries
    assert table.get("plumless") == "a" and table.get("buckeroo") == "b"
    assert table.get("kirjasto") is None and table.get("", "-") == "-"
    assert "ääniä" in table and "helsingin" not in table
    with pytest.raises(KeyError):
        table["plumles"]
    empty = tmp_path / "empty"
    LemmaTable.from_entries("fi", "9.9", {}).save(empty)
    assert len(LemmaTable.load(empty)) == 0 and LemmaTable.load(empty).get("x") is None


@pytest.mark.parametrize("damage", ["missing", "truncated", "unsorted", "meta", "pickle"])
def test_damaged_lemma_table_is_refused(tmp_path: Path, damage: str) -> None:
    encoded = {f"sana{i}".encode(): f"lemma{i % 7}".encode() for i in range(50)}
    path = tmp_path / "table"
    LemmaTable.from_entries("fi", "9.9", encoded).save(path)
    if damage == "missing":
        (path / "order.npy").unlink()
    elif damage == "truncated":
        np.save(path / "keys.npy", np.load(path / "keys.npy")[:-3])
    elif damage == "unsorted":
        np.save(path / "hashes.npy", np.load(path / "hashes.npy")[::-1].copy())
    elif damage == "meta":
        (path / "meta.json").write_text('{"format": "something else"}', encoding="utf-8")
    else:
        np.save(path / "values.npy", np.array([object()]), allow_pickle=True)
    with pytest.raises(ValueError, match=r"lemma table .* is damaged"):
        LemmaTable.load(path)


def test_lemma_table_of_another_simplemma_version_is_not_used(tmp_path: Path) -> None:
    LemmaTable.from_entries("fi", "0.0.1", {b"kirjoja": b"WRONG"}).save(tmp_path / "simplemma-fi")
    analyzer = make_analyzer("simplemma", "fi")
    assert isinstance(analyzer, SimplemmaAnalyzer)
    assert not analyzer.load_files(tmp_path) and analyzer.table is None
    assert analyzer.tokens("kirjoja") == ["kirja"]
    assert not analyzer.load_files(tmp_path / "nothing here")


def test_identity_names_the_library_version() -> None:
    assert make_analyzer("simple").identity == "simple"
    assert make_analyzer("snowball", "finnish").identity.startswith("snowball(finnish) snowball")
    identity = make_analyzer("simplemma", "fi").identity
    assert identity.startswith("simplemma(fi) simplemma ") and identity.split()[-1][0].isdigit()


@requires_shared_data
def test_lemma_table_lemmatises_exactly_as_simplemma(tmp_path: Path) -> None:
    """Every word of the "Ask a librarian" test documents: the same lemma from the model's
    table as from simplemma's own dictionary, and no dictionary loaded to get it."""
    words: set[str] = set()
    with (SHARED_DATA / "kirjastonhoitaja" / "test.tsv").open(encoding="utf-8") as lines:
        for line in lines:
            words.update(make_analyzer("simple").tokens(line.split("\t")[0]))
    words |= {"Kirjastoissa", "KIRJASTO", "e-kirjoja", "1990-luvulla", "kirjasto's", "ß"}
    ordered = sorted(words)
    assert len(ordered) > 10000
    plain = make_analyzer("simplemma", "fi")
    expected = [plain.normalize(w) for w in ordered]
    plain.save_files(tmp_path)
    assert (tmp_path / "simplemma-fi" / "meta.json").is_file()

    loaded = make_analyzer("simplemma", "fi")
    assert isinstance(loaded, SimplemmaAnalyzer) and loaded.load_files(tmp_path)
    assert loaded.table is not None and len(loaded.table) > 1_000_000
    assert [loaded.normalize(w) for w in ordered] == expected
    assert loaded.tokens(TEXT) == plain.tokens(TEXT)
    again = tmp_path / "again"  # a model trained further writes the table it loaded
    again.mkdir()
    loaded.save_files(again)
    assert len(LemmaTable.load(again / "simplemma-fi")) == len(loaded.table)
