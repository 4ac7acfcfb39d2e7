"""The deployments table: the desired state of every deployed model.

Handlers record deployments here; the server lists them; undeploy submits the
matching job. All SQL on ``deployments`` lives in this module.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Table, insert, select, update

from shared.errors import NotFound
from shared.models import DeploymentRow, utcnow

deployments: Table = DeploymentRow.__table__  # type: ignore[assignment]

# Key of a DELETED deployment's details: the undeploy job that removed it.
UNDEPLOYED_BY_JOB = "undeployed_by_job"
# A rerun looks for its own undeploy among the latest DELETED records of the name only:
# reruns follow their first attempt within minutes, not after dozens of redeploys.
RETIRED_LOOKBACK = 20

# Target -> the handler that undoes a deployment, and the payload it needs.
UNDEPLOY_HANDLERS = {"database": "UNDEPLOY_DATABASE", "kubernetes": "UNDEPLOY_KUBERNETES"}


@dataclass(frozen=True)
class Deployment:
    id: int
    target: str
    name: str
    status: str
    model_uri: str | None
    run_id: str | None
    details: dict[str, Any]
    job_id: int | None
    user: str
    created_at: dt.datetime
    updated_at: dt.datetime

    def undeploy_job(self) -> tuple[str, dict[str, Any]] | None:
        """The (handler, payload) that removes this deployment, if the target has one."""
        handler = UNDEPLOY_HANDLERS.get(self.target)
        if handler is None:
            return None
        model: dict[str, Any] = (
            {"run_id": self.run_id} if self.run_id else {"model_uri": self.model_uri}
        )
        if self.target == "database":
            model |= {
                "db_schema": self.details.get("db_schema"),
                "db_table": self.details.get("db_table"),
            }
        return handler, model


class DeploymentStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @staticmethod
    def _from_row(row: Any) -> Deployment:
        data = dict(row)
        data["user"] = data.pop("username")
        return Deployment(**data)

    def list(
        self,
        *,
        user: str | None = None,
        target: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Deployment]:
        query = select(deployments)
        if user is not None:
            query = query.where(deployments.c.username == user)
        if target is not None:
            query = query.where(deployments.c.target == target)
        if status is not None:
            query = query.where(deployments.c.status == status)
        query = query.order_by(deployments.c.id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [self._from_row(r) for r in conn.execute(query).mappings()]

    def record(
        self,
        *,
        target: str,
        name: str,
        user: str,
        status: str = "DEPLOYED",
        model_uri: str | None = None,
        run_id: str | None = None,
        details: dict[str, Any] | None = None,
        job_id: int | None = None,
        conn: Connection | None = None,
    ) -> Deployment:
        """Record a deployment (handlers call this once their target is in place).

        With ``conn``, in that transaction (so the record commits with the change).
        """
        now = utcnow()
        values = {
            "target": target,
            "name": name,
            "username": user,
            "status": status,
            "model_uri": model_uri,
            "run_id": run_id,
            "details": details or {},
            "job_id": job_id,
            "created_at": now,
            "updated_at": now,
        }
        statement = insert(deployments).values(values).returning(*deployments.c)
        if conn is not None:
            return self._from_row(conn.execute(statement).mappings().one())
        with self.engine.begin() as own:
            return self._from_row(own.execute(statement).mappings().one())

    @classmethod
    def active(cls, conn: Connection, target: str, name: str) -> Deployment | None:
        """The DEPLOYED deployment called ``name`` on ``target``, if any (latest first)."""
        row = (
            conn.execute(
                select(deployments)
                .where(
                    deployments.c.target == target,
                    deployments.c.name == name,
                    deployments.c.status == "DEPLOYED",
                )
                .order_by(deployments.c.id.desc())
            )
            .mappings()
            .first()
        )
        return None if row is None else cls._from_row(row)

    @staticmethod
    def of_job(conn: Connection, target: str, name: str, job_id: int) -> Deployment | None:
        """The deployment of ``name`` that job ``job_id`` recorded, if it committed one.

        A rerun of a deploy job uses it to recognise its own earlier, finished attempt.
        """
        row = (
            conn.execute(
                select(deployments).where(
                    deployments.c.target == target,
                    deployments.c.name == name,
                    deployments.c.job_id == job_id,
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else DeploymentStore._from_row(row)

    @staticmethod
    def retire(conn: Connection, deployment: Deployment, job_id: int) -> None:
        """Mark ``deployment`` DELETED by undeploy job ``job_id`` (kept in its details, so a
        rerun of that job finds that it already happened: see :meth:`retired_by`)."""
        conn.execute(
            update(deployments)
            .where(deployments.c.id == deployment.id, deployments.c.status == "DEPLOYED")
            .values(
                status="DELETED",
                details={**deployment.details, UNDEPLOYED_BY_JOB: job_id},
                updated_at=utcnow(),
            )
        )

    @classmethod
    def retired_by(cls, conn: Connection, target: str, name: str, job_id: int) -> Deployment | None:
        """The deployment of ``name`` that undeploy job ``job_id`` marked DELETED, if any."""
        rows = conn.execute(
            select(deployments)
            .where(
                deployments.c.target == target,
                deployments.c.name == name,
                deployments.c.status == "DELETED",
            )
            .order_by(deployments.c.id.desc())
            .limit(RETIRED_LOOKBACK)
        ).mappings()
        for row in rows:
            if row["details"].get(UNDEPLOYED_BY_JOB) == job_id:
                return cls._from_row(row)
        return None

    @staticmethod
    def set_status(
        conn: Connection, target: str, name: str, status: str, *, only: str | None = None
    ) -> int:
        """Set the status of the deployments called ``name`` (those in status ``only``)."""
        statement = update(deployments).where(
            deployments.c.target == target, deployments.c.name == name
        )
        if only is not None:
            statement = statement.where(deployments.c.status == only)
        result = conn.execute(statement.values(status=status, updated_at=utcnow()))
        return int(result.rowcount)

    def get(self, deployment_id: int) -> Deployment:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(deployments).where(deployments.c.id == deployment_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"no deployment {deployment_id}")
        return self._from_row(row)
