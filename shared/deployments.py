"""The deployments table: the desired state of every deployed model.

Handlers record deployments here; the server lists them; undeploy submits the
matching job. All SQL on ``deployments`` lives in this module.

A record holds the target's typed desired state (``spec``: one pydantic model
per target, a discriminated union on ``target``) and, apart from it, what the
worker measures while the deployment runs (``stats``: async lag, scoring
errors). Nothing else reads the stored JSON by key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, Engine, Table, insert, select, text, update

from shared.deployment_tokens import revoke
from shared.errors import NotFound
from shared.kube.spec import KubernetesDeploymentSpec
from shared.models import DeploymentRow, utcnow

deployments: Table = DeploymentRow.__table__  # type: ignore[assignment]

# A rerun looks for its own undeploy among the latest DELETED records of the name only:
# reruns follow their first attempt within minutes, not after dozens of redeploys.
RETIRED_LOOKBACK = 20

# Target -> the handler that undoes a deployment, and the payload it needs.
UNDEPLOY_HANDLERS = {
    "database": "UNDEPLOY_DATABASE",
    "kubernetes": "UNDEPLOY_KUBERNETES",
    "sagemaker": "UNDEPLOY_AWS",
    "azure": "UNDEPLOY_AZURE",
}


class DatabaseDeploymentSpec(BaseModel):
    """A model scoring the rows inserted into a table: what the deploy put in place."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Literal["database"] = "database"
    db_schema: str
    db_table: str
    representation_id: int = Field(description="model_representations row the trigger scores")
    format: str = Field(description="onnx, pyfunc or mojo")
    kind: str = Field(description="classification, regression, clustering or key_value")
    trigger: str = Field(description="name of the scoring (or notifying) trigger")
    trigger_mode: Literal["row", "statement", "async"]
    mode: Literal["sync", "async"]
    keys: list[tuple[str, str]] = Field(description="(column, SQL type) of the primary key")
    features: list[str] = Field(description="table column per model input, in input order")
    input_columns: dict[str, str] = Field(
        default_factory=dict,
        description="model input name -> the table column feeding it (they differ where the "
        "model's names are not SQL names, e.g. 'sepal length (cm)' -> sepal_length_cm)",
    )
    prediction_columns: list[str]
    created_table: bool = False
    max_batch_size: int = 10000


class SageMakerVariant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model: str = Field(description="the SageMaker model the variant serves")
    weight: float
    model_data: str = Field(description="s3:// URL of the variant's model.tar.gz")


