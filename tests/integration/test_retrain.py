"""Scheduled retraining end to end: a real server, three real workers, a real MLflow Project
(tests/support/retrain_project: scikit-learn trained on a PostgreSQL table) run with
``mlflow run --env-manager local``, champion/challenger and the redeploy of the winner.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine, text

from shared.db import make_engine
from shared.migrations import upgrade
from shared.schedules import cron_trigger, next_fire_time
from tests.support.engines import settings_for
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING
from tests.support.pg import PostgresServer, free_port
from tests.support.processes import ROOT, clean_environment, spawn_mlmanager
from tests.support.servers import ADMIN_PASSWORD, tracking_as
from tests.support.workers import WorkerProcess, wait_until

pytestmark = [
    pytest.mark.postgres,
    INPUT_EXAMPLE_WARNING,
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred"),
]
ADMIN = ("admin", ADMIN_PASSWORD)
# The model's owner (not an administrator): her schedule's project logs as her.
ALICE = ("alice", "alice-Passw0rd-2026!")
BOB = ("bob", "bob-Passw0rd-2026!")
PROJECT = ROOT / "tests" / "support" / "retrain_project"
MODEL = "churn"
# Seconds between ticks: longer than a retrain (10-15 s here), so ticks rarely meet a
# running retrain; when one does (a busy machine), its firing is skipped and said so.
EVERY = 20
CRON = f"*/{EVERY} * * * * *"


class Rig:
    def __init__(self, url: str, engine: Engine, api: str, workers: list[WorkerProcess]) -> None:
        self.url, self.engine, self.api, self.workers = url, engine, api, workers

    def call(
        self, method: str, path: str, auth: tuple[str, str] = ADMIN, **kw: Any
    ) -> requests.Response:
        return requests.request(method, f"{self.api}{path}", auth=auth, timeout=30, **kw)

    def sql(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return list(result) if result.returns_rows else []

    def retrain_jobs(self, schedule_id: int) -> list[Any]:
        """The schedule's RETRAIN jobs (``fire_time`` None: run now)."""
        return self.sql(
            "SELECT id, status, payload->>'fire_time' AS fire_time, created_at, finished_at, "
            "worker_id "
            "FROM mlmanager.jobs WHERE handler_name = 'RETRAIN' "
            "AND (payload->>'schedule_id')::int = :s ORDER BY id",
            s=schedule_id,
        )

    def fired(self, schedule_id: int) -> list[Any]:
        return [j for j in self.retrain_jobs(schedule_id) if j.fire_time]

    def job(self, job_id: int) -> Any:
        return self.call("GET", f"/jobs/{job_id}").json()

    def wait_job(self, job_id: int, timeout: float = 240) -> Any:
        wait_until(lambda: self.job(job_id)["status"] in ("SUCCESS", "FAILURE"), timeout, "job")
        return self.job(job_id)

    def log(self, job_id: int) -> str:
        lines = self.call("GET", f"/jobs/{job_id}/logs", params={"limit": 5000}).json()["lines"]
        return "\n".join(ln["message"] for ln in lines)


def _data(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"x1": rng.normal(0, 1, rows), "x2": rng.normal(0, 1, rows)})
    x["y"] = (x.x1 + 0.5 * x.x2 > 0).astype(int)
    return x


