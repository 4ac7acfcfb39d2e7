"""Reading the target database's catalog: what a deployment plan starts from.

The one place that asks the database what is there - tables, their columns, key
and scoring triggers, indexes, the installed scoring functions and whether they
can be installed - and returns it as plain data (:class:`Catalog`), so that the
planner (``shared.scoring.plan``) is a pure function of it and is tested
without a database.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, inspect, text

from shared.db import quote_qualified
from shared.handlers import DeployDatabasePayload
from shared.scoring.contract import SCORING_LOAD, TRIGGER_PREFIX

# What the scoring functions' comment starts with; the rest is their code's version.
SCORING_COMMENT_PREFIX = "mlmanager scoring "


@dataclass(frozen=True)
class TableInfo:
    """An existing table as the plan needs it."""

    columns: dict[str, str]  # name -> SQL type, in table order
    primary_key: tuple[str, ...]
    triggers: tuple[str, ...] = ()  # our scoring triggers on it

    def find(self, name: str) -> str | None:
        """The table's column called ``name``, exactly or else ignoring case."""
        if name in self.columns:
            return name
        matches = [c for c in self.columns if c.lower() == name.lower()]
        return matches[0] if len(matches) == 1 else None


@dataclass(frozen=True)
class ScoringFunctions:
    """The PL/Python scoring functions of a PostgreSQL database, and who may install them."""

    installed_version: str | None  # None: not installed
    plpython: bool  # the server has PL/Python (installed or installable)
    superuser: bool  # the connected role may install it (PL/Python is untrusted)


@dataclass(frozen=True)
class Catalog:
    """What a deploy onto one table needs to know of the database."""

    dialect: str
    schema_exists: bool
    table: TableInfo | None  # None: the table does not exist
    reference: TableInfo | None = None  # the payload's reference table, if named and present
    scoring: ScoringFunctions | None = None  # PostgreSQL only


def read_catalog(
    conn: Connection, payload: DeployDatabasePayload, scoring_schema: str | None
) -> Catalog:
    """The catalog a deploy of ``payload`` is planned from (read with ``conn``'s rights)."""
    dialect = conn.dialect.name
    schema, table = payload.db_schema, payload.db_table
    exists = schema_exists(conn, schema)
    reference = None
    if payload.reference_table:
        reference = read_table(conn, payload.reference_schema or schema, payload.reference_table)
    return Catalog(
        dialect=dialect,
        schema_exists=exists,
        table=read_table(conn, schema, table) if exists else None,
        reference=reference,
        scoring=read_scoring(conn, scoring_schema or "mlmanager")
        if dialect == "postgresql"
        else None,
    )


def read_table(conn: Connection, schema: str, table: str) -> TableInfo | None:
    """The table's columns, key and scoring triggers; ``None`` if it does not exist."""
    dialect = conn.dialect.name
    inspector = inspect(conn)
    db_schema = None if dialect == "sqlite" else schema
    if not inspector.has_table(table, schema=db_schema):
        return None
    columns = {
        c["name"]: c["type"].compile(dialect=conn.dialect)
        for c in inspector.get_columns(table, schema=db_schema)
    }
    key = tuple(inspector.get_pk_constraint(table, schema=db_schema)["constrained_columns"])
    return TableInfo(columns, key, tuple(sorted(read_triggers(conn, schema, table))))


def read_triggers(conn: Connection, schema: str, table: str) -> dict[str, str]:
    """Our scoring triggers on an existing table: name -> definition (``CREATE TRIGGER ...``)."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            text(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE tgrelid = CAST(:table AS regclass) AND NOT tgisinternal "
                "AND starts_with(tgname, :prefix) ORDER BY tgname"
            ),
            {"table": quote_qualified(schema, table), "prefix": TRIGGER_PREFIX},
        )
    else:
        rows = conn.execute(
            text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :table "
                "AND substr(name, 1, length(:prefix)) = :prefix ORDER BY name"
            ),
            {"table": table, "prefix": TRIGGER_PREFIX},
        )
    return {str(name): str(definition or "") for name, definition in rows}


def schema_exists(conn: Connection, schema: str) -> bool:
    if conn.dialect.name == "sqlite":
        return schema == "main"
    found = conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema})
    return found.first() is not None


def index_exists(conn: Connection, schema: str, index: str) -> bool:
    """Whether PostgreSQL has index ``index`` (unquoted name) in ``schema``."""
    found = conn.execute(
        text("SELECT 1 FROM pg_indexes WHERE schemaname = :s AND indexname = :i"),
        {"s": schema, "i": index},
    )
    return found.first() is not None


def read_scoring(conn: Connection, schema: str) -> ScoringFunctions:
    """The scoring functions in ``schema`` and whether this connection's role can install them."""
    comment = conn.execute(
        text(
            "SELECT obj_description(p.oid, 'pg_proc') FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = :schema AND p.proname = :name"
        ),
        {"schema": schema, "name": SCORING_LOAD},
    ).scalar()
    installed = None
    if comment and str(comment).startswith(SCORING_COMMENT_PREFIX):
        installed = str(comment).removeprefix(SCORING_COMMENT_PREFIX)
    plpython = conn.execute(
        text("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'plpython3u')")
    ).scalar()
    superuser = conn.execute(
        text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    ).scalar()
    return ScoringFunctions(installed, bool(plpython), bool(superuser))
