"""The MLflow app plugin ``mlmanager`` (entry point ``mlflow.app``).

MLflow's basic-auth app wraps the MLflow Flask app; our routes are Flask
blueprints registered on that same app *before* the auth app is applied, so its
``before_request`` check guards them too. (Routes added to MLflow's FastAPI app
after the auth app would not be authenticated; ``native.py`` serves MLflow's FastAPI
routes beside this app, behind the same authentication.)
"""

from __future__ import annotations

from typing import Any

from flask import jsonify, request
from werkzeug.exceptions import HTTPException

from mlflow_server import artifact_route
from mlflow_server.api import blueprint, error_response, seed_handlers
from mlflow_server.auth import OUR_PREFIXES, guard
from mlflow_server.bodies import StrictJSONProvider
from mlflow_server.model_route import model_blueprint
from mlflow_server.native import Dispatcher
from mlflow_server.part_route import part_blueprint
from mlflow_server.schedules import blueprint as schedules_blueprint
from mlflow_server.ui import ui
from shared.db import get_engine
from shared.errors import MLManagerError
from shared.handlers import load_specs
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
    # Only the payload specs: the worker's code (bobby, pandas, onnxruntime) stays out.
    load_specs(settings)
    seed_handlers()
    if blueprint.name in mlflow_app.blueprints:  # factory called twice in one process
        return Dispatcher(create_auth_app(mlflow_app))
    blueprint.register_blueprint(schedules_blueprint)
    mlflow_app.register_blueprint(blueprint)
    mlflow_app.register_blueprint(model_blueprint)
    mlflow_app.register_blueprint(part_blueprint)
    mlflow_app.register_blueprint(ui)
    # Every get_json of the app (ours, MLflow's handlers, its permission checks) parses
    # strictly; what it refuses is an MLManagerError, answered here for every route.
    mlflow_app.json = StrictJSONProvider(mlflow_app)
    mlflow_app.register_error_handler(MLManagerError, error_response)
    mlflow_app.register_error_handler(404, _json_for_our_routes)
    mlflow_app.register_error_handler(405, _json_for_our_routes)
    # Files of the database store stream to the client (no temporary copy on disk).
    artifact_route.install(mlflow_app)
    app = create_auth_app(mlflow_app)
    guard(mlflow_app)
    # MLflow's FastAPI routes (OTLP /v1/traces, ...) beside the Flask app: native.py.
    return Dispatcher(app)


def _json_for_our_routes(exc: HTTPException) -> Any:
    """Routing errors (no such route, wrong method) on our paths answer JSON too."""
    if not request.path.startswith(OUR_PREFIXES):
        return exc
    code = exc.code or 404
    name = "ENDPOINT_NOT_FOUND" if code == 404 else "METHOD_NOT_ALLOWED"
    response = jsonify(
        {
            "error_code": name,
            "message": f"{request.method} {request.path}: {exc.description or exc.name}",
        }
    )
    response.status_code = code
    return response
