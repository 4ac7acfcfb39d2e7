"""The job ledger's guarantees, checked on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

import tests.support.handlers  # noqa: F401  (registers the test handler specs)
from shared.errors import HandlerDisabled, InvalidPayload, NotFound
from shared.handlers import SPECS
from shared.ledger import Ledger, LogLine, backoff_seconds
from shared.migrations import upgrade
from shared.models import utcnow
from tests.support.engines import EngineFor


@pytest.fixture
def ledger(db_url: str, engine_for: EngineFor) -> Ledger:
    engine = engine_for(db_url)
    upgrade(engine)
    led = Ledger(engine, retry_backoff_seconds=0.0)
    led.seed_handlers({name: spec.description for name, spec in SPECS.items()})
    return led


def test_claim_takes_each_pending_job_once_and_marks_it_running(ledger: Ledger) -> None:
    ids = [ledger.enqueue("RECORD", {}, "ann").id for _ in range(3)]
    first = ledger.claim("w1", 2, lease_seconds=30)
    assert [j.id for j in first] == ids[:2]
    for job in first:
        assert job.status == "RUNNING"
        assert job.worker_id == "w1"
        assert job.started_at is not None and job.lease_expires_at is not None
        assert job.lease_expires_at > job.started_at
    second = ledger.claim("w2", 5, lease_seconds=30)
    assert [j.id for j in second] == ids[2:]
    assert ledger.claim("w3", 5, lease_seconds=30) == []


def test_concurrent_claimers_never_share_a_job(ledger: Ledger) -> None:
    total = 150
    for _ in range(total):
        ledger.enqueue("RECORD", {}, "ann")
    taken: list[int] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while True:
            got = ledger.claim(name, 3, lease_seconds=30)
            if not got:
                return
            with lock:
                taken.extend(j.id for j in got)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == total
    assert len(set(taken)) == total


def test_expired_lease_goes_back_to_pending_then_failure_when_attempts_are_spent(
    ledger: Ledger,
) -> None:
    job = ledger.enqueue("RECORD", {}, "ann", max_attempts=2)
    assert ledger.claim("w1", 1, lease_seconds=0.05)[0].id == job.id
    time.sleep(0.1)
    (swept,) = ledger.sweep()
    assert (swept.status, swept.attempt, swept.worker_id) == ("PENDING", 2, None)
    assert "lease of worker w1 expired" in (swept.error or "")
    assert ledger.claim("w2", 1, lease_seconds=0.05)[0].attempt == 2
    time.sleep(0.1)
    (swept,) = ledger.sweep()
    assert swept.status == "FAILURE"
    assert swept.finished_at is not None
    assert ledger.sweep() == []


def test_a_worker_that_lost_its_lease_cannot_touch_the_job(ledger: Ledger) -> None:
    job = ledger.enqueue("RECORD", {}, "ann")
    ledger.claim("w1", 1, lease_seconds=0.05)
    time.sleep(0.1)
    ledger.sweep()
    ledger.claim("w2", 1, lease_seconds=30)
    assert ledger.heartbeat("w1", [job.id], 30).held == frozenset()
    assert ledger.succeed(job.id, "w1") is False
    assert ledger.fail(job.id, "w1", "late error", retry=True) is None
    assert ledger.release("w1", [job.id]) == 0
    current = ledger.get(job.id)
    assert (current.status, current.worker_id) == ("RUNNING", "w2")
    assert ledger.succeed(job.id, "w2") is True
    assert ledger.get(job.id).status == "SUCCESS"


def test_heartbeat_renews_the_lease(ledger: Ledger) -> None:
    job = ledger.enqueue("RECORD", {}, "ann")
    ledger.claim("w1", 1, lease_seconds=0.3)
    for _ in range(4):
        time.sleep(0.15)
        assert ledger.heartbeat("w1", [job.id], 0.3).held == {job.id}
        assert ledger.sweep() == []
    assert ledger.get(job.id).status == "RUNNING"


def test_failed_attempt_retries_with_growing_backoff_then_keeps_the_last_error(
    ledger: Ledger,
) -> None:
    ledger.retry_backoff_seconds = 0.2
    job = ledger.enqueue("RECORD", {}, "ann", max_attempts=3)
    delays = []
    for attempt in (1, 2):
        (claimed,) = ledger.claim("w1", 1, 30)
        assert ledger.fail(job.id, "w1", f"error {attempt}", retry=True) == "PENDING"
        pending = ledger.get(job.id)
        delays.append((pending.run_after - claimed.started_at).total_seconds())  # type: ignore[operator]
        assert ledger.claim("w1", 1, 30) == []  # not before its backoff
        time.sleep(delays[-1] + 0.05)
    assert 0.14 <= delays[0] <= 0.27
    assert 0.29 <= delays[1] <= 0.52
    ledger.claim("w1", 1, 30)
    assert ledger.fail(job.id, "w1", "error 3", retry=True) == "FAILURE"
    final = ledger.get(job.id)
    assert (final.status, final.attempt, final.error) == ("FAILURE", 3, "error 3")


def test_permanent_failure_is_not_retried(ledger: Ledger) -> None:
    job = ledger.enqueue("RECORD", {}, "ann", max_attempts=3)
    ledger.claim("w1", 1, 30)
    assert ledger.fail(job.id, "w1", "bad payload", retry=False) == "FAILURE"
    assert ledger.get(job.id).attempt == 1


def test_cancel_pending_is_immediate_and_running_gets_a_flag(ledger: Ledger) -> None:
    pending = ledger.enqueue("RECORD", {}, "ann")
    running = ledger.enqueue("RECORD", {}, "ann")
    assert ledger.cancel(pending.id).status == "CANCELLED"
    ledger.claim("w1", 1, 30)
    flagged = ledger.cancel(running.id)
    assert (flagged.status, flagged.cancel_requested) == ("RUNNING", True)
    assert ledger.heartbeat("w1", [running.id], 30).cancel_requested == {running.id}
    assert ledger.cancelled(running.id, "w1")
    assert ledger.get(running.id).status == "CANCELLED"
    with pytest.raises(NotFound):
        ledger.cancel(999_999)


def test_disabled_handler_refuses_new_jobs_and_holds_pending_ones(ledger: Ledger) -> None:
    waiting = ledger.enqueue("RECORD", {}, "ann")
    ledger.set_handler_enabled("RECORD", False, "admin")
    with pytest.raises(HandlerDisabled, match="RECORD is disabled"):
        ledger.enqueue("RECORD", {}, "ann")
    assert ledger.claim("w1", 5, 30) == []
    ledger.set_handler_enabled("RECORD", True, "admin")
    assert [j.id for j in ledger.claim("w1", 5, 30)] == [waiting.id]


def test_disabling_with_fail_policy_fails_pending_jobs(ledger: Ledger) -> None:
    waiting = ledger.enqueue("RECORD", {}, "ann")
    assert ledger.set_handler_enabled("RECORD", False, "root", fail_pending=True) == 1
    failed = ledger.get(waiting.id)
    assert failed.status == "FAILURE"
    assert "disabled by root" in (failed.error or "")


def test_unknown_handler_is_refused(ledger: Ledger) -> None:
    with pytest.raises(InvalidPayload, match="unknown handler 'NOPE'"):
        ledger.enqueue("NOPE", {}, "ann")


def test_unique_key_makes_a_second_enqueue_return_the_first_job(ledger: Ledger) -> None:
    first = ledger.enqueue("RECORD", {}, "ann", unique_key="retrain:m1:2026-11-27T10:00")
    again = ledger.enqueue("RECORD", {}, "ann", unique_key="retrain:m1:2026-11-27T10:00")
    assert again.id == first.id
    assert ledger.count_by_status()["PENDING"] == 1


def test_logs_are_read_incrementally_in_order(ledger: Ledger) -> None:
    job = ledger.enqueue("RECORD", {}, "ann")
    now = utcnow()
    ledger.append_logs(job.id, [LogLine(n, now, "INFO", f"line {n}") for n in range(1, 6)])
    assert [ln.line for ln in ledger.read_logs(job.id)] == [1, 2, 3, 4, 5]
    assert [ln.message for ln in ledger.read_logs(job.id, after_line=3)] == ["line 4", "line 5"]
    assert ledger.read_logs(job.id, after_line=5) == []
    assert ledger.next_log_line(job.id) == 6


def test_list_filters_and_orders_newest_first(ledger: Ledger) -> None:
    a = ledger.enqueue("RECORD", {}, "ann")
    b = ledger.enqueue("NOOP", {}, "bob")
    c = ledger.enqueue("RECORD", {}, "bob")
    assert [j.id for j in ledger.list_jobs()] == [c.id, b.id, a.id]
    assert [j.id for j in ledger.list_jobs(user="bob")] == [c.id, b.id]
    assert [j.id for j in ledger.list_jobs(handler_name="RECORD", limit=1)] == [c.id]
    assert [j.id for j in ledger.list_jobs(handler_name="RECORD", limit=1, offset=1)] == [a.id]
    assert ledger.list_jobs(status="SUCCESS") == []
    with pytest.raises(InvalidPayload, match="status"):
        ledger.list_jobs(status="DONE' OR 1=1 --")
    assert Counter(j.user for j in ledger.list_jobs(since=a.created_at)) == {"bob": 2, "ann": 1}


def test_backoff_doubles_with_bounded_jitter() -> None:
    for attempt, expected in ((1, 5.0), (2, 10.0), (3, 20.0)):
        values = [backoff_seconds(5.0, attempt) for _ in range(200)]
        assert min(values) >= expected * 0.75
        assert max(values) <= expected * 1.25
        assert max(values) - min(values) > 0  # jitter spreads retries
    assert backoff_seconds(0, 3) == 0


def test_claim_reports_the_last_log_line_of_earlier_attempts(ledger: Ledger) -> None:
    other = ledger.enqueue("RECORD", {}, "ann")
    job = ledger.enqueue("RECORD", {}, "ann")
    now = utcnow()
    ledger.append_logs(other.id, [LogLine(n, now, "INFO", "x") for n in range(1, 10)])
    ledger.append_logs(job.id, [LogLine(n, now, "INFO", "x") for n in range(1, 4)])
    claimed = {j.id: j.last_log_line for j in ledger.claim("w1", 2, 30)}
    assert claimed == {other.id: 9, job.id: 3}


def test_claim_takes_only_jobs_of_the_handlers_the_worker_has(ledger: Ledger) -> None:
    record = ledger.enqueue("RECORD", {}, "ann")
    ledger.enqueue("NOOP", {}, "ann")
    assert [j.id for j in ledger.claim("w1", 5, 30, handler_names=["RECORD"])] == [record.id]
    assert ledger.claim("w1", 5, 30, handler_names=["DEPLOY_DATABASE"]) == []
    assert [j.handler_name for j in ledger.claim("w2", 5, 30)] == ["NOOP"]


def test_ending_a_job_with_its_last_log_lines_raises_no_warning(ledger: Ledger) -> None:
    """The end-of-job statement (one round trip on PostgreSQL) joins the finished job with
    its lines on purpose; SQLAlchemy's FROM linter used to call it a cartesian product
    (a warning, so an error here)."""
    job = ledger.enqueue("RECORD", {}, "ann")
    ledger.claim("w1", 1, lease_seconds=30)
    now = utcnow()
    assert ledger.succeed(job.id, "w1", [LogLine(n, now, "INFO", f"end {n}") for n in (1, 2)])
    assert ledger.get(job.id).status == "SUCCESS"
    assert [ln.message for ln in ledger.read_logs(job.id)] == ["end 1", "end 2"]
