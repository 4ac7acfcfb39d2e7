"""MLflow's proxied multipart upload into the database store: ids and signed part URLs.

MLflow's client (``HttpArtifactRepository._try_multipart_upload``, MLflow 3.17) asks the
server to ``create`` an upload, then PUTs each part to the URL the server gave it with
plain ``requests.put``: no MLflow credentials. So a part URL carries its own proof, an
HMAC under the server's secret key (``MLMANAGER_SECRET_KEY``, the same on every replica)
over the upload id, the part number, the stored key and an expiry; the part route
(``mlflow_server.part_route``) refuses anything else. Nothing about an upload is stored
but its parts, so the ids carry what must be checked:

- the upload id is a random nonce and a tag (an HMAC of nonce and key): ``complete`` and
  ``abort`` of a key accept only an upload created for that key;
- a part is the blob ``<upload id>.<part number>`` (file blobs are 32 hex digits without
  a dot, so the two never meet); the ETag the client gets back is the part's sha256.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from shared.errors import InvalidPayload, NotAuthorized
from shared.settings import Settings

# Where parts are sent (registered by mlflow_server.part_route, exempt from login).
PART_PATH = "/api/2.0/mlmanager/artifact-parts"
# S3's limit, which MLflow's client respects (and which keeps the blob id in 32 chars).
MAX_PARTS = 10_000
_NONCE_HEX = 12
_TAG_HEX = 12
UPLOAD_ID_LENGTH = _NONCE_HEX + _TAG_HEX


def _key_of(secret: str) -> bytes:
    """A key for upload signatures only, derived from the server's secret key (which
    also signs MLflow's CSRF tokens): one secret's uses never sign for another."""
    return hmac.new(secret.encode(), b"mlmanager artifact multipart v1", hashlib.sha256).digest()


def _mac(key: bytes, *fields: str) -> str:
    return hmac.new(key, "\0".join(fields).encode(), hashlib.sha256).hexdigest()


def part_blob(upload_id: str, part_number: int) -> str:
    """The blob holding part ``part_number`` of ``upload_id`` (at most 30 characters)."""
    return f"{upload_id}.{part_number:05d}"


def upload_blobs_prefix(upload_id: str) -> str:
    """What every part blob of ``upload_id`` starts with."""
    return f"{upload_id}."


@dataclass(frozen=True)
class PartGrant:
    """What a part URL allows: storing part ``part_number`` of ``upload_id`` for ``key``
    until ``expires`` (Unix seconds)."""

    upload_id: str
    part_number: int
    key: str
    expires: int


class UploadSigner:
    """Issues and checks upload ids and part URL signatures under the server's secret."""

    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self._key = _key_of(secret)
        self._ttl = ttl_seconds

    @classmethod
    def of(cls, settings: Settings) -> UploadSigner:
        from shared.home import secret_key

        return cls(secret_key(settings), settings.artifact_upload_url_ttl)

    # --- upload ids ------------------------------------------------------------
    def new_upload(self, key: str) -> str:
        nonce = secrets.token_hex(_NONCE_HEX // 2)
        return nonce + self._tag(nonce, key)

    def _tag(self, nonce: str, key: str) -> str:
        return _mac(self._key, "upload", nonce, key)[:_TAG_HEX]

    def check_upload(self, upload_id: str, key: str) -> None:
        """InvalidPayload unless ``upload_id`` was created (by ``new_upload``) for ``key``."""
        nonce, tag = upload_id[:_NONCE_HEX], upload_id[_NONCE_HEX:]
        if len(upload_id) != UPLOAD_ID_LENGTH or not hmac.compare_digest(
            tag, self._tag(nonce, key)
        ):
            raise InvalidPayload(
                f"upload id {upload_id[:40]!r} is not an upload of {key}: create the upload again",
                field="upload_id",
            )

    # --- part URLs ---------------------------------------------------------------
    def part_grants(self, upload_id: str, key: str, num_parts: int) -> list[PartGrant]:
        expires = int(time.time()) + self._ttl
        return [PartGrant(upload_id, n, key, expires) for n in range(1, num_parts + 1)]

    def signature(self, grant: PartGrant) -> str:
        return _mac(
            self._key,
            "part",
            grant.upload_id,
            str(grant.part_number),
            grant.key,
            str(grant.expires),
        )

    def part_url(self, base_url: str, grant: PartGrant) -> str:
        """The URL a client PUTs the part to (``base_url``: the server as the client
        reached it)."""
        query = urlencode(
            {"key": grant.key, "expires": grant.expires, "signature": self.signature(grant)}
        )
        return f"{base_url.rstrip('/')}{PART_PATH}/{grant.upload_id}/{grant.part_number}?{query}"

    def check_part(self, grant: PartGrant, signature: str) -> None:
        """NotAuthorized unless ``signature`` signs exactly ``grant`` and it has not
        expired (one answer for every refusal: nothing to probe)."""
        valid = hmac.compare_digest(signature.encode(), self.signature(grant).encode())
        if not valid or grant.expires < time.time():
            raise NotAuthorized(
                "this part URL is not valid (wrong, altered or expired signature): "
                "start the upload again"
            )


def check_part_count(num_parts: int) -> None:
    if not 1 <= num_parts <= MAX_PARTS:
        raise InvalidPayload(
            f"a multipart upload has 1 to {MAX_PARTS} parts, not {num_parts}: "
            "set MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE larger",
            field="num_parts",
        )
