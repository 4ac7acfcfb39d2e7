"""``PUT /api/2.0/mlmanager/artifact-parts/<upload id>/<part>``: a part of MLflow's
multipart upload into the database store.

The caller is MLflow's client (``HttpArtifactRepository._upload_part``) PUTting to the
URL ``create`` gave it, without MLflow credentials; so, like the pods' model route, this
route is exempt from login (``auth.guard``) and its URL is its credential: a signature
(``shared.multipart.UploadSigner``) over exactly this upload id, part number, stored key
and expiry. Anything else (another part number or upload, an altered key or expiry, an
expired URL) is one 403 with nothing stored. The part is written as its own blob
(``ArtifactStore.write_part``); the answer's ETag is its sha256, which ``complete``
checks against the bytes stored.
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, request

from mlflow_server.request_body import socket_body
from shared.artifacts import DatabaseArtifactRepository
from shared.errors import NotFound
from shared.multipart import PART_PATH, PartGrant, part_blob

part_blueprint = Blueprint("mlmanager_artifact_parts", __name__)
_PART_ROUTE = re.compile(re.escape(PART_PATH) + r"/[^/]*/[^/]*")


def is_part_route(path: str) -> bool:
    """Whether ``path`` is the part route (authorized by its signature, not as a user)."""
    return _PART_ROUTE.fullmatch(path) is not None


def _expires(text: str) -> int:
    # 0 (long expired) for anything but a plain Unix time: never a 500 on junk.
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else 0


@part_blueprint.put(f"{PART_PATH}/<upload_id>/<int:part_number>")
def put_part(upload_id: str, part_number: int) -> Response:
    from mlflow.server.handlers import _get_artifact_repo_mlflow_artifacts

    repo = _get_artifact_repo_mlflow_artifacts()
    if not isinstance(repo, DatabaseArtifactRepository):
        raise NotFound("this server's artifact store takes no parts (not the database store)")
    grant = PartGrant(
        upload_id,
        part_number,
        request.args.get("key", ""),
        _expires(request.args.get("expires", "")),
    )
    repo.signer.check_part(grant, request.args.get("signature", ""))
    etag = repo.store.write_part(
        part_blob(upload_id, part_number), socket_body(request.stream), request.content_length
    )
    response = Response(status=200)
    response.headers["ETag"] = etag
    return response
