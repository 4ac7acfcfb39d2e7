"""Job tokens: a job's user, on MLflow, for as long as the job runs.

A RETRAIN job runs the user's own MLflow Project; the project logs its run with the
MLflow credentials it is given, and those must be the schedule owner's, never the
worker's administrator login. The worker issues a token for the job's user
(:func:`issue`), hands it to the project as ``MLFLOW_TRACKING_PASSWORD`` (with
``MLFLOW_TRACKING_USERNAME`` = the user), and the server accepts it as that user's
password (``mlflow_server.auth``) while the job is RUNNING and the token is not revoked:
a job that ends, however it ends, takes its token's validity with it. Only the token's
SHA-256 is stored; the text is shown once, to the project.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import Connection, Table, insert, select, update

from shared.models import JobRow, JobTokenRow, utcnow

job_tokens: Table = JobTokenRow.__table__  # type: ignore[assignment]
jobs: Table = JobRow.__table__  # type: ignore[assignment]

# Marks a password as a job token: other passwords skip the lookup.
PREFIX = "mlmjob_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_token(password: str) -> bool:
    return password.startswith(PREFIX)


def issue(conn: Connection, job_id: int, username: str) -> str:
    """A new token that logs in as ``username`` while job ``job_id`` runs."""
    token = PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        insert(job_tokens).values(
            job_id=job_id, username=username, token_sha256=_digest(token), created_at=utcnow()
        )
    )
    return token


def valid(conn: Connection, username: str, token: str) -> bool:
    """Whether ``token`` logs in as ``username`` now."""
    row = conn.execute(
        select(job_tokens.c.id)
        .join(jobs, jobs.c.id == job_tokens.c.job_id)
        .where(
            job_tokens.c.token_sha256 == _digest(token),
            job_tokens.c.username == username,
            job_tokens.c.revoked_at.is_(None),
            jobs.c.status == "RUNNING",
        )
    ).first()
    return row is not None


def revoke(conn: Connection, job_id: int) -> int:
    """Revoke every token of ``job_id``; how many were live."""
    result = conn.execute(
        update(job_tokens)
        .where(job_tokens.c.job_id == job_id, job_tokens.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount)
