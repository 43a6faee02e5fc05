"""Vocabularies: concepts (URI ⇄ dense id) with labels per language, and their file formats."""

from kuoro.vocab.vocabulary import Vocabulary, normalize_uri

__all__ = ["Vocabulary", "normalize_uri"]
