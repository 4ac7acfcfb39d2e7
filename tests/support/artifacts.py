"""A real ML Manager server storing artifacts in its database, on SQLite and PostgreSQL
(the fixture ``served``), for the artifact tests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
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


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    base = tmp_path_factory.mktemp(f"artifacts-{request.param}")
    with started_server(request, base / "home", request.param, "artifacts") as proc:
        engine = make_engine(settings_for(proc.db_url, base))
        try:
            proc.create_user(*BOB)
            with tracking_as(proc.url, ADMIN):
                yield Served(proc, engine, request.param)
        finally:
            engine.dispose()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
