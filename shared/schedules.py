"""Retraining schedules: the ``schedules`` table and the cron arithmetic of a firing.

All SQL on ``schedules`` lives in :class:`ScheduleStore`. The guarantees a firing rests on:

* A schedule row holds the firing it owes next (``next_fire_at``, UTC). The leader worker
  (``bobby.scheduler``) fires it by enqueueing a RETRAIN job whose ledger ``unique_key``
  is (schedule, fire time) (:func:`firing_key`), then advances ``next_fire_at`` with a
  compare-and-set on the value it read. A leader that dies between the two leaves the
  row as it was; the next leader enqueues the same key and gets the first job back, so
  a leader change cannot fire a tick twice, and since the row only advances after the
  job exists, it cannot lose one either.
* Firings missed while no worker led (all down) are coalesced into one, for the latest
  missed time (:meth:`ScheduleStore.fire_due` says how many it coalesced).
* Pausing keeps the row; resuming computes the next firing from now (the ticks of the
  pause are not "missed").
* At most one retrain of a schedule runs at a time: a RETRAIN job holds the schedule's
  :class:`RetrainSlot` while it runs, and a firing that finds it held is skipped (its
  job says so and ends): ticks closer together than a retrain lasts cannot pile up or
  compare two challengers with one champion.
"""

from __future__ import annotations

import builtins
import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from shared.db import SessionLock
from shared.errors import DeploymentConflict, NotFound
from shared.models import ScheduleRow, utcnow

schedules: Table = ScheduleRow.__table__  # type: ignore[assignment]

CRON_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
# A schedule that has been down for years must not loop over every missed tick.
MAX_MISSED_COUNTED = 100_000


def cron_trigger(cron_exp: str, timezone: str) -> CronTrigger:
    """The APScheduler trigger of a cron expression; ValueError naming what is wrong.

    Five fields as crontab (minute hour day month day_of_week) or six with seconds first.
    """
    fields = cron_exp.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            f"cron_exp {cron_exp!r} has {len(fields)} fields: give 5 (minute hour day month "
            "day_of_week) or 6 (second first)"
        )
    names = CRON_FIELDS if len(fields) == 5 else ("second", *CRON_FIELDS)
    try:
        return CronTrigger(timezone=timezone, **dict(zip(names, fields, strict=True)))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cron_exp {cron_exp!r}: {exc}") from None


def next_fire_time(trigger: CronTrigger, after: dt.datetime) -> dt.datetime | None:
    """The first firing strictly after ``after`` (UTC), or None if the trigger has ended."""
    nxt = trigger.get_next_fire_time(None, after + dt.timedelta(microseconds=1))
    return None if nxt is None else nxt.astimezone(dt.UTC)


def firing_key(schedule_id: int, fire_time: dt.datetime) -> str:
    """The ledger's unique key of one firing: at most one RETRAIN job per tick."""
    return f"retrain:{schedule_id}:{fire_time.astimezone(dt.UTC).isoformat()}"


@dataclass(frozen=True)
class Schedule:
    id: int
    name: str
    model_name: str
    cron_exp: str
    timezone: str
    spec: dict[str, Any]
    paused: bool
    next_fire_at: dt.datetime | None
    last_fired_at: dt.datetime | None
    last_job_id: int | None
    last_outcome: str | None
    user: str
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def trigger(self) -> CronTrigger:
        return cron_trigger(self.cron_exp, self.timezone)


@dataclass(frozen=True)
class Firing:
    """What :meth:`ScheduleStore.fire_due` did for one schedule."""

    schedule: Schedule
    fire_time: dt.datetime
    job_id: int
    missed: int  # firings coalesced into this one (1: none missed)


# (schedule, fire time) -> the id of the RETRAIN job (created, or found by its unique key).
Enqueue = Callable[[Schedule, dt.datetime], int]


class ScheduleStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @staticmethod
    def _from_row(row: Any) -> Schedule:
        data = dict(row)
        data["user"] = data.pop("username")
        return Schedule(**data)

    # --- the API's side ---------------------------------------------------------------
    def create(
        self,
        name: str,
        model_name: str,
        cron_exp: str,
        timezone: str,
        spec: dict[str, Any],
        user: str,
    ) -> Schedule:
        """A new schedule, first firing computed from now; a taken name is a 409."""
        now = utcnow()
        values = {
            "name": name,
            "model_name": model_name,
            "cron_exp": cron_exp,
            "timezone": timezone,
            "spec": spec,
            "paused": False,
            "next_fire_at": next_fire_time(cron_trigger(cron_exp, timezone), now),
            "username": user,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self.engine.begin() as conn:
                row = conn.execute(insert(schedules).values(values).returning(*schedules.c))
                return self._from_row(row.mappings().one())
        except IntegrityError:
            raise DeploymentConflict(f"a schedule named {name} exists", field="name") from None

    def get(self, schedule_id: int) -> Schedule:
        with self.engine.connect() as conn:
            row = conn.execute(select(schedules).where(schedules.c.id == schedule_id)).mappings()
            found = row.first()
        if found is None:
            raise NotFound(f"no schedule {schedule_id}")
        return self._from_row(found)

    def by_name(self, name: str) -> Schedule | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(schedules).where(schedules.c.name == name)).mappings()
            found = row.first()
        return None if found is None else self._from_row(found)

    def list(self, user: str | None = None, limit: int = 50, offset: int = 0) -> list[Schedule]:
        """Schedules by id; only ``user``'s when given."""
        query = select(schedules).order_by(schedules.c.id).limit(limit).offset(offset)
        if user is not None:
            query = query.where(schedules.c.username == user)
        with self.engine.connect() as conn:
            return [self._from_row(r) for r in conn.execute(query).mappings()]

    def set_paused(self, schedule_id: int, paused: bool) -> Schedule:
        """Pause, or resume with the next firing counted from now."""
        current = self.get(schedule_id)
        now = utcnow()
        values: dict[str, Any] = {"paused": paused, "updated_at": now}
        if not paused:
            values["next_fire_at"] = next_fire_time(current.trigger, now)
        with self.engine.begin() as conn:
            conn.execute(update(schedules).where(schedules.c.id == schedule_id).values(values))
        return self.get(schedule_id)

    def delete(self, schedule_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(schedules).where(schedules.c.id == schedule_id))

    def record_outcome(self, schedule_id: int, job_id: int, outcome: str) -> None:
        """What a retrain job decided (only if it is still the schedule's last job)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(schedules)
                .where(schedules.c.id == schedule_id)
                .values(last_outcome=outcome, last_job_id=job_id, updated_at=utcnow())
            )

    # --- the leader's side ------------------------------------------------------------
    def active(self) -> builtins.list[Schedule]:
        """Schedules that fire (not paused)."""
        query = select(schedules).where(schedules.c.paused.is_(False)).order_by(schedules.c.id)
        with self.engine.connect() as conn:
            return [self._from_row(r) for r in conn.execute(query).mappings()]

    def fire_due(
        self, schedule_id: int, enqueue: Enqueue, now: dt.datetime | None = None
    ) -> Firing | None:
        """Fire the schedule if its next firing is due: one job (coalescing missed ticks),
        then ``next_fire_at`` advanced past ``now`` if nobody advanced it meanwhile."""
        now = now or utcnow()
        try:
            schedule = self.get(schedule_id)
        except NotFound:
            return None  # deleted meanwhile
        due = schedule.next_fire_at
        if schedule.paused or due is None or due > now:
            return None
        trigger = schedule.trigger
        fire_time, missed = due, 1
        while missed < MAX_MISSED_COUNTED:
            nxt = next_fire_time(trigger, fire_time)
            if nxt is None or nxt > now:
                break
            fire_time, missed = nxt, missed + 1
        job_id = enqueue(schedule, fire_time)
        with self.engine.begin() as conn:
            conn.execute(
                update(schedules)
                .where(schedules.c.id == schedule_id, schedules.c.next_fire_at == due)
                .values(
                    next_fire_at=next_fire_time(trigger, now),
                    last_fired_at=fire_time,
                    last_job_id=job_id,
                    updated_at=utcnow(),
                )
            )
        return Firing(schedule, fire_time, job_id, missed)


# PostgreSQL: a session advisory lock per schedule, in the two-key space (deploys use
# the one-key space). A holder killed with kill -9 loses its session and so its lock.
RETRAIN_SLOT_LOCK = "SELECT pg_try_advisory_lock(hashtext('mlmanager-retrain'), :key)"
# SQLite: one worker process (the embedded mode); its threads share these locks.
_SQLITE_SLOTS: dict[int, threading.Lock] = {}
_SQLITE_SLOTS_GUARD = threading.Lock()


class RetrainSlot:
    """The right to retrain one schedule now; :meth:`take` does not wait."""

    def __init__(self, engine: Engine, schedule_id: int) -> None:
        self.schedule_id = schedule_id
        self.is_postgres = engine.dialect.name == "postgresql"
        # Two int4 keys: an id past 2**31 shares a slot with another (a skipped firing,
        # never a double one).
        self._session = SessionLock(engine, RETRAIN_SLOT_LOCK, key=schedule_id % 2**31)
        self._lock: threading.Lock | None = None

    def take(self) -> bool:
        """Hold the slot if it is free (True) or say it is held elsewhere (False)."""
        if self.is_postgres:
            return self._session.take()
        with _SQLITE_SLOTS_GUARD:
            lock = _SQLITE_SLOTS.setdefault(self.schedule_id, threading.Lock())
        if not lock.acquire(blocking=False):
            return False
        self._lock = lock
        return True

    def release(self) -> None:
        self._session.release()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