class SageMakerDeploymentSpec(BaseModel):
    """A SageMaker endpoint serving the model: what the deploy created (undeploy deletes it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Literal["sagemaker"] = "sagemaker"
    endpoint_name: str
    region: str
    url: str = Field(description="the endpoint's /invocations URL (signed requests)")
    endpoint_config: str = Field(description="the endpoint configuration in force")
    variants: list[SageMakerVariant] = Field(description="production variants, newest last")
    image: str
    runtime: Literal["mlrunner", "mlflow"]
    instance_type: str
    instance_count: int
    failure_reason: str | None = Field(None, description="why a FAILED deploy failed")


class AzureDeploymentSpec(BaseModel):
    """An Azure ML managed online endpoint serving the model through one deployment: what
    the deploy created (undeploy deletes it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Literal["azure"] = "azure"
    endpoint_name: str
    subscription_id: str
    resource_group: str
    workspace: str
    region: str
    url: str = Field(description="the endpoint's scoring URI (key authentication)")
    deployment: str = Field(description="the online deployment taking all the traffic")
    model_name: str
    model_version: str
    environment: str | None = Field(
        None, description="name:version of the serving image's environment (None: MLflow no-code)"
    )
    image: str | None = None
    runtime: Literal["mlrunner", "mlflow"]
    instance_type: str
    instance_count: int = 1
    created_endpoint: bool = Field(description="the endpoint was created by ML Manager")
    failure_reason: str | None = Field(None, description="why a FAILED deploy failed")


# One model per target, chosen by ``target``.
DeploymentSpec = Annotated[
    DatabaseDeploymentSpec
    | KubernetesDeploymentSpec
    | SageMakerDeploymentSpec
    | AzureDeploymentSpec,
    Field(discriminator="target"),
]
SPEC_MODELS: dict[str, type[BaseModel]] = {
    "database": DatabaseDeploymentSpec,
    "kubernetes": KubernetesDeploymentSpec,
    "sagemaker": SageMakerDeploymentSpec,
    "azure": AzureDeploymentSpec,
}


class ScoringLag(BaseModel):
    rows: int
    p50_ms: float
    p99_ms: float


class DeploymentStats(BaseModel):
    """What the worker measured while the deployment ran (not part of the desired state)."""

    scoring_lag: ScoringLag | None = Field(
        None, description="insert-to-scored lag of the latest async batches"
    )
    scoring_errors: int = Field(0, description="rows an async scorer could not score")
    last_scoring_error: str | None = None


def parse_spec(target: str, spec: dict[str, Any] | None) -> DeploymentSpec | None:
    """The typed spec of a stored record; ``None`` for a target without a spec model yet."""
    model = SPEC_MODELS.get(target)
    if model is None or not spec:
        return None
    return model.model_validate({**spec, "target": target})  # type: ignore[return-value]


@dataclass(frozen=True)
class Deployment:
    id: int
    target: str
    name: str
    status: str
    model_uri: str | None
    run_id: str | None
    spec: DeploymentSpec | None
    stats: DeploymentStats
    job_id: int | None
    user: str
    created_at: dt.datetime
    updated_at: dt.datetime
    undeployed_by_job: int | None = None

    @property
    def details(self) -> dict[str, Any]:
        """The untyped form clients before the typed spec read (spec and stats merged)."""
        out: dict[str, Any] = {}
        if self.spec is not None:
            out |= self.spec.model_dump(mode="json", exclude={"target"})
        out |= self.stats.model_dump(mode="json", exclude_defaults=True)
        if self.undeployed_by_job is not None:
            out["undeployed_by_job"] = self.undeployed_by_job
        return out

    def undeploy_job(self) -> tuple[str, dict[str, Any]] | None:
        """The (handler, payload) that removes this deployment, if the target has one."""
        handler = UNDEPLOY_HANDLERS.get(self.target)
        if handler is None:
            return None
        model: dict[str, Any] = (
            {"run_id": self.run_id} if self.run_id else {"model_uri": self.model_uri}
        )
        if isinstance(self.spec, DatabaseDeploymentSpec):
            model |= {"db_schema": self.spec.db_schema, "db_table": self.spec.db_table}
        elif isinstance(self.spec, SageMakerDeploymentSpec):
            model |= {"app_name": self.name, "sagemaker_region": self.spec.region}
        elif isinstance(self.spec, KubernetesDeploymentSpec):
            model |= {"name": self.spec.name}
        elif isinstance(self.spec, AzureDeploymentSpec):
            model |= {
                "endpoint_name": self.name,
                "workspace": self.spec.workspace,
                "resource_group": self.spec.resource_group,
            }
        return handler, model


def redeploy_job(deployment: Deployment) -> tuple[str, dict[str, Any]]:
    """The (handler, payload) that deploys ``deployment``'s model again as it was, replacing
    what is deployed under its name now (a rollback)."""
    spec = deployment.spec
    model = {"model_uri": deployment.model_uri, "replace": True}
    if isinstance(spec, DatabaseDeploymentSpec):
        table = {"db_schema": spec.db_schema, "db_table": spec.db_table}
        options: dict[str, Any] = {"max_batch_size": spec.max_batch_size, "mode": spec.mode}
        if spec.trigger_mode != "async":
            options["trigger_mode"] = spec.trigger_mode
        return "DEPLOY_DATABASE", model | table | options
    if isinstance(spec, KubernetesDeploymentSpec):
        return "DEPLOY_KUBERNETES", model | spec.payload_fields()
    raise NotFound(f"deployment {deployment.id} ({deployment.target}) cannot be redeployed")


class DeploymentStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @staticmethod
    def _from_row(row: Any) -> Deployment:
        data = dict(row)
        data["user"] = data.pop("username")
        data["spec"] = parse_spec(data["target"], data["spec"])
        data["stats"] = DeploymentStats.model_validate(data["stats"] or {})
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
        spec: DeploymentSpec | None = None,
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
            "spec": {} if spec is None else spec.model_dump(mode="json", exclude={"target"}),
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
        """Mark ``deployment`` DELETED by undeploy job ``job_id`` (kept in the record, so a
        rerun of that job finds that it already happened: see :meth:`retired_by`), and
        revoke its model tokens."""
        conn.execute(
            update(deployments)
            .where(deployments.c.id == deployment.id, deployments.c.status == "DEPLOYED")
            .values(
                status="DELETED",
                undeployed_by_job=job_id,
                updated_at=utcnow(),
            )
        )
        revoke(conn, deployment.id)  # a serving process may not fetch a retired model

    @classmethod
    def retired_by(cls, conn: Connection, target: str, name: str, job_id: int) -> Deployment | None:
        """The deployment of ``name`` that undeploy job ``job_id`` marked DELETED, if any."""
        latest = (
            select(deployments)
            .where(
                deployments.c.target == target,
                deployments.c.name == name,
                deployments.c.status == "DELETED",
            )
            .order_by(deployments.c.id.desc())
            .limit(RETIRED_LOOKBACK)
            .subquery()
        )
        row = (
            conn.execute(select(latest).where(latest.c.undeployed_by_job == job_id))
            .mappings()
            .first()
        )
        return None if row is None else cls._from_row(row)

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

    def previous(self, deployment: Deployment) -> Deployment | None:
        """The deployment that ``deployment`` replaced under its name (a rollback's model):
        the latest DELETED one of the name before it, serving another model."""
        query = (
            select(deployments)
            .where(
                deployments.c.target == deployment.target,
                deployments.c.name == deployment.name,
                deployments.c.status == "DELETED",
                deployments.c.id < deployment.id,
                deployments.c.model_uri != deployment.model_uri,
            )
            .order_by(deployments.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return None if row is None else self._from_row(row)

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

    @classmethod
    def deployed(
        cls, conn: Connection, *, target: str | None = None, user: str | None = None
    ) -> Sequence[Deployment]:
        """Every DEPLOYED deployment (of ``target``, of ``user``), oldest first."""
        query = select(deployments).where(deployments.c.status == "DEPLOYED")
        if target is not None:
            query = query.where(deployments.c.target == target)
        if user is not None:
            query = query.where(deployments.c.username == user)
        rows = conn.execute(query.order_by(deployments.c.id)).mappings().all()
        return [cls._from_row(r) for r in rows]

    # The async scorer's statistics (PostgreSQL only, as async mode is): merged into
    # ``stats`` in one statement, so replicas scoring the same table add up, not overwrite.
    def add_scoring_errors(self, deployment_id: int, count: int, last: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE deployments SET stats = coalesce(stats, '{}'::jsonb) || "
                    "jsonb_build_object('scoring_errors', "
                    "coalesce((stats->>'scoring_errors')::int, 0) + :n, "
                    "'last_scoring_error', CAST(:last AS text)) WHERE id = :id"
                ),
                {"n": count, "last": last[:500], "id": deployment_id},
            )

    def set_scoring_lag(self, deployment_id: int, lag: ScoringLag) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE deployments SET stats = coalesce(stats, '{}'::jsonb) || "
                    "jsonb_build_object('scoring_lag', CAST(:lag AS jsonb)) WHERE id = :id"
                ),
                {"lag": lag.model_dump_json(), "id": deployment_id},
            )
