"""Bobby, the worker: `mlmanager worker`.

One claim loop wakes on a PostgreSQL NOTIFY (or, on SQLite, a short poll, or a
``POST /job`` poke), claims as many jobs as it has free threads, and runs each
on a thread of its own. A heartbeat thread renews the leases of running jobs and
passes cancel requests and lost leases to them; the loop also sweeps jobs whose
lease expired (their worker died) back to PENDING. Database outages are ridden
out: every part retries until the database is back.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import sqlite3
import threading
import time
from types import FrameType
from typing import Any

import psycopg
from loguru import logger
from sqlalchemy.exc import DBAPIError

from bobby.handlers import SERVICES, ServiceContext, load_handlers
from bobby.handlers.base import JobControl
from bobby.http import WorkerEndpoint
from bobby.metrics import Metrics
from bobby.runner import Runner
from shared.db import at_startup, describe_url, make_engine
from shared.errors import MLManagerError
from shared.handlers import RECONCILE, SPECS
from shared.home import ADMIN_PASSWORD_FILE, admin_password, require_free_port
from shared.joblog import JobLogSink
from shared.ledger import NOTIFY_CHANNEL, Job, Ledger
from shared.migrations import require_current
from shared.settings import Settings

QUEUE_DEPTH_SECONDS = 1.0
PG_FALLBACK_POLL_SECONDS = 2.0
SQLITE_WATCH_SECONDS = 0.005  # NOTIFY wakes us; this only covers missed notifications
MAX_DB_BACKOFF_SECONDS = 5.0


class Worker:
    def __init__(self, settings: Settings, worker_id: str | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        # No pre-ping: every database call of the worker is retried on failure.
        self.engine = make_engine(settings, pre_ping=False)
        self.ledger = Ledger(
            self.engine,
            default_max_attempts=settings.job_max_attempts,
            retry_backoff_seconds=settings.job_retry_backoff_seconds,
        )
        self.metrics = Metrics()
        self.sink = JobLogSink(self.ledger)
        self.registry = load_handlers(settings.handler_modules)
        self.runner = Runner(
            self.ledger, self.sink, settings, self.worker_id, self.registry, self.metrics
        )
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self.poll_seconds = (
            PG_FALLBACK_POLL_SECONDS if self.is_postgres else settings.worker_poll_seconds
        )
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[int, JobControl] = {}
        # A fixed pool of daemon threads runs the jobs (no thread start per job; daemon,
        # so that jobs released at shutdown do not hold the process).
        self._queue: queue.SimpleQueue[tuple[Job, JobControl]] = queue.SimpleQueue()
        self._loop_beat = time.monotonic()
        self.endpoint = WorkerEndpoint(
            settings.worker_host,
            settings.worker_port,
            health=self.health,
            metrics=self.metrics.render,
            wake=self._wake.set,
        )

    # --- HTTP -------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        loop_alive = time.monotonic() - self._loop_beat < 3 * self.poll_seconds + 5
        db_up = bool(self.metrics.database_up)
        ok = db_up and loop_alive and not self._stopping.is_set()
        return ok, {
            "status": "ok" if ok else "unhealthy",
            "worker_id": self.worker_id,
            "database": db_up,
            "loop": loop_alive,
            "running_jobs": len(self._running),
        }

    # --- life cycle ---------------------------------------------------------
    def stop(self) -> None:
        """Stop claiming; running jobs get the shutdown grace period."""
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        def register() -> None:
            require_current(self.engine)
            self.ledger.seed_handlers({n: SPECS[n].description for n in self.registry})
            self.ledger.register_worker(self.worker_id, self.registry.keys())

        # The database may be restarting (or starting beside us): retried for a while.
        at_startup(self.settings, "checking the schema and registering the worker", register)
        self.sink.install()
        self.endpoint.start()
        threads = [threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)]
        threads += [
            threading.Thread(target=self._pool_loop, name=f"jobs-{i}", daemon=True)
            for i in range(self.settings.worker_threads)
        ]
        watch = self._listen_loop if self.is_postgres else self._sqlite_watch_loop
        threads.append(threading.Thread(target=watch, name="watch", daemon=True))
        context = ServiceContext(self.engine, self.settings, self.metrics, self._stopping)
        for name, service in SERVICES.items():
            if (target := service(context)) is not None:
                threads.append(threading.Thread(target=target, name=name, daemon=True))
        for t in threads:
            t.start()
        logger.info(
            "worker {} started: {} threads, {} handlers, database {}, health on :{}",
            self.worker_id,
            self.settings.worker_threads,
            len(self.registry),
            describe_url(str(self.engine.url)),
            self.endpoint.port,
        )
        try:
            self._claim_loop()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        grace = self.settings.worker_shutdown_grace_seconds
        deadline = time.monotonic() + grace
        if self._running:
            logger.info("waiting up to {}s for {} running job(s)", grace, len(self._running))
        while self._running and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            left = dict(self._running)
        if left:
            for control in left.values():
                control.lost.set()  # their threads stop at the next step boundary
            released = self._db_retry(lambda: self.ledger.release(self.worker_id, left), 10.0)
            self.metrics.inc("released", released or 0)
            logger.warning("released {} job(s) to PENDING: {}", released, sorted(left))
        self._db_retry(lambda: self.ledger.unregister_worker(self.worker_id), 5.0)
        self.sink.uninstall()
        self.endpoint.stop()
        logger.info("worker {} stopped", self.worker_id)

    # --- periodic reconcile ---------------------------------------------------
    def _submit_reconcile(self, interval: float) -> None:
        """Submit this period's RECONCILE of every deployment, once across all replicas.

        The period is numbered from wall-clock time, which replicas share, and is the
        job's unique key: the replica that comes second gets the first one's job back.
        """
        if RECONCILE.name not in self.registry:
            return
        period = int(time.time() // interval)
        try:
            self.ledger.enqueue(
                RECONCILE.name,
                {},
                self.settings.mlmanager_admin_user,
                max_attempts=RECONCILE.attempts(self.settings.job_max_attempts),
                unique_key=f"reconcile:{interval:g}:{period}",
            )
        except MLManagerError as exc:  # RECONCILE disabled by an administrator
            logger.info("periodic reconcile not submitted: {}", exc)

    # --- the claim loop -----------------------------------------------------
    def _claim_loop(self) -> None:
        next_sweep = 0.0
        next_reconcile = 0.0
        next_depth = 0.0
        backoff = 0.2
        claimed = 0
        wait = self.poll_seconds
        while not self._stopping.is_set():
            self._loop_beat = time.monotonic()
            self._wake.clear()
            try:
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep()
                    next_sweep = now + self.settings.worker_sweep_seconds
                interval = self.settings.reconcile_interval_seconds
                if interval > 0 and now >= next_reconcile:
                    self._submit_reconcile(interval)
                    next_reconcile = now + interval
                free = self._free_slots()
                claimed = self._claim(free)
                wait = self.poll_seconds
                if free and not claimed:
                    # Jobs waiting out a retry backoff get no NOTIFY: wake up for them.
                    until_next = self.ledger.seconds_until_next()
                    if until_next is not None:
                        wait = min(wait, until_next + 0.001)
                if now >= next_depth:
                    self.metrics.queue_depth = self.ledger.count_by_status()["PENDING"]
                    next_depth = now + QUEUE_DEPTH_SECONDS
                if not self.metrics.database_up:
                    logger.info("database reachable")
                self.metrics.database_up = 1
                backoff = 0.2
            except DBAPIError as exc:
                if self.metrics.database_up:
                    logger.warning("database unreachable, retrying: {}", _first_line(exc))
                self.metrics.database_up = 0
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, MAX_DB_BACKOFF_SECONDS)
                continue
            if claimed and self._free_slots() > 0:
                continue  # more may be waiting: claim again at once
            self._wake.wait(wait)

    def _free_slots(self) -> int:
        with self._lock:
            return self.settings.worker_threads - len(self._running)

    def _claim(self, slots: int) -> int:
        if slots <= 0:
            return 0
        jobs = self.ledger.claim(
            self.worker_id, slots, self.settings.job_lease_seconds, self.registry.keys()
        )
        for job in jobs:
            self.metrics.inc("claimed")
            if job.started_at is not None:
                self.metrics.observe_dispatch((job.started_at - job.run_after).total_seconds())
            control = JobControl()
            with self._lock:
                self._running[job.id] = control
                self.metrics.running = len(self._running)
            self._queue.put((job, control))
        return len(jobs)

    def _pool_loop(self) -> None:
        while True:
            self._run_job(*self._queue.get())

    def _run_job(self, job: Job, control: JobControl) -> None:
        try:
            self.runner.run(job, control)
        except Exception:
            logger.opt(exception=True).error("runner crashed on job {}", job.id)
        finally:
            with self._lock:
                self._running.pop(job.id, None)
                self.metrics.running = len(self._running)
            self._wake.set()  # a thread is free

    def _sweep(self) -> None:
        for job in self.ledger.sweep():
            self.metrics.inc("expired")
            logger.warning(
                "job {} had an expired lease: now {} (attempt {}/{})",
                job.id,
                job.status,
                job.attempt,
                job.max_attempts,
            )
        self._wake.set()

    # --- heartbeats -----------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        interval = max(0.05, self.settings.job_lease_seconds / 3)
        while True:
            if not self._stopping.is_set():
                self._stopping.wait(interval)
            elif self._running:
                time.sleep(interval)  # keep leases during the shutdown grace period
            else:
                return
            with self._lock:
                running = dict(self._running)
            try:
                self.ledger.worker_seen(self.worker_id)
                if not running:
                    continue
                beat = self.ledger.heartbeat(
                    self.worker_id, running, self.settings.job_lease_seconds
                )
            except DBAPIError:
                continue  # the claim loop reports the outage
            for job_id, control in running.items():
                if job_id not in beat.held:
                    control.lost.set()
                elif job_id in beat.cancel_requested:
                    control.cancel.set()

    # --- PostgreSQL LISTEN ------------------------------------------------------
    def _listen_loop(self) -> None:
        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        while not self._stopping.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._wake.set()  # anything enqueued while we were not listening
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._wake.set()
            except psycopg.Error:
                self._stopping.wait(1.0)

    # --- SQLite: no NOTIFY --------------------------------------------------------
    def _sqlite_watch_loop(self) -> None:
        """Wake the claim loop soon after another connection commits a runnable job.

        ``PRAGMA data_version`` changes when any other connection commits; reading it
        costs microseconds, so it is polled every few milliseconds, and only a change
        costs a (read-only) query for runnable jobs.
        """
        database = self.engine.url.database
        if not database or database == ":memory:":
            return
        last = None
        with contextlib.closing(sqlite3.connect(database, timeout=5)) as conn:
            while not self._stopping.wait(SQLITE_WATCH_SECONDS):
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if version == last:
                        continue
                    last = version
                    if self._free_slots() > 0 and self.ledger.has_runnable():
                        self._wake.set()
                except (sqlite3.Error, DBAPIError):
                    self._stopping.wait(self.poll_seconds)

    def _db_retry(self, call: Any, seconds: float) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            try:
                return call()
            except DBAPIError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.5)


def _first_line(exc: DBAPIError) -> str:
    text = str(exc.orig or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def use_tracking_server(settings: Settings) -> None:
    """Point this process's MLflow client (deploy jobs read models) at our server.

    Credentials: MLFLOW_TRACKING_USERNAME/_PASSWORD if set, else the admin's
    (MLMANAGER_ADMIN_PASSWORD, or the password file of a shared MLMANAGER_HOME).
    """
    server = settings.mlflow_tracking_uri or settings.server_url
    os.environ.setdefault("MLFLOW_TRACKING_URI", server)
    if "MLFLOW_TRACKING_USERNAME" in os.environ:
        return
    stored = settings.home / ADMIN_PASSWORD_FILE
    if settings.mlmanager_admin_password is not None or stored.is_file():
        password, _ = admin_password(settings)
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.mlmanager_admin_user
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    else:
        logger.warning(
            "no MLflow credentials for reading models: set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (deploy jobs will fail until then)"
        )


def run_worker(settings: Settings) -> None:
    """Entry of `mlmanager worker`: checks, then the worker until SIGTERM/SIGINT."""
    settings.require_secure("worker")
    require_free_port(settings.worker_host, settings.worker_port, "WORKER_PORT")
    use_tracking_server(settings)
    worker = Worker(settings)

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received {}: no new jobs, finishing running ones", signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    worker.run()
