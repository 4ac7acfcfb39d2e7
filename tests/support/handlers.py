"""Job handlers used by the tests (loaded into real workers with HANDLER_MODULES).

Their payload specs live in ``tests.support.handler_specs`` (HANDLER_SPEC_MODULES), which the
server imports without this module and so without the worker.

RECORD writes what happened to test tables so the tests can prove, from the
database, how often each job's work ran and which worker held it when.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from loguru import logger
from sqlalchemy import Engine, text

from bobby.handlers import ServiceContext, register, register_service
from bobby.handlers.base import Handler, Step
from tests.support.handler_specs import NOOP, RECORD, RecordPayload

TEST_TABLES = (
    "CREATE TABLE IF NOT EXISTS test_holds (job_id BIGINT, worker_id VARCHAR(128), "
    "attempt INT, pid INT, started_at DOUBLE PRECISION, ended_at DOUBLE PRECISION)",
    "CREATE TABLE IF NOT EXISTS test_effects (job_id BIGINT PRIMARY KEY, worker_id VARCHAR(128))",
    "CREATE TABLE IF NOT EXISTS test_effect_runs (job_id BIGINT, worker_id VARCHAR(128))",
)


def create_test_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        for ddl in TEST_TABLES:
            conn.execute(text(ddl))


@register
class Noop(Handler):
    spec = NOOP

    def steps(self) -> list[Step]:
        return [("nothing", lambda: None)]


@register
class Record(Handler):
    spec = RECORD
    payload: RecordPayload

    def steps(self) -> list[Step]:
        work = [(f"working {i + 1}", self.work) for i in range(self.payload.steps)]
        return [("holding", self.hold), *work, ("effect", self.effect)]

    def _exec(self, sql: str, **params: object) -> None:
        with self.ctx.ledger.engine.begin() as conn:
            conn.execute(text(sql), params)

    def hold(self) -> None:
        job = self.ctx.job
        create_test_tables(self.ctx.ledger.engine)
        self._exec(
            "INSERT INTO test_holds VALUES (:j, :w, :a, :p, :t, NULL)",
            j=job.id,
            w=self.ctx.worker_id,
            a=job.attempt,
            p=os.getpid(),
            t=time.time(),
        )
        for n in range(self.payload.lines):
            logger.info("line {} of job {}", n + 1, job.id)
        if job.attempt <= self.payload.fail_times:
            raise RuntimeError(f"boom on attempt {job.attempt}")

    def work(self) -> None:
        deadline = time.monotonic() + self.payload.sleep / self.payload.steps
        while (left := deadline - time.monotonic()) > 0:
            self.ctx.check()  # a long step stops soon after a cancel
            time.sleep(min(left, 0.05))

    def effect(self) -> None:
        job = self.ctx.job
        # Idempotent effect: a re-run after a crash finishes instead of duplicating.
        self._exec(
            "INSERT INTO test_effects VALUES (:j, :w) ON CONFLICT (job_id) DO NOTHING",
            j=job.id,
            w=self.ctx.worker_id,
        )
        self._exec("INSERT INTO test_effect_runs VALUES (:j, :w)", j=job.id, w=self.ctx.worker_id)
        self._exec(
            "UPDATE test_holds SET ended_at = :t WHERE job_id = :j AND worker_id = :w",
            t=time.time(),
            j=job.id,
            w=self.ctx.worker_id,
        )


SERVICE_FILE = "test_service_started"


@register_service("test-service")
def announce(ctx: ServiceContext) -> Callable[[], None]:
    """A background service: writes the worker's pid into MLMANAGER_HOME when it runs."""

    def run() -> None:
        ctx.settings.home.mkdir(parents=True, exist_ok=True)
        (ctx.settings.home / SERVICE_FILE).write_text(str(os.getpid()))

    return run
