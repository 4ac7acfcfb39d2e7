"""The schedule store against a real database: one job per tick however many leaders
try it, missed ticks coalesced, one retrain of a schedule at a time, job tokens."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, update

from shared import job_tokens
from shared.handlers import SPECS
from shared.ledger import Ledger
from shared.models import utcnow
from shared.schedules import RetrainSlot, Schedule, ScheduleStore, firing_key, schedules

EVERY_MINUTE = "* * * * *"


def _store_with_due_schedule(engine: Engine, ticks_ago: int) -> tuple[ScheduleStore, Schedule]:
    store = ScheduleStore(engine)
    schedule = store.create("nightly", "churn", EVERY_MINUTE, "UTC", {}, "alice")
    start = utcnow().replace(second=0, microsecond=0) - dt.timedelta(minutes=ticks_ago)
    with engine.begin() as conn:
        conn.execute(
            update(schedules).where(schedules.c.id == schedule.id).values(next_fire_at=start)
        )
    return store, store.get(schedule.id)


def _enqueuer(ledger: Ledger) -> Any:
    def enqueue(schedule: Schedule, fire_time: dt.datetime) -> int:
        payload = {"schedule_id": schedule.id, "fire_time": fire_time.isoformat()}
        key = firing_key(schedule.id, fire_time)
        return ledger.enqueue("RETRAIN", payload, schedule.user, unique_key=key).id

    return enqueue


def test_a_tick_enqueued_by_a_dead_leader_fires_once(engine: Engine, ledger: Ledger) -> None:
    """The old leader enqueued the tick and died before advancing the schedule: the new
    leader's firing finds the same job (the ledger's unique key), and advances it."""
    store, schedule = _store_with_due_schedule(engine, ticks_ago=0)
    due = schedule.next_fire_at
    assert due is not None
    old_leaders_job = _enqueuer(ledger)(schedule, due)

    firing = store.fire_due(schedule.id, _enqueuer(ledger))
    assert firing is not None and firing.job_id == old_leaders_job and firing.missed == 1
    assert store.fire_due(schedule.id, _enqueuer(ledger)) is None  # nothing due any more
    assert [j.id for j in ledger.list_jobs(handler_name="RETRAIN")] == [old_leaders_job]
    after = store.get(schedule.id)
    assert after.next_fire_at is not None and after.next_fire_at > utcnow()
    assert after.last_job_id == old_leaders_job


def test_ticks_missed_while_no_worker_ran_coalesce_into_one(engine: Engine, ledger: Ledger) -> None:
    store, schedule = _store_with_due_schedule(engine, ticks_ago=5)
    firing = store.fire_due(schedule.id, _enqueuer(ledger))
    assert firing is not None and firing.missed == 6
    assert firing.fire_time == utcnow().replace(second=0, microsecond=0)  # the latest tick
    assert len(ledger.list_jobs(handler_name="RETRAIN")) == 1


def test_a_paused_schedule_does_not_fire(engine: Engine, ledger: Ledger) -> None:
    store, schedule = _store_with_due_schedule(engine, ticks_ago=1)
    store.set_paused(schedule.id, True)
    assert store.fire_due(schedule.id, _enqueuer(ledger)) is None
    resumed = store.set_paused(schedule.id, False)
    assert resumed.next_fire_at is not None and resumed.next_fire_at > utcnow()  # not "missed"
    assert ledger.list_jobs(handler_name="RETRAIN") == []


def test_one_retrain_of_a_schedule_at_a_time(engine: Engine) -> None:
    first, second, other = RetrainSlot(engine, 1), RetrainSlot(engine, 1), RetrainSlot(engine, 2)
    assert first.take()
    try:
        assert not second.take()
        assert other.take()
    finally:
        first.release()
        other.release()
    assert second.take()
    second.release()


@pytest.mark.parametrize("ends", ["SUCCESS", "revoked"])
def test_a_job_token_logs_in_as_its_user_while_the_job_runs(
    engine: Engine, ledger: Ledger, ends: str
) -> None:
    job = ledger.enqueue("RETRAIN", {"schedule_id": 1}, "alice")
    [claimed] = ledger.claim("w1", 1, 60, {SPECS["RETRAIN"].name})
    assert claimed.id == job.id
    with engine.begin() as conn:
        token = job_tokens.issue(conn, job.id, "alice")
    with engine.connect() as conn:
        assert job_tokens.is_token(token)
        assert job_tokens.valid(conn, "alice", token)
        assert not job_tokens.valid(conn, "admin", token)
        assert not job_tokens.valid(conn, "alice", token + "x")
    if ends == "revoked":
        with engine.begin() as conn:
            assert job_tokens.revoke(conn, job.id) == 1
    else:
        assert ledger.succeed(job.id, "w1", [])
    with engine.connect() as conn:
        assert not job_tokens.valid(conn, "alice", token)
