"""``GET /api/2.0/mlmanager/deployments/{id}/model``: a deployment's model, for its serving process.

The caller is a serving pod, not a user: it sends the deployment's read-only token
(``Authorization: Bearer <token>``, ``shared.deployment_tokens``), never a password or
database credentials. The answer is the bundle ``mlrunner serve`` reads
(``shared.serving``), with its SHA-256 in ``X-Model-SHA256``.
"""

from __future__ import annotations

import hashlib
import re

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
        spec = conn.execute(
            select(DeploymentRow.spec).where(DeploymentRow.id == deployment_id)
        ).scalar_one()
        representation_id = (spec or {}).get("representation_id")
        row = (
            conn.execute(
                select(ModelRepresentationRow.__table__).where(
                    ModelRepresentationRow.id == representation_id
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"deployment {deployment_id} has no stored model representation")
    representation = representation_from(dict(row))
    reason = unservable_reason(representation)
    if reason is not None:
        raise InvalidPayload(f"mlrunner cannot serve deployment {deployment_id}'s model: {reason}")
    data = bundle(representation)
    return Response(
        data,
        mimetype="application/zip",
        headers={"X-Model-SHA256": hashlib.sha256(data).hexdigest(), "Cache-Control": "no-store"},
    )
