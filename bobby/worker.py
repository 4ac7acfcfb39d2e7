"""Bobby, the worker: `mlmanager worker`."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from types import FrameType
from typing import Any

from loguru import logger
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bobby.http import WorkerEndpoint
from shared.db import describe_url, get_engine
from shared.home import require_free_port
from shared.migrations import require_current
from shared.settings import Settings

DB_CHECK_INTERVAL = 2.0


class Worker:
    """Connects to the database, serves /health and /metrics, and runs until stopped."""

    def __init__(self, settings: Settings, worker_id: str | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.engine = get_engine(settings)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._db_ok = False
        self._loop_beat = 0.0
        self.endpoint = WorkerEndpoint(
            settings.worker_host,
            settings.worker_port,
            health=self.health,
            metrics=self.metrics,
            wake=self._wake.set,
        )

    # --- HTTP callbacks -------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        loop_alive = time.monotonic() - self._loop_beat < 3 * DB_CHECK_INTERVAL + 1
        ok = self._db_ok and loop_alive and not self._stop.is_set()
        return ok, {
            "status": "ok" if ok else "unhealthy",
            "worker_id": self.worker_id,
            "database": self._db_ok,
            "loop": loop_alive,
        }

    def metrics(self) -> str:
        up = 1 if self._db_ok else 0
        return (
            "# HELP mlmanager_worker_database_up 1 while the worker reaches its database\n"
            "# TYPE mlmanager_worker_database_up gauge\n"
            f"mlmanager_worker_database_up {up}\n"
        )

    # --- life cycle -------------------------------------------------------
    def stop(self, *_: Any) -> None:
        self._stop.set()
        self._wake.set()

    def _check_database(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            if not self._db_ok:
                logger.info("database reachable at {}", describe_url(str(self.engine.url)))
            self._db_ok = True
        except DBAPIError as exc:
            if self._db_ok:
                logger.warning("database unreachable, retrying: {}", exc.orig or exc)
            self._db_ok = False

    def run(self) -> None:
        require_current(self.engine)
        self.endpoint.start()
        logger.info(
            "worker {} started; health on http://{}:{}/health",
            self.worker_id,
            self.settings.worker_host,
            self.endpoint.port,
        )
        try:
            while not self._stop.is_set():
                self._loop_beat = time.monotonic()
                self._check_database()
                self._wake.wait(DB_CHECK_INTERVAL)
                self._wake.clear()
        finally:
            self.endpoint.stop()
            self.engine.dispose()
            logger.info("worker {} stopped", self.worker_id)


def run_worker(settings: Settings) -> None:
    """Entry of `mlmanager worker`: checks, then the worker until SIGTERM/SIGINT."""
    settings.require_secure("worker")
    require_free_port(settings.worker_host, settings.worker_port, "WORKER_PORT")
    worker = Worker(settings)

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("received {}, stopping", signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    worker.run()