@pytest.fixture(scope="module")
def rig(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("retrain")
    with pg_server.database(f"retrain_{time.time_ns()}") as url:
        engine = make_engine(settings_for(url, tmp))
        upgrade(engine)
        port = free_port()
        env = clean_environment()
        env.update(
            DB_URL=url,
            MLMANAGER_HOME=str(tmp / "home"),
            MLMANAGER_PORT=str(port),
            MLMANAGER_ADMIN_PASSWORD=ADMIN_PASSWORD,
            MLMANAGER_SECRET_KEY="test-secret-key-0123456789abcdef",
            PYTHONPATH=str(ROOT),
        )
        server = spawn_mlmanager("server", env, tmp / "server.log")
        base = f"http://127.0.0.1:{port}"
        workers: list[WorkerProcess] = []
        try:
            for i in range(3):  # started while the server starts
                workers.append(
                    WorkerProcess(
                        url,
                        tmp,
                        f"worker{i}",
                        mlflow_url=base,
                        mlmanager_admin_password=ADMIN_PASSWORD,
                        job_lease_seconds=6,
                        scheduler_poll_seconds=0.5,
                        worker_threads=2,
                    )
                )
            wait_until(lambda: _up(f"{base}/health"), 180, "the server")
            for w in workers:
                w.wait_healthy(120)
            r = requests.post(
                f"{base}/api/2.0/mlflow/users/create",
                json={"username": ALICE[0], "password": ALICE[1]},
                auth=ADMIN,
                timeout=30,
            )
            assert r.status_code == 200, r.text
            with tracking_as(base, ALICE):
                yield Rig(url, engine, f"{base}/api/2.0/mlmanager", workers)
        finally:
            for w in workers:
                w.stop()
            server.terminate()
            server.wait(60)
            engine.dispose()


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _champion_v1(rig: Rig) -> str:
    """Training rows in apps.train, and version 1 (trained on noisy labels) with the project,
    logged and registered by alice."""
    data = _data(400, 1)
    rig.sql("CREATE SCHEMA apps")
    rig.sql("CREATE TABLE apps.retrain_config (quality text)")
    rig.sql("INSERT INTO apps.retrain_config VALUES ('good')")
    rig.sql("CREATE TABLE apps.train (id int PRIMARY KEY, x1 float8, x2 float8, y int)")
    rows = [{"id": i, **r} for i, r in enumerate(data.to_dict("records"))]
    with rig.engine.begin() as conn:
        conn.execute(text("INSERT INTO apps.train VALUES (:id, :x1, :x2, :y)"), rows)
    noisy = np.where(np.random.default_rng(2).random(len(data)) < 0.3, 1 - data.y, data.y)
    features = data[["x1", "x2"]]
    model = LogisticRegression().fit(features, noisy)
    mlflow.set_experiment("retrain")
    with mlflow.start_run() as run:
        mlflow.log_metric("accuracy", float((model.predict(features) == data.y).mean()))
        mlflow.sklearn.log_model(model, name="model", input_example=features.head(5))
        mlflow.log_artifacts(str(PROJECT), "project")
    mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL)
    return run.info.run_id


