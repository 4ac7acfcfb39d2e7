"""RETRAIN with ``environment: kubernetes`` against the real control plane
(``tests/support/kube.py``) and a real Elasticsearch node.

One `mlmanager up` whose worker holds a token bound to a Role of exactly the chart's
``worker-role-rules.yaml``: it creates the Job and its Secret, follows the Job's status, and
copies the pod's lines from Elasticsearch into the RETRAIN job's log; then compares and
promotes as the local path does. kwok runs no container: the test reads the Job's pod
template and Secret back from the API server, runs the container's command, arguments and
environment here as a local process (the image's ``mlflow`` is this venv's), ships its
output into Elasticsearch as Filebeat would (one document per line, the pod's name, offset
and time), and ends the pod with the process's exit code, as the kubelet would.

What kwok cannot show: the image (pulled, its entrypoint, its libraries), the pod's network
path to the MLflow server, the kubelet's own log files and `pods/log` (the fallback without
Elasticsearch is not exercised), resource limits and activeDeadlineSeconds enforced on a
running container (the deadline is only checked as rendered).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from kubernetes import client
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression
from sqlalchemy import create_engine, text

from shared.kube.jobs import JOB_LABEL, PROJECT_DIR, SECRET_KEYS, job_name
from tests.support.elasticsearch import ElasticsearchNode, PodLog
from tests.support.kube import (
    ControlPlane,
    control_plane,  # noqa: F401 (fixture)
    finish_pod,
    service_account,
)
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING
from tests.support.pg import PostgresServer
from tests.support.processes import ROOT
from tests.support.servers import ADMIN_PASSWORD, MLManagerProcess, tracking_as
from tests.support.workers import wait_until

pytestmark = [
    pytest.mark.postgres,
    INPUT_EXAMPLE_WARNING,
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred"),
]
ADMIN = ("admin", ADMIN_PASSWORD)
RULES = ROOT / "infrastructure/helm/mlmanager/files/worker-role-rules.yaml"
PROJECT = ROOT / "tests" / "support" / "retrain_project"
NAMESPACE = "retrain"
INDEX = "logs-retrain"
MODEL = "churn-k8s"
IMAGE = "registry.test/mlmanager:retrain"


class Rig:
    def __init__(self, server: MLManagerProcess, kube: ControlPlane, es: ElasticsearchNode):
        self.server, self.kube, self.es = server, kube, es

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, f"{self.server.api}{path}", auth=ADMIN, timeout=30, **kw)

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/jobs/{job_id}").json())

    def wait_job(self, job_id: int, timeout: float = 180) -> dict[str, Any]:
        done = ("SUCCESS", "FAILURE", "CANCELLED")
        wait_until(lambda: self.job(job_id)["status"] in done, timeout, f"job {job_id}")
        return self.job(job_id)

    def log(self, job_id: int) -> str:
        lines = self.call("GET", f"/jobs/{job_id}/logs", params={"limit": 5000}).json()["lines"]
        return "\n".join(ln["message"] for ln in lines)


@pytest.fixture(scope="module")
def rig(
    control_plane: ControlPlane,  # noqa: F811
    es_node: ElasticsearchNode,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("kretrain")
    with control_plane.client() as api:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
    token = service_account(
        control_plane, NAMESPACE, "mlmanager-worker", yaml.safe_load(RULES.read_text())
    )
    config = control_plane.write_kubeconfig(root / "worker.kubeconfig", token, "worker")
    # The index as a shipper's template makes it, before any pod writes a line.
    es_node.client().indices.create(
        index=INDEX,
        mappings={
            "properties": {
                "@timestamp": {"type": "date"},
                "log": {"properties": {"offset": {"type": "long"}}},
                "kubernetes": {
                    "properties": {"pod": {"properties": {"name": {"type": "keyword"}}}}
                },
                "message": {"type": "text"},
            }
        },
    )
    server = MLManagerProcess(
        root / "home",
        kubeconfig=config,
        namespace=NAMESPACE,
        elasticsearch_url=es_node.url,
        elasticsearch_index=INDEX,
        elasticsearch_watch_poll_seconds=0.3,
        elasticsearch_watch_settle_seconds=1.0,
        retrain_kubernetes_image=IMAGE,
        retrain_kubernetes_cpu_request="500m",
        retrain_kubernetes_memory_limit="2Gi",
        retrain_kubernetes_deadline_seconds=900,
        retrain_kubernetes_poll_seconds=0.3,
    )
    try:
        server.wait_ready()
        with tracking_as(server.url, ADMIN, "retrain-k8s"):
            yield Rig(server, control_plane, es_node)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def training_db(pg_server: PostgresServer) -> Iterator[str]:
    """apps.train (400 rows) and apps.retrain_config in a database of their own."""
    with pg_server.database(f"kretrain_{time.time_ns()}") as url:
        rng = np.random.default_rng(1)
        data = pd.DataFrame({"x1": rng.normal(0, 1, 400), "x2": rng.normal(0, 1, 400)})
        data["y"] = (data.x1 + 0.5 * data.x2 > 0).astype(int)
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("CREATE SCHEMA apps"))
            conn.execute(text("CREATE TABLE apps.retrain_config (quality text)"))
            conn.execute(text("INSERT INTO apps.retrain_config VALUES ('good')"))
            conn.execute(text("CREATE TABLE apps.train (id int, x1 float8, x2 float8, y int)"))
            conn.execute(
                text("INSERT INTO apps.train VALUES (:id, :x1, :x2, :y)"),
                [{"id": i, **r} for i, r in enumerate(data.to_dict("records"))],
            )
        engine.dispose()
        yield url


def _quality(db_url: str, quality: str) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE apps.retrain_config SET quality = :q"), {"q": quality})
    engine.dispose()


@pytest.fixture(scope="module")
def schedule(rig: Rig, training_db: str) -> int:
    """Version 1 of MODEL (noisy labels, its project logged with it) and a schedule on
    Kubernetes that never fires by itself (run on request here)."""
    rng = np.random.default_rng(2)
    x = pd.DataFrame({"x1": rng.normal(0, 1, 200), "x2": rng.normal(0, 1, 200)})
    noisy = rng.integers(0, 2, 200)
    model = LogisticRegression().fit(x, noisy)
    with mlflow.start_run() as run:
        mlflow.log_metric("accuracy", 0.5)
        mlflow.sklearn.log_model(model, name="model", input_example=x.head(5))
        mlflow.log_artifacts(str(PROJECT), "project")
    mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL)
    body = {
        "name": "churn-on-kubernetes",
        "cron_exp": "0 3 1 1 *",
        "environment": "kubernetes",
        "model_name": MODEL,
        "metric": "accuracy",
        "parameters": {"db_url": training_db, "table": "apps.train"},
    }
    r = rig.call("POST", "/schedules", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _wait_for_pod(rig: Rig, job_id: int) -> tuple[Any, Any, str]:
    """(the Job, its Secret, its pod's name) once the Job controller made the pod."""
    name = job_name(job_id)
    found: dict[str, Any] = {}

    def pod_exists() -> bool:
        with rig.kube.client() as api:
            pods = client.CoreV1Api(api).list_namespaced_pod(
                NAMESPACE, label_selector=f"{JOB_LABEL}={job_id}"
            )
        if pods.items:
            found["pod"] = pods.items[0].metadata.name
        return bool(pods.items)

    wait_until(pod_exists, 90, f"the pod of Job {name}")
    with rig.kube.client() as api:
        job = client.BatchV1Api(api).read_namespaced_job(name, NAMESPACE)
        secret = client.CoreV1Api(api).read_namespaced_secret(name, NAMESPACE)
    return job, secret, found["pod"]


def _run_pod_here(rig: Rig, job: Any, secret: Any, pod: str, workdir: Path) -> int:
    """The pod's container as a local process, its output shipped into Elasticsearch line
    by line; the pod ended with its exit code. Returns the exit code."""
    container = job.spec.template.spec.containers[0]
    env: dict[str, str] = {}
    for var in container.env:
        if var.value_from is not None:
            ref = var.value_from.secret_key_ref
            assert ref.name == secret.metadata.name
            env[var.name] = base64.b64decode(secret.data[ref.key]).decode()
        else:
            env[var.name] = var.value
    # Where this machine has what the image has: the venv's mlflow and python first on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    env["HOME"] = str(workdir)
    command = [*container.command, *container.args]
    command[-1] = command[-1].replace(PROJECT_DIR, str(workdir / "project-dir"))
    es = rig.es.client()
    shipper = PodLog(es, INDEX, pod)
    shipper.start = dt.datetime.now(dt.UTC)
    with subprocess.Popen(
        command,
        env=env,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as proc:
        assert proc.stdout is not None
        output = proc.stdout

        def ship() -> None:
            for line in output:
                shipper.write(line.rstrip("\n"))

        thread = threading.Thread(target=ship, daemon=True)
        thread.start()
        try:
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        thread.join(30)
    es.close()
    finish_pod(rig.kube, NAMESPACE, pod, code)
    return code


def _secret_gone(rig: Rig, name: str) -> bool:
    with rig.kube.client() as api:
        names = [
            s.metadata.name for s in client.CoreV1Api(api).list_namespaced_secret(NAMESPACE).items
        ]
    return name not in names


def test_a_retrain_on_kubernetes_runs_as_a_job_and_promotes_the_winner(
    rig: Rig, schedule: int, tmp_path: Path
) -> None:
    r = rig.call("POST", f"/schedules/{schedule}/run")
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    job, secret, pod = _wait_for_pod(rig, job_id)

    # The Job as rendered: one try, a deadline, the settings' image and resources, and
    # the MLflow login only through the Secret.
    assert job.spec.backoff_limit == 0 and job.spec.active_deadline_seconds == 900
    spec = job.spec.template.spec
    assert spec.restart_policy == "Never"
    container = spec.containers[0]
    assert container.image == IMAGE
    assert container.resources.requests == {"cpu": "500m"}
    assert container.resources.limits == {"memory": "2Gi"}
    from_secret = {v.name for v in container.env if v.value_from is not None}
    assert from_secret == set(SECRET_KEYS)
    token = base64.b64decode(secret.data["MLFLOW_TRACKING_PASSWORD"]).decode()
    assert token.startswith("mlmjob_")
    with rig.kube.client() as api:
        raw = (
            client.BatchV1Api(api)
            .read_namespaced_job(
                name=job.metadata.name, namespace=NAMESPACE, _preload_content=False
            )
            .data.decode()
        )
    assert token not in raw and json.loads(raw)["kind"] == "Job"
    assert token not in rig.log(job_id)

    assert _run_pod_here(rig, job, secret, pod, tmp_path) == 0
    done = rig.wait_job(job_id)
    log = rig.log(job_id)
    assert done["status"] == "SUCCESS", f"{done['error']}\n{log}"

    # The pod's lines came through Elasticsearch, in order, each once.
    copied = [ln for ln in log.splitlines() if ln.startswith(f"[{pod}:")]
    messages = [ln.split("] ", 1)[1] for ln in copied]
    assert "logging to MLflow as admin" in messages
    assert "training on 400 rows of apps.train (quality good)" in messages
    assert any(m.startswith("accuracy ") for m in messages)
    offsets = [int(ln.split(":", 1)[1].split("]", 1)[0]) for ln in copied]
    assert offsets == sorted(set(offsets))
    assert f"Job {job.metadata.name}: succeeded" in log

    # The same compare and promote as the local path.
    mlflow_client = MlflowClient()
    assert mlflow_client.get_model_version_by_alias(MODEL, "champion").version == "2"
    v2 = mlflow_client.get_model_version(MODEL, "2")
    assert v2.tags["mlmanager.retrain.outcome"] == "promoted"
    run = mlflow_client.get_run(v2.run_id)
    assert run.data.tags["mlmanager.retrain.job"] == str(job_id)
    assert run.data.tags["mlflow.user"] == "admin"
    wait_until(lambda: _secret_gone(rig, job.metadata.name), 30, "the Job's Secret removed")


def test_a_failing_project_on_kubernetes_fails_the_retrain_with_its_lines(
    rig: Rig, schedule: int, training_db: str, tmp_path: Path
) -> None:
    versions = len(MlflowClient().search_model_versions(f"name = '{MODEL}'"))
    _quality(training_db, "fail")
    try:
        r = rig.call("POST", f"/schedules/{schedule}/run")
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        job, secret, pod = _wait_for_pod(rig, job_id)
        assert _run_pod_here(rig, job, secret, pod, tmp_path) != 0
        done = rig.wait_job(job_id)
    finally:
        _quality(training_db, "good")
    assert done["status"] == "FAILURE"
    assert "BackoffLimitExceeded" in done["error"], done["error"]
    assert "TrainingDataError: the label column holds no positive row" in done["error"]
    log = rig.log(job_id)
    assert f"[{pod}:" in log and f"Job {job.metadata.name}: failed" in log
    assert len(MlflowClient().search_model_versions(f"name = '{MODEL}'")) == versions
    wait_until(lambda: _secret_gone(rig, job.metadata.name), 30, "the Job's Secret removed")
