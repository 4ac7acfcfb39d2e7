"""Runs one claimed job: everything around a handler's steps.

Status changes, "Step i/n" log lines, timing, cancel checks between steps, error
capture and the retry decision happen here, never in handlers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from loguru import logger
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from bobby.handlers.base import Handler, JobCancelled, JobContext, JobControl, LeaseLost
from bobby.metrics import Metrics
from shared.errors import InvalidPayload, MLManagerError
from shared.handlers import SPECS, describe_validation_error
from shared.joblog import JobLogSink
from shared.ledger import Job, Ledger, LogLine
from shared.settings import Settings

# The ledger call that records how a run ended, given the run's unwritten log lines.
Outcome = Callable[[list[LogLine]], str | None]

# Errors that another attempt cannot fix.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (InvalidPayload, ValidationError)


class Runner:
    def __init__(
        self,
        ledger: Ledger,
        sink: JobLogSink,
        settings: Settings,
        worker_id: str,
        registry: dict[str, type[Handler]],
        metrics: Metrics,
    ) -> None:
        self.ledger = ledger
        self.sink = sink
        self.settings = settings
        self.worker_id = worker_id
        self.registry = registry
        self.metrics = metrics

    def run(self, job: Job, control: JobControl) -> str | None:
        """Run ``job`` to its end; returns the status written (None if the lease was lost)."""
        with logger.contextualize(job_id=job.id):
            self.sink.open(job.id, job.last_log_line)
            outcome = self._run_steps(job, control)
        return self._write(outcome, self.sink.take(job.id))

    def _run_steps(self, job: Job, control: JobControl) -> Outcome:
        """Run the steps; return the ledger call that records how it ended."""
        jid, wid = job.id, self.worker_id
        logger.info(
            "{} job {} (attempt {}/{}) started on worker {}",
            job.handler_name,
            job.id,
            job.attempt,
            job.max_attempts,
            wid,
        )
        started = time.monotonic()
        spec = SPECS.get(job.handler_name)
        handler_cls = self.registry.get(job.handler_name)
        try:
            if spec is None or handler_cls is None:
                raise InvalidPayload(f"this worker has no handler {job.handler_name}")
            payload = spec.payload_model.model_validate(job.payload)
            handler = handler_cls(
                JobContext(job, self.ledger, self.settings, control, wid), payload
            )
            try:
                steps = handler.steps()
                for i, (title, step) in enumerate(steps, start=1):
                    control.check()
                    logger.info("Step {}/{}: {}", i, len(steps), title)
                    t0 = time.monotonic()
                    step()
                    logger.debug("Step {}/{} done in {:.3f}s", i, len(steps), time.monotonic() - t0)
            finally:
                handler.close()
            control.check()
        except JobCancelled:
            logger.warning("job cancelled on request; stopped before the next step")
            self.metrics.inc("cancelled")
            return lambda logs: "CANCELLED" if self.ledger.cancelled(jid, wid, logs) else None
        except LeaseLost as exc:
            logger.warning("{}", exc)
            return lambda logs: None
        except Exception as exc:
            return self._failure(job, exc)
        logger.info("job {} succeeded in {:.3f}s", job.id, time.monotonic() - started)
        self.metrics.inc("succeeded")
        return lambda logs: "SUCCESS" if self.ledger.succeed(jid, wid, logs) else None

    def _failure(self, job: Job, exc: Exception) -> Outcome:
        if isinstance(exc, MLManagerError):
            summary = f"{type(exc).__name__}: {exc.message}"
            logger.error("{}", summary)
        elif isinstance(exc, ValidationError):
            summary = f"invalid payload: {describe_validation_error(exc, 'payload')[1]}"
            logger.error("{}", summary)
        else:
            summary = f"{type(exc).__name__}: {exc}"
            logger.opt(exception=exc).error("step failed: {}", summary)
        # What a user must fix (4xx errors: bad payload, missing table...) is not retried;
        # outages of outside systems (5xx: database, cluster, cloud) are.
        retry = not isinstance(exc, PERMANENT_ERRORS) and not (
            isinstance(exc, MLManagerError) and exc.http_status < 500
        )
        will_retry = retry and job.attempt < job.max_attempts
        if will_retry:
            logger.info("will retry (attempt {} of {})", job.attempt + 1, job.max_attempts)
        self.metrics.inc("retried" if will_retry else "failed")
        return lambda logs: self.ledger.fail(
            job.id, self.worker_id, summary, retry=retry, logs=logs
        )

    def _write(self, call: Outcome, logs: list[LogLine]) -> str | None:
        """Record the outcome with the run's last log lines, retrying while the database
        is briefly away.

        Gives up after one lease: by then the sweep of another worker (or ours,
        later) returns the job to PENDING anyway.
        """
        deadline = time.monotonic() + self.settings.job_lease_seconds
        delay = 0.2
        while True:
            try:
                return call(logs)
            except DBAPIError as exc:
                if time.monotonic() + delay > deadline:
                    logger.error("could not record the job's outcome: {}", exc.orig or exc)
                    return None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
