"""Helpers of the in-database scoring tests: models, a handler run, plain clients."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from loguru import logger
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from bobby.handlers import REGISTRY, load_handlers
from bobby.handlers.base import JobContext, JobControl
from shared.handlers import SPECS
from shared.ledger import Job, Ledger
from shared.settings import Settings


def features(rows: int, seed: int) -> pd.DataFrame:
    """Three numeric features (a model's signature takes them by these names)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, rows).astype(np.float64),
            "income": rng.normal(50.0, 15.0, rows),
            "score": rng.uniform(-1.0, 1.0, rows),
        }
    )


def schema_for(url: str) -> str:
    """The schema the scoring tests deploy into: SQLite's ``main``, else ``apps``."""
    return "main" if url.startswith("sqlite") else "apps"


def run_job(
    engine: Engine, settings: Settings, handler: str, payload: dict[str, Any], user: str = "admin"
) -> list[str]:
    """Run one job's handler steps in this process (the real handler code); its log lines."""
    job = park_job(engine, handler, payload, user)
    try:
        return run_steps(engine, settings, job)
    finally:
        Ledger(engine).cancel(job.id)


def park_job(engine: Engine, handler: str, payload: dict[str, Any], user: str = "admin") -> Job:
    """A job in the ledger that no worker process runs (not runnable for a day): the test
    runs its steps with ``run_steps``, as often as it likes, and cancels it."""
    load_handlers()
    ledger = Ledger(engine)
    ledger.seed_handlers({name: spec.description for name, spec in SPECS.items()})
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    return ledger.enqueue(handler, payload, user, run_after=later)


def run_steps(engine: Engine, settings: Settings, job: Job) -> list[str]:
    """Run ``job``'s handler steps in this process (one attempt); its log lines."""
    spec = SPECS[job.handler_name]
    ctx = JobContext(job, Ledger(engine), settings, JobControl(), "test-worker")
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="DEBUG")
    try:
        instance = REGISTRY[job.handler_name](ctx, spec.payload_model.model_validate(job.payload))
        try:
            for _, step in instance.steps():
                step()
        finally:
            instance.close()  # as the runner does
    finally:
        logger.remove(sink)
    return lines


def psql_dsn(url: str) -> str:
    """A libpq connection string for a SQLAlchemy PostgreSQL URL (a plain client's view)."""
    parsed = make_url(url)
    return (
        f"host={parsed.host} port={parsed.port} dbname={parsed.database} "
        f"user={parsed.username} password={parsed.password}"
    )


@contextmanager
def plain_pg(url: str, autocommit: bool = True) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(psql_dsn(url), autocommit=autocommit) as conn:
        yield conn


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    assert database
    return Path(database)


def insert_rows(
    url: str, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], schema: str
) -> None:
    """INSERT rows in one statement with a plain client (psycopg, or mlmanager.connect)."""
    names = ", ".join(f'"{c}"' for c in columns)
    if url.startswith("sqlite"):
        import mlmanager

        marks = ", ".join("?" for _ in columns)
        with mlmanager.connect(sqlite_path(url)) as conn:
            conn.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', rows)
        return
    marks = ", ".join("%s" for _ in columns)
    values = ", ".join(f"({marks})" for _ in rows)
    flat = [v for row in rows for v in row]
    with plain_pg(url) as conn:
        conn.execute(f'INSERT INTO "{schema}"."{table}" ({names}) VALUES {values}', flat)


def read_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(sqlite_path(url))) as lite:
            return [tuple(r) for r in lite.execute(sql).fetchall()]
    with plain_pg(url) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
