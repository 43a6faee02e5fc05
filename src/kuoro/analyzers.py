"""Analyzers turn text into normalised tokens: lower-cased words, stemmed or lemmatised."""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import lru_cache

from kuoro.errors import ConfigError

# Words: runs of letters and digits. Hyphens split compounds ("1990-luvulla" → "1990", "luvulla").
_WORD = re.compile(r"[^\W_]+")
MIN_TOKEN_LENGTH = 3
_CACHE_SIZE = 1 << 18  # distinct word forms kept; a big corpus has a few hundred thousand


class Analyzer(ABC):
    """Tokenises text and normalises each word; ``spec`` is how projects.toml names it."""

    spec: str

    def tokens(self, text: str) -> list[str]:
        """The normalised tokens of ``text``: words of at least 3 characters with a letter."""
        normalize = self._normalize_cached
        return [
            normalize(word)
            for word in _WORD.findall(text.lower())
            if len(word) >= MIN_TOKEN_LENGTH and not word.isdigit()
        ]

    def __call__(self, text: str) -> list[str]:
        return self.tokens(text)

    def __repr__(self) -> str:
        return f"<analyzer {self.spec}>"

    @property
    def _normalize_cached(self) -> Callable[[str], str]:
        cached: Callable[[str], str] | None = self.__dict__.get("_cache")
        if cached is None:
            cached = self.__dict__["_cache"] = lru_cache(maxsize=_CACHE_SIZE)(self.normalize)
        return cached

    @abstractmethod
    def normalize(self, word: str) -> str:
        """The normal form of one lower-cased word."""


class SimpleAnalyzer(Analyzer):
    spec = "simple"

    def normalize(self, word: str) -> str:
        return word


class SnowballAnalyzer(Analyzer):
    """Snowball stemming (the ``snowballstemmer`` package), e.g. ``snowball(finnish)``."""

    def __init__(self, language: str) -> None:
        import snowballstemmer

        self.spec = f"snowball({language})"
        self.language = language
        snowballstemmer.stemmer(language)  # an unknown language fails here, not later
        # A stemmer keeps the word it works on in itself: one per thread (the server's
        # threads suggest at the same time).
        self._local = threading.local()

    def normalize(self, word: str) -> str:
        stemmer = getattr(self._local, "stemmer", None)
        if stemmer is None:
            import snowballstemmer

            stemmer = self._local.stemmer = snowballstemmer.stemmer(self.language)
        return str(stemmer.stemWord(word))


class SimplemmaAnalyzer(Analyzer):
    """Dictionary lemmatisation (the ``simplemma`` package), e.g. ``simplemma(fi)``."""

    def __init__(self, language: str) -> None:
        self.spec = f"simplemma({language})"
        self.language = language

    def normalize(self, word: str) -> str:
        import simplemma

        return str(simplemma.lemmatize(word, lang=self.language)).lower()


def analyzer_languages(name: str) -> tuple[str, ...]:
    """The languages an analyzer supports ((), for one that needs none)."""
    if name == "snowball":
        import snowballstemmer

        return tuple(snowballstemmer.algorithms())
    if name == "simplemma":
        from simplemma.strategies.dictionaries.dictionary_factory import SUPPORTED_LANGUAGES

        return tuple(sorted(SUPPORTED_LANGUAGES))
    return ()


def make_analyzer(name: str, language: str | None = None) -> Analyzer:
    """The analyzer ``name`` ("simple", "snowball" or "simplemma") for ``language``."""
    if name == "simple":
        return SimpleAnalyzer()
    if name not in ("snowball", "simplemma"):
        raise ConfigError(f"unknown analyzer '{name}'. Allowed: simple, snowball, simplemma")
    supported = analyzer_languages(name)
    if language not in supported:
        raise ConfigError(
            f"analyzer '{name}' does not support language '{language}'. "
            f"Allowed: {', '.join(supported)}"
        )
    return SnowballAnalyzer(language) if name == "snowball" else SimplemmaAnalyzer(language)
