"""Who may deploy where: the rules the server applies when a job is submitted and the
worker applies again inside the deploy/undeploy transaction (after the table lock),
because the deployments and the catalog can change between the two.

1. **Protected tables, for everybody (admins included).** ML Manager's own tables
   (the whole ``DB_SCHEMA`` on PostgreSQL; on SQLite, where they share ``main`` with
   the tables deploys target, our tables by name), MLflow's tables (on PostgreSQL in
   ``public`` of the same database), system schemas (``pg_*``: ``pg_catalog``,
   ``pg_toast``, ``pg_temp_N``...; ``information_schema``) and SQLite's ``sqlite_*``
   tables. This covers the table a model is deployed onto and the reference table
   sample rows are read from (reading ``mlmanager.jobs`` would leak other users' jobs).
2. **Allowed schemas, for ordinary users.** ``DEPLOY_ALLOWED_SCHEMAS`` lists the
   schemas they may deploy into and read reference tables from; empty means every
   schema rule 1 leaves. Admins are not bound by it.
3. **Owner or admin.** A table on which another user's deployment is active is
   replaced or undeployed only by that user or an admin.

Protected names are compared ignoring case: SQLite ignores it, and refusing a
PostgreSQL table that differs from a protected one only in case costs nothing. Allowed
schemas are compared exactly on PostgreSQL (names reach SQL quoted: ``Apps`` is not
``apps``), ignoring case on SQLite.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from shared.deployments import Deployment
from shared.errors import NotAuthorized
from shared.handlers import DeployDatabasePayload, UndeployDatabasePayload
from shared.settings import Settings

DATABASE_TARGET = "database"
# Where MLflow's tables live when it shares our PostgreSQL database (README: "MLflow's
# stay in public").
MLFLOW_SCHEMA = "public"
SYSTEM_SCHEMAS = frozenset({"information_schema"})
SYSTEM_SCHEMA_PREFIX = "pg_"  # PostgreSQL reserves it: pg_catalog, pg_toast, pg_temp_3...
SQLITE_INTERNAL_PREFIX = "sqlite_"
# MLflow's migration tables and its auth app's tables (mlflow/server/auth/db/models.py of
# MLflow 3.17, named here: importing that module would load MLflow's whole server package).
MLFLOW_OTHER_TABLES = frozenset(
    {
        "alembic_version",
        "alembic_version_auth",
        "users",
        "roles",
        "role_permissions",
        "user_role_assignments",
        "experiment_permissions",
        "registered_model_permissions",
    }
)


@dataclass(frozen=True)
class TableRef:
    """A table a job names, and the payload fields that name it (for errors)."""

    schema: str
    table: str
    schema_field: str
    table_field: str

    @property
    def name(self) -> str:
        """The deployment name of a table (``schema.table``, as deployments record it)."""
        return f"{self.schema}.{self.table}"


def tables_of(payload: object) -> list[TableRef]:
    """The tables a database job deploys onto, undeploys from or reads sample rows from."""
    if not isinstance(payload, DeployDatabasePayload | UndeployDatabasePayload):
        return []
    found = [TableRef(payload.db_schema, payload.db_table, "db_schema", "db_table")]
    if isinstance(payload, DeployDatabasePayload) and payload.reference_table:
        schema = payload.reference_schema or payload.db_schema
        field = "reference_schema" if payload.reference_schema else "db_schema"
        found.append(TableRef(schema, payload.reference_table, field, "reference_table"))
    return found


@functools.cache
def _our_tables() -> frozenset[str]:
    from shared.migrations import VERSION_TABLE
    from shared.models import Base

    return frozenset({*Base.metadata.tables, VERSION_TABLE})


@functools.cache
def _mlflow_tables() -> frozenset[str]:
    """MLflow's tracking and registry tables (read from MLflow's own models) and its auth
    app's tables."""
    from mlflow.store.db.base_sql_model import Base

    # Importing the model modules registers their tables on MLflow's metadata.
    for module in ("tracking", "model_registry"):
        importlib.import_module(f"mlflow.store.{module}.dbmodels.models")
    return frozenset(n.lower() for n in Base.metadata.tables) | MLFLOW_OTHER_TABLES


def protected_reason(
    dialect: str, schema: str, table: str, settings: Settings
) -> tuple[str, str] | None:
    """Why nobody may deploy onto (or read from) ``schema.table``, and whether the schema
    or the table is the cause; None if it is not protected."""
    s, t = schema.lower(), table.lower()
    if dialect == "sqlite":
        if t.startswith(SQLITE_INTERNAL_PREFIX):
            return f"{table} is one of SQLite's internal tables", "table"
        if t in _our_tables():
            return f"{table} is one of ML Manager's own tables", "table"
        return None
    if s == settings.db_schema.lower():
        return f"schema {schema} holds ML Manager's own tables (DB_SCHEMA)", "schema"
    if s in SYSTEM_SCHEMAS or s.startswith(SYSTEM_SCHEMA_PREFIX):
        return f"schema {schema} is a system schema", "schema"
    if s == MLFLOW_SCHEMA and t in _mlflow_tables():
        return f"{schema}.{table} is one of MLflow's tables", "table"
    return None


def allowed_schemas(settings: Settings) -> frozenset[str] | None:
    """The schemas ordinary users may use; None: every unprotected one."""
    names = {s.strip() for s in settings.deploy_allowed_schemas.split(",") if s.strip()}
    return frozenset(names) or None


def _is_allowed(dialect: str, schema: str, allowed: frozenset[str]) -> bool:
    # PostgreSQL names always reach SQL quoted, so "Apps" is another schema than apps;
    # SQLite ignores case.
    if dialect == "sqlite":
        return schema.lower() in {a.lower() for a in allowed}
    return schema in allowed


def check_database_job(
    dialect: str,
    payload: object,
    active: Deployment | None,
    user: str,
    settings: Settings,
    is_admin: Callable[[], bool],
) -> None:
    """Refuse a database job that breaks one of the three rules (NotAuthorized, 403).

    ``active`` is the deployment active on the job's table (None if there is none);
    ``is_admin`` is called only when the answer matters (the worker asks the server).
    """
    refs = tables_of(payload)
    for ref in refs:
        protected = protected_reason(dialect, ref.schema, ref.table, settings)
        if protected is not None:
            reason, cause = protected
            raise NotAuthorized(
                f"{ref.name} may not be used by ML Manager jobs: {reason}",
                field=ref.table_field if cause == "table" else ref.schema_field,
            )
    if active is not None and active.user != user and not is_admin():
        raise NotAuthorized(
            f"the model on {active.name} (deployment {active.id}) was deployed by "
            f"{active.user}: only they or an administrator may replace or undeploy it",
            field="db_table",
        )
    # Removing an existing deployment is the owner's right (rule 3) even if the schema
    # has left the allowed ones since; anything else must stay inside them.
    if isinstance(payload, UndeployDatabasePayload) and active is not None:
        return
    allowed = allowed_schemas(settings)
    for ref in refs:
        if allowed is not None and not _is_allowed(dialect, ref.schema, allowed) and not is_admin():
            raise NotAuthorized(
                f"schema {ref.schema} is not one users may deploy into or read from "
                f"(DEPLOY_ALLOWED_SCHEMAS: {', '.join(sorted(allowed))}); ask an administrator",
                field=ref.schema_field,
            )
