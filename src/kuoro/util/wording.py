"""Small helpers for the words of user-facing messages."""

from __future__ import annotations


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """``count`` with ``noun`` in the number it needs: "1 document", "2 documents",
    "0 documents"; ``plural_noun`` for nouns that take more than an "s" ("1 match",
    "2 matches")."""
    return f"{count} {noun if count == 1 else plural_noun or noun + 's'}"
