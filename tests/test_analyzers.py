"""Analyzers: tokens, stemming and lemmatisation, and languages checked where configured."""

from __future__ import annotations

import pytest

from kuoro.analyzers import Analyzer, analyzer_languages, make_analyzer
from kuoro.config import parse_analyzer
from kuoro.errors import ConfigError

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
