"""Asynchronous in-database scoring benchmark (issue 6, ``mode: async``).

One PostgreSQL 15 server, one run, the 100-tree XGBoost classifier of
``bench_indb`` (20 features) deployed by the real DEPLOY_DATABASE handler with
``mode: async`` onto a new table, and one real ``mlmanager worker`` process
whose scorer LISTENs and claims the unscored rows.

(a) Insert overhead: a 100k-row ``INSERT ... SELECT`` (median of 3) and 5k
    single-row autocommit INSERTs (the tables taking turns in blocks of 1000,
    ``bench_indb.single_rows``) into the deployed table and into a plain twin
    (same columns, defaults and primary key; no trigger, no partial index).
    The worker runs meanwhile, as it would in production: during the single-row
    stream it scores on the same two CPUs. Between bulk repetitions every row is
    scored before the next timing.
(c) Scoring throughput: warm - the worker idle with its model loaded, a
    100k-row ``INSERT ... SELECT`` commits, and the clock runs from the commit
    until no row is unscored (polled every 10 ms; median of 3). Cold - the
    worker stopped, 100k rows inserted, a new worker started: seconds from the
    spawn and from its first healthy /health to all scored.
(b) Lag: single-row autocommit INSERTs paced at a steady rate. For this phase
    only, the benchmark adds a ``scored_at`` column and a BEFORE UPDATE row
    trigger that stamps ``clock_timestamp()`` when the prediction goes from
    NULL to a value, so lag per row = scored_at - eval_time, both read from the
    server's clock (eval_time is the inserting transaction's start; the
    worker's UPDATE commits right after the stamp). The worker's own histogram
    (bucket deltas over the phase, so only upper bounds) and the deployment's
    ``scoring_lag`` are reported beside it. Last, because the extra trigger
    slows the worker's UPDATE.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine

from shared.deployments import DeploymentStore
from shared.settings import Settings
from tests.bench import bench_indb as indb
from tests.support.indb import run_job
from tests.support.mlflow_store import temporary_tracking_store
from tests.support.pg import PostgresServer
from tests.support.workers import WorkerProcess, wait_until

ROWS = int(os.environ.get("BENCH_ASYNC_ROWS", "100000"))
SINGLE_ROWS = int(os.environ.get("BENCH_ASYNC_SINGLE_ROWS", "5000"))
LAG_RATE = float(os.environ.get("BENCH_ASYNC_LAG_RATE", "2000"))  # single-row inserts/s
LAG_SECONDS = 8.0
REPETITIONS = 3
MODEL = "xgboost"
TABLE = "xgboost_async"
PLAIN = "xgboost_async_plain"
POLL_SECONDS = 0.01
GOALS = {"insert_overhead_max": 1.2, "lag_p99_ms_max": 50.0, "throughput_rows_per_s_min": 50000}
LAG_METRIC = "mlmanager_async_scoring_lag_seconds"


# --- shared with bench_vs_service ------------------------------------------------
@dataclass
class Bench:
    pg: PostgresServer
    url: str
    engine: Engine
    settings: Settings
    workdir: Path
    model_uri: str
    model: Any  # the fitted XGBClassifier


@contextmanager
def xgboost_database(prefix: str) -> Iterator[Bench]:
    """A PostgreSQL server with the ledger, and bench_indb's XGBoost model logged to a
    SQLite MLflow store (the tracking URI stays set meanwhile, for the deploys)."""
    with indb.bench_postgres(prefix) as db:
        train = indb.features(indb.TRAIN_ROWS, 1)
        flavor, model, extra = indb.train_models(train)[MODEL]
        with temporary_tracking_store(db.workdir, "async"):
            uri = indb.log_model(flavor, model, train, extra)
            yield Bench(db.pg, db.url, db.engine, db.settings, db.workdir, uri, model)


def deploy(bench: Bench, table: str, **options: str) -> dict[str, Any]:
    """DEPLOY_DATABASE onto a new table (``mode``/``trigger_mode`` in options); its details."""
    payload = {
        "model_uri": bench.model_uri,
        "db_schema": indb.SCHEMA,
        "db_table": table,
        "create_model_table": True,
        "primary_key": {"id": "BIGINT"},
        **options,
    }
    run_job(bench.engine, bench.settings, "DEPLOY_DATABASE", payload)
    with bench.engine.connect() as conn:
        deployment = DeploymentStore.active(conn, "database", f"{indb.SCHEMA}.{table}")
    assert deployment is not None, f"{table} was not deployed"
    return dict(deployment.details)


def create_plain(conn: psycopg.Connection[Any], like: str, name: str) -> None:
    """The deployed table's columns, defaults and primary key; no trigger, no other index."""
    conn.execute(
        f"CREATE TABLE {indb.SCHEMA}.{name} (LIKE {indb.SCHEMA}.{like} INCLUDING DEFAULTS)"
    )
    conn.execute(f"ALTER TABLE {indb.SCHEMA}.{name} ADD PRIMARY KEY (id)")


