"""Dispatch benchmark (issue: "Bobby and the job ledger").

On one PostgreSQL, in one run: enqueue -> RUNNING latency with an idle worker, and
no-op jobs per second with 1 and 2 worker processes, for Bobby and for
procrastinate (the anchor). SQLite figures for Bobby too.

Both sides use the database clock: Bobby's ``created_at``/``started_at``/
``finished_at`` columns, procrastinate's ``procrastinate_events.at``.
Throughput: N jobs are queued to become runnable a few seconds later, the
workers are started meanwhile, and the rate is N / (last end - first start), so
process start-up is not counted on either side.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text

import tests.support.handlers  # noqa: F401  (NOOP handler spec)
from shared.db import make_engine
from shared.handlers import SPECS
from shared.ledger import Ledger
from shared.migrations import upgrade
from shared.models import utcnow
from shared.settings import load_settings
from tests.bench.procrastinate_app import app as procrastinate_app_template
from tests.support.pg import PostgresServer
from tests.support.workers import WorkerProcess

LATENCY_SAMPLES = int(os.environ.get("BENCH_LATENCY_SAMPLES", "300"))
THROUGHPUT_JOBS = int(os.environ.get("BENCH_THROUGHPUT_JOBS", "3000"))
THREADS = 4
ROOT = Path(__file__).resolve().parents[2]


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49] * 1000, 3),
        "p90_ms": round(q[89] * 1000, 3),
        "p99_ms": round(q[98] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
        "samples": len(values),
    }


def wait(check: Any, timeout: float, what: str, interval: float = 0.0005) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise RuntimeError(f"benchmark timed out waiting for {what}")


# --- Bobby ---------------------------------------------------------------------
def bobby(db_url: str, workdir: Path) -> dict[str, Any]:
    engine = make_engine(load_settings(db_url=db_url, mlmanager_home=workdir))
    upgrade(engine)
    ledger = Ledger(engine)
    ledger.seed_handlers({n: s.description for n, s in SPECS.items()})
    settings = {"worker_threads": THREADS, "log_level": "INFO"}
    result: dict[str, Any] = {}

    worker = WorkerProcess(db_url, workdir, "bobby-latency", **settings)
    worker.wait_healthy()
    samples = []
    for i in range(LATENCY_SAMPLES + 20):
        job = ledger.enqueue("NOOP", {}, "bench")
        wait(lambda j=job.id: ledger.get(j).started_at is not None, 10, "RUNNING")
        got = ledger.get(job.id)
        assert got.started_at is not None
        if i >= 20:  # warm-up
            samples.append((got.started_at - got.created_at).total_seconds())
        time.sleep(0.01)
    worker.terminate()
    result["latency"] = percentiles(samples)

    for n_workers in (1, 2):
        start_at = utcnow() + dt.timedelta(seconds=4)
        first_id = None
        for _ in range(THROUGHPUT_JOBS):
            job = ledger.enqueue("NOOP", {}, "bench", run_after=start_at)
            first_id = first_id or job.id
        workers = [
            WorkerProcess(db_url, workdir, f"bobby-{n_workers}-{k}", **settings)
            for k in range(n_workers)
        ]
        for w in workers:
            w.wait_healthy()
        wait(lambda: ledger.count_by_status()["PENDING"] == 0, 300, "queue drained", 0.25)
        wait(lambda: ledger.count_by_status()["RUNNING"] == 0, 60, "jobs finished", 0.25)
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT min(started_at), max(finished_at), count(*) FROM jobs "
                    "WHERE id >= :first AND status = 'SUCCESS'"
                ),
                {"first": first_id},
            ).one()
        for w in workers:
            w.terminate()
        start, end, count = row
        if isinstance(start, str):  # SQLite returns text from a raw query
            start, end = dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)
        seconds = (end - start).total_seconds()
        result[f"throughput_{n_workers}_workers"] = {
            "jobs": count,
            "seconds": round(seconds, 3),
            "jobs_per_second": round(count / seconds, 1),
        }
    engine.dispose()
    return result


# --- procrastinate ---------------------------------------------------------------
class ProcrastinateWorker:
    def __init__(self, conninfo: str, log: Path) -> None:
        import subprocess
        import sys

        env = {**os.environ, "BENCH_PG_CONNINFO": conninfo, "PYTHONPATH": str(ROOT)}
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "procrastinate",
                    "--app",
                    "tests.bench.procrastinate_app.app",
                    "worker",
                    "--queues",
                    "bench",
                    "--concurrency",
                    str(THREADS),
                    "--fetch-job-polling-interval",
                    "0.1",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def procrastinate(conninfo: str, workdir: Path) -> dict[str, Any]:
    from procrastinate import PsycopgConnector

    result: dict[str, Any] = {}
    with (
        procrastinate_app_template.replace_connector(
            PsycopgConnector(conninfo=conninfo)
        ) as procrastinate_app,
        psycopg.connect(conninfo, autocommit=True) as conn,
        procrastinate_app.open(),
    ):
        procrastinate_app.schema_manager.apply_schema()

        def event_at(job_id: int, kind: str) -> dt.datetime | None:
            row = conn.execute(
                "SELECT at FROM procrastinate_events WHERE job_id = %s AND type = %s",
                (job_id, kind),
            ).fetchone()
            return row[0] if row else None

        worker = ProcrastinateWorker(conninfo, workdir / "procrastinate-latency.log")
        time.sleep(3)  # import and LISTEN
        samples = []
        for i in range(LATENCY_SAMPLES + 20):
            job_id = procrastinate_app.configure_task("noop").defer()
            wait(lambda j=job_id: event_at(j, "started") is not None, 10, "procrastinate start")
            started, deferred = event_at(job_id, "started"), event_at(job_id, "deferred")
            assert started is not None and deferred is not None
            if i >= 20:
                samples.append((started - deferred).total_seconds())
            time.sleep(0.01)
        worker.stop()
        result["latency"] = percentiles(samples)

        for n_workers in (1, 2):
            (first_id,) = conn.execute(
                "SELECT coalesce(max(id), 0) + 1 FROM procrastinate_jobs"
            ).fetchone()  # type: ignore[misc]
            start_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)
            for _ in range(THROUGHPUT_JOBS):
                procrastinate_app.configure_task("noop", schedule_at=start_at).defer()
            workers = [
                ProcrastinateWorker(conninfo, workdir / f"procrastinate-{n_workers}-{k}.log")
                for k in range(n_workers)
            ]

            def left(first: int = first_id) -> int:
                (n,) = conn.execute(
                    "SELECT count(*) FROM procrastinate_jobs WHERE id >= %s "
                    "AND status IN ('todo', 'doing')",
                    (first,),
                ).fetchone()  # type: ignore[misc]
                return int(n)

            wait(lambda: left() == 0, 300, "procrastinate queue drained", 0.25)
            start, end, count = conn.execute(
                "SELECT min(s.at), max(e.at), count(DISTINCT e.job_id) "
                "FROM procrastinate_events s JOIN procrastinate_events e USING (job_id) "
                "WHERE s.type = 'started' AND e.type = 'succeeded' AND s.job_id >= %s",
                (first_id,),
            ).fetchone()  # type: ignore[misc]
            for w in workers:
                w.stop()
            seconds = (end - start).total_seconds()
            result[f"throughput_{n_workers}_workers"] = {
                "jobs": count,
                "seconds": round(seconds, 3),
                "jobs_per_second": round(count / seconds, 1),
            }
    return result


def run() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="mlm-bench-dispatch-"))
    pg = PostgresServer()
    pg.init()
    pg.start()
    try:
        with pg.connect() as conn:
            conn.execute("CREATE DATABASE bench")
        ours = bobby(pg.url("bench"), workdir)
        conninfo = pg.url("bench").replace("postgresql+psycopg://", "postgresql://")
        anchor = procrastinate(conninfo, workdir)
    finally:
        pg.cleanup()
    sqlite = bobby(f"sqlite:///{workdir / 'bench.db'}", workdir)

    ratios = {
        "latency_p50_bobby_over_procrastinate": round(
            ours["latency"]["p50_ms"] / anchor["latency"]["p50_ms"], 3
        ),
        "latency_p99_bobby_over_procrastinate": round(
            ours["latency"]["p99_ms"] / anchor["latency"]["p99_ms"], 3
        ),
    }
    for n in (1, 2):
        key = f"throughput_{n}_workers"
        ratios[f"{key}_bobby_over_procrastinate"] = round(
            ours[key]["jobs_per_second"] / anchor[key]["jobs_per_second"], 3
        )
    result = {
        "postgresql": {"bobby": ours, "procrastinate": anchor},
        "sqlite": {"bobby": sqlite},
        "ratios": ratios,
        "goals": {"latency_p50_ms": 10, "latency_p99_ms": 50, "throughput": ">= procrastinate"},
        "settings": {"worker_threads": THREADS, "throughput_jobs": THROUGHPUT_JOBS},
    }
    print_table(result)
    return result


def print_table(r: dict[str, Any]) -> None:
    rows = [
        ("PostgreSQL bobby", r["postgresql"]["bobby"]),
        ("PostgreSQL procrastinate", r["postgresql"]["procrastinate"]),
        ("SQLite bobby", r["sqlite"]["bobby"]),
    ]
    print(f"{'':28} {'p50 ms':>8} {'p99 ms':>8} {'1 worker/s':>11} {'2 workers/s':>12}")
    for name, v in rows:
        print(
            f"{name:28} {v['latency']['p50_ms']:8.2f} {v['latency']['p99_ms']:8.2f} "
            f"{v['throughput_1_workers']['jobs_per_second']:11.1f} "
            f"{v['throughput_2_workers']['jobs_per_second']:12.1f}"
        )
    for key, value in r["ratios"].items():
        print(f"{key}: {value}")
