"""Project configuration: projects.toml, the catalogue of backends and their parameters, and
the import of Annif's projects.cfg."""

from kuoro.config.projects import ProjectConfig, SourceRef, find_projects_file, load_projects

__all__ = ["ProjectConfig", "SourceRef", "find_projects_file", "load_projects"]
