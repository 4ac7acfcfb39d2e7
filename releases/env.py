"""Alembic environment of ML Manager's own tables.

Driven by ``shared.migrations`` (``mlmanager db upgrade`` / ``mlmanager db sql``);
there is no alembic.ini: the connection or the offline dialect comes in through
``config.attributes``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from shared.db import quote_identifier
from shared.migrations import VERSION_TABLE, include_object
from shared.models import Base

config = context.config
schema: str | None = config.attributes.get("schema")


def run_offline() -> None:
    context.configure(
        dialect_name=config.attributes["dialect_name"],
        target_metadata=Base.metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        include_object=include_object,
    )
    with context.begin_transaction():
        if schema is not None:
            context.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema, 'schema')}")
            context.execute(f"SET search_path TO {quote_identifier(schema, 'schema')}, public")
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes["connection"]
    if schema is not None:
        connection.execute(
            text(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema, 'schema')}")
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
