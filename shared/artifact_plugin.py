"""The ``mlmanager-db`` entry point of MLflow's artifact repository registry.

MLflow loads its entry points when its registry module is first imported. When that
first import happens inside ``import shared.artifacts`` (which imports MLflow's
artifact code), an entry point naming ``shared.artifacts`` would find that module half
initialised and MLflow would only warn: the scheme would stay unknown in that process.
This module imports nothing of MLflow, so loading it can never be part of that cycle.
"""

from __future__ import annotations

from typing import Any


def database_artifact_repository(
    artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None
) -> Any:
    """Build ``shared.artifacts.DatabaseArtifactRepository`` (MLflow calls the registered
    entry with these arguments)."""
    from shared.artifacts import DatabaseArtifactRepository

    return DatabaseArtifactRepository(artifact_uri, tracking_uri, registry_uri)