def source_rows(conn: psycopg.Connection[Any], count: int) -> list[tuple[Any, ...]]:
    """The first ``count`` rows of the source table, as (id, f0, ..., f19)."""
    return [
        tuple(r)
        for r in conn.execute(f"SELECT {indb.COLUMNS} FROM {indb.SOURCE} ORDER BY id LIMIT {count}")
    ]


def any_unscored(conn: psycopg.Connection[Any], table: str, column: str) -> bool:
    (found,) = conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM {indb.SCHEMA}.{table} WHERE {column} IS NULL)"
    ).fetchone()  # type: ignore[misc]
    return bool(found)


def wait_scored(
    conn: psycopg.Connection[Any], table: str, column: str, timeout: float = 120
) -> float:
    """Poll until no row of ``table`` is unscored; the perf_counter time it was seen so."""
    deadline = time.perf_counter() + timeout
    while any_unscored(conn, table, column):
        if time.perf_counter() > deadline:
            raise AssertionError(f"{table} still has unscored rows after {timeout}s")
        time.sleep(POLL_SECONDS)
    return time.perf_counter()


def start_worker(bench: Bench, name: str) -> WorkerProcess:
    worker = WorkerProcess(bench.url, bench.workdir, name)
    worker.wait_healthy(120)
    return worker


# --- measuring -----------------------------------------------------------------
def rows_scored(worker: WorkerProcess) -> int:
    match = re.search(r"^mlmanager_async_rows_scored_total (\d+)$", worker.metrics(), re.M)
    return int(match.group(1)) if match else 0


def lag_buckets(worker: WorkerProcess) -> dict[str, int]:
    """The worker's lag histogram: cumulative count per upper bound."""
    pattern = rf'^{LAG_METRIC}_bucket{{le="([^"]+)"}} (\d+)$'
    return {le: int(n) for le, n in re.findall(pattern, worker.metrics(), re.M)}


def bucket_percentile(before: dict[str, int], after: dict[str, int], q: float) -> str:
    """The upper bound of the histogram bucket holding quantile ``q`` of the new rows."""
    counts = {le: after[le] - before.get(le, 0) for le in after}
    total = counts.get("+Inf", 0)
    if not total:
        return "no rows"
    for le, cumulative in counts.items():
        if cumulative >= q * total:
            return f"<= {float(le) * 1000:g} ms" if le != "+Inf" else "> last bucket"
    return "?"


def insert_overhead(
    conn: psycopg.Connection[Any], column: str, rows: list[tuple[Any, ...]]
) -> dict[str, Any]:
    """(a) bulk and single-row inserts, async table over plain twin."""
    indb.emptied(conn, PLAIN, TABLE)
    conn.execute(indb.insert_select(PLAIN, indb.WARM_UP_ROWS))
    conn.execute(indb.insert_select(TABLE, indb.WARM_UP_ROWS))
    wait_scored(conn, TABLE, column)
    plain_times, async_times = [], []
    for _ in range(REPETITIONS):
        indb.emptied(conn, PLAIN, TABLE)
        plain_times.append(indb.timed(conn, indb.insert_select(PLAIN)))
        conn.execute("CHECKPOINT")
        async_times.append(indb.timed(conn, indb.insert_select(TABLE)))
        wait_scored(conn, TABLE, column)
    bulk: dict[str, Any] = {
        "plain_s": round(statistics.median(plain_times), 4),
        "async_s": round(statistics.median(async_times), 4),
        "plain_runs_s": [round(t, 4) for t in plain_times],
        "async_runs_s": [round(t, 4) for t in async_times],
    }
    bulk["ratio"] = round(bulk["async_s"] / bulk["plain_s"], 3)
    single = indb.single_rows(conn, {"plain": PLAIN, "async": TABLE}, rows)
    wait_scored(conn, TABLE, column)
    single["ratio"] = round(single["async"]["total_s"] / single["plain"]["total_s"], 3)
    return {"bulk_insert_select": bulk, "single_row_inserts": single}


