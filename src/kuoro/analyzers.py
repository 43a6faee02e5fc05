"""Analyzers turn text into normalised tokens: lower-cased words, stemmed or lemmatised.

A model may keep files that make its analyzer start faster (:meth:`Analyzer.save_files`):
simplemma's dictionary for one language takes seconds to decode from the package's compressed
file on every start, so a :class:`LemmaTable` of it is written with the model once and then
mapped from disk in milliseconds. The lemmas are the same: simplemma's own lemmatizer runs
over the same dictionary entries, only stored in another form.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from functools import cache, lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from kuoro.errors import ConfigError

log = logging.getLogger(__name__)

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
    def identity(self) -> str:
        """What a word's normal form depends on: the spec and, where it matters, the library
        version. Stored analyzed text (e.g. a label index) is valid only for the same identity."""
        return self.spec

    def save_files(self, directory: Path) -> None:  # noqa: B027 (optional, none by default)
        """Write files into ``directory`` that make :meth:`load_files` start this analyzer
        faster; none by default."""

    def load_files(self, directory: Path) -> bool:
        """Use the files :meth:`save_files` wrote into ``directory``, if they are there and fit
        this analyzer; whether they were used. The normal forms stay the same either way."""
        return False

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

    @property
    def identity(self) -> str:
        return f"{self.spec} snowballstemmer {_distribution_version('snowballstemmer')}"

    def normalize(self, word: str) -> str:
        stemmer = getattr(self._local, "stemmer", None)
        if stemmer is None:
            import snowballstemmer

            stemmer = self._local.stemmer = snowballstemmer.stemmer(self.language)
        return str(stemmer.stemWord(word))


class SimplemmaAnalyzer(Analyzer):
    """Dictionary lemmatisation (the ``simplemma`` package), e.g. ``simplemma(fi)``.

    Without :meth:`load_files` it lemmatises as ``simplemma.lemmatize`` does, which decodes the
    language's whole dictionary on first use (seconds); with them, simplemma's lemmatizer looks
    the words up in a :class:`LemmaTable` mapped from the model's files instead.
    """

    def __init__(self, language: str) -> None:
        self.spec = f"simplemma({language})"
        self.language = language
        self.table: LemmaTable | None = None  # the dictionary, once loaded from a model's files
        self._lemmatizer: Any = None  # simplemma's Lemmatizer over the table

    @property
    def identity(self) -> str:
        return f"{self.spec} simplemma {simplemma_version()}"

    def normalize(self, word: str) -> str:
        lemmatizer = self._lemmatizer
        if lemmatizer is not None:
            return str(lemmatizer.lemmatize(word, self.language)).lower()
        import simplemma

        return str(simplemma.lemmatize(word, lang=self.language)).lower()

    def save_files(self, directory: Path) -> None:
        table = self.table if self.table is not None else LemmaTable.from_simplemma(self.language)
        table.save(directory / self._table_name)

    def load_files(self, directory: Path) -> bool:
        path = directory / self._table_name
        if not path.is_dir():
            return False
        table = LemmaTable.load(path)
        if table.version != simplemma_version() or table.language != self.language:
            log.info(
                "%s: %s holds the dictionary of simplemma %s (%s), not of the installed %s; "
                "using simplemma's own",
                self.spec, path, table.version, table.language, simplemma_version(),
            )  # fmt: skip
            return False
        self.use_table(table)
        return True

    def use_table(self, table: LemmaTable) -> None:
        """Lemmatise with simplemma's default strategy over ``table`` from now on."""
        from simplemma import Lemmatizer
        from simplemma.strategies import DefaultStrategy

        strategy = DefaultStrategy(dictionary_factory=_TableFactory(table))
        self._lemmatizer = Lemmatizer(lemmatization_strategy=strategy)
        self.table = table

    @property
    def _table_name(self) -> str:
        return f"simplemma-{self.language}"


@cache
def _distribution_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def simplemma_version() -> str:
    """The installed simplemma's version (its dictionaries come with it)."""
    import simplemma

    return str(simplemma.__version__)


class _TableFactory:
    """A simplemma dictionary factory that hands out one language's :class:`LemmaTable`."""

    def __init__(self, table: LemmaTable) -> None:
        self.table = table

    def get_dictionary(self, lang: str) -> Mapping[str, str]:
        if lang != self.table.language:
            raise ValueError(f"Unsupported language: {lang}")
        return self.table


_TABLE_FORMAT = "kuoro-lemma-table-1"
_TABLE_ARRAYS = ("hashes", "order", "key_ends", "keys", "value_ids", "value_ends", "values")


