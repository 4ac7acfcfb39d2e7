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
from shared.deployments import DeploymentStore
from shared.errors import InvalidPayload, NotAuthorized, NotFound, TargetUnavailable
from shared.handlers import SPECS, DeployDatabasePayload, UndeployDatabasePayload
from shared.scoring.kinds import RESERVED_COLUMNS, method_from
from shared.scoring.plan import (
    DeploymentPlan,
    add_score_existing,
    contract_name,
    plan_deployment,
    read_table,
    table_sql,
)
from shared.scoring.representation import Representation
from shared.scoring.runtime import import_mlflow

TARGET = DATABASE_TARGET
SAMPLE_ROWS = 200
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

    def _as_user(self, conn: Connection) -> None:
        """Run the rest of the transaction's DDL with the requesting user's rights."""
        if self.ctx.settings.auth_backend == "database" and conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL ROLE {quote_identifier(self.ctx.job.user, 'user')}")

    @staticmethod
    def _lock_table(conn: Connection, schema: str, table: str) -> None:
        """One deploy or undeploy per table at a time (SQLite serialises writers anyway)."""
        if conn.dialect.name == "postgresql":
            conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                {"name": table_lock_key(schema, table)},
            )

    def _authorize(self, conn: Connection) -> None:
        """The server's submit-time rules again (``shared.deploy_rules``): the table's
        deployments may have changed since, or the job was not submitted through it."""
        active = DeploymentStore.active(conn, TARGET, tables_of(self.payload)[0].name)
        check_database_job(
            conn.dialect.name,
            self.payload,
            active,
            self.ctx.job.user,
            self.ctx.settings,
            self._submitter_is_admin,
        )

    def _submitter_is_admin(self) -> bool:
        """Whether the job's user is an admin now, asked of MLflow's user store.

        Read when a rule depends on it, not stored on the job: nothing a client sends
        can claim it, and an admin demoted since the submit loses the right. This
        worker's MLflow login (the admin's by default) must be an admin to read other
        users; if it cannot, the user counts as no admin (the job is refused).
        """
        import mlflow
        from mlflow.exceptions import MlflowException, RestException
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        user = self.ctx.job.user
        endpoint = "/api/2.0/mlflow/users/get"
        try:
            response = http_request(
                get_default_host_creds(mlflow.get_tracking_uri()),
                endpoint,
                "GET",
                params={"username": user},
            )
            found = verify_rest_response(response, endpoint).json()["user"]
        except RestException as exc:
            logger.warning("cannot tell whether {} is an admin: {}", user, exc.message)
            return False
        except MlflowException as exc:
            raise TargetUnavailable(
                f"cannot reach the MLflow server to tell whether {user} is an admin: {exc.message}"
            ) from exc
        return bool(found.get("is_admin"))

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
        logger.info("model {}", self.model_uri)
        self.sample = self._sample_rows()
        logger.info("{} sample rows to check the model's representation on", len(self.sample))

    def build(self) -> None:
        from shared.scoring.build import build_representation

        method = method_from(self.payload.library_specific)
        self.rep = build_representation(self.model_uri, self.sample, method)
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
                plan = plan_deployment(
                    conn,
                    payload,
                    rep,
                    None,
                    scoring_schema=self._schema,
                    asynchronous=payload.mode == "async",
                )
                self._add_existing(plan)
                logger.info("dry run: the deployment plan, not executed:\n{}", plan.render())
                conn.rollback()
                return
            self._lock_table(conn, payload.db_schema, payload.db_table)
            self._authorize(conn)
            if self._deployed_by_earlier_attempt(conn):
                return
            asynchronous = self._choose_mode(conn)
            from shared.scoring.store import save_representation

            rep_id = save_representation(conn, rep, self.ctx.job.user)
            try:
                self._as_user(conn)
                plan = plan_deployment(
                    conn,
                    payload,
                    rep,
                    rep_id,
                    scoring_schema=self._schema,
                    asynchronous=asynchronous,
                )
                self._add_existing(plan)
                logger.info("deployment plan:\n{}", plan.render())
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

    def _choose_mode(self, conn: Connection) -> bool:
        """Install what the mode needs; True for async (PostgreSQL without PL/Python).

        (On SQLite, an explicit async is passed on for the plan to refuse.)
        """
        payload = self.payload
        if conn.dialect.name != "postgresql":
            return payload.mode == "async"
        from shared.scoring.asyncmode import notify_function_sql
        from shared.scoring.postgres import ensure_scoring_installed

        if payload.mode != "async":
            savepoint = conn.begin_nested()
            try:
                if ensure_scoring_installed(conn, self._schema):
                    logger.info("installed the PL/Python scoring functions in {}", self._schema)
                savepoint.commit()
                return False
            except (TargetUnavailable, NotAuthorized) as exc:
                savepoint.rollback()
                if payload.mode == "sync":
                    raise
                logger.info("scoring asynchronously (mode async): {}", exc.message)
        conn.exec_driver_sql(notify_function_sql(self._schema))
        return True

    @property
    def _schema(self) -> str:
        return schema_of(self.engine) or self.ctx.settings.db_schema

    def _add_existing(self, plan: DeploymentPlan) -> None:
        if self.payload.score_existing:
            assert self.rep is not None
            add_score_existing(plan, self.rep)

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
            details={
                "db_schema": plan.schema,
                "db_table": plan.table,
                "representation_id": rep_id,
                "format": str(rep.format),
                "kind": str(rep.kind),
                "trigger": plan.trigger_name,
                "trigger_mode": plan.trigger_mode,
                "mode": "async" if plan.trigger_mode == "async" else "sync",
                "keys": [list(k) for k in plan.binding.keys],
                "features": list(plan.binding.features),
                "prediction_columns": list(plan.binding.outputs),
                "created_table": plan.creates_table,
            },
        )

    def _sample_rows(self) -> pd.DataFrame:
        """Rows to check the conversion on: the table's, the reference table's, the example's."""
        payload = self.payload
        sources = [(payload.db_schema, payload.db_table)]
        if payload.reference_table:
            sources.append((payload.reference_schema or payload.db_schema, payload.reference_table))
        with self.engine.connect() as conn:
            for schema, table in sources:
                frame = self._table_sample(conn, schema, table)
                if frame is not None and not frame.empty:
                    return frame
        example = _input_example(self.model_uri)
        if example is None:
            raise InvalidPayload(
                "no sample rows to check the model's conversion on: the table is empty or "
                "missing, no reference_table was given and the model has no input example "
                "(log it with input_example=...)"
            )
        return example

    def _table_sample(self, conn: Connection, schema: str, table: str) -> pd.DataFrame | None:
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
        return _renamed_to_signature(frame, self.model_uri)


