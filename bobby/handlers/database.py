"""DEPLOY_DATABASE and UNDEPLOY_DATABASE: a model scores every row inserted into a table.

The deploy builds the model's representation (ONNX checked against the model
on sample rows, else pyfunc), plans the DDL and trigger for the table
(``shared.scoring.plan``) and runs the whole plan in one transaction: the
representation, the table changes, the trigger and the deployment record
commit together or not at all. ``dry_run`` only logs the plan's SQL.

With ``AUTH_BACKEND=database`` the job's user is a database role, and the
table's DDL runs under that role (``SET LOCAL ROLE``): the worker's database
user must be a member of it, and a role without rights on the table gets a
clear error and no change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
from loguru import logger
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from bobby.handlers import ServiceContext, register, register_service
from bobby.handlers.base import Handler, Step
from shared.db import quote_identifier, schema_of
from shared.deploy_rules import DATABASE_TARGET, check_database_job, tables_of
from shared.deployments import DatabaseDeploymentSpec, Deployment, DeploymentStore
from shared.errors import (
    DeploymentConflict,
    InvalidPayload,
    MLManagerError,
    NotAuthorized,
    NotFound,
)
from shared.handlers import (
    RECONCILE,
    SPECS,
    DeployDatabasePayload,
    ReconcilePayload,
    UndeployDatabasePayload,
)
from shared.model_source import ModelSource
from shared.scoring.catalog import read_catalog, read_table
from shared.scoring.contract import RESERVED_COLUMNS, contract_name
from shared.scoring.kinds import input_columns, method_from
from shared.scoring.parity import SAMPLE_LIMIT
from shared.scoring.plan import (
    DeploymentPlan,
    add_score_existing,
    plan_deployment,
    plan_undeploy,
    table_sql,
)
from shared.scoring.representation import Representation
from shared.scoring.runtime import import_mlflow
from shared.targets import DatabaseTarget, Target

TARGET = DATABASE_TARGET
# Rows of the table, reference table and input example the conversion is checked on
# (shared.scoring.parity adds their NULL and split-threshold variants).
SAMPLE_ROWS = SAMPLE_LIMIT
_INSUFFICIENT_PRIVILEGE = "42501"


def resolve_model_uri(run_id: str | None, model_uri: str | None) -> str:
    """The model URI of a payload, as the server resolved and checked it at submit.

    The server turns ``run_id`` (and aliases) into ``model_uri`` with the submitting
    user's MLflow permissions (``mlflow_server.permissions``); this worker reads models
    as an admin, so a payload the server did not resolve is refused, not read.
    """
    if model_uri is None:
        raise NotAuthorized(
            f"run {run_id} was not resolved to a model_uri by the server (nobody checked "
            "that the user may read it): submit the job through the server",
            field="run_id",
        )
    return model_uri


def table_lock_key(schema: str, table: str) -> str:
    """What a deploy or undeploy of ``schema.table`` locks (``hashtext`` of it, PostgreSQL)."""
    return f"mlmanager.deploy:{schema}.{table}"


def _database_error(exc: DBAPIError, user: str, what: str) -> Exception:
    code = getattr(exc.orig, "sqlstate", None)
    if code == _INSUFFICIENT_PRIVILEGE:
        return NotAuthorized(f"database user {user} may not {what}: {exc.orig}")
    return exc


class _DatabaseHandler(Handler):
    @property
    def engine(self) -> Any:
        return self.ctx.ledger.engine

    @property
    def _schema(self) -> str:
        """Where the scoring functions live (PostgreSQL)."""
        return schema_of(self.engine) or self.ctx.settings.db_schema

    def _as_user(self, conn: Connection, user: str | None = None) -> None:
        """Run the rest of the transaction's DDL with the requesting user's rights
        (``user``'s, when given)."""
        if self.ctx.settings.auth_backend == "database" and conn.dialect.name == "postgresql":
            role = quote_identifier(user or self.ctx.job.user, "user")
            conn.exec_driver_sql(f"SET LOCAL ROLE {role}")

    @staticmethod
    def _lock_table(conn: Connection, schema: str, table: str) -> None:
        """One deploy or undeploy per table at a time (SQLite serialises writers anyway)."""
        if conn.dialect.name == "postgresql":
            conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                {"name": table_lock_key(schema, table)},
            )

    def _authorize(self, conn: Connection) -> Deployment | None:
        """The server's submit-time rules again (``shared.deploy_rules``): the table's
        deployments may have changed since, or the job was not submitted through it.

        Returns the deployment active on the table (read here once for the check)."""
        active = DeploymentStore.active(conn, TARGET, tables_of(self.payload)[0].name)
        check_database_job(
            conn.dialect.name,
            self.payload,
            active,
            self.ctx.job.user,
            self.ctx.settings,
            self._submitter_is_admin,
        )
        return active

    @staticmethod
    def _back_to_worker(conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("RESET ROLE")


@register
class DeployDatabase(_DatabaseHandler):
    spec = SPECS["DEPLOY_DATABASE"]
    payload: DeployDatabasePayload

    def steps(self) -> list[Step]:
        self.rep: Representation | None = None
        self.source: ModelSource | None = None
        self.model_uri = ""
        return [
            ("reading the model and sample rows", self.read_model),
            ("building the model's representation", self.build),
            ("deploying onto the table" if not self.payload.dry_run else "planning", self.deploy),
        ]

    def read_model(self) -> None:
        import_mlflow()
        # Before any row is read: sample rows of a protected table would leak into the log.
        with self.engine.connect() as conn:
            self._authorize(conn)
        self.model_uri = resolve_model_uri(self.payload.run_id, self.payload.model_uri)
        # Downloaded once for the whole job; close() removes it.
        self.source = source = ModelSource.open(self.model_uri)
        logger.info("model {} ({})", self.model_uri, source.kind)
        self.sample = self._sample_rows(source)
        logger.info(
            "{} sample rows to check the model's representation on ({})",
            len(self.sample),
            self.sample_sources,
        )

    def close(self) -> None:
        if self.source is not None:
            self.source.close()

    def build(self) -> None:
        from shared.scoring.build import build_representation

        assert self.source is not None
        method = method_from(self.payload.library_specific)
        self.rep = build_representation(self.source, self.sample, method)
        rep = self.rep
        logger.info(
            "{} {} model ({}), scored as {}; inputs {}; prediction columns {}",
            rep.flavor,
            rep.kind,
            rep.method,
            rep.format,
            ", ".join(f"{c.name} {c.sql_type}" for c in rep.inputs),
            # As the table will have them (lower case on PostgreSQL).
            ", ".join(contract_name(c.name, self.engine.dialect.name) for c in rep.outputs),
        )

    def deploy(self) -> None:
        assert self.rep is not None
        payload, rep = self.payload, self.rep
        if self.payload.classes:
            logger.warning("classes is ignored: the labels are read from the model")
        with self.engine.begin() as conn:
            dialect = conn.dialect.name
            if dialect == "sqlite" and payload.trigger_mode == "statement":
                logger.info("SQLite triggers run per row: trigger_mode row")
            if payload.dry_run:
                self._authorize(conn)
                plan = self._plan(conn, None)
                logger.info("dry run: the deployment plan, not executed:\n{}", plan.render())
                conn.rollback()
                return
            self._lock_table(conn, payload.db_schema, payload.db_table)
            self._authorize(conn)
            if self._deployed_by_earlier_attempt(conn):
                return
            from shared.scoring.store import save_representation

            rep_id = save_representation(conn, rep, self.ctx.job.user)
            plan = self._plan(conn, rep_id)
            logger.info("deployment plan:\n{}", plan.render())
            try:
                plan.run_setup(conn)  # the scoring functions, with the worker's rights
                self._as_user(conn)
                plan.execute(conn)
                self._back_to_worker(conn)
            except DBAPIError as exc:
                raise _database_error(
                    exc, self.ctx.job.user, f"deploy onto {payload.db_schema}.{payload.db_table}"
                ) from exc
            self._record(conn, plan, rep, rep_id)
        logger.info(
            "{} deployed on {}: every inserted row is scored ({} trigger {})",
            self.model_uri,
            plan.name,
            plan.trigger_mode,
            plan.trigger_name,
        )

    def _plan(self, conn: Connection, rep_id: int | None) -> DeploymentPlan:
        """The plan from the catalog as the worker reads it (a dry run's and a real run's:
        the same steps after the same sync/async decision)."""
        assert self.rep is not None
        catalog = read_catalog(conn, self.payload, self._schema)
        plan = plan_deployment(catalog, self.payload, self.rep, rep_id, scoring_schema=self._schema)
        if self.payload.score_existing:
            add_score_existing(plan, self.rep)
        for note in plan.notes:
            logger.info("{}", note)
        return plan

    def _deployed_by_earlier_attempt(self, conn: Connection) -> bool:
        """True if an earlier attempt of this job committed its deployment (its worker died
        before recording SUCCESS): the rerun then has nothing left to do.

        The deployment record commits with the table's change, so finding this job's
        record (under the table's lock) is proof the whole deploy happened.
        """
        name = f"{self.payload.db_schema}.{self.payload.db_table}"
        mine = DeploymentStore.of_job(conn, TARGET, name, self.ctx.job.id)
        if mine is None:
            return False
        logger.info(
            "an earlier attempt of this job already deployed {} on {} (deployment {}, now {}): "
            "nothing left to do",
            mine.model_uri,
            name,
            mine.id,
            mine.status,
        )
        return True

    def _record(
        self, conn: Connection, plan: DeploymentPlan, rep: Representation, rep_id: int
    ) -> None:
        store = DeploymentStore(self.engine)
        replaced = store.set_status(conn, TARGET, plan.name, "DELETED", only="DEPLOYED")
        if replaced:
            logger.info("replaced the model deployed on {} before", plan.name)
        store.record(
            conn=conn,
            target=TARGET,
            name=plan.name,
            user=self.ctx.job.user,
            model_uri=self.model_uri,
            run_id=rep.run_id or self.payload.run_id,
            job_id=self.ctx.job.id,
            spec=DatabaseDeploymentSpec(
                db_schema=plan.schema,
                db_table=plan.table,
                representation_id=rep_id,
                format=str(rep.format),
                kind=str(rep.kind),
                trigger=plan.trigger_name,
                trigger_mode=plan.trigger_mode,
                mode="async" if plan.trigger_mode == "async" else "sync",
                keys=list(plan.binding.keys),
                features=list(plan.binding.features),
                input_columns=dict(
                    zip((c.name for c in rep.inputs), plan.binding.features, strict=True)
                ),
                prediction_columns=list(plan.binding.outputs),
                created_table=plan.creates_table,
                max_batch_size=plan.binding.max_batch_size,
            ),
        )

    def _sample_rows(self, source: ModelSource) -> pd.DataFrame:
        """Rows to check the conversion on: the table's, the reference table's and the
        input example's together, up to ``SAMPLE_ROWS`` (the parity check also makes NULL
        and split-threshold variants of them, ``shared.scoring.parity``)."""
        payload = self.payload
        sources = [(payload.db_schema, payload.db_table)]
        if payload.reference_table:
            sources.append((payload.reference_schema or payload.db_schema, payload.reference_table))
        found: list[tuple[str, pd.DataFrame]] = []
        with self.engine.connect() as conn:
            for schema, table in sources:
                frame = self._table_sample(conn, schema, table, source)
                if frame is not None and not frame.empty:
                    found.append((f"{schema}.{table}", frame))
        example = source.input_example()
        if example is not None and not example.empty:
            found.append(("the input example", example))
        inputs = source.input_names
        if inputs is not None:  # a source lacking a model input cannot be checked on
            found = [(n, f[inputs]) for n, f in found if set(inputs) <= set(f.columns)]
        if not found:
            raise InvalidPayload(
                "no sample rows to check the model's conversion on: the table is empty or "
                "missing, no reference_table was given and the model has no input example "
                "(log it with input_example=...)"
            )
        kept: list[tuple[str, pd.DataFrame]] = []
        room = SAMPLE_ROWS
        for name, frame in found:
            if room > 0:
                kept.append((name, frame.head(room)))
                room -= len(kept[-1][1])
        self.sample_sources = ", ".join(f"{len(f)} from {n}" for n, f in kept)
        frames = [f for _, f in kept]
        return frames[0] if len(frames) == 1 else pd.concat(frames, join="inner", ignore_index=True)

    def _table_sample(
        self, conn: Connection, schema: str, table: str, source: ModelSource
    ) -> pd.DataFrame | None:
        dialect = conn.dialect.name
        if dialect == "sqlite" and schema != "main":
            return None
        try:
            info = read_table(conn, schema, table)
        except DBAPIError:
            return None
        if info is None:
            return None
        skip = {c.lower() for c in RESERVED_COLUMNS} | {k.lower() for k in info.primary_key}
        if self.payload.model_cols:
            columns = list(self.payload.model_cols)
        else:
            columns = [c for c in info.columns if c.lower() not in skip]
        found = [info.find(c) for c in columns]
        if not columns or None in found:
            return None
        read = ", ".join(quote_identifier(c) for c in found if c)
        rows = conn.execute(
            text(f"SELECT {read} FROM {table_sql(dialect, schema, table)} LIMIT {SAMPLE_ROWS}")
        ).all()
        frame = pd.DataFrame([tuple(r) for r in rows], columns=columns)
        inputs = source.input_names
        if self.payload.model_cols and inputs is not None and len(inputs) == len(columns):
            return frame.set_axis(inputs, axis=1)  # model_cols name the inputs in order
        return _renamed_to_signature(frame, inputs)


def _renamed_to_signature(frame: pd.DataFrame, inputs: list[str] | None) -> pd.DataFrame:
    """Table columns renamed to the model's input names where they match ignoring case."""
    if inputs is None:
        return frame
    names = {column.lower(): name for name, column in input_columns(inputs).items()}
    names.update({n.lower(): n for n in inputs})
    return frame.rename(columns={c: names.get(str(c).lower(), c) for c in frame.columns})


@register
class UndeployDatabase(_DatabaseHandler):
    spec = SPECS["UNDEPLOY_DATABASE"]
    payload: UndeployDatabasePayload

    def steps(self) -> list[Step]:
        return [("removing the model from the table", self.undeploy)]

    def undeploy(self) -> None:
        payload = self.payload
        name = f"{payload.db_schema}.{payload.db_table}"
        store = DeploymentStore(self.engine)
        with self.engine.begin() as conn:
            dialect = conn.dialect.name
            self._lock_table(conn, payload.db_schema, payload.db_table)
            deployment = self._authorize(conn)
            if deployment is None and self._undeployed_by_earlier_attempt(conn, name):
                return
            if deployment is not None and payload.run_id and deployment.run_id != payload.run_id:
                raise InvalidPayload(
                    f"{name} has run {deployment.run_id} deployed, not {payload.run_id}",
                    field="run_id",
                )
            # Only a table that is really absent means "nothing deployed": a database error
            # here (a dropped connection) propagates, and the job is retried.
            info = read_table(conn, payload.db_schema, payload.db_table)
            if info is None or (not info.triggers and deployment is None):
                raise NotFound(f"no model is deployed on {name}")
            spec = deployment.spec if deployment else None
            plan = plan_undeploy(
                dialect,
                payload.db_schema,
                payload.db_table,
                info,
                prediction_columns=(
                    spec.prediction_columns if isinstance(spec, DatabaseDeploymentSpec) else ()
                ),
                drop_columns=payload.drop_columns,
            )
            for note in plan.notes:
                logger.warning("{}", note)
            logger.info("undeploy plan:\n{}", plan.render())
            try:
                self._as_user(conn)
                plan.execute(conn)
                self._back_to_worker(conn)
            except DBAPIError as exc:
                raise _database_error(exc, self.ctx.job.user, f"change {name}") from exc
            if deployment is not None:
                store.retire(conn, deployment, self.ctx.job.id)
            store.set_status(conn, TARGET, name, "DELETED", only="DEPLOYED")
        logger.info("{} no longer scores inserted rows; its data is kept", name)

    def _undeployed_by_earlier_attempt(self, conn: Connection, name: str) -> bool:
        """True if an earlier attempt of this job committed the undeploy (its worker died
        before recording SUCCESS): the rerun then has nothing left to do."""
        mine = DeploymentStore.retired_by(conn, TARGET, name, self.ctx.job.id)
        if mine is None:
            return False
        logger.info(
            "an earlier attempt of this job already removed the model from {} "
            "(deployment {}): nothing left to do",
            name,
            mine.id,
        )
        return True


@register
class Reconcile(_DatabaseHandler):
    """RECONCILE: re-apply the recorded state of deployments (``shared.targets``).

    Each deployment is observed and repaired in its own transaction, under the table lock
    of a deploy and with its owner's database rights (the rights that created it); a
    deployment that matches its record is left alone, so a rerun only finishes the work.
    """

    spec = RECONCILE
    payload: ReconcilePayload

    def steps(self) -> list[Step]:
        return [("re-applying the recorded deployments", self.reconcile)]

    def reconcile(self) -> None:
        chosen = self._chosen()
        repaired = failed = 0
        for deployment in chosen:
            target = self._target(deployment)
            if target is None:
                logger.info(
                    "deployment {}: {} cannot be reconciled yet", deployment.id, deployment.target
                )
                continue
            try:
                done = target.reconcile(deployment)
            except MLManagerError as exc:
                if self.payload.deployment_id is not None or exc.http_status >= 500:
                    raise
                # One deployment the user must fix (a table dropped) does not stop the rest.
                failed += 1
                logger.error("deployment {} ({}): {}", deployment.id, deployment.name, exc)
                continue
            except DBAPIError as exc:
                raise _database_error(exc, deployment.user, f"change {deployment.name}") from exc
            if done:
                repaired += 1
                logger.info(
                    "deployment {} ({}) repaired: {}",
                    deployment.id,
                    deployment.name,
                    "; ".join(done),
                )
            else:
                logger.info("deployment {} ({}) matches its record", deployment.id, deployment.name)
        logger.info(
            "{} deployment(s) checked, {} repaired, {} could not be", len(chosen), repaired, failed
        )

    def _target(self, deployment: Deployment) -> Target | None:
        """The target that re-applies ``deployment`` (None: one that cannot yet)."""
        if deployment.target == DatabaseTarget.name:
            return DatabaseTarget(
                self.engine, scoring_schema=self._schema, prepare=self._preparer(deployment)
            )
        if deployment.target == "kubernetes":
            from shared.kube.target import KubernetesTarget

            return KubernetesTarget(self.ctx.settings, self.engine)
        if deployment.target == "sagemaker":
            from shared.sagemaker import SageMakerTarget

            return SageMakerTarget(self.ctx.settings)
        if deployment.target == "azure":
            from shared.azureml import AzureTarget

            return AzureTarget(self.ctx.settings)
        return None

    def _chosen(self) -> list[Deployment]:
        """The deployments this job may reconcile: owner-or-admin, as undeploy."""
        user, wanted = self.ctx.job.user, self.payload.deployment_id
        store = DeploymentStore(self.engine)
        if wanted is not None:
            deployment = store.get(wanted)
            if deployment.user != user and not self._submitter_is_admin():
                raise NotAuthorized(
                    f"{user} may not reconcile deployment {wanted}: it is {deployment.user}'s",
                    field="deployment_id",
                )
            if deployment.status != "DEPLOYED":
                raise DeploymentConflict(
                    f"deployment {wanted} is {deployment.status}: only DEPLOYED ones are reconciled"
                )
            return [deployment]
        with self.engine.connect() as conn:
            every = list(DeploymentStore.deployed(conn))
        # Asked only when it matters: other users' deployments are an admin's to reconcile.
        if any(d.user != user for d in every) and not self._submitter_is_admin():
            every = [d for d in every if d.user == user]
        return every

    def _preparer(
        self, deployment: Deployment
    ) -> Callable[[Connection, DatabaseDeploymentSpec], None]:
        def prepare(conn: Connection, spec: DatabaseDeploymentSpec) -> None:
            self._lock_table(conn, spec.db_schema, spec.db_table)
            if conn.dialect.name == "postgresql":
                # As a deploy: the functions are installed with the worker's rights.
                from shared.scoring.asyncmode import notify_function_sql
                from shared.scoring.postgres import ensure_scoring_installed

                if spec.mode == "async":
                    conn.exec_driver_sql(notify_function_sql(self._schema))
                else:
                    ensure_scoring_installed(conn, self._schema)
            self._as_user(conn, deployment.user)

        return prepare


@register_service("scoring")
def async_scoring(ctx: ServiceContext) -> Callable[[], None] | None:
    """Scores the rows of ``mode: async`` deployments (PostgreSQL only: it LISTENs)."""
    if ctx.engine.dialect.name != "postgresql":
        return None
    from bobby.async_scoring import AsyncScoring

    return AsyncScoring(ctx.engine, ctx.settings, ctx.metrics, ctx.stopping).run
