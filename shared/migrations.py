"""Migrations of our tables: upgrade, render release SQL, refuse an outdated schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

import releases
from shared.db import describe_url, schema_of
from shared.errors import DatabaseUnavailable, SchemaOutdated

RELEASES_DIR = Path(releases.__file__).parent
SQL_DIR = RELEASES_DIR / "sql"
# Our own version table: MLflow's tracking store already owns ``alembic_version``
# and its auth app ``alembic_version_auth``, possibly in the same database.
VERSION_TABLE = "mlmanager_alembic_version"
UPGRADE_COMMAND = "mlmanager db upgrade"


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Autogenerate/compare only our tables, never the version table or MLflow's."""
    if type_ == "table":
        from shared.models import Base

        return name in Base.metadata.tables
    return True


def alembic_config(**attributes: Any) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(RELEASES_DIR))
    cfg.attributes.update(attributes)
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "releases/versions holds no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={"version_table": VERSION_TABLE, "version_table_schema": schema_of(engine)},
            )
            return ctx.get_current_revision()
    except OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot connect to the database {describe_url(str(engine.url))}: "
            f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}"
        ) from None


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Upgrade our tables to ``revision``; returns the revision now current."""
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(connection=conn, schema=schema_of(engine)), revision)
    except OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot migrate the database {describe_url(str(engine.url))}: "
            f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}"
        ) from None
    current = current_revision(engine)
    assert current is not None
    return current


def require_current(engine: Engine) -> None:
    """Raise SchemaOutdated (with the fixing command) unless the schema is at head."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    scripts = ScriptDirectory.from_config(alembic_config())
    known = {rev.revision for rev in scripts.walk_revisions()}
    if current is not None and current not in known:
        raise SchemaOutdated(
            f"the database schema is at revision {current}, which this version of "
            "ML Manager does not know (newer release?); upgrade ML Manager"
        )
    raise SchemaOutdated(
        f"the database schema is at revision {current or 'none (empty)'} but this code "
        f"needs {head}; run `{UPGRADE_COMMAND}` (with the same DB_URL/DB_HOST settings)"
    )


def render_release_sql(dialects: tuple[str, ...] = ("postgresql", "sqlite")) -> list[Path]:
    """Write one SQL script per revision and dialect to releases/sql/ (offline mode)."""
    import io

    scripts = ScriptDirectory.from_config(alembic_config())
    SQL_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for rev in reversed(list(scripts.walk_revisions())):
        for dialect in dialects:
            buf = io.StringIO()
            cfg = alembic_config(
                dialect_name=dialect,
                schema="mlmanager" if dialect == "postgresql" else None,
            )
            cfg.output_buffer = buf
            start = rev.down_revision or "base"
            command.upgrade(cfg, f"{start}:{rev.revision}", sql=True)
            path = SQL_DIR / f"mlmanager.{rev.revision}.{dialect}.sql"
            path.write_text(buf.getvalue())
            written.append(path)
    return written
