"""Database engines, sessions and the one SQL identifier check.

PostgreSQL (psycopg 3) is the production database; SQLite is the embedded
default. ``splicemachinesa`` (the original product's dialect) is accepted when
its package is installed, but untested here.

On PostgreSQL our tables live in their own schema (``DB_SCHEMA``, default
``mlmanager``) because MLflow's own tables (``jobs``, ``users``...) may share the
database: every connection gets ``search_path = <schema>, public``.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from loguru import logger
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError

from shared.errors import ConfigError, DatabaseUnavailable, InvalidIdentifier, MLManagerError
from shared.settings import Settings

SUPPORTED_BACKENDS = ("postgresql", "sqlite", "splicemachinesa")
SQLITE_BUSY_TIMEOUT_MS = 5000
SCHEMA_OPTION = "mlmanager_schema"
SQLITE_READ_ONLY = "mlmanager_sqlite_read_only"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_identifier(name: object, what: str = "identifier") -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise InvalidIdentifier.

    Plain means: a letter or underscore, then letters, digits or underscores, at
    most 63 characters (PostgreSQL's limit). Everything else (quotes, dots,
    spaces, semicolons, non-ASCII) is refused instead of escaped: a user who
    needs such a name can rename the table, and nothing odd ever reaches SQL.
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidIdentifier(
            f"invalid {what} {name!r}: use 1-63 letters, digits or underscores, "
            "starting with a letter or underscore",
            field=what,
        )
    return name


def quote_identifier(name: object, what: str = "identifier") -> str:
    """Check ``name`` and return it double-quoted for SQL (the only way names reach SQL)."""
    return f'"{check_identifier(name, what)}"'


def quote_qualified(schema: str | None, table: str) -> str:
    """``"schema"."table"`` (or ``"table"``), both parts checked."""
    quoted_table = quote_identifier(table, "table")
    if schema is None:
        return quoted_table
    return f"{quote_identifier(schema, 'schema')}.{quoted_table}"


def parse_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "DB_URL is not a database URL (expected e.g. "
            "postgresql+psycopg://user:password@host:5432/dbname or sqlite:///path.db)"
        ) from None
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise ConfigError(
            f"DB_URL uses unsupported database {parsed.get_backend_name()!r}; "
            f"supported: {', '.join(SUPPORTED_BACKENDS)}"
        )
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin
    # (pysqlite's own BEGIN handling breaks SAVEPOINT and SELECT ... FOR UPDATE emulation).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()
    # Tables with a deployed model call it from their trigger (shared.scoring.indb).
    from shared.scoring.indb import register_sqlite_scoring

    register_sqlite_scoring(dbapi_conn)


def _sqlite_on_begin(conn: Any) -> None:
    # Writers take the write lock at BEGIN (IMMEDIATE): they then queue on the busy
    # timeout, where a deferred transaction that starts reading and later writes
    # would fail at once with "database is locked". Readers opt out (WAL lets them
    # read while another connection writes).
    if conn.get_execution_options().get(SQLITE_READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(
    settings: Settings, url: str | None = None, *, pre_ping: bool = True, **kwargs: Any
) -> Engine:
    """An engine for our database (or for ``url``), configured per dialect.

    ``pre_ping=False`` saves a round trip per checkout, for callers that retry on
    their own: a connection found dead then raises once and SQLAlchemy renews the pool.
    """
    parsed = parse_url(url or settings.database_url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        schema = check_identifier(settings.db_schema, "DB_SCHEMA")
        connect_args = {
            "options": f"-c search_path={schema},public",
            "connect_timeout": 10,
            "application_name": "mlmanager",
        }
    try:
        return create_engine(
            parsed,
            connect_args=connect_args,
            pool_pre_ping=pre_ping,
            execution_options={SCHEMA_OPTION: settings.db_schema}
            if backend == "postgresql"
            else {},
            **kwargs,
        )
    except NoSuchModuleError:
        raise ConfigError(
            f"no SQLAlchemy dialect installed for {parsed.drivername!r} "
            "(splicemachinesa needs: pip install 'mlmanager[splice]')"
        ) from None


_engines: dict[str, Engine] = {}


def get_engine(settings: Settings) -> Engine:
    """The process-wide engine of our database (one pool per URL)."""
    url = settings.database_url
    if url not in _engines:
        _engines[url] = make_engine(settings)
    return _engines[url]


def schema_of(engine: Engine) -> str | None:
    """The schema of our tables on this engine (None where the dialect has no schemas)."""
    return engine.get_execution_options().get(SCHEMA_OPTION)


class SessionLock:
    """A PostgreSQL session advisory lock on a connection of its own, taken without
    waiting. A holder that dies (``kill -9``) loses its session and so the lock."""

    def __init__(self, engine: Engine, try_lock_sql: str, **params: Any) -> None:
        self.engine = engine
        self.sql = text(try_lock_sql)  # a pg_try_advisory_lock(...) call
        self.params = params
        self._conn: Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    def take(self) -> bool:
        conn = self.engine.connect()
        try:
            got = bool(conn.execute(self.sql, self.params).scalar())
            conn.commit()
        except DBAPIError:
            conn.invalidate()
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def check(self) -> None:
        """Raise DBAPIError if the holding connection died (the lock went with it)."""
        if self._conn is not None:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()

    def release(self) -> None:
        if self._conn is not None:
            # Closed, not returned to the pool: a pooled session would keep the lock.
            self._conn.invalidate()
            self._conn.close()
            self._conn = None


def describe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    return parse_url(url).render_as_string(hide_password=True)


T = TypeVar("T")
MAX_STARTUP_BACKOFF_SECONDS = 5.0
# A server that answers and refuses (libpq's messages; psycopg gives no SQLSTATE for a
# failed connection): waiting cannot help, unlike "connection refused" or "the database
# system is starting up / shutting down".
_REFUSED = ("authentication failed", "does not exist", "pg_hba.conf", "permission denied")


def at_startup(settings: Settings, what: str, work: Callable[[], T]) -> T:
    """Run a process's start-up database ``work`` (schema check, migrations, seeding,
    registration), retrying with backoff while the database does not answer - it may be
    restarting, or starting beside us - for at most STARTUP_TIMEOUT_SECONDS.

    Then raises DatabaseUnavailable, one line naming the database and the cause (the
    command line prints it and exits non-zero). A server that answers and refuses (a bad
    password, a missing database) and errors other than an unreachable database (an
    outdated schema) are not retried.
    """
    deadline = time.monotonic() + settings.startup_timeout_seconds
    delay = 0.2
    said = ""
    while True:
        try:
            return work()
        except (DatabaseUnavailable, OperationalError) as exc:
            cause = _first_line(exc)
            if any(p in cause for p in _REFUSED):
                raise DatabaseUnavailable(
                    f"the database {describe_url(str(settings.database_url))} refused "
                    f"ML Manager while {what}: {cause}"
                ) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseUnavailable(
                    f"the database {describe_url(str(settings.database_url))} did not answer "
                    f"within STARTUP_TIMEOUT_SECONDS={settings.startup_timeout_seconds:g} "
                    f"while {what}: {cause}"
                ) from None
            if cause != said:  # one line per cause, not one per attempt
                logger.warning("database not answering while {}, retrying: {}", what, cause)
                said = cause
            # The last attempt is made at the deadline, so the whole timeout is waited.
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_STARTUP_BACKOFF_SECONDS)


def _first_line(exc: Exception) -> str:
    if isinstance(exc, MLManagerError):
        text = exc.message
    else:
        text = str(getattr(exc, "orig", None) or exc)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__
