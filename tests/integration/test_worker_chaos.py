"""Several real workers on a real PostgreSQL: crashes, load and a database restart."""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine, text

from bobby.handlers.database import table_lock_key
from shared.handlers import SPECS
from shared.ledger import Ledger
from tests.support.indb import features, insert_rows, plain_pg, read_rows
from tests.support.mlflow_store import (
    INPUT_EXAMPLE_WARNING,
    MLFLOW_SQLITE_STORE_WARNING,
    log_sklearn,
    temporary_tracking_store,
)
from tests.support.pg import PostgresServer
from tests.support.workers import StartWorker, WorkerProcess, scalar, wait_finished, wait_until

with warnings.catch_warnings():  # MLflow's own, at the import of its pyfunc module
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType")
    import mlflow.pyfunc

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


# --- deploy jobs under kill -9 and a database restart -------------------------------------


@pytest.fixture(scope="module")
def tracking_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("mlflow")
    with temporary_tracking_store(root, "chaos"):
        yield root


DEPLOY_LOCK = table_lock_key("apps", "chaos")


def lock_waiters(engine: Engine) -> int:
    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    return scalar(engine, waiting)


def table_state(engine: Engine) -> tuple[list[str], list[str | None]]:
    """The scoring triggers on apps.chaos and the model URIs its deployments say are live."""
    with engine.connect() as conn:
        triggers = conn.execute(
            text(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'apps.chaos'::regclass "
                "AND NOT tgisinternal"
            )
        ).scalars()
        live = conn.execute(
            text(
                "SELECT model_uri FROM deployments WHERE name = 'apps.chaos' "
                "AND status = 'DEPLOYED'"
            )
        ).scalars()
        return list(triggers), list(live)


@MLFLOW_SQLITE_STORE_WARNING
@INPUT_EXAMPLE_WARNING
def test_deploys_replaces_and_undeploys_converge_under_kill_9_and_a_database_restart(
    tracking_store: Path,
    pg_url: str,
    ledger: Ledger,
    engine: Engine,
    start_worker: StartWorker,
    pg_server: PostgresServer,
) -> None:
    """A chain of DEPLOY_DATABASE (with replace) and UNDEPLOY_DATABASE jobs on one table;
    during each, the worker holding it is killed with kill -9 (once, the database is
    restarted instead). Every job ends SUCCESS after its retries, and after each one the
    table's trigger, its deployment record and the predictions of a fresh INSERT match the
    model it asked for (or no model)."""
    started = time.monotonic()
    train = features(300, 31)
    models = {
        "A": LogisticRegression(max_iter=500).fit(train, train.score > 0),
        "B": LogisticRegression(max_iter=500).fit(train, train.income > 50),
    }
    uris = {k: log_sklearn(m, train) for k, m in models.items()}
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA apps"))
        conn.execute(
            text(
                "CREATE TABLE apps.chaos (id BIGINT PRIMARY KEY, age DOUBLE PRECISION, "
                "income DOUBLE PRECISION, score DOUBLE PRECISION)"
            )
        )
        conn.execute(text("INSERT INTO apps.chaos VALUES (0, 40, 50, 0.5), (1, 60, 30, -0.5)"))
    settings = {
        "job_lease_seconds": 3.0,
        "worker_sweep_seconds": 0.3,
        "mlflow_tracking_uri": mlflow.get_tracking_uri(),
    }
    workers = {w.pid: w for w in (start_worker(**settings), start_worker(**settings))}
    rng = random.Random(20261206)
    # (handler, model): deploy, replace twice, undeploy, deploy again, replace, undeploy.
    chain = [("D", "A"), ("D", "B"), ("D", "A"), ("U", "A"), ("D", "B"), ("D", "A"), ("U", "A")]
    restart_at = 3
    next_id = 100
    kills = retried = 0

    def kill_holder(ledger: Ledger, job_id: int, workers: dict[int, WorkerProcess]) -> bool:
        if ledger.get(job_id).status != "RUNNING":
            return False
        victim = holder_pid(ledger, job_id)
        if victim not in workers:
            return False
        workers.pop(victim).kill()
        replacement = start_worker(**settings)
        workers[replacement.pid] = replacement
        return True

    for n, (kind, model) in enumerate(chain):
        handler = "DEPLOY_DATABASE" if kind == "D" else "UNDEPLOY_DATABASE"
        payload: dict[str, object] = {
            "model_uri": uris[model],
            "db_schema": "apps",
            "db_table": "chaos",
        }
        if kind == "D":
            payload["replace"] = True
        attempts = SPECS[handler].attempts(3)
        with plain_pg(pg_url) as blocker:
            held = n % 2 == 0 or n == restart_at
            if held:
                # Hold the table's deploy lock: the job's transaction waits for it, and the
                # kill (or the restart) happens inside that transaction for sure.
                blocker.execute("SELECT pg_advisory_lock(hashtext(%s))", [DEPLOY_LOCK])
            job = ledger.enqueue(handler, payload, "ann", max_attempts=attempts)
            wait_until(lambda j=job.id: ledger.get(j).status == "RUNNING", 60, "RUNNING")  # type: ignore[misc]
            if held:
                wait_until(lambda: lock_waiters(engine) > 0, 60, "the job to wait for the lock")
            if n == restart_at:
                pg_server.restart(down_seconds=1.0)
            elif held:
                kills += kill_holder(ledger, job.id, workers)
            else:
                # Anywhere: reading the model, converting it, in or after its transaction.
                time.sleep(rng.uniform(0.0, 0.5))
                kills += kill_holder(ledger, job.id, workers)

        done = wait_finished(ledger, job.id, timeout=90)
        retried += done.attempt > 1
        log = "\n".join(ln.message for ln in ledger.read_logs(done.id, limit=10_000))
        assert done.status == "SUCCESS", f"job {n} ({handler} {model}): {done.error}\n{log}"

        triggers, live = table_state(engine)
        row = (next_id, 45.0, 55.0, 0.25)
        next_id += 1
        insert_rows(pg_url, "chaos", ["id", "age", "income", "score"], [row], "apps")
        got = read_rows(pg_url, f"SELECT prediction FROM apps.chaos WHERE id = {row[0]}")[0][0]
        if kind == "D":
            assert len(triggers) == 1, f"job {n}: triggers {triggers}"
            assert live == [uris[model]], f"job {n}: live deployments {live}"
            frame = pd.DataFrame([row[1:]], columns=["age", "income", "score"])
            assert got == str(models[model].predict(frame)[0]), f"job {n}: prediction {got}"
        else:
            assert (triggers, live, got) == ([], [], None), f"job {n}"
    elapsed = time.monotonic() - started
    print(f"{len(chain)} jobs, {kills} workers killed, {retried} jobs retried: {elapsed:.1f}s")
    assert kills >= 3 and retried >= 4  # the lock-held kills and the restart at least
