"""Kuoro's REST API, compatible with Annif's: ``create_app`` makes the FastAPI application.

``schemas`` holds the request and response bodies, ``problems`` the problem+json errors,
``served`` the projects as the server holds them, ``limits`` the request size limit and
``app`` the routes.
"""

from kuoro.server.app import create_app

__all__ = ["create_app"]
