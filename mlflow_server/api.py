"""ML Manager's REST routes (a Flask blueprint behind MLflow's authentication)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from shared.db import get_engine
from shared.migrations import current_revision
from shared.settings import get_settings

API_PREFIX = "/api/2.0/mlmanager"

blueprint = Blueprint("mlmanager", __name__, url_prefix=API_PREFIX)


@blueprint.get("/version")
def version() -> ResponseReturnValue:
    """The running ML Manager and the schema revision of its database."""
    from importlib.metadata import version as dist_version

    return jsonify(
        {
            "mlmanager": dist_version("mlmanager"),
            "mlflow": dist_version("mlflow"),
            "schema_revision": current_revision(get_engine(get_settings())),
        }
    )