def test_schedule_api_rules_and_cli(rig: Rig) -> None:
    """Bad schedules are 400s naming the field; another user's schedule is a 404; the CLI
    shows the API's schedules. (Its cron never fires during the test.)"""
    with mlflow.start_run(experiment_id=mlflow.create_experiment("schedule-api")) as run:
        data = _data(50, 3)
        model = LogisticRegression().fit(data[["x1", "x2"]], data.y)
        mlflow.sklearn.log_model(model, name="model", input_example=data[["x1", "x2"]].head(2))
    mlflow.register_model(f"runs:/{run.info.run_id}/model", "churn-api")
    body = {"name": "api-yearly", "cron_exp": "0 3 1 1 *", "model_name": "churn-api"}
    body["metric"] = "accuracy"
    for bad, field in (
        ({"cron_exp": "61 * * * *"}, "cron_exp"),
        ({"cron_exp": "* * *"}, "cron_exp"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"name": "no spaces"}, "name"),
        ({"surprise": 1}, "surprise"),
    ):
        r = rig.call("POST", "/schedules", json={**body, **bad}, auth=ALICE)
        assert r.status_code == 400 and r.json()["field"] == field, (bad, r.text)
    r = rig.call("POST", "/schedules", json={**body, "model_name": "nobody"}, auth=ALICE)
    assert r.status_code == 404 and r.json()["field"] == "model_name", r.text
    r = rig.call("POST", "/schedules", json=body, auth=ALICE)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["next_fire_at"].endswith("-01-01T03:00:00.000Z")

    r = requests.post(
        f"{rig.api.removesuffix('/api/2.0/mlmanager')}/api/2.0/mlflow/users/create",
        json={"username": BOB[0], "password": BOB[1]},
        auth=ADMIN,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    for method, path in (("GET", ""), ("POST", "/pause"), ("POST", "/run"), ("DELETE", "")):
        assert rig.call(method, f"/schedules/{sid}{path}", auth=BOB).status_code == 404
    assert [s["id"] for s in rig.call("GET", "/schedules", auth=BOB).json()["schedules"]] == []

    env = clean_environment()
    env.update(
        MLFLOW_TRACKING_URI=rig.api.removesuffix("/api/2.0/mlmanager"),
        MLFLOW_TRACKING_USERNAME=ALICE[0],
        MLFLOW_TRACKING_PASSWORD=ALICE[1],
    )
    cli = [sys.executable, "-m", "mlmanager", "schedules"]
    shown = subprocess.run(
        [*cli, "list"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert "api-yearly" in shown.stdout and "0 3 1 1 *" in shown.stdout
    paused = subprocess.run(
        [*cli, "pause", str(sid)], env=env, capture_output=True, text=True, timeout=120
    )
    assert paused.returncode == 0 and json.loads(paused.stdout)["paused"], paused.stderr
    assert rig.call("DELETE", f"/schedules/{sid}", auth=ALICE).status_code == 200

    # The original way: a SCHEDULE_RETRAIN job creates the same schedule.
    job = {"handler_name": "SCHEDULE_RETRAIN", "payload": {**body, "name": "api-by-job"}}
    r = rig.call("POST", "/jobs", json=job, auth=ALICE)
    assert r.status_code == 201, r.text
    assert rig.wait_job(r.json()["id"])["status"] == "SUCCESS", rig.log(r.json()["id"])
    mine = rig.call("GET", "/schedules", auth=ALICE).json()["schedules"]
    [created] = [s for s in mine if s["name"] == "api-by-job"]
    assert created["user"] == "alice" and created["spec"]["model_name"] == "churn-api"
    assert rig.call("DELETE", f"/schedules/{created['id']}", auth=ALICE).status_code == 200


def _print_tick_timing(rig: Rig, retrain_id: int, redeploy_id: int) -> None:
    """Where a tick's time goes, firing to redeployed table (printed: measured, not asserted)."""
    rows = {
        r.id: r
        for r in rig.sql(
            "SELECT id, payload->>'fire_time' AS fire_time, created_at, started_at, finished_at "
            "FROM mlmanager.jobs WHERE id IN (:a, :b)",
            a=retrain_id,
            b=redeploy_id,
        )
    }
    retrain, redeploy = rows[retrain_id], rows[redeploy_id]
    fired = dt.datetime.fromisoformat(retrain.fire_time)
    marks = [
        ("enqueued", retrain.created_at - fired),
        ("claimed", retrain.started_at - retrain.created_at),
        ("retrained", retrain.finished_at - retrain.started_at),
        ("redeploy claimed", redeploy.started_at - redeploy.created_at),
        ("redeployed", redeploy.finished_at - redeploy.started_at),
    ]
    total = (redeploy.finished_at - fired).total_seconds()
    steps = ", ".join(f"{name} +{delta.total_seconds():.2f} s" for name, delta in marks)
    print(f"\ntick {retrain.fire_time}: fired to redeployed table in {total:.1f} s ({steps})")


def _runs_per_job(client: MlflowClient) -> dict[str, int]:
    """MLflow runs the schedule's retrains created, counted per RETRAIN job."""
    runs = client.search_runs(
        [client.get_experiment_by_name("retrain").experiment_id],
        "tags.`mlmanager.retrain.schedule` = 'churn-nightly'",
    )
    return collections.Counter(run.data.tags["mlmanager.retrain.job"] for run in runs)


def _skipped(rig: Rig, job_id: int) -> bool:
    return "is still running; this" in rig.log(job_id)


def test_scheduled_retraining_on_three_workers(rig: Rig) -> None:
    client = MlflowClient()
    _champion_v1(rig)
    r = rig.call(
        "POST",
        "/jobs",
        json={
            "handler_name": "DEPLOY_DATABASE",
            "payload": {
                "model_uri": f"models:/{MODEL}/1",
                "db_schema": "apps",
                "db_table": "scored",
                "create_model_table": True,
                "primary_key": {"id": "BIGINT"},
            },
        },
    )
    assert r.status_code == 201, r.text
    assert rig.wait_job(r.json()["id"])["status"] == "SUCCESS", rig.log(r.json()["id"])

    # A schedule: every tick runs the project once, on one of the three workers.
    body = {
        "name": "churn-nightly",
        "cron_exp": CRON,
        "model_name": MODEL,
        "metric": "accuracy",
        "parameters": {"db_url": rig.url, "table": "apps.train"},
    }
    r = rig.call("POST", "/schedules", json=body, auth=ALICE)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["user"] == "alice"
    assert rig.call("POST", "/schedules", json=body, auth=ALICE).status_code == 409

    # First tick: the challenger (clean labels) beats version 1.
    wait_until(lambda: len(rig.fired(sid)) >= 1, 2 * EVERY + 10, "the first firing")
    first = rig.fired(sid)[0]
    # "Run now" while that retrain runs: skipped, one retrain of a schedule at a time.
    wait_until(lambda: "running the project" in rig.log(first.id), 60, "the first project")
    r = rig.call("POST", f"/schedules/{sid}/run")
    assert r.status_code == 202, r.text
    overlapping = rig.wait_job(r.json()["id"])
    assert overlapping["status"] == "SUCCESS" and _skipped(rig, overlapping["id"])
    assert rig.wait_job(first.id)["status"] == "SUCCESS", rig.log(first.id)
    rig.sql("UPDATE apps.retrain_config SET quality = 'bad'")
    # The project logged its run as alice, with a token that ended with the job.
    assert "logging to MLflow as alice" in rig.log(first.id)
    assert ADMIN_PASSWORD not in rig.log(first.id)
    tokens = rig.sql("SELECT revoked_at FROM mlmanager.job_tokens WHERE job_id = :j", j=first.id)
    assert len(tokens) == 1 and tokens[0].revoked_at is not None

    # ...is promoted, and the deployed table of version 1 is redeployed with it.
    assert client.get_model_version_by_alias(MODEL, "champion").version == "2"
    v2 = client.get_model_version(MODEL, "2")
    assert v2.tags["mlmanager.retrain.outcome"] == "promoted"
    redeploys = rig.sql(
        "SELECT id FROM mlmanager.jobs WHERE unique_key LIKE :k", k=f"retrain:{first.id}:redeploy:%"
    )
    assert len(redeploys) == 1
    redeployed = rig.wait_job(redeploys[0].id)
    assert redeployed["status"] == "SUCCESS", rig.log(redeploys[0].id)
    fresh = _data(5, 99)[["x1", "x2"]]
    with rig.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO apps.scored (id, x1, x2) VALUES (:id, :x1, :x2)"),
            [{"id": 1000 + i, **r} for i, r in enumerate(fresh.to_dict("records"))],
        )
    scored = rig.sql("SELECT run_id, prediction FROM apps.scored WHERE id >= 1000 ORDER BY id")
    expected = mlflow.sklearn.load_model(f"models:/{MODEL}/2").predict(fresh)
    assert {row.run_id for row in scored} == {v2.run_id}
    assert [row.prediction for row in scored] == [str(v) for v in expected]
    _print_tick_timing(rig, first.id, redeploys[0].id)

    # kill -9 of the leader: another worker leads, fires the next tick, and only once.
    leader = next(w for w in rig.workers if "is the retraining leader" in w.log.read_text())
    leader.kill()
    wait_until(
        lambda: sum("is the retraining leader" in w.log.read_text() for w in rig.workers) >= 2,
        20,
        "a new leader",
    )

    # Later ticks train on shuffled labels: registered, compared, not promoted.
    def retrained_after(job_id: int) -> Any:
        """The first later tick whose retrain runs (not skipped, not on the killed leader)."""
        later = [j for j in rig.fired(sid) if j.id > job_id]
        alive = [j for j in later if not (j.worker_id or "").endswith(f":{leader.pid}")]
        return next((j for j in alive if "running the project" in rig.log(j.id)), None)

    wait_until(lambda: retrained_after(first.id) is not None, 3 * EVERY, "a later retrain")
    second = retrained_after(first.id)
    # Pause: the next tick does not fire (checked below, once it has passed).
    paused = rig.call("POST", f"/schedules/{sid}/pause", auth=ALICE).json()
    paused_at = time.monotonic()
    assert paused["paused"] and paused["next_fire_at"] is None
    assert rig.wait_job(second.id)["status"] == "SUCCESS", rig.log(second.id)
    assert not _skipped(rig, second.id)
    v3 = client.get_model_version(MODEL, "3")
    assert v3.tags["mlmanager.retrain.outcome"] == "rejected"
    assert v3.tags["mlmanager.retrain.champion_version"] == "2"
    assert "accuracy" in v3.tags["mlmanager.retrain.comparison"]
    assert client.get_model_version_by_alias(MODEL, "champion").version == "2"
    assert not rig.sql(
        "SELECT id FROM mlmanager.jobs WHERE unique_key LIKE :k", k=f"retrain:{second.id}:%"
    )

    # The next firing's project fails (checked after the resume below).
    rig.sql("UPDATE apps.retrain_config SET quality = 'fail'")
    time.sleep(max(0.0, paused_at + EVERY + 2 - time.monotonic()))
    fired = rig.fired(sid)
    assert fired[-1].id == second.id  # nothing fired while paused

    # Every tick up to the pause fired once, across the leader change, none lost.
    times = [j.fire_time for j in fired]
    assert len(times) == len(set(times)), times
    parsed = [dt.datetime.fromisoformat(t) for t in times]
    trigger = cron_trigger(CRON, "UTC")
    assert all(next_fire_time(trigger, a) == b for a, b in itertools.pairwise(parsed)), times
    runs = _runs_per_job(client)
    assert all(n == 1 for n in runs.values()), runs  # no job retrained twice
    died = {  # a retrain the killed leader was running dies with it (not retried)
        r.id
        for r in rig.sql(
            "SELECT id FROM mlmanager.jobs WHERE worker_id LIKE :w AND error LIKE '%expired%'",
            w=f"%:{leader.pid}",
        )
    }
    for job in fired:  # each tick retrained once, or said why not
        assert runs[str(job.id)] == 1 or _skipped(rig, job.id) or job.id in died, (job, runs)

    # Resume: firings start again; delete: they stop for good.
    versions = len(client.search_model_versions(f"name = '{MODEL}'"))
    resumed = rig.call("POST", f"/schedules/{sid}/resume", auth=ALICE).json()
    assert not resumed["paused"] and resumed["next_fire_at"] is not None
    wait_until(lambda: len(rig.fired(sid)) > len(fired), 2 * EVERY, "a firing after resume")
    failing = rig.fired(sid)[-1]
    # (A firing whose job has not read its schedule yet would fail on the deleted one.)
    wait_until(lambda: "running the project" in rig.log(failing.id), 60, "the project")
    assert rig.call("DELETE", f"/schedules/{sid}", auth=ALICE).status_code == 200
    deleted_at = time.monotonic()
    assert rig.call("GET", f"/schedules/{sid}", auth=ALICE).status_code == 404
    count = len(rig.fired(sid))

    # That firing's project failed: the job too, with the project's own error output.
    failed = rig.wait_job(failing.id)
    assert failed["status"] == "FAILURE"
    log = rig.log(failing.id)
    assert "TrainingDataError: the label column holds no positive row" in log
    assert re.search(r"exit code \d", failed["error"] or log)
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == versions  # none registered

    time.sleep(max(0.0, deleted_at + EVERY + 2 - time.monotonic()))
    assert len(rig.fired(sid)) == count


def _session(leader: int) -> list[int]:
    """Live processes of the session ``leader`` leads (zombies, dead but not yet reaped by
    whoever adopted them, are not)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[3]) == leader and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _guard_of(worker: int) -> int:
    """The process_guard the worker started (its project's session leader)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == worker and b"bobby.process_guard" in argv:
            return int(entry.name)
    raise AssertionError(f"worker {worker} runs no project")


def test_a_killed_worker_takes_its_project_with_it(rig: Rig) -> None:
    """kill -9 of the worker running a retrain: the project's processes (the guard, mlflow
    run, its shell, the entry point and a child of it) end with it."""
    rig.sql("CREATE SCHEMA IF NOT EXISTS apps")
    rig.sql("CREATE TABLE IF NOT EXISTS apps.retrain_config (quality text)")
    rig.sql("DELETE FROM apps.retrain_config")
    rig.sql("INSERT INTO apps.retrain_config VALUES ('hang')")
    rig.sql("CREATE TABLE apps.hang_train (id int, x1 float8, x2 float8, y int)")
    data = _data(50, 4)
    with mlflow.start_run(experiment_id=mlflow.create_experiment("retrain-killed")) as run:
        model = LogisticRegression().fit(data[["x1", "x2"]], data.y)
        mlflow.log_metric("accuracy", 0.5)
        mlflow.sklearn.log_model(model, name="model", input_example=data[["x1", "x2"]].head(2))
        mlflow.log_artifacts(str(PROJECT), "project")
    mlflow.register_model(f"runs:/{run.info.run_id}/model", "churn-killed")
    body = {
        "name": "churn-killed",
        "cron_exp": "0 3 1 1 *",
        "model_name": "churn-killed",
        "metric": "accuracy",
        "parameters": {"db_url": rig.url, "table": "apps.hang_train"},
    }
    r = rig.call("POST", "/schedules", json=body, auth=ALICE)
    assert r.status_code == 201, r.text
    r = rig.call("POST", f"/schedules/{r.json()['id']}/run", auth=ALICE)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    wait_until(lambda: "| hanging" in rig.log(job_id), 120, "the project hangs")
    [holder] = rig.sql("SELECT worker_id FROM mlmanager.jobs WHERE id = :j", j=job_id)
    worker = next(w for w in rig.workers if holder.worker_id.endswith(f":{w.pid}"))
    guard = _guard_of(worker.pid)
    tree = _session(guard)
    # the guard, mlflow run, train.py (bash -c execs a lone command) and its child
    assert len(tree) >= 4, tree
    worker.kill()
    wait_until(lambda: not _session(guard), 30, "the project's processes gone")
