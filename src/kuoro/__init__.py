"""Kuoro: fuse the subject suggestions of several indexing models into one better ranked list."""

from __future__ import annotations

from kuoro.util.version import __version__

__all__ = ["__version__"]
