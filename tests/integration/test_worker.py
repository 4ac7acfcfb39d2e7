"""Real `mlmanager worker` processes against the ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine, text

from shared.ledger import Ledger
from tests.support.handlers import SERVICE_FILE
from tests.support.workers import StartWorker, scalar, wait_finished, wait_until


def test_worker_runs_a_job_and_writes_its_log_in_order(
    ledger: Ledger, engine: Engine, start_worker: StartWorker
) -> None:
    worker = start_worker()
    job = ledger.enqueue("RECORD", {"steps": 2, "lines": 120}, "ann")
    done = wait_finished(ledger, job.id)
    assert done.status == "SUCCESS", done.error
    assert done.worker_id is not None and str(worker.pid) in done.worker_id
    assert done.started_at and done.finished_at and done.finished_at >= done.started_at
    assert scalar(engine, "SELECT count(*) FROM test_effect_runs WHERE job_id = :j", j=job.id) == 1

    # Incremental reads in pages return every line once, in order.
    seen, after = [], 0
    while page := ledger.read_logs(job.id, after_line=after, limit=37):
        seen.extend(page)
        after = page[-1].line
    assert [ln.line for ln in seen] == list(range(1, len(seen) + 1))
    messages = [ln.message for ln in seen]
    assert messages[0].startswith(f"RECORD job {job.id} (attempt 1/3) started on worker")
    for expected in ("Step 1/4: holding", "Step 2/4: working 1", "Step 4/4: effect"):
        assert expected in messages
    assert [m for m in messages if m.startswith("line ")] == [
        f"line {n} of job {job.id}" for n in range(1, 121)
    ]
    assert messages[-1].startswith(f"job {job.id} succeeded in ")

    metrics = worker.metrics()
    assert "mlmanager_jobs_claimed_total 1" in metrics
    assert "mlmanager_jobs_succeeded_total 1" in metrics
    assert 'mlmanager_dispatch_latency_seconds_bucket{le="+Inf"} 1' in metrics
    assert requests.post(worker.url("/job"), timeout=2).status_code == 202


def test_failing_job_retries_with_backoff_then_fails_keeping_the_last_error(
    ledger: Ledger, engine: Engine, start_worker: StartWorker
) -> None:
    start_worker(job_retry_backoff_seconds=0.3)
    job = ledger.enqueue("RECORD", {"fail_times": 5}, "ann", max_attempts=3)
    done = wait_finished(ledger, job.id)
    assert (done.status, done.attempt) == ("FAILURE", 3)
    assert done.error == "RuntimeError: boom on attempt 3"
    with engine.connect() as conn:
        starts = [
            r[0]
            for r in conn.execute(
                text("SELECT started_at FROM test_holds WHERE job_id = :j ORDER BY attempt"),
                {"j": job.id},
            )
        ]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 2
    assert gaps[0] >= 0.3 * 0.75
    assert gaps[1] >= 0.6 * 0.75
    assert gaps[1] > gaps[0]
    log = "\n".join(ln.message for ln in ledger.read_logs(job.id))
    assert "will retry (attempt 2 of 3)" in log
    assert "RuntimeError: boom on attempt 3" in log


def test_invalid_payload_fails_at_once_without_retry(
    ledger: Ledger, start_worker: StartWorker
) -> None:
    start_worker()
    job = ledger.enqueue("RECORD", {"steps": "many", "colour": "red"}, "ann", max_attempts=3)
    done = wait_finished(ledger, job.id)
    assert (done.status, done.attempt) == ("FAILURE", 1)
    assert "invalid payload" in (done.error or "")
    assert "steps" in (done.error or "") and "colour" in (done.error or "")


def test_cancel_running_job_stops_it_between_steps(
    ledger: Ledger, engine: Engine, start_worker: StartWorker
) -> None:
    start_worker(job_lease_seconds=0.6)
    job = ledger.enqueue("RECORD", {"steps": 50, "sleep": 10}, "ann")
    wait_until(lambda: ledger.get(job.id).status == "RUNNING", 20, "RUNNING")
    time.sleep(0.3)
    t0 = time.monotonic()
    assert ledger.cancel(job.id).cancel_requested
    done = wait_finished(ledger, job.id, timeout=10)
    assert done.status == "CANCELLED"
    assert time.monotonic() - t0 < 3  # long before its 10 s of work
    assert scalar(engine, "SELECT count(*) FROM test_effect_runs WHERE job_id = :j", j=job.id) == 0
    assert any("cancelled on request" in ln.message for ln in ledger.read_logs(job.id))


def test_cancel_pending_job_never_runs(
    ledger: Ledger, engine: Engine, start_worker: StartWorker
) -> None:
    job = ledger.enqueue("RECORD", {}, "ann")
    assert ledger.cancel(job.id).status == "CANCELLED"
    start_worker()
    other = ledger.enqueue("RECORD", {}, "ann")
    assert wait_finished(ledger, other.id).status == "SUCCESS"
    assert ledger.get(job.id).status == "CANCELLED"
    assert scalar(engine, "SELECT count(*) FROM test_holds WHERE job_id = :j", j=job.id) == 0


def test_disable_service_job_switches_a_handler_off_and_on(
    ledger: Ledger, start_worker: StartWorker
) -> None:
    start_worker()
    off = ledger.enqueue("DISABLE_SERVICE", {"service": "RECORD"}, "admin")
    assert wait_finished(ledger, off.id).status == "SUCCESS"
    assert not next(h for h in ledger.handlers() if h.name == "RECORD").enabled
    from shared.errors import HandlerDisabled

    with pytest.raises(HandlerDisabled):
        ledger.enqueue("RECORD", {}, "ann")
    bad = ledger.enqueue("DISABLE_SERVICE", {"service": "ENABLE_SERVICE"}, "admin")
    failed = wait_finished(ledger, bad.id)
    assert failed.status == "FAILURE" and "cannot be disabled" in (failed.error or "")
    on = ledger.enqueue("ENABLE_SERVICE", {"service": "RECORD"}, "admin")
    assert wait_finished(ledger, on.id).status == "SUCCESS"
    assert wait_finished(ledger, ledger.enqueue("RECORD", {}, "ann").id).status == "SUCCESS"


def test_sigterm_lets_a_short_job_finish(ledger: Ledger, start_worker: StartWorker) -> None:
    worker = start_worker(worker_shutdown_grace_seconds=20)
    live = {wid: names for wid, names, _ in ledger.live_workers(60)}
    builtin = [
        "DEPLOY_DATABASE",
        "UNDEPLOY_DATABASE",
        "RECONCILE",
        "WATCH_ELASTICSEARCH",
        "SCHEDULE_RETRAIN",
        "RETRAIN",
        "DEPLOY_AWS",
        "UNDEPLOY_AWS",
        "DEPLOY_AZURE",
        "UNDEPLOY_AZURE",
        "DEPLOY_KUBERNETES",
        "UNDEPLOY_KUBERNETES",
        "DISABLE_SERVICE",
        "ENABLE_SERVICE",
    ]
    assert live[next(w for w in live if w.endswith(f":{worker.pid}"))] == sorted(
        [*builtin, "NOOP", "RECORD"]
    )
    job = ledger.enqueue("RECORD", {"steps": 10, "sleep": 1.5}, "ann")
    wait_until(lambda: ledger.get(job.id).status == "RUNNING", 20, "RUNNING")
    assert worker.terminate() == 0
    assert ledger.get(job.id).status == "SUCCESS"
    assert not any(w.endswith(f":{worker.pid}") for w, _, _ in ledger.live_workers(60))


def test_sigterm_releases_a_long_job_which_another_worker_finishes(
    ledger: Ledger, engine: Engine, start_worker: StartWorker
) -> None:
    worker = start_worker(worker_shutdown_grace_seconds=0.5)
    job = ledger.enqueue("RECORD", {"steps": 40, "sleep": 4}, "ann")
    wait_until(lambda: ledger.get(job.id).status == "RUNNING", 20, "RUNNING")
    assert worker.terminate(timeout=20) == 0
    released = ledger.get(job.id)
    assert (released.status, released.attempt, released.worker_id) == ("PENDING", 1, None)
    start_worker()
    done = wait_finished(ledger, job.id, timeout=30)
    assert done.status == "SUCCESS"
    assert scalar(engine, "SELECT count(*) FROM test_effects WHERE job_id = :j", j=job.id) == 1


def test_two_workers_submit_one_periodic_reconcile_per_period(
    ledger: Ledger, engine: Engine, start_worker: StartWorker
) -> None:
    """RECONCILE_INTERVAL_SECONDS on two replicas: each period's RECONCILE job is created
    once (the ledger's unique key), not once per worker, and runs once."""
    interval, seconds = 1.0, 6.0
    started = time.time()
    for _ in range(2):
        start_worker(reconcile_interval_seconds=interval)
    time.sleep(seconds)
    elapsed = time.time() - started
    jobs = ledger.list_jobs(handler_name="RECONCILE", limit=100)
    assert 2 <= len(jobs) <= elapsed / interval + 2, [j.unique_key for j in jobs]
    assert len({j.unique_key for j in jobs}) == len(jobs)
    for job in jobs:
        done = wait_finished(ledger, job.id)
        assert (done.status, done.attempt) == ("SUCCESS", 1), done.error
        assert done.user == "admin"


def test_handler_module_registers_a_background_service_the_worker_runs(
    engine: Engine, tmp_path: Path, start_worker: StartWorker
) -> None:
    """A handler module's ``register_service`` hook (tests.support.handlers) runs in every
    worker that loads it: the worker knows no service by name."""
    worker = start_worker()
    started = tmp_path / "home" / SERVICE_FILE
    wait_until(started.exists, 30, "the test service to run")
    assert started.read_text() == str(worker.pid)
