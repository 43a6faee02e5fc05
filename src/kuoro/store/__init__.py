"""The suggestion store: every source's top-K rows and the gold subjects of a corpus, in LMDB."""

from kuoro.store.suggestion_store import StoreBatch, StoreError, SuggestionStore

__all__ = ["StoreBatch", "StoreError", "SuggestionStore"]
