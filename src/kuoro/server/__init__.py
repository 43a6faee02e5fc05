"""Kuoro's REST API, compatible with Annif's."""