def throughput(bench: Bench, worker: WorkerProcess, column: str) -> tuple[dict[str, Any], Any]:
    """(c) warm drains, then a cold start on a 100k backlog; the new worker."""
    warm = []
    with indb.connect(bench.url) as conn:
        for _ in range(REPETITIONS):
            indb.emptied(conn, TABLE)
            before = rows_scored(worker)
            conn.execute(indb.insert_select(TABLE))
            committed = time.perf_counter()
            done = wait_scored(conn, TABLE, column)
            assert rows_scored(worker) - before == ROWS, "the worker's count disagrees"
            warm.append(done - committed)
        worker.terminate()
        indb.emptied(conn, TABLE)
        conn.execute(indb.insert_select(TABLE))
        spawned = time.perf_counter()
        cold_worker = WorkerProcess(bench.url, bench.workdir, "scorer-cold")
        cold_worker.wait_healthy(120)
        healthy = time.perf_counter()
        done = wait_scored(conn, TABLE, column)
    drain = statistics.median(warm)
    return {
        "warm_drain_s": round(drain, 3),
        "warm_drain_runs_s": [round(t, 3) for t in warm],
        "warm_rows_per_s": round(ROWS / drain),
        "cold_from_spawn_s": round(done - spawned, 3),
        "cold_from_healthy_s": round(done - healthy, 3),
        "cold_rows_per_s_from_healthy": round(ROWS / (done - healthy)),
        "cold_note": "the start-up sweep may begin before /health answers, so the rate "
        "from healthy can flatter the scorer; from spawn includes process start and model load",
    }, cold_worker


