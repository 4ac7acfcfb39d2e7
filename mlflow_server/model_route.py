"""``GET /api/2.0/mlmanager/deployments/{id}/model``: a deployment's model, for its serving process.

The caller is a serving pod, not a user: it sends the deployment's read-only token
(``Authorization: Bearer <token>``, ``shared.deployment_tokens``), never a password or
database credentials. The answer is the bundle ``mlrunner serve`` reads
(``shared.serving``), or for a pyfunc Kubernetes deployment (``runtime`` "mlflow": a model
mlrunner cannot serve) the MLflow model directory as a zip (``shared.kube.pod`` unpacks it
and runs MLflow's scoring server), with its SHA-256 in ``X-Model-SHA256``. The model
directory is read here, from the server's own stores (the registry, the tracking store,
the artifacts destination), because the pod holds no user's credentials.
"""

from __future__ import annotations

import hashlib
import io
import re
import tempfile
import zipfile
from pathlib import Path

from flask import Blueprint, Response, request
from sqlalchemy import select

from mlflow_server.schemas import API_PREFIX
from shared.db import get_engine
from shared.deployment_tokens import valid
from shared.errors import InvalidPayload, NotAuthenticated, NotFound
from shared.models import DeploymentRow, ModelRepresentationRow
from shared.scoring.representation import representation_from
from shared.serving import bundle, unservable_reason
from shared.settings import get_settings

model_blueprint = Blueprint("mlmanager_model", __name__)
_MODEL_ROUTE = re.compile(re.escape(API_PREFIX) + r"/deployments/\d+/model")
_LOGGED_MODEL = re.compile(r"models:/(?P<id>m-[^/@]+)")
_VERSION = re.compile(r"models:/(?P<name>[^/@]+)/(?P<version>\d+)")
_ALIAS = re.compile(r"models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)")
_RUN = re.compile(r"runs:/(?P<run>[^/]+)/(?P<path>.+)")


def is_model_route(path: str) -> bool:
    """Whether ``path`` is the model route (authenticated by token, not as a user)."""
    return _MODEL_ROUTE.fullmatch(path) is not None


@model_blueprint.get(f"{API_PREFIX}/deployments/<int:deployment_id>/model")
def deployment_model(deployment_id: int) -> Response:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("send the deployment's model token as Authorization: Bearer")
    with get_engine(get_settings()).connect() as conn:
        if not valid(conn, deployment_id, token.strip()):
            # One answer for a wrong, revoked or undeployed token: nothing to probe.
            raise NotAuthenticated(
                f"the token does not read deployment {deployment_id}'s model "
                "(wrong, revoked, or the deployment is not deployed)"
            )
        spec = (
            conn.execute(
                select(DeploymentRow.spec).where(DeploymentRow.id == deployment_id)
            ).scalar_one()
            or {}
        )
        pyfunc = spec.get("runtime") == "mlflow"  # a Kubernetes pod of MLflow's server
        row = None
        if not pyfunc:
            row = (
                conn.execute(
                    select(ModelRepresentationRow.__table__).where(
                        ModelRepresentationRow.id == spec.get("representation_id")
                    )
                )
                .mappings()
                .first()
            )
    if pyfunc:  # read outside the transaction: a download can take a while
        return _zip_response(mlflow_model_zip(str(spec["model_uri"])))
    if row is None:
        raise NotFound(f"deployment {deployment_id} has no stored model representation")
    representation = representation_from(dict(row))
    reason = unservable_reason(representation)
    if reason is not None:
        raise InvalidPayload(f"mlrunner cannot serve deployment {deployment_id}'s model: {reason}")
    return _zip_response(bundle(representation))


def _zip_response(data: bytes) -> Response:
    return Response(
        data,
        mimetype="application/zip",
        headers={"X-Model-SHA256": hashlib.sha256(data).hexdigest(), "Cache-Control": "no-store"},
    )


def artifact_location(model_uri: str) -> str:
    """Where the server's stores keep the model ``model_uri`` names (a registered version
    or alias, a logged model, a run's artifact path), as MLflow's clients resolve it."""
    from mlflow.server.handlers import _get_model_registry_store, _get_tracking_store

    if match := _LOGGED_MODEL.fullmatch(model_uri):
        return str(_get_tracking_store().get_logged_model(match["id"]).artifact_location)
    if match := _RUN.fullmatch(model_uri):
        run = _get_tracking_store().get_run(match["run"])
        return f"{run.info.artifact_uri.rstrip('/')}/{match['path']}"
    registry = _get_model_registry_store()
    if match := _ALIAS.fullmatch(model_uri):
        version = registry.get_model_version_by_alias(match["name"], match["alias"]).version
        model_uri = f"models:/{match['name']}/{version}"
    if match := _VERSION.fullmatch(model_uri):
        source = str(registry.get_model_version_download_uri(match["name"], match["version"]))
        return artifact_location(source) if source.startswith(("models:/", "runs:/")) else source
    return model_uri


def mlflow_model_zip(model_uri: str) -> bytes:
    """The MLflow model directory of ``model_uri``, zipped (what a pyfunc pod serves)."""
    import mlflow.artifacts
    from mlflow.server.handlers import _get_artifact_repo_mlflow_artifacts

    location = artifact_location(model_uri)
    with tempfile.TemporaryDirectory(prefix="mlmanager-model-") as tmp:
        if location.startswith("mlflow-artifacts:"):  # proxied: the artifacts destination
            path = re.sub(r"^mlflow-artifacts:(//[^/]*)?/*", "", location)
            local = _get_artifact_repo_mlflow_artifacts().download_artifacts(path, tmp)
        else:
            local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp)
        root = Path(local)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zipped:
            for file in sorted(root.rglob("*")):
                if file.is_file():
                    zipped.write(file, file.relative_to(root).as_posix())
    return out.getvalue()