def _renamed_to_signature(frame: pd.DataFrame, model_uri: str) -> pd.DataFrame:
    """Table columns renamed to the model's input names where they match ignoring case."""
    from mlflow.models import get_model_info

    from shared.scoring.flavors import is_mojo_artifact

    if is_mojo_artifact(model_uri):  # a MOJO names its inputs itself
        return frame
    signature = get_model_info(model_uri).signature
    if signature is None or not signature.inputs.has_input_names():
        return frame
    names = {str(n).lower(): str(n) for n in signature.inputs.input_names()}
    return frame.rename(columns={c: names.get(str(c).lower(), c) for c in frame.columns})


def _input_example(model_uri: str) -> pd.DataFrame | None:
    import tempfile

    import mlflow
    from mlflow.models import Model

    from shared.scoring.flavors import is_mojo_artifact

    if is_mojo_artifact(model_uri):  # an artifact, not an MLflow model: no example
        return None
    with tempfile.TemporaryDirectory(prefix="mlmanager-example-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        example = Model.load(local).load_input_example(local)
    if example is None:
        return None
    return example if isinstance(example, pd.DataFrame) else pd.DataFrame(example)


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
            self._authorize(conn)
            deployment = store.active(conn, TARGET, name)
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
            qualified = table_sql(dialect, payload.db_schema, payload.db_table)
            try:
                self._as_user(conn)
                for trigger in info.triggers:
                    on = f" ON {qualified}" if dialect == "postgresql" else ""
                    conn.exec_driver_sql(f"DROP TRIGGER {quote_identifier(trigger)}{on}")
                    logger.info("dropped trigger {}", trigger)
                if dialect == "postgresql":
                    from shared.scoring.asyncmode import unscored_index_name

                    index = unscored_index_name(payload.db_table)
                    schema = quote_identifier(payload.db_schema, "schema")
                    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {schema}.{index}")
                if payload.drop_columns:
                    self._drop_columns(conn, qualified, info.columns, deployment)
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

    def _drop_columns(
        self, conn: Connection, qualified: str, columns: dict[str, str], deployment: Any
    ) -> None:
        names = list(deployment.details.get("prediction_columns", [])) if deployment else []
        if not names:
            logger.warning("no deployment record names the prediction columns: none dropped")
        present = {c.lower(): c for c in columns}
        for name in names:
            column = present.get(name.lower())
            if column is not None:
                conn.exec_driver_sql(
                    f"ALTER TABLE {qualified} DROP COLUMN {quote_identifier(column, 'column')}"
                )
                logger.info("dropped column {}", column)


@register_service("scoring")
def async_scoring(ctx: ServiceContext) -> Callable[[], None] | None:
    """Scores the rows of ``mode: async`` deployments (PostgreSQL only: it LISTENs)."""
    if ctx.engine.dialect.name != "postgresql":
        return None
    from bobby.async_scoring import AsyncScoring

    return AsyncScoring(ctx.engine, ctx.settings, ctx.metrics, ctx.stopping).run
