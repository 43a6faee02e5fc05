"""Which class implements each source backend; modules are imported only when used."""

from __future__ import annotations

import importlib

from kuoro.errors import ConfigError
from kuoro.sources.base import Source

SOURCE_CLASSES = {
    "tfidf": "kuoro.sources.tfidf:TfidfSource",
    "omikuji": "kuoro.sources.omikuji:OmikujiSource",
    "fasttext": "kuoro.sources.fasttext:FasttextSource",
    "lexical": "kuoro.sources.lexical:LexicalSource",
    "annif": "kuoro.sources.annif:AnnifSource",
    "file": "kuoro.sources.file:FileSource",
}


def source_class(backend: str) -> type[Source]:
    """The Source subclass for a backend name."""
    try:
        module_name, class_name = SOURCE_CLASSES[backend].split(":")
    except KeyError:
        allowed = ", ".join(SOURCE_CLASSES)
        raise ConfigError(f"'{backend}' is not a source backend. Allowed: {allowed}") from None
    cls: type[Source] = getattr(importlib.import_module(module_name), class_name)
    return cls
