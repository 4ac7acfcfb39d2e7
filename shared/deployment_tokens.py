"""Per-deployment read-only tokens: how a serving pod fetches its model without credentials.

A token is 32 random bytes (URL-safe text) shown once when it is issued; only its
SHA-256 is stored. It reads the model of one deployment while that deployment is
PENDING (rolling out) or DEPLOYED and the token is not revoked; undeploying revokes
every token of the deployment (``DeploymentStore.retire``).
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import Connection, Table, insert, select, update

from shared.models import DeploymentRow, DeploymentTokenRow, utcnow

tokens: Table = DeploymentTokenRow.__table__  # type: ignore[assignment]
deployments: Table = DeploymentRow.__table__  # type: ignore[assignment]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(conn: Connection, deployment_id: int) -> str:
    """A new token for ``deployment_id``; the caller hands it to the serving process."""
    token = secrets.token_urlsafe(32)
    conn.execute(
        insert(tokens).values(
            deployment_id=deployment_id, token_sha256=_digest(token), created_at=utcnow()
        )
    )
    return token


def valid(conn: Connection, deployment_id: int, token: str) -> bool:
    """Whether ``token`` reads ``deployment_id``'s model now."""
    row = conn.execute(
        select(tokens.c.id)
        .join(deployments, deployments.c.id == tokens.c.deployment_id)
        .where(
            tokens.c.token_sha256 == _digest(token),
            tokens.c.deployment_id == deployment_id,
            tokens.c.revoked_at.is_(None),
            # PENDING: the deployment's pods are starting (its rollout is not done yet).
            deployments.c.status.in_(("PENDING", "DEPLOYED")),
        )
    ).first()
    return row is not None


def revoke(conn: Connection, deployment_id: int) -> int:
    """Revoke every token of ``deployment_id``; how many were live."""
    result = conn.execute(
        update(tokens)
        .where(tokens.c.deployment_id == deployment_id, tokens.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount)
