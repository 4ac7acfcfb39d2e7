"""The Keras and Spark ML kind tests: a running server per database, a deploy through it,
and every inserted row's prediction compared with the framework's own."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import requests
from sqlalchemy.engine import Engine

from shared.ledger import Job, Ledger
from tests.support.indb import insert_rows, plain_pg, read_rows, sqlite_path
from tests.support.mlflow_store import temporary_tracking_store
from tests.support.pg import free_port
from tests.support.processes import ROOT
from tests.support.servers import ADMIN_PASSWORD, MLManagerProcess, tracking_as
from tests.support.serving import ServingProcess
from tests.support.workers import WorkerProcess, wait_finished

ADMIN = ("admin", ADMIN_PASSWORD)
# The expected predictions of a row: (label, probabilities...) or (values...); a ``None``
# inside is a NULL; ``None`` for the whole row: the framework refuses the row itself.
Expected = tuple[Any, ...] | None


def logged(path: Path) -> str:
    """A saved MLflow model logged (as the artifacts of a new run) to the current tracking
    store: its ``runs:/`` URI."""
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(path), "model")
    return f"runs:/{run.info.run_id}/model"


def logged_to(server: MLManagerProcess, path: Path) -> str:
    """A saved model logged to ``server``'s tracking store (whichever the process's current
    one is: two servers may be up): its ``runs:/`` URI."""
    with tracking_as(server.url, ADMIN, "kinds-logged"):
        return logged(path)


@contextlib.contextmanager
def logged_locally(path: Path, root: Path) -> Iterator[str]:
    """A saved model logged to a tracking store of its own under ``root`` (this process's
    tracking URI for the block; give ``mlflow.get_tracking_uri()`` to other processes):
    its ``runs:/`` URI."""
    with temporary_tracking_store(root, "kinds"):
        yield logged(path)


def schema_of(server: MLManagerProcess) -> str:
    return "main" if server.db_url.startswith("sqlite") else "scored"


def qualified(server: MLManagerProcess, table: str) -> str:
    return table if server.db_url.startswith("sqlite") else f"{schema_of(server)}.{table}"


def execute(url: str, sql: str) -> None:
    """One statement with a plain client (sqlite3 or psycopg)."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(sqlite_path(url))) as lite:
            lite.execute(sql)
            lite.commit()
        return
    with plain_pg(url) as conn:
        conn.execute(sql)


def submit(server: MLManagerProcess, handler: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Submit a job through the REST API and wait for its end; the job with its log."""
    r = requests.post(
        f"{server.api}/jobs",
        json={"handler_name": handler, "payload": payload},
        auth=ADMIN,
        timeout=30,
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 300  # a Spark or TensorFlow start on a loaded machine
    while time.monotonic() < deadline:
        job = requests.get(f"{server.api}/jobs/{job_id}", auth=ADMIN, timeout=30).json()
        if job["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            logs = requests.get(f"{server.api}/jobs/{job_id}/logs", auth=ADMIN, timeout=30)
            job["log"] = "\n".join(line["message"] for line in logs.json()["lines"])
            return dict(job)
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not end")


def deploy(server: MLManagerProcess, uri: str, table: str, **payload: Any) -> dict[str, Any]:
    """DEPLOY_DATABASE of ``uri`` into a new table keyed by ``id``; the ended job."""
    return submit(
        server,
        "DEPLOY_DATABASE",
        {
            "model_uri": uri,
            "db_schema": schema_of(server),
            "db_table": table,
            "create_model_table": True,
            "primary_key": {"id": "BIGINT"},
            **payload,
        },
    )


def wait_scored(server: MLManagerProcess, table: str, timeout: float = 120) -> None:
    """An async deployment's backlog drained (its deployment details say 0 unscored rows)."""
    listed = requests.get(f"{server.api}/deployments", auth=ADMIN, timeout=30).json()
    name = f"{schema_of(server)}.{table}"
    (deployment,) = [d for d in listed["deployments"] if d["name"] == name]
    url = f"{server.api}/deployments/{deployment['id']}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        details = requests.get(url, auth=ADMIN, timeout=30).json()["details"]
        if details["backlog"]["unscored_rows"] == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} still has unscored rows after {timeout}s: {details}")