class LemmaTable(Mapping[str, str]):
    """simplemma's dictionary of one language (word form → lemma) as flat arrays on disk.

    The keys' CRC-32 values are kept sorted (``hashes``, with ``order`` saying whose each is),
    so that a lookup is one binary search over a memory-mapped array and a comparison of the
    key's bytes; the lemmas are stored once each. Files: ``meta.json`` and one ``.npy`` file
    per array (no pickle), mapped read-only, so processes that load the same model share the
    pages.
    """

    def __init__(self, language: str, version: str, arrays: Mapping[str, np.ndarray]) -> None:
        self.language = language
        self.version = version
        self._arrays = dict(arrays)
        # memoryviews: indexing one gives a plain int or bytes, much faster than numpy scalars.
        self._hashes = np.ascontiguousarray(arrays["hashes"], np.uint32).data
        self._order = np.ascontiguousarray(arrays["order"], np.uint32).data
        self._key_ends = np.ascontiguousarray(arrays["key_ends"]).data
        self._keys = np.ascontiguousarray(arrays["keys"], np.uint8).data
        self._value_ids = np.ascontiguousarray(arrays["value_ids"], np.uint32).data
        self._value_ends = np.ascontiguousarray(arrays["value_ends"]).data
        self._values = np.ascontiguousarray(arrays["values"], np.uint8).data
        self._size = len(self._hashes)

    @classmethod
    def from_entries(
        cls, language: str, version: str, entries: Mapping[bytes, bytes]
    ) -> LemmaTable:
        """The table of UTF-8 ``entries`` (word form → lemma)."""
        keys = list(entries)
        hashes = np.fromiter(map(zlib.crc32, keys), np.uint32, count=len(keys))
        order = np.argsort(hashes, kind="stable")
        lemmas: dict[bytes, int] = {}
        value_ids = [lemmas.setdefault(value, len(lemmas)) for value in entries.values()]
        return cls(
            language,
            version,
            {
                "hashes": hashes[order],
                "order": order.astype(np.uint32),
                "key_ends": _ends(keys),
                "keys": np.frombuffer(b"".join(keys), np.uint8),
                "value_ids": np.asarray(value_ids, np.uint32),
                "value_ends": _ends(list(lemmas)),
                "values": np.frombuffer(b"".join(lemmas), np.uint8),
            },
        )

    @classmethod
    def from_simplemma(cls, language: str) -> LemmaTable:
        """The table of the dictionary that ``simplemma.lemmatize`` uses for ``language``."""
        from simplemma.strategies.dictionaries import dictionary_factory

        factory = getattr(dictionary_factory, "DEFAULT_DICTIONARY_FACTORY", None)
        if factory is None:
            factory = dictionary_factory.DefaultDictionaryFactory()
        mapping = factory.get_dictionary(language)
        raw = getattr(mapping, "_dict", None)  # its bytes → bytes dict: no decoding needed
        if isinstance(raw, dict) and all(isinstance(k, bytes) for k in islice(raw, 100)):
            entries: Mapping[bytes, bytes] = raw
        else:
            entries = {str(k).encode(): str(mapping[k]).encode() for k in mapping}
        return cls.from_entries(language, simplemma_version(), entries)

    def save(self, path: Path) -> None:
        """Write the table into the new directory ``path``."""
        path.mkdir()
        for name in _TABLE_ARRAYS:
            np.save(path / f"{name}.npy", self._arrays[name], allow_pickle=False)
        meta = {
            "format": _TABLE_FORMAT,
            "language": self.language,
            "simplemma": self.version,
            "entries": self._size,
        }
        (path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> LemmaTable:
        """Map the table in ``path`` (written by :meth:`save`); ValueError when it is damaged."""
        try:
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
            arrays = {
                name: np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                for name in _TABLE_ARRAYS
            }
        except (OSError, ValueError) as exc:
            raise ValueError(f"lemma table {path} is damaged ({exc})") from exc
        if (
            not isinstance(meta, dict)
            or meta.get("format") != _TABLE_FORMAT
            or not isinstance(meta.get("entries"), int)
            or not _table_is_sound(arrays, meta["entries"])
        ):
            raise ValueError(f"lemma table {path} is damaged or of another format")
        return cls(str(meta.get("language")), str(meta.get("simplemma")), arrays)

    def get(self, key: str, default: Any = None) -> Any:  # the lookup simplemma makes
        encoded = key.encode()
        digest = zlib.crc32(encoded)
        hashes, key_ends = self._hashes, self._key_ends
        i = bisect.bisect_left(hashes, digest)
        while i < self._size and hashes[i] == digest:
            k = self._order[i]
            if self._keys[key_ends[k - 1] if k else 0 : key_ends[k]] == encoded:
                j = self._value_ids[k]
                start = self._value_ends[j - 1] if j else 0
                return str(self._values[start : self._value_ends[j]], "utf-8")
            i += 1
        return default

    def __getitem__(self, key: str) -> str:
        value: str | None = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        start = 0
        for end in self._key_ends:
            yield str(self._keys[start:end], "utf-8")
            start = end

    def __len__(self) -> int:
        return self._size


def _table_is_sound(arrays: Mapping[str, np.ndarray], size: int) -> bool:
    """Whether a table's arrays fit together, so that no lookup can go wrong or out of bounds
    (a few linear passes over mapped arrays: milliseconds)."""
    u8, u32, u64 = np.dtype(np.uint8), np.dtype(np.uint32), np.dtype(np.uint64)
    dtypes = {"keys": (u8,), "values": (u8,), "key_ends": (u32, u64), "value_ends": (u32, u64)}
    if any(a.ndim != 1 or a.dtype not in dtypes.get(name, (u32,)) for name, a in arrays.items()):
        return False
    if any(len(arrays[name]) != size for name in ("hashes", "order", "key_ends", "value_ids")):
        return False
    for name, blob in (("key_ends", "keys"), ("value_ends", "values")):
        ends = arrays[name]
        if (int(ends[-1]) if len(ends) else 0) != len(arrays[blob]):
            return False
        if len(ends) > 1 and not np.all(ends[1:] >= ends[:-1]):
            return False
    hashes = arrays["hashes"]
    return size == 0 or (
        bool(np.all(hashes[1:] >= hashes[:-1]))
        and int(arrays["order"].max()) < size
        and int(arrays["value_ids"].max()) < len(arrays["value_ends"])
    )


def _ends(strings: list[bytes]) -> np.ndarray:
    """Where each of the concatenated ``strings`` ends (32-bit offsets while they fit)."""
    ends = np.cumsum(np.fromiter(map(len, strings), np.uint64, count=len(strings)))
    return ends.astype(np.uint32) if len(ends) == 0 or ends[-1] < 2**32 else ends


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
