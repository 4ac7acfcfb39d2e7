"""A real `mlmanager up` (server + worker processes) for the API tests."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from tests.support.pg import free_port
from tests.support.processes import (
    ROOT,
    clean_environment,
    spawn_mlmanager,
    terminate,
    wait_http_ok,
)

if TYPE_CHECKING:
    import pytest

    from mlmanager.client import MLManagerClient

ADMIN_PASSWORD = "admin-test-password-42"
SECRET_KEY = "test-secret-key-0123456789abcdef"
TRACKING_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@contextlib.contextmanager
def tracking_as(url: str, user: tuple[str, str], experiment: str | None = None) -> Iterator[None]:
    """MLflow's client in this process talks to ``url`` as ``user`` (name, password), in
    ``experiment`` if given, until the block ends; then the tracking URI and credentials of
    before are back."""
    import mlflow

    saved = {k: os.environ.get(k) for k in TRACKING_CREDENTIALS}
    previous_uri = mlflow.get_tracking_uri()
    try:
        os.environ.update(dict(zip(TRACKING_CREDENTIALS, user, strict=True)))
        mlflow.set_tracking_uri(url)
        if experiment is not None:
            mlflow.set_experiment(experiment)
        yield
    finally:
        mlflow.set_tracking_uri(previous_uri)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class MLManagerProcess:
    def __init__(self, home: Path, db_url: str | None = None, **settings: object) -> None:
        self.port = free_port()
        self.worker_port = free_port()
        self.home = home
        self.log = home.parent / f"{home.name}.log"
        env = clean_environment()
        env.update(
            MLMANAGER_HOME=str(home),
            MLMANAGER_PORT=str(self.port),
            WORKER_PORT=str(self.worker_port),
            MLMANAGER_ADMIN_PASSWORD=ADMIN_PASSWORD,
            MLMANAGER_SECRET_KEY=SECRET_KEY,
            HANDLER_MODULES="tests.support.handlers",
            HANDLER_SPEC_MODULES="tests.support.handler_specs",
            JOB_RETRY_BACKOFF_SECONDS="0.2",
            PYTHONPATH=str(ROOT),
        )
        if db_url is not None:
            env["DB_URL"] = db_url
        self.db_url = db_url or f"sqlite:///{home / 'mlmanager.db'}"
        env.update({k.upper(): str(v) for k, v in settings.items()})
        home.mkdir(parents=True, exist_ok=True)
        self.proc = spawn_mlmanager("up", env, self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/api/2.0/mlmanager"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        urls = [f"{self.url}/health", f"http://127.0.0.1:{self.worker_port}/health"]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlmanager up exited:\n{self.log.read_text()[-4000:]}")
            try:
                if all(requests.get(u, timeout=1).status_code == 200 for u in urls):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready in {timeout}s:\n{self.log.read_text()[-4000:]}")

    def create_user(self, username: str, password: str) -> None:
        r = requests.post(
            f"{self.url}/api/2.0/mlflow/users/create",
            json={"username": username, "password": password},
            auth=("admin", ADMIN_PASSWORD),
            timeout=10,
        )
        assert r.status_code == 200, r.text

    def stop(self) -> None:
        terminate(self.proc)


class ServerProcess:
    """`mlmanager server` alone (no worker) on ``db_url``: tests that start, kill and
    restart workers keep one server (``tests.support.workers.WorkerProcess``)."""

    def __init__(self, home: Path, db_url: str, **settings: object) -> None:
        self.port = free_port()
        self.home = home
        self.log = home.parent / f"{home.name}-server.log"
        env = clean_environment()
        env.update(
            DB_URL=db_url,
            MLMANAGER_HOME=str(home),
            MLMANAGER_PORT=str(self.port),
            MLMANAGER_ADMIN_PASSWORD=ADMIN_PASSWORD,
            MLMANAGER_SECRET_KEY=SECRET_KEY,
            HANDLER_MODULES="tests.support.handlers",
            HANDLER_SPEC_MODULES="tests.support.handler_specs",
            PYTHONPATH=str(ROOT),
        )
        env.update({k.upper(): str(v) for k, v in settings.items()})
        home.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url
        self.proc = spawn_mlmanager("server", env, self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/api/2.0/mlmanager"

    def wait_ready(self, timeout: float = 180) -> None:
        wait_http_ok(f"{self.url}/health", self.proc, self.log, timeout)

    def worker_settings(self) -> dict[str, object]:
        """What a worker of this server needs besides the database (WorkerProcess's)."""
        return {"mlflow_url": self.url, "mlmanager_admin_password": ADMIN_PASSWORD}

    def stop(self) -> None:
        terminate(self.proc)


@contextlib.contextmanager
def started_server(
    request: pytest.FixtureRequest, home: Path, database: str, prefix: str, **settings: object
) -> Iterator[MLManagerProcess]:
    """`mlmanager up` under ``home`` on SQLite (``database`` "sqlite") or on a new
    PostgreSQL database ``{prefix}_<time>`` of the session's ``pg_server``, with
    ``settings`` (as MLManagerProcess takes them), ready; stopped (and that database
    dropped) afterwards."""
    with contextlib.ExitStack() as stack:
        if database == "sqlite":
            proc = MLManagerProcess(home, **settings)
        else:
            pg = request.getfixturevalue("pg_server")
            db_url = stack.enter_context(pg.database(f"{prefix}_{time.time_ns()}"))
            proc = MLManagerProcess(home, db_url=db_url, **settings)
        stack.callback(proc.stop)
        proc.wait_ready()
        yield proc


@contextlib.contextmanager
def running_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    database: str,
    prefix: str,
) -> Iterator[MLManagerProcess]:
    """`mlmanager up` (server and worker) on a new SQLite (``database`` "sqlite") or
    PostgreSQL database of the session's ``pg_server``, with MLflow's client of this process
    logging to it as admin in experiment ``{prefix}-{database}``."""
    home = tmp_path_factory.mktemp(f"{prefix}-{database}") / "home"
    with (
        started_server(request, home, database, prefix) as proc,
        tracking_as(proc.url, ("admin", ADMIN_PASSWORD), f"{prefix}-{database}"),
    ):
        yield proc


def run_to_end(api: MLManagerClient, handler: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Submit a job and follow it through the API until it ends: the finished job."""
    job = api.submit(handler, payload)
    for kind, data in api.follow(job["id"]):
        if kind == "end":
            return data
    return api.job(job["id"])


def job_log_text(api: MLManagerClient, job_id: int) -> str:
    """A job's log lines as one text."""
    return "\n".join(line["message"] for line in api.logs(job_id)["lines"])
