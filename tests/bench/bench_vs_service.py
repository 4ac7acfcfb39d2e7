"""In-database scoring vs a scoring microservice (issue 6).

One PostgreSQL 15 server, one run, the 100-tree XGBoost classifier of
``bench_indb``. An application has rows in memory and wants them stored with
their predictions; it does so three ways, each timed from its first statement
(or request) until every row is stored with its prediction:

(i)   synchronous: plain INSERTs into a table deployed with the PL/Python trigger
      (statement mode, and row mode); the rows are scored when the INSERT returns.
(ii)  async: plain INSERTs into a table deployed with ``mode: async``, one
      ``mlmanager worker`` running; the clock stops when no row is unscored
      (polled every 10 ms after the last INSERT).
(iii) microservice: ``mlflow models serve --env-manager local`` in a subprocess;
      the application POSTs the row (or 1,000 rows) to /invocations with a
      keep-alive ``requests`` session, then INSERTs the row(s) with the
      prediction into a plain table.

"plain" is the anchor: the same INSERTs into the service's table, no prediction.
Single rows: one autocommit INSERT (and one request) per row. Batches: one
1,000-row ``INSERT ... SELECT FROM unnest(arrays)`` (and one request) per batch. Every connection,
session and server is warmed up first (the PL/Python model load per session,
the worker's model load, the server's first request), on rows not counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import requests

from tests.bench import bench_async as common
from tests.bench import bench_indb as indb
from tests.support.pg import free_port
from tests.support.workers import WorkerProcess

SINGLE_ROWS = int(os.environ.get("BENCH_VS_SERVICE_SINGLE_ROWS", "2000"))
BATCH_ROWS = int(os.environ.get("BENCH_VS_SERVICE_BATCH_ROWS", "100000"))
BATCH = 1000
WARM_UP = 50
SERVE_TIMEOUT = 180.0
GOALS = {"single_row_sync_over_service_min": 10.0}
TABLES = {"sync_statement": "vs_statement", "sync_row": "vs_row", "async": "vs_async"}
SERVICE_TABLE = "vs_service"


def insert_sql(table: str, rows: int, extra: tuple[tuple[str, str], ...] = ()) -> str:
    """One row: INSERT ... VALUES. More: INSERT ... SELECT FROM unnest(one array per column),
    which PostgreSQL parses and plans once whatever the row count (a 1,000-row VALUES list
    of 21,000 parameters made the insert itself the bottleneck)."""
    names = ["id", *indb.FEATURES, *(name for name, _ in extra)]
    into = f"INSERT INTO {indb.SCHEMA}.{table} ({', '.join(names)})"
    if rows == 1:
        return f"{into} VALUES ({', '.join(['%s'] * len(names))})"
    types = ["bigint", *(["float8"] * indb.N_FEATURES), *(t for _, t in extra)]
    return f"{into} SELECT * FROM unnest({', '.join(f'%s::{t}[]' for t in types)})"


def params(rows: list[tuple[Any, ...]]) -> list[Any]:
    """The parameters of ``insert_sql`` for these rows."""
    if len(rows) == 1:
        return list(rows[0])
    return [list(column) for column in zip(*rows, strict=True)]


# --- the three ways ----------------------------------------------------------------
def by_insert(
    conn: psycopg.Connection[Any], table: str, rows: list[tuple[Any, ...]], size: int
) -> float:
    """Plain INSERTs of ``size`` rows each; seconds."""
    sql = insert_sql(table, size)
    started = time.perf_counter()
    for start in range(0, len(rows), size):
        conn.execute(sql, params(rows[start : start + size]), prepare=True)
    return time.perf_counter() - started


class ModelServer:
    """``mlflow models serve`` for the model URI, on a free loopback port."""

    def __init__(self, model_uri: str, workdir: Path) -> None:
        self.port = free_port()
        self.log = workdir / "mlflow-serve.log"
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}")
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        self.command = [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
        ]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                self.command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.session = requests.Session()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self) -> float:
        """Seconds until /ping answers 200; raises with the server's log if it never does."""
        started = time.perf_counter()
        while time.perf_counter() - started < SERVE_TIMEOUT:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow models serve exited with {self.proc.returncode}: "
                    f"{self.log.read_text()[-2000:]}"
                )
            try:
                if self.session.get(self.url("/ping"), timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(
            f"mlflow models serve not ready in {SERVE_TIMEOUT}s: {self.log.read_text()[-2000:]}"
        )

    def predict(self, rows: list[tuple[Any, ...]]) -> list[Any]:
        body: Any = {"dataframe_split": {"columns": indb.FEATURES, "data": [r[1:] for r in rows]}}
        response = self.session.post(self.url("/invocations"), json=body, timeout=30)
        response.raise_for_status()
        return list(response.json()["predictions"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def by_service(
    conn: psycopg.Connection[Any],
    server: ModelServer,
    column: tuple[str, str],
    rows: list[tuple[Any, ...]],
    size: int,
) -> float:
    """Per ``size`` rows: one /invocations request, one INSERT with the predictions;
    ``column`` is the prediction column's name and SQL type."""
    sql = insert_sql(SERVICE_TABLE, size, (column,))
    started = time.perf_counter()
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        predictions = server.predict(chunk)
        conn.execute(
            sql, params([(*r, p) for r, p in zip(chunk, predictions, strict=True)]), prepare=True
        )
    return time.perf_counter() - started


@contextmanager
def model_server(bench: common.Bench) -> Iterator[tuple[ModelServer | None, dict[str, Any]]]:
    """The started server and what to report about it; None (and why) if it cannot start."""
    server = ModelServer(bench.model_uri, bench.workdir)
    info: dict[str, Any] = {"command": " ".join(server.command)}
    try:
        try:
            info["ready_s"] = round(server.wait_ready(), 2)
            for _ in range(WARM_UP):
                server.predict([(0, *([0.0] * indb.N_FEATURES))])
        except (RuntimeError, requests.RequestException) as exc:
            info["error"] = f"{type(exc).__name__}: {exc}"
        yield (None if "error" in info else server), info
    finally:
        server.stop()


# --- the run ---------------------------------------------------------------------
def measure(
    conn: psycopg.Connection[Any], table: str, work: Callable[[], float], after: Callable[[], Any]
) -> float:
    """Empty ``table``, warm nothing else, run ``work``; then ``after`` (waits) is timed too."""
    indb.emptied(conn, table)
    started = time.perf_counter()
    work()
    after()
    return time.perf_counter() - started


def run() -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    service_info: dict[str, Any] = {}
    worker: WorkerProcess | None = None
    with common.xgboost_database("mlm-bench-vs-service-") as bench:
        try:
            column = ""
            for way, table in TABLES.items():
                if way == "async":
                    details = common.deploy(bench, table, mode="async")
                else:
                    details = common.deploy(bench, table, trigger_mode=way.removeprefix("sync_"))
                column = details["prediction_columns"][0]
            source = indb.features(max(SINGLE_ROWS, BATCH_ROWS), 3)
            with indb.connect(bench.url) as conn:
                indb.create_source(conn, source)
                conn.execute(
                    f"CREATE TABLE {indb.SCHEMA}.{SERVICE_TABLE} "
                    f"(LIKE {indb.SCHEMA}.{TABLES['sync_statement']} INCLUDING DEFAULTS)"
                )
                conn.execute(f"ALTER TABLE {indb.SCHEMA}.{SERVICE_TABLE} ADD PRIMARY KEY (id)")
                rows = common.source_rows(conn, max(SINGLE_ROWS, BATCH_ROWS))
                (sql_type,) = conn.execute(
                    "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attname = %s",
                    (f"{indb.SCHEMA}.{SERVICE_TABLE}", column),
                ).fetchone()  # type: ignore[misc]
            worker = common.start_worker(bench, "scorer")
            shapes = {
                "single_row": (rows[:SINGLE_ROWS], 1),
                "batch_1000": (rows[:BATCH_ROWS], BATCH),
            }
            with indb.connect(bench.url) as conn:
                for way, table in {"plain": SERVICE_TABLE, **TABLES}.items():
                    done = (
                        (lambda t=table: common.wait_scored(conn, t, column))
                        if way == "async"
                        else (lambda: None)
                    )
                    # warm-up: the session's model load (sync) or the worker's (async)
                    indb.emptied(conn, table)
                    by_insert(conn, table, rows[:WARM_UP], 1)
                    done()
                    for shape, (chosen, size) in shapes.items():
                        seconds = measure(
                            conn,
                            table,
                            partial(by_insert, conn, table, chosen, size),
                            done,
                        )
                        if way != "plain":
                            assert not common.any_unscored(conn, table, column), table
                        results.setdefault(shape, {})[way] = seconds
                with model_server(bench) as (server, service_info):
                    if server is not None:
                        for shape, (chosen, size) in shapes.items():
                            results[shape]["service"] = measure(
                                conn,
                                SERVICE_TABLE,
                                partial(by_service, conn, server, (column, sql_type), chosen, size),
                                lambda: None,
                            )
                        service_info["disagreements_with_sync_statement"] = disagreements(
                            conn, column
                        )
        finally:
            if worker is not None:
                worker.stop()

    counts = {"single_row": SINGLE_ROWS, "batch_1000": BATCH_ROWS}
    summary = {
        shape: {
            way: {"seconds": round(s, 3), "rows_per_s": round(counts[shape] / s)}
            for way, s in ways.items()
        }
        for shape, ways in results.items()
    }
    ratios: dict[str, float] = {}
    for shape, ways in summary.items():
        if "service" in ways:
            for way in TABLES:
                ratios[f"{shape}_{way}_over_service"] = round(
                    ways[way]["rows_per_s"] / ways["service"]["rows_per_s"], 2
                )
    result = {
        "rows_per_s": summary,
        "service": service_info,
        "ratios": ratios,
        "goals": GOALS,
        "settings": {
            "model": "XGBClassifier(n_estimators=100, max_depth=6), 20 features (bench_indb)",
            "single_rows": SINGLE_ROWS,
            "batch_rows": BATCH_ROWS,
            "batch": BATCH,
            "timing": "first statement or request until every row is stored with its prediction "
            "(async: until no row is unscored, polled every 10 ms)",
            "service_output": "the service returns the class label only; the in-database tables "
            "also store the class probabilities",
            "cpus": os.cpu_count(),
            "server": "PostgreSQL 15 (tests.support.pg.PostgresServer: "
            "fsync off, synchronous_commit on)",
        },
    }
    print_table(result)
    return result


def disagreements(conn: psycopg.Connection[Any], column: str) -> int:
    """Rows whose service prediction differs from the in-database (statement trigger) one."""
    s, d = f"{indb.SCHEMA}.{SERVICE_TABLE}", f"{indb.SCHEMA}.{TABLES['sync_statement']}"
    (count,) = conn.execute(
        f"SELECT count(*) FROM {s} JOIN {d} USING (id) "
        f"WHERE {s}.{column}::text IS DISTINCT FROM {d}.{column}::text"
    ).fetchone()  # type: ignore[misc]
    return int(count)


def print_table(r: dict[str, Any]) -> None:
    print(f"storing rows with their predictions, XGBoost 100 trees, {os.cpu_count()} CPUs (rows/s)")
    ways = ["plain", *TABLES, "service"]
    print(f"{'':28} " + " ".join(f"{w:>15}" for w in ways))
    labels = {
        "single_row": f"{SINGLE_ROWS} single rows",
        "batch_1000": f"{BATCH_ROWS} rows, 1,000-row batches",
    }
    for shape, values in r["rows_per_s"].items():
        cells = [f"{values[w]['rows_per_s']:>15,}" if w in values else f"{'-':>15}" for w in ways]
        print(f"{labels[shape]:28} " + " ".join(cells))
    service = r["service"]
    if "error" in service:
        print(f"microservice not measured: {service['error']}")
    else:
        print(
            f"microservice ready in {service['ready_s']} s; predictions differing from the "
            f"statement trigger's: {service['disagreements_with_sync_statement']}"
        )
    for key, value in r["ratios"].items():
        print(f"{key}: {value}")
    print(
        "goal: single_row_sync_statement_over_service >= "
        f"{GOALS['single_row_sync_over_service_min']}"
    )
