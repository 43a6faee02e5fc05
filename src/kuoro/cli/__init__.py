"""The ``kuoro`` command line."""

from kuoro.cli.app import cli, main

__all__ = ["cli", "main"]
