"""What Annif calls Kuoro's backends and parameters: how an Annif configuration translates."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["ANNIF_BACKENDS", "ANNIF_DROPPED_PARAMS", "ANNIF_PARAM_NAMES", "ANNIF_PARAM_UNITS"]

# Annif parameter names and their Kuoro names. A hint only applies where the Kuoro name is a
# parameter of the backend at hand (fastText's own `lr` stays `lr`).
ANNIF_PARAM_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "nodes": "hidden_size",
        "dropout_rate": "dropout",
        "epochs": "max_epochs",
        "lr": "learning_rate",
        "wordNgrams": "word_ngrams",
        "minCount": "min_count",
        "ngram": "ngram_max",
        "chunksize": "chunk_size",
    }
)

# Annif parameters that Kuoro maps but counts differently, and how.
ANNIF_PARAM_UNITS: Mapping[str, str] = MappingProxyType(
    {
        "chunksize": "Annif's chunks are sentences, Kuoro's are words: check the value",
    }
)

# Annif parameters that Kuoro has no use for, and why.
ANNIF_DROPPED_PARAMS: Mapping[str, str] = MappingProxyType(
    {
        "learn-epochs": "`kuoro learn` uses max_epochs",
        "lmdb_map_size": "the store grows automatically",
        "transform": "Kuoro applies no input transforms",
    }
)

# Annif backend names and the Kuoro backend that does the same job.
ANNIF_BACKENDS: Mapping[str, str] = MappingProxyType(
    {
        "tfidf": "tfidf",
        "omikuji": "omikuji",
        "fasttext": "fasttext",
        "mllm": "lexical",
        "stwfsa": "lexical",
        "http": "annif",
        "ensemble": "mean",
        "nn_ensemble": "kuoro",
        "pav": "mean",
    }
)
