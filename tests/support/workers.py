"""Real `mlmanager worker` processes for the tests."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import requests
from sqlalchemy import Engine, text

from shared.ledger import Job, Ledger
from tests.support.pg import free_port
from tests.support.processes import ROOT, clean_environment, spawn_mlmanager


class WorkerProcess:
    def __init__(self, db_url: str, logdir: Path, name: str, **settings: object) -> None:
        self.port = free_port()
        self.log = logdir / f"{name}.log"
        env = clean_environment()
        env.update(
            DB_URL=db_url,
            MLMANAGER_HOME=str(logdir / "home"),
            WORKER_PORT=str(self.port),
            HANDLER_MODULES="tests.support.handlers",
            HANDLER_SPEC_MODULES="tests.support.handler_specs",
            PYTHONPATH=str(ROOT),
            LOG_LEVEL="DEBUG",
        )
        env.update({k.upper(): str(v) for k, v in settings.items()})
        self.proc = spawn_mlmanager("worker", env, self.log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {self.log.read_text()[-3000:]}")
            try:
                if requests.get(self.url("/health"), timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"worker not healthy in {timeout}s: {self.log.read_text()[-3000:]}")

    def health(self) -> int:
        try:
            return requests.get(self.url("/health"), timeout=2).status_code
        except requests.RequestException:
            return 0

    def metrics(self) -> str:
        return requests.get(self.url("/metrics"), timeout=2).text

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_finished(ledger: Ledger, job_id: int, timeout: float = 30) -> Job:
    wait_until(lambda: ledger.get(job_id).finished, timeout, f"job {job_id} to finish")
    return ledger.get(job_id)


def scalar(engine: Engine, sql: str, **params: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar() or 0)


StartWorker = Callable[..., WorkerProcess]
