"""The MLflow app plugin ``mlmanager`` (entry point ``mlflow.app``).

MLflow's basic-auth app wraps the MLflow Flask app; our routes are Flask
blueprints registered on that same app *before* the auth app is applied, so its
``before_request`` check guards them too. (Routes added to MLflow's FastAPI app
after the auth app would not be authenticated.)
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from mlflow_server.api import blueprint
from shared.db import get_engine
from shared.logging import configure_logging
from shared.migrations import require_current
from shared.settings import get_settings


def create_app() -> Any:
    """Factory called by gunicorn in every server worker."""
    from mlflow.server import app as mlflow_app
    from mlflow.server.auth import create_app as create_auth_app

    settings = get_settings()
    configure_logging(settings, "server")
    # Refuse to serve on a schema older than the code (the launcher checked too,
    # but `mlflow server --app-name mlmanager` may be started by hand).
    require_current(get_engine(settings))
    _register(mlflow_app)
    return create_auth_app(mlflow_app)


def _register(app: Flask) -> None:
    if blueprint.name not in app.blueprints:
        app.register_blueprint(blueprint)
