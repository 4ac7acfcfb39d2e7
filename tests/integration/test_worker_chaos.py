"""Several real workers on a real PostgreSQL: crashes, load and a database restart."""

from __future__ import annotations

import random
import time

import pytest
from sqlalchemy import Engine, text

from shared.ledger import Ledger
from tests.integration.conftest import StartWorker
from tests.pg import PostgresServer
from tests.workers import scalar, wait_finished, wait_until

pytestmark = pytest.mark.postgres


@pytest.fixture
def db_url(pg_url: str) -> str:
    """These tests need several workers at once: PostgreSQL only."""
    return pg_url


def holder_pid(ledger: Ledger, job_id: int) -> int | None:
    worker_id = ledger.get(job_id).worker_id
    return int(worker_id.rsplit(":", 1)[1]) if worker_id else None


def test_killed_worker_job_runs_once_elsewhere(
    ledger: Ledger, engine: Engine, start_worker: StartWorker
) -> None:
    """kill -9 the worker holding a job, 20 times: the job finishes on the other worker,
    its effect happens once, and the second holder starts only after the first died."""
    settings = {"job_lease_seconds": 1.0, "worker_sweep_seconds": 0.2}
    workers = {w.pid: w for w in (start_worker(**settings), start_worker(**settings))}
    rng = random.Random(20261127)
    for trial in range(20):
        job = ledger.enqueue("RECORD", {"steps": 5, "sleep": 1.0}, "ann")
        wait_until(lambda j=job.id: ledger.get(j).status == "RUNNING", 20, "RUNNING")  # type: ignore[misc]
        victim = holder_pid(ledger, job.id)
        assert victim in workers, f"trial {trial}: held by unknown worker {victim}"
        time.sleep(rng.uniform(0.05, 0.8))
        killed_at = time.time()
        workers.pop(victim).kill()

        done = wait_finished(ledger, job.id, timeout=30)
        assert done.status == "SUCCESS", f"trial {trial}: {done.error}"
        assert holder_pid(ledger, job.id) != victim
        assert done.attempt == 2
        assert scalar(engine, "SELECT count(*) FROM test_effects WHERE job_id=:j", j=job.id) == 1
        assert (
            scalar(engine, "SELECT count(*) FROM test_effect_runs WHERE job_id=:j", j=job.id) == 1
        )
        with engine.connect() as conn:
            holds = conn.execute(
                text("SELECT pid, started_at FROM test_holds WHERE job_id=:j ORDER BY started_at"),
                {"j": job.id},
            ).all()
        assert holds[0].pid == victim
        assert all(h.started_at > killed_at for h in holds[1:]), f"trial {trial}: overlap"

        replacement = start_worker(**settings)
        workers[replacement.pid] = replacement


def test_four_workers_run_a_thousand_jobs_exactly_once(
    ledger: Ledger, engine: Engine, start_worker: StartWorker
) -> None:
    workers = [start_worker() for _ in range(4)]
    ids = [ledger.enqueue("RECORD", {}, "ann").id for _ in range(1000)]
    wait_until(lambda: ledger.count_by_status()["SUCCESS"] == len(ids), 180, "1000 jobs to succeed")
    counts = ledger.count_by_status()
    assert counts == {**counts, "SUCCESS": 1000, "PENDING": 0, "RUNNING": 0, "FAILURE": 0}
    assert scalar(engine, "SELECT count(DISTINCT job_id) FROM test_effects") == 1000
    assert scalar(engine, "SELECT count(*) FROM test_effect_runs") == 1000
    assert scalar(engine, "SELECT count(*) FROM test_holds") == 1000
    per_worker = [
        int(line.rsplit(" ", 1)[1])
        for w in workers
        for line in w.metrics().splitlines()
        if line.startswith("mlmanager_jobs_succeeded_total")
    ]
    assert sum(per_worker) == 1000
    assert sum(1 for n in per_worker if n > 0) >= 2  # the load was shared


def test_database_restart_loses_no_job_and_needs_no_worker_restart(
    ledger: Ledger, engine: Engine, start_worker: StartWorker, pg_server: PostgresServer
) -> None:
    settings = {"job_lease_seconds": 3.0, "worker_sweep_seconds": 0.5}
    workers = [start_worker(**settings), start_worker(**settings)]
    total = 1000
    for _ in range(total):
        ledger.enqueue("RECORD", {"sleep": 0.005}, "ann")
    wait_until(lambda: ledger.count_by_status()["SUCCESS"] >= 100, 60, "100 jobs done")

    pg_server.stop("immediate")
    unhealthy_seen = set()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        for w in workers:
            if w.health() == 503:
                unhealthy_seen.add(w.pid)
        time.sleep(0.05)
    pg_server.start()
    assert unhealthy_seen == {w.pid for w in workers}, "health must report the outage"

    try:
        wait_until(lambda: ledger.count_by_status()["SUCCESS"] == total, 180, "all jobs")
    except AssertionError:
        stuck = [
            j
            for status in ("PENDING", "RUNNING", "FAILURE")
            for j in ledger.list_jobs(status=status, limit=20)
        ]
        raise AssertionError(f"jobs not SUCCESS: {stuck}") from None
    assert scalar(engine, "SELECT count(DISTINCT job_id) FROM test_effects") == total
    for w in workers:
        assert w.proc.poll() is None, "a worker died"
        wait_until(lambda w=w: w.health() == 200, 30, "worker healthy again")  # type: ignore[misc]
