"""Errors a user can act on. The CLI prints them as one line, without a traceback."""

from __future__ import annotations


class KuoroError(Exception):
    """Base class for every error caused by input, configuration or state the user controls."""


class ConfigError(KuoroError):
    """A project configuration is missing, malformed or has an invalid value."""


class VocabularyError(KuoroError):
    """A vocabulary file cannot be read, or a stored vocabulary is missing or damaged."""


class CorpusError(KuoroError):
    """A document corpus cannot be read or holds no usable documents."""


class NotFoundError(KuoroError):
    """A named project, vocabulary or model does not exist."""


class ModelError(KuoroError):
    """A trained model is missing, damaged, or does not fit the current vocabulary or sources."""


class SourceError(KuoroError):
    """A source failed to train or suggest (e.g. a remote service is down)."""
