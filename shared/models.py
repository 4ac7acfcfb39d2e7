"""ML Manager's own tables (migrated by Alembic in ``releases/``).

MLflow's tables (tracking, registry, its auth users) are MLflow's business; ours
live beside them in their own PostgreSQL schema (see ``shared.db``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_STATUSES = ("PENDING", "RUNNING", "SUCCESS", "FAILURE", "CANCELLED")
FINISHED_STATUSES = ("SUCCESS", "FAILURE", "CANCELLED")
DEPLOYMENT_STATUSES = ("PENDING", "DEPLOYED", "FAILED", "DELETED")

# Constraint names are explicit so Alembic renders identical DDL on every dialect.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no time zone, so values come back naive; this type attaches UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# Integer ids: BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY
# is the auto-incrementing rowid).
BigId = BigInteger().with_variant(Integer(), "sqlite")
Payload = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class HandlerRow(Base):
    """A kind of job (DEPLOY_DATABASE, ...) and whether it may run."""

    __tablename__ = "handlers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(255))


class JobRow(Base):
    """One job of the ledger. Only ``shared.ledger`` changes these rows."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('PENDING', 'RUNNING', 'SUCCESS', 'FAILURE', 'CANCELLED')",
            name="status",
        ),
        # The claim query scans PENDING jobs in order of eligibility.
        Index("ix_jobs_pending", "status", "run_after", "id"),
        Index("ix_jobs_username_created_at", "username", "created_at"),
        Index("ix_jobs_lease", "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    handler_name: Mapped[str] = mapped_column(
        String(64), ForeignKey("handlers.name"), nullable=False
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="PENDING")
    username: Mapped[str] = mapped_column(String(255), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(Payload, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    run_after: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    error: Mapped[str | None] = mapped_column(Text)
    # Set for jobs that must exist at most once (e.g. one retraining per schedule firing).
    unique_key: Mapped[str | None] = mapped_column(String(255), unique=True)


class JobLogRow(Base):
    """One log line of a job: append-only, read incrementally by line number."""

    __tablename__ = "job_logs"
    __table_args__ = (UniqueConstraint("job_id", "line"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    line: Mapped[int] = mapped_column(Integer, nullable=False)
    logged_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    level: Mapped[str] = mapped_column(String(16), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)


class DeploymentRow(Base):
    """The desired state of one deployed model (the worker keeps it so)."""

    __tablename__ = "deployments"
    __table_args__ = (
        CheckConstraint(
            "status IN ('PENDING', 'DEPLOYED', 'FAILED', 'DELETED')",
            name="status",
        ),
        Index("ix_deployments_target_name", "target", "name"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="PENDING")
    model_uri: Mapped[str | None] = mapped_column(String(1024))
    run_id: Mapped[str | None] = mapped_column(String(64))
    # The target's typed desired state (``shared.deployments.DeploymentSpec``), apart from
    # what the worker measures while it runs (``stats``, null until it records any).
    spec: Mapped[dict[str, Any]] = mapped_column(Payload, nullable=False, default=dict)
    stats: Mapped[dict[str, Any] | None] = mapped_column(Payload)
    undeployed_by_job: Mapped[int | None] = mapped_column(BigInteger)
    job_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("jobs.id", ondelete="SET NULL"))
    username: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class DeploymentTokenRow(Base):
    """A read-only token that fetches one deployment's model (only its SHA-256 is kept)."""

    __tablename__ = "deployment_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    deployment_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("deployments.id", ondelete="CASCADE"), nullable=False, index=True
    )
    token_sha256: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class JobTokenRow(Base):
    """A job's MLflow login as its user while it runs (``shared.job_tokens``; SHA-256 only)."""

    __tablename__ = "job_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    username: Mapped[str] = mapped_column(String(255), nullable=False)
    token_sha256: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class WorkerRow(Base):
    """A live (or recently seen) worker and the handlers it can run."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    handlers: Mapped[list[str]] = mapped_column(Payload, nullable=False)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, index=True
    )


class ModelRepresentationRow(Base):
    """A model in the form that scores it inside the database (``shared.scoring``).

    Rows are immutable: a replaced model gets a new row, so a database session
    that cached a scorer by id never scores with a stale one.
    """

    __tablename__ = "model_representations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    format: Mapped[str] = mapped_column(String(16), nullable=False)
    payload: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    checksum: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    method: Mapped[str] = mapped_column(String(32), nullable=False)
    flavor: Mapped[str] = mapped_column(String(64), nullable=False)
    inputs: Mapped[list[Any]] = mapped_column(Payload, nullable=False)
    outputs: Mapped[list[Any]] = mapped_column(Payload, nullable=False)
    classes: Mapped[list[str]] = mapped_column(Payload, nullable=False)
    model_uri: Mapped[str] = mapped_column(String(1024), nullable=False)
    run_id: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(255), nullable=False)


# Artifact paths compare byte by byte on every dialect (listing a folder is the range
# ``path >= 'dir/' AND path < 'dir0'``): SQLite's default collation already does, a
# PostgreSQL database created with a linguistic locale would not.
ArtifactPath = String(1024).with_variant(String(1024, collation="C"), "postgresql")


class ArtifactFileRow(Base):
    """A published artifact file (``shared.artifacts``); its bytes are the ``chunks`` rows
    of ``artifact_chunks`` under ``blob_id``. A row appears only once every chunk is written,
    in the transaction that publishes it, so a file is never visible half written."""

    __tablename__ = "artifact_files"

    path: Mapped[str] = mapped_column(ArtifactPath, primary_key=True)
    blob_id: Mapped[str] = mapped_column(String(32), nullable=False, unique=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    chunks: Mapped[int] = mapped_column(Integer, nullable=False)
    mtime: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ArtifactChunkRow(Base):
    """One chunk of an artifact's bytes. Chunks no file row names are an upload in
    progress or one that died; ``shared.artifacts`` sweeps the old ones."""

    __tablename__ = "artifact_chunks"

    blob_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    written_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, nullable=False, default=utcnow, index=True
    )


# Chunks are stored as they come on PostgreSQL, no pglz attempt (migration
# 0008_artifact_storage says why); the ORM's schema says the same.
event.listen(
    ArtifactChunkRow.__table__,
    "after_create",
    DDL("ALTER TABLE %(fullname)s ALTER COLUMN data SET STORAGE EXTERNAL").execute_if(
        dialect="postgresql"
    ),
)


class ScheduleRow(Base):
    """A retraining schedule (``shared.schedules``): when the leader worker fires it, and
    what the last firing did. ``spec`` is the validated SCHEDULE_RETRAIN payload."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    model_name: Mapped[str] = mapped_column(String(255), nullable=False)
    cron_exp: Mapped[str] = mapped_column(String(255), nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(Payload, nullable=False)
    paused: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=text("false")
    )
    # The firing the leader owes next (UTC); it and the schedule id are the firing's key.
    next_fire_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    last_fired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_job_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("jobs.id", ondelete="SET NULL")
    )
    # What the last retrain decided ("version 3 promoted: ..."), written by its job.
    last_outcome: Mapped[str | None] = mapped_column(Text)
    username: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