def deploy_and_compare(
    server: MLManagerProcess,
    uri: str,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    expected: Sequence[Expected],
    outputs: Sequence[str],
    tolerance: float,
    **payload: Any,
) -> list[tuple[Any, ...]]:
    """Deploy ``uri`` through the server, INSERT ``rows`` (``id`` first, then ``columns``)
    as one single-row and one multi-row statement, and compare each row's ``outputs`` with
    ``expected``: labels exactly, numbers within ``tolerance``. The rows read back."""
    job = deploy(server, uri, table, **payload)
    assert job["status"] == "SUCCESS", job["log"]
    schema = schema_of(server)
    insert_rows(server.db_url, table, ["id", *columns], rows[:1], schema)
    insert_rows(server.db_url, table, ["id", *columns], rows[1:], schema)
    if payload.get("mode") == "async":
        wait_scored(server, table)
    query = f"SELECT {', '.join(outputs)} FROM {qualified(server, table)} ORDER BY id"
    got = read_rows(server.db_url, query)
    assert_predictions(got, expected, tolerance)
    return got


def assert_predictions(
    got: Sequence[tuple[Any, ...]], expected: Sequence[Expected], tolerance: float
) -> None:
    assert len(got) == len(expected)
    for row, (have, want) in enumerate(zip(got, expected, strict=True)):
        if want is None:  # no prediction of the framework's own to compare with
            continue
        assert len(have) == len(want), (row, have, want)
        for h, w in zip(have, want, strict=True):
            if w is None or isinstance(w, str):
                assert (h if h is None else str(h)) == w, (row, have, want)
            else:
                assert h == pytest.approx(w, abs=tolerance, rel=tolerance), (row, have, want)


def blocked_import(directory: Path, package: str) -> Path:
    """A directory that, first on PYTHONPATH, makes ``import package`` fail as if it were
    not installed (a worker without an extra)."""
    (directory / package).mkdir(parents=True, exist_ok=True)
    (directory / package / "__init__.py").write_text(
        f"raise ModuleNotFoundError({f'No module named {package!r}'!r}, name={package!r})\n"
    )
    return directory


def deploy_without_extra(
    package: str, model_path: Path, sqlite_url: str, engine: Engine, tmp_path: Path
) -> Job:
    """Deploy the saved model at ``model_path`` to a new SQLite table with a worker process
    for which ``import package`` fails (as without its extra): the finished job."""
    blocked = blocked_import(tmp_path / "blocked", package)
    with logged_locally(model_path, tmp_path) as uri:
        worker = WorkerProcess(
            sqlite_url,
            tmp_path,
            f"no-{package}",
            pythonpath=f"{blocked}:{ROOT}",
            mlflow_tracking_uri=mlflow.get_tracking_uri(),
        )
    try:
        worker.wait_healthy(120)
        payload = {
            "model_uri": uri,
            "db_schema": "main",
            "db_table": f"no_{package}",
            "create_model_table": True,
            "primary_key": {"id": "INTEGER"},
        }
        ledger = Ledger(engine)
        return wait_finished(ledger, ledger.enqueue("DEPLOY_DATABASE", payload, "admin").id, 120)
    finally:
        worker.stop()


def served_predictions(model_uri: str, rows: pd.DataFrame, logdir: Path) -> list[Any]:
    """``mlmanager serve MODEL_URI`` (mlrunner on the model's ONNX representation): its
    answer to ``POST /invocations`` of ``rows`` (``dataframe_split``; NaN and None as null)."""
    port = free_port()
    command = [sys.executable, "-m", "mlmanager", "serve", model_uri, "--port", str(port)]
    log = logdir / "serve.log"
    tracking = {"MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
    served = ServingProcess("mlmanager serve", command, log, port, **tracking).wait_ready(300)
    try:
        split = json.loads(rows.to_json(orient="split", index=False))
        answer = requests.post(
            f"{served.url}/invocations", json={"dataframe_split": split}, timeout=60
        )
    finally:
        served.stop()
    assert answer.status_code == 200, answer.text
    assert "with mlrunner (onnx representation" in log.read_text(), log.read_text()[-3000:]
    return list(answer.json()["predictions"])
