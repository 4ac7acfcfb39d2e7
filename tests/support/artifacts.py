"""A real ML Manager server storing artifacts in its database, on SQLite and PostgreSQL
(the fixture ``served``), for the artifact tests."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient
from sqlalchemy import Engine, func, select

from shared.artifacts import ArtifactStore
from shared.db import SQLITE_READ_ONLY, make_engine
from shared.models import ArtifactChunkRow, ArtifactFileRow
from tests.support.engines import settings_for
from tests.support.processes import clean_environment
from tests.support.servers import ADMIN_PASSWORD, MLManagerProcess, started_server, tracking_as

ADMIN = ("admin", ADMIN_PASSWORD)
BOB = ("bob", "bob-password-1234")
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"


class Served:
    """The running server, a client as admin, and the server's database."""

    def __init__(self, proc: MLManagerProcess, engine: Engine, kind: str) -> None:
        self.proc = proc
        self.engine = engine
        self.kind = kind
        self.client = MlflowClient(tracking_uri=proc.url)
        self.store = ArtifactStore(engine)

    def run_id(self, experiment: str) -> tuple[str, str]:
        exp = mlflow.set_experiment(experiment).experiment_id
        return exp, self.client.create_run(exp).info.run_id

    def files(self, prefix: str) -> dict[str, tuple[int, str]]:
        """What the database holds under ``prefix``: path -> (size, sha256)."""
        return {f.path: (f.size, f.sha256) for f in self.store.walk(prefix)}

    def chunks(self, orphans_only: bool = False) -> int:
        """Chunks stored (only those no published file names: ``orphans_only``)."""
        query = select(func.count()).select_from(ArtifactChunkRow)
        if orphans_only:
            query = query.where(ArtifactChunkRow.blob_id.not_in(select(ArtifactFileRow.blob_id)))
        with self.engine.connect().execution_options(**{SQLITE_READ_ONLY: True}) as conn:
            return int(conn.execute(query).scalar_one())

    def grant(self, username: str, experiment_id: str, permission: str) -> None:
        """MLflow's grant of ``permission`` on an experiment (3.17: DENY, not NO_PERMISSIONS)."""
        r = requests.post(
            f"{self.proc.url}/api/3.0/mlflow/users/permissions/grant",
            json={
                "username": username,
                "resource_type": "experiment",
                "resource_id": experiment_id,
                "permission": permission,
            },
            auth=ADMIN,
            timeout=30,
        )
        assert r.status_code == 200, r.text

    def get(self, path: str, auth: Any = ADMIN, **kw: Any) -> requests.Response:
        return requests.get(f"{self.proc.url}{path}", auth=auth, timeout=60, **kw)

    def put(self, path: str, data: bytes, auth: Any = ADMIN) -> requests.Response:
        return requests.put(f"{self.proc.url}{path}", data=data, auth=auth, timeout=60)


@contextlib.contextmanager
def serving(
    request: pytest.FixtureRequest, base: Path, database: str, **settings: object
) -> Iterator[Served]:
    """A real server under ``base`` on ``database`` ("sqlite" or "postgresql"), storing
    artifacts in that database unless ``settings`` name another store
    (``mlflow_artifacts_destination``); MLflow's client of this process logs to it as
    admin until the block ends."""
    with started_server(request, base / "home", database, "artifacts", **settings) as proc:
        engine = make_engine(settings_for(proc.db_url, base))
        try:
            with tracking_as(proc.url, ADMIN):
                yield Served(proc, engine, database)
        finally:
            engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    base = tmp_path_factory.mktemp(f"artifacts-{request.param}")
    with serving(request, base, request.param) as served:
        served.proc.create_user(*BOB)
        yield served


def migrate(served: Served, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`mlmanager artifacts migrate ARGS` into ``served``'s database, as an operator runs
    it (the server's database settings; ``env`` added to the environment)."""
    environment = clean_environment()
    environment.update(DB_URL=served.proc.db_url, MLFLOW_DISABLE_TELEMETRY="true", **env)
    if served.kind == "sqlite":
        environment["MLMANAGER_HOME"] = str(served.proc.home)
    return subprocess.run(
        [sys.executable, "-m", "mlmanager", "artifacts", "migrate", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