def steady_lag(bench: Bench, worker: WorkerProcess, column: str) -> dict[str, Any]:
    """(b) paced single-row inserts; lag per row from the scored_at stamp."""
    table = f"{indb.SCHEMA}.{TABLE}"
    with indb.connect(bench.url) as conn:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN scored_at timestamptz")
        conn.execute(
            "CREATE FUNCTION apps.bench_stamp_scored() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN NEW.scored_at = clock_timestamp(); RETURN NEW; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER bench_stamp_scored BEFORE UPDATE ON {table} FOR EACH ROW "
            f"WHEN (OLD.{column} IS NULL AND NEW.{column} IS NOT NULL) "
            "EXECUTE FUNCTION apps.bench_stamp_scored()"
        )
        indb.emptied(conn, TABLE)
        rows = [(i, *r[1:]) for i, r in enumerate(source_rows(conn, 100), 1)]
        sql = indb.insert_values(TABLE)
        for row in rows[:50]:  # warm-up: the prepared statement
            conn.execute(sql, row, prepare=True)
        wait_scored(conn, TABLE, column)
        indb.emptied(conn, TABLE)
        time.sleep(0.5)
        before = lag_buckets(worker)
        count = int(LAG_RATE * LAG_SECONDS)
        template = source_rows(conn, 1000)
        late = 0
        started = time.perf_counter()
        for i in range(count):
            due = started + i / LAG_RATE
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            elif now - due > 0.005:
                late += 1
            conn.execute(sql, (i + 1, *template[i % len(template)][1:]), prepare=True)
        elapsed = time.perf_counter() - started
        wait_scored(conn, TABLE, column)
        lags = [
            float(v)
            for (v,) in conn.execute(
                f"SELECT extract(epoch FROM scored_at - eval_time) FROM {table} ORDER BY id"
            )
        ]
    wait_until(lambda: lag_buckets(worker).get("+Inf", 0) - before.get("+Inf", 0) >= count, 10, "")
    after = lag_buckets(worker)
    with bench.engine.connect() as conn:
        deployment = DeploymentStore.active(conn, "database", table)
    assert deployment is not None
    q = statistics.quantiles(lags, n=100, method="inclusive")
    return {
        "target_rate_per_s": LAG_RATE,
        "achieved_rate_per_s": round(count / elapsed, 1),
        "inserts": count,
        "inserts_late_over_5ms": late,
        "p50_ms": round(q[49] * 1000, 2),
        "p90_ms": round(q[89] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "max_ms": round(max(lags) * 1000, 2),
        "worker_histogram_p50": bucket_percentile(before, after, 0.5),
        "worker_histogram_p99": bucket_percentile(before, after, 0.99),
        "deployment_scoring_lag": deployment.details.get("scoring_lag"),
    }


# --- the run ---------------------------------------------------------------------
def run() -> dict[str, Any]:
    workers: list[WorkerProcess] = []
    try:
        with xgboost_database("mlm-bench-async-") as bench:
            details = deploy(bench, TABLE, mode="async")
            column = details["prediction_columns"][0]
            source = indb.features(ROWS, 3)
            with indb.connect(bench.url) as conn:
                indb.create_source(conn, source)
                create_plain(conn, TABLE, PLAIN)
                rows = source_rows(conn, SINGLE_ROWS)
            workers.append(start_worker(bench, "scorer"))
            with indb.connect(bench.url) as conn:
                overhead = insert_overhead(conn, column, rows)
            scoring, cold = throughput(bench, workers[0], column)
            workers.append(cold)
            lag = steady_lag(bench, cold, column)
    finally:
        for worker in workers:
            worker.stop()

    ratios = {
        "bulk_insert_async_over_plain": overhead["bulk_insert_select"]["ratio"],
        "single_row_insert_async_over_plain": overhead["single_row_inserts"]["ratio"],
        "lag_p99_ms": lag["p99_ms"],
        "scoring_rows_per_s": scoring["warm_rows_per_s"],
    }
    result = {
        "insert_overhead": overhead,
        "scoring_throughput": scoring,
        "steady_lag": lag,
        "ratios": ratios,
        "goals": GOALS,
        "settings": {
            "model": "XGBClassifier(n_estimators=100, max_depth=6), 20 features (bench_indb)",
            "rows": ROWS,
            "single_rows": SINGLE_ROWS,
            "repetitions": REPETITIONS,
            "lag_seconds": LAG_SECONDS,
            "worker": "one mlmanager worker, default ASYNC_SCORING_BATCH_SIZE 5000, sweep 10 s",
            "plain_table": "same columns, defaults and primary key; no trigger, no partial index",
            "lag_method": "scored_at (clock_timestamp() in a benchmark-only BEFORE UPDATE "
            "trigger) - eval_time, per row, server clock",
            "throughput_method": f"from the insert's commit until no unscored row is left "
            f"(polled every {POLL_SECONDS * 1000:g} ms)",
            "cpus": os.cpu_count(),
            "server": "PostgreSQL 15 (tests.support.pg.PostgresServer: "
            "fsync off, synchronous_commit on)",
        },
    }
    print_table(result)
    return result


def print_table(r: dict[str, Any]) -> None:
    g = r["goals"]
    o = r["insert_overhead"]
    b, s = o["bulk_insert_select"], o["single_row_inserts"]
    print(f"async mode, XGBoost 100 trees, 20 features, one worker, {os.cpu_count()} CPUs")
    print(f"{'(a) insert overhead':44} {'plain':>14} {'async':>14} {'ratio':>6}  goal")
    print(
        f"{f'INSERT ... SELECT {ROWS} rows, median s':44} {b['plain_s']:14.3f} "
        f"{b['async_s']:14.3f} {b['ratio']:6.2f}  <= {g['insert_overhead_max']}"
    )
    print(
        f"{f'{SINGLE_ROWS} single-row INSERTs, total s':44} {s['plain']['total_s']:14.3f} "
        f"{s['async']['total_s']:14.3f} {s['ratio']:6.2f}  <= {g['insert_overhead_max']}"
    )
    print(
        f"{'  per insert p50/p99 ms':44} "
        f"{s['plain']['p50_ms']:6.3f}/{s['plain']['p99_ms']:7.3f} "
        f"{s['async']['p50_ms']:6.3f}/{s['async']['p99_ms']:7.3f}"
    )
    lag = r["steady_lag"]
    print(
        f"(b) lag at {lag['achieved_rate_per_s']} single-row inserts/s "
        f"({lag['inserts']} rows): p50 {lag['p50_ms']} ms, p90 {lag['p90_ms']} ms, "
        f"p99 {lag['p99_ms']} ms (goal <= {g['lag_p99_ms_max']}), max {lag['max_ms']} ms"
    )
    print(
        f"    worker histogram p50 {lag['worker_histogram_p50']}, p99 "
        f"{lag['worker_histogram_p99']}; deployment scoring_lag {lag['deployment_scoring_lag']}"
    )
    t = r["scoring_throughput"]
    print(
        f"(c) throughput, {ROWS} rows: warm drain {t['warm_drain_s']} s = "
        f"{t['warm_rows_per_s']:,} rows/s (goal >= {g['throughput_rows_per_s_min']:,}); "
        f"cold start {t['cold_from_spawn_s']} s from spawn, {t['cold_from_healthy_s']} s "
        f"from healthy ({t['cold_rows_per_s_from_healthy']:,} rows/s)"
    )
    for key, value in r["ratios"].items():
        print(f"{key}: {value}")
