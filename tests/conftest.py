"""Shared fixtures: a real PostgreSQL per test session, fresh databases per test."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from shared.db import make_engine
from tests.support.engines import IN_CI, EngineFor, settings_for
from tests.support.pg import PG_BIN, PostgresServer, binaries_available


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL 15 server started by the tests (skipped locally when missing)."""
    if not binaries_available():
        message = f"PostgreSQL server binaries not found in {PG_BIN} (apt install postgresql-15)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer()
    server.init()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def pg_url(pg_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLAlchemy URL of a new empty database, dropped after the test."""
    base = re.sub(r"\W+", "_", request.node.name).lower()[:40]
    with pg_server.database(f"t_{base}_{uuid.uuid4().hex[:6]}") as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlmanager.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Runs a test once on SQLite and once on a real PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def engine_for(tmp_path: Path) -> Iterator[EngineFor]:
    """Builds engines the way ML Manager does, disposing them after the test."""
    engines: list[Engine] = []

    def build(url: str) -> Engine:
        engine = make_engine(settings_for(url, tmp_path))
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.dispose()
