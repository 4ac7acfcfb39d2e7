"""The retraining scheduler: one leader among the workers fires the schedules.

Every worker runs this service; on PostgreSQL only the one holding a session advisory
lock leads (the others try again every ``SCHEDULER_POLL_SECONDS``). The lock lives as
long as the leader's connection: a leader killed with ``kill -9`` drops it and the next
worker's try wins. On SQLite there is one worker, the leader by construction.

The leader keeps one APScheduler 3 cron job per active schedule, so a tick fires on
time, and also, every poll, fires whatever is due (the ticks of a leader change and of
a schedule created, resumed or missed meanwhile). Both go through
``ScheduleStore.fire_due``, whose ledger unique key per (schedule, fire time) makes a
tick fire once however many leaders, old and new, try it.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from loguru import logger
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from shared.db import SessionLock
from shared.errors import MLManagerError
from shared.handlers import SPECS
from shared.ledger import Ledger
from shared.schedules import Firing, Schedule, ScheduleStore, firing_key
from shared.settings import Settings

# The two-key advisory lock space (apart from the one-key locks of deploys).
LEADER_LOCK = "SELECT pg_try_advisory_lock(hashtext('mlmanager'), hashtext('retrain-leader'))"


class RetrainScheduler:
    def __init__(self, engine: Engine, settings: Settings, stopping: threading.Event) -> None:
        self.engine = engine
        self.settings = settings
        self.stopping = stopping
        self.store = ScheduleStore(engine)
        self.ledger = Ledger(engine, default_max_attempts=settings.job_max_attempts)
        self.is_postgres = engine.dialect.name == "postgresql"
        self._lock = SessionLock(engine, LEADER_LOCK)
        self._scheduler: BackgroundScheduler | None = None
        self._versions: dict[str, tuple[str, str]] = {}
        self._firing = threading.Lock()

    @property
    def leading(self) -> bool:
        return self._scheduler is not None

    def run(self) -> None:
        poll = self.settings.scheduler_poll_seconds
        while not self.stopping.is_set():
            try:
                if not self.leading and self._acquire():
                    self._lead()
                if self.leading:
                    self._check_lock()
                    self._sync()
            except DBAPIError as exc:
                logger.warning("retraining scheduler: database error ({}); stepping down", exc.orig)
                self._step_down()
            except Exception:  # the service thread must outlive one bad tick
                logger.exception("retraining scheduler: unexpected error")
            self.stopping.wait(poll)
        self._step_down()

    # --- leadership ------------------------------------------------------------------
    def _acquire(self) -> bool:
        if not self.is_postgres:
            return True  # SQLite: one worker
        return self._lock.take()

    def _check_lock(self) -> None:
        """The lock is as alive as its connection: a dead one means someone else may lead."""
        self._lock.check()

    def _lead(self) -> None:
        scheduler = BackgroundScheduler(
            timezone=dt.UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        scheduler.start()
        self._scheduler = scheduler
        self._versions = {}
        logger.info("this worker is the retraining leader: it fires the schedules")

    def _step_down(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
            logger.info("this worker no longer leads the retraining schedules")
        self._lock.release()

    # --- the schedules ---------------------------------------------------------------
    def _sync(self) -> None:
        """APScheduler jobs = the active schedules; then fire what is already due."""
        scheduler = self._scheduler
        assert scheduler is not None
        active = self.store.active()
        wanted = {str(s.id): s for s in active}
        for job_id in set(self._versions) - set(wanted):
            scheduler.remove_job(job_id)
            del self._versions[job_id]
        for job_id, schedule in wanted.items():
            version = (schedule.cron_exp, schedule.timezone)
            if self._versions.get(job_id) == version:
                continue
            if job_id in self._versions:
                scheduler.remove_job(job_id)
            scheduler.add_job(
                self._fire, schedule.trigger, args=[schedule.id], id=job_id, name=schedule.name
            )
            self._versions[job_id] = version
        now = dt.datetime.now(dt.UTC)
        for schedule in active:
            if schedule.next_fire_at is not None and schedule.next_fire_at <= now:
                self._fire(schedule.id)

    def _fire(self, schedule_id: int) -> None:
        with self._firing:
            if not self.leading:
                return
            try:
                firing = self.store.fire_due(schedule_id, self._enqueue)
            except MLManagerError as exc:  # e.g. RETRAIN disabled by an administrator
                logger.warning("schedule {}: not fired: {}", schedule_id, exc)
                return
            except DBAPIError as exc:
                logger.warning("schedule {}: not fired (database: {})", schedule_id, exc.orig)
                return
        if firing is not None:
            self._log(firing)

    def _enqueue(self, schedule: Schedule, fire_time: dt.datetime) -> int:
        spec = SPECS["RETRAIN"]
        payload: dict[str, Any] = {
            "schedule_id": schedule.id,
            "fire_time": fire_time.astimezone(dt.UTC).isoformat(),
        }
        job = self.ledger.enqueue(
            spec.name,
            payload,
            schedule.user,
            max_attempts=spec.attempts(self.settings.job_max_attempts),
            unique_key=firing_key(schedule.id, fire_time),
        )
        return job.id

    @staticmethod
    def _log(firing: Firing) -> None:
        name, fire_time = firing.schedule.name, firing.fire_time.isoformat()
        if firing.missed > 1:
            logger.warning(
                "schedule {}: {} firings were missed while no worker led, from {} to {}: "
                "coalesced into one firing (job {})",
                name,
                firing.missed,
                firing.schedule.next_fire_at.isoformat() if firing.schedule.next_fire_at else "?",
                fire_time,
                firing.job_id,
            )
        else:
            logger.info("schedule {}: fired for {} (job {})", name, fire_time, firing.job_id)
