"""DEPLOY_KUBERNETES end to end against a real control plane (``tests/support/kube.py``).

One `mlmanager up` (SQLite) whose worker talks to the API server with a ServiceAccount
token bound to a Role of exactly ``worker-role-rules.yaml`` (the chart's rules): every
deploy here proves those rules are enough. kwok plays the node, so pods become Ready
without running; the test that the pod really serves runs the container's command,
arguments and environment, as read back from the API server, as a local process.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from kubernetes import client
from sklearn.linear_model import LogisticRegression

from shared.db import make_engine
from shared.errors import NotAuthorized
from shared.kube.cluster import Cluster
from shared.kube.spec import CONTAINER_PORT, MLRUNNER_JAR, secret_name, selector
from shared.kube.target import lock_key
from shared.migrations import upgrade
from shared.settings import Settings
from tests.support import custom_models  # first: imports mlflow.pyfunc quietly
from tests.support.engines import settings_for
from tests.support.kube import ControlPlane, control_plane, service_account  # noqa: F401 (fixture)
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING, log_sklearn
from tests.support.pg import PostgresServer, free_port
from tests.support.processes import ROOT, clean_environment
from tests.support.servers import ADMIN_PASSWORD, MLManagerProcess, ServerProcess, tracking_as
from tests.support.serving import MLRUNNER_JAR as LOCAL_JAR
from tests.support.workers import WorkerProcess

pytestmark = [INPUT_EXAMPLE_WARNING]
ADMIN = ("admin", ADMIN_PASSWORD)
RULES = ROOT / "infrastructure/helm/mlmanager/files/worker-role-rules.yaml"
NAMESPACE = "models"
WORKER_SA = "mlmanager-worker"
Server = MLManagerProcess | ServerProcess


@pytest.fixture(scope="module")
def kube(control_plane: ControlPlane) -> ControlPlane:  # noqa: F811
    with control_plane.client() as api:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
    return control_plane


@pytest.fixture(scope="module")
def server(
    kube: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MLManagerProcess]:
    root = tmp_path_factory.mktemp("k8s")
    token = service_account(kube, NAMESPACE, WORKER_SA, yaml.safe_load(RULES.read_text()))
    config = kube.write_kubeconfig(root / "worker.kubeconfig", token, WORKER_SA)
    proc = MLManagerProcess(
        root / "home",
        kubeconfig=config,
        namespace=NAMESPACE,
        kubernetes_ingress_host="models.test",
        kubernetes_rollout_timeout_seconds=60,
    )
    try:
        proc.wait_ready()
        with tracking_as(proc.url, ADMIN, "kubernetes"):
            yield proc
    finally:
        proc.stop()


def frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.uniform(18, 90, rows), "income": rng.normal(50, 15, rows)})


def train(seed: int) -> tuple[LogisticRegression, pd.DataFrame]:
    x = frame(200, seed)
    y = np.where(x.income + (x.age - 50) * (seed % 3 + 1) > 55, "yes", "no")
    return LogisticRegression(max_iter=500).fit(x, y), x


@pytest.fixture(scope="module")
def churn(server: MLManagerProcess) -> list[tuple[str, LogisticRegression]]:
    """Two versions of the registered model "churn": (model URI, model)."""
    versions = []
    for seed in (1, 2):
        model, x = train(seed)
        uri = log_sklearn(model, x)
        version = mlflow.register_model(uri, "churn").version
        versions.append((f"models:/churn/{version}", model))
    return versions


def submit(server: Server, handler: str, payload: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(
        f"{server.api}/jobs",
        json={"handler_name": handler, "payload": payload},
        auth=ADMIN,
        timeout=30,
    )
    assert r.status_code in (200, 201, 202), r.text
    return dict(r.json())


def wait_job(server: Server, job_id: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(f"{server.api}/jobs/{job_id}", auth=ADMIN, timeout=10).json()
        if job["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end in {timeout}s:\n{log_of(server, job_id)}")


def log_of(server: Server, job_id: int) -> str:
    logs = requests.get(f"{server.api}/jobs/{job_id}/logs", auth=ADMIN, timeout=10).json()
    return "\n".join(line["message"] for line in logs["lines"])


def run(server: Server, handler: str, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    job = wait_job(server, submit(server, handler, payload)["id"])
    return job, log_of(server, job["id"])


def deployment_of(server: Server, name: str, status: str = "DEPLOYED") -> dict[str, Any]:
    found = requests.get(
        f"{server.api}/deployments?target=kubernetes&status={status}", auth=ADMIN, timeout=10
    ).json()["deployments"]
    mine = [d for d in found if d["name"] == name]
    assert mine, f"no {status} deployment {name} in {found}"
    return dict(mine[0])


def objects(kube: ControlPlane, name: str) -> dict[str, list[str]]:
    """Kind -> names of what exists in NAMESPACE for deployment ``name``."""
    labels = ",".join(f"{k}={v}" for k, v in selector(name).items())
    with kube.client() as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        found = {
            "Deployment": apps.list_namespaced_deployment(NAMESPACE, label_selector=labels).items,
            "ReplicaSet": apps.list_namespaced_replica_set(NAMESPACE, label_selector=labels).items,
            "Pod": core.list_namespaced_pod(NAMESPACE, label_selector=labels).items,
            "Service": core.list_namespaced_service(NAMESPACE, label_selector=labels).items,
            "Secret": core.list_namespaced_secret(NAMESPACE, label_selector=labels).items,
            "HorizontalPodAutoscaler": client.AutoscalingV2Api(api)
            .list_namespaced_horizontal_pod_autoscaler(NAMESPACE, label_selector=labels)
            .items,
            "PodDisruptionBudget": client.PolicyV1Api(api)
            .list_namespaced_pod_disruption_budget(NAMESPACE, label_selector=labels)
            .items,
            "Ingress": client.NetworkingV1Api(api)
            .list_namespaced_ingress(NAMESPACE, label_selector=labels)
            .items,
        }
    return {kind: sorted(o.metadata.name for o in items) for kind, items in found.items() if items}


SHAPES = {
    "plain": {},
    "scaled": {
        "base_replicas": 2,
        "autoscaling_enabled": True,
        "max_replicas": 4,
        "resource_requests_enabled": True,
        "resource_limits_enabled": True,
        "cpu_request": 0.25,
        "memory_request": "256Mi",
    },
    "external": {"expose_external": True, "disable_nginx": True, "service_port": 8000},
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_payload_shape_rolls_out(
    server: MLManagerProcess, kube: ControlPlane, churn: list[tuple[str, Any]], shape: str
) -> None:
    name = f"churn-{shape}"
    job, log = run(
        server,
        "DEPLOY_KUBERNETES",
        {"model_uri": churn[0][0], "name": name, "gunicorn_workers": 2, **SHAPES[shape]},
    )
    assert job["status"] == "SUCCESS", f"{job['error']}\n{log}"
    assert f"rollout of {name}:" in log and "available in" in log
    print(next(line for line in log.splitlines() if "available in" in line))  # the timing
    found = objects(kube, name)
    expected = {"Deployment", "ReplicaSet", "Pod", "Service", "Secret"}
    if shape == "scaled":
        expected |= {"HorizontalPodAutoscaler", "PodDisruptionBudget"}
    if shape == "external":
        expected |= {"Ingress"}
    assert set(found) == expected
    record = deployment_of(server, name)
    live = requests.get(f"{server.api}/deployments/{record['id']}", auth=ADMIN, timeout=10).json()
    replicas = SHAPES[shape].get("base_replicas", 1)
    assert live["drift"] is None
    assert (
        live["details"]["url"]
        == f"http://{name}.{NAMESPACE}.svc:{SHAPES[shape].get('service_port', 80)}"
    )
    assert live["details"]["replicas"] == {"ready": replicas, "desired": replicas}
    assert len(found["Pod"]) == replicas
    if shape == "external":
        with kube.client() as api:
            ingress = client.NetworkingV1Api(api).read_namespaced_ingress(name, NAMESPACE)
        assert ingress.spec.rules[0].host == f"{name}.models.test"
        assert ingress.spec.ingress_class_name is None  # disable_nginx


def plugin_environment(server: Server) -> dict[str, str]:
    """The environment of a client command (`mlflow deployments`, `mlmanager`) of ``server``."""
    return {
        **clean_environment(),
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_TRACKING_USERNAME": ADMIN[0],
        "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
        "PYTHONPATH": str(ROOT),
    }


@contextlib.contextmanager
def pod_process(kube: ControlPlane, name: str, log: Path) -> Iterator[str]:
    """The container of ``name``'s pod template, run here as the kubelet would run it
    (command, arguments, environment with the token Secret's value), on a free loopback
    port: its URL once /ping answers. Only what differs between the image and this machine
    is substituted: the java/python found here, the jar's path, the port and address."""
    with kube.client() as api:
        template = client.AppsV1Api(api).read_namespaced_deployment(name, NAMESPACE).spec.template
        secret = client.CoreV1Api(api).read_namespaced_secret(secret_name(name), NAMESPACE)
    container = template.spec.containers[0]
    env = {}
    for var in container.env:
        if var.value_from is not None:
            ref = var.value_from.secret_key_ref
            assert ref.name == secret.metadata.name
            env[var.name] = base64.b64decode(secret.data[ref.key]).decode()
        else:
            env[var.name] = var.value
    port = free_port()
    command = [*container.command, *container.args]
    if command[0] == "java":  # the serving image
        assert MLRUNNER_JAR in command
        command[0] = shutil.which("java") or "java"
        command[command.index(MLRUNNER_JAR)] = LOCAL_JAR  # where this machine has the jar
    else:  # the pyfunc image: its Python holds our package
        assert command[:3] == ["python", "-m", "shared.kube.pod"], command
        command[0] = sys.executable
        env["PYTHONPATH"] = str(ROOT)
    command[command.index(str(CONTAINER_PORT))] = str(port)
    command[command.index("0.0.0.0")] = "127.0.0.1"  # the pod binds every address
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env={"PATH": os.environ["PATH"], **env}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if requests.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError(log.read_text())
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def invocations(url: str, x: pd.DataFrame) -> list[Any]:
    answer = requests.post(
        f"{url}/invocations",
        json={"dataframe_split": {"columns": list(x.columns), "data": x.values.tolist()}},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["predictions"])


def test_the_pod_really_serves(
    server: MLManagerProcess, kube: ControlPlane, churn: list[tuple[str, Any]], tmp_path: Path
) -> None:
    """The container of the pod template, run here: it fetches its model through the token
    route with the token of the Secret and answers as the model predicts."""
    with pod_process(kube, "churn-plain", tmp_path / "pod.log") as url:
        x = frame(20, 7)
        assert invocations(url, x) == list(churn[0][1].predict(x))
        # `mlflow deployments predict`, the Service reached as from outside the cluster
        # (a port-forward to this pod): KUBERNETES_PREDICT_URL.
        (tmp_path / "x.json").write_text(x.to_json())
        done = subprocess.run(
            [
                sys.executable, "-m", "mlflow", "deployments", "predict", "-t", "mlmanager",
                "--name", "churn-plain", "--input-path", str(tmp_path / "x.json"),
                "--output-path", str(tmp_path / "y.json"),
            ],
            env={**plugin_environment(server), "KUBERNETES_PREDICT_URL": url},
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        predicted = json.loads((tmp_path / "y.json").read_text())["predictions"]
        assert predicted == list(churn[0][1].predict(x))


def test_a_pyfunc_pod_fetches_its_model_with_the_token_and_serves_it(
    server: MLManagerProcess, kube: ControlPlane, tmp_path: Path
) -> None:
    """A model mlrunner cannot serve (a custom PythonModel): its pod runs the pyfunc image's
    `python -m shared.kube.pod`, which fetches the MLflow model directory through the token
    route (no user credentials in the pod) and runs MLflow's scoring server on it."""
    name = "doubler"
    with tracking_as(server.url, ADMIN, "kubernetes"):
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="model", python_model=custom_models.Doubler(), pip_requirements=[]
            )
        uri = f"models:/doubler/{mlflow.register_model(info.model_uri, name).version}"
    job, log = run(server, "DEPLOY_KUBERNETES", {"model_uri": uri, "name": name})
    assert job["status"] == "SUCCESS", f"{job['error']}\n{log}"
    assert "its pods run MLflow's pyfunc server" in log
    with kube.client() as api:
        container = (
            client.AppsV1Api(api)
            .read_namespaced_deployment(name, NAMESPACE)
            .spec.template.spec.containers[0]
        )
    assert container.image == Settings.model_fields["kubernetes_pyfunc_image"].default
    assert all("PASSWORD" not in var.name for var in container.env)
    with pod_process(kube, name, tmp_path / "pod.log") as url:
        x = pd.DataFrame({"income": [10.0, 20.5, -3.0], "score": [0.1, 0.2, 0.3]})
        # MLflow's server answers a Series as records of its one column.
        answered = [next(iter(p.values())) for p in invocations(url, x)]
        assert answered == pytest.approx(list(x.income * 2.0 + x.score))
    record = deployment_of(server, name)
    assert _token_reads(server, record["id"], "not-the-token") == 401


def _token_reads(server: Server, deployment_id: int, token: str) -> int:
    return requests.get(
        f"{server.api}/deployments/{deployment_id}/model",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).status_code


def _secret_token(kube: ControlPlane, name: str) -> str:
    import base64

    with kube.client() as api:
        secret = client.CoreV1Api(api).read_namespaced_secret(secret_name(name), NAMESPACE)
    return base64.b64decode(secret.data["token"]).decode()


def test_replace_rolls_out_and_undeploy_removes_everything(
    server: MLManagerProcess, kube: ControlPlane, churn: list[tuple[str, Any]]
) -> None:
    name = "churn-replace"
    job, log = run(server, "DEPLOY_KUBERNETES", {"model_uri": churn[0][0], "name": name})
    assert job["status"] == "SUCCESS", log
    first = deployment_of(server, name)
    first_token = _secret_token(kube, name)
    assert _token_reads(server, first["id"], first_token) == 200

    job, log = run(server, "DEPLOY_KUBERNETES", {"model_uri": churn[1][0], "name": name})
    assert job["status"] == "FAILURE" and "set replace" in job["error"], job["error"]

    job, log = run(
        server, "DEPLOY_KUBERNETES", {"model_uri": churn[1][0], "name": name, "replace": True}
    )
    assert job["status"] == "SUCCESS", log
    second = deployment_of(server, name)
    assert second["id"] != first["id"] and second["model_uri"] == churn[1][0]
    progress = [line for line in log.splitlines() if line.startswith(f"rollout of {name}:")]
    assert progress[-1].endswith("1 available, 0 old"), progress
    assert _token_reads(server, first["id"], first_token) == 401  # the replaced one's revoked
    with kube.client() as api:
        sets = (
            client.AppsV1Api(api)
            .list_namespaced_replica_set(
                NAMESPACE, label_selector=",".join(f"{k}={v}" for k, v in selector(name).items())
            )
            .items
        )
    by_deployment = {
        rs.spec.template.metadata.labels["mlmanager.io/deployment-id"]: rs for rs in sets
    }
    assert by_deployment[str(first["id"])].spec.replicas == 0
    assert by_deployment[str(second["id"])].status.available_replicas == 1

    # Rollback: the first model again, as a replace back.
    r = requests.post(f"{server.api}/deployments/{second['id']}/rollback", auth=ADMIN, timeout=10)
    assert r.status_code == 202, r.text
    job = wait_job(server, r.json()["id"])
    assert job["status"] == "SUCCESS", log_of(server, job["id"])
    third = deployment_of(server, name)
    assert third["model_uri"] == churn[0][0] and third["id"] > second["id"]
    r = requests.post(f"{server.api}/deployments/{third['id']}/rollback", auth=ADMIN, timeout=10)
    assert r.status_code == 202  # back to the second model: rollbacks alternate

    job = wait_job(server, r.json()["id"])
    assert job["status"] == "SUCCESS", log_of(server, job["id"])
    last = deployment_of(server, name)
    token = _secret_token(kube, name)
    r = requests.delete(f"{server.api}/deployments/{last['id']}", auth=ADMIN, timeout=10)
    assert r.status_code == 202, r.text
    job = wait_job(server, r.json()["id"])
    assert job["status"] == "SUCCESS", log_of(server, job["id"])
    assert objects(kube, name) == {}
    assert _token_reads(server, last["id"], token) == 401
    assert deployment_of(server, name, "DELETED")["id"] == last["id"]


def test_a_pod_that_never_schedules_fails_with_the_reason(
    server: MLManagerProcess, kube: ControlPlane, churn: list[tuple[str, Any]]
) -> None:
    name = "churn-huge"
    job, log = run(
        server,
        "DEPLOY_KUBERNETES",
        {
            "model_uri": churn[0][0],
            "name": name,
            "resource_requests_enabled": True,
            "cpu_request": 500,
        },
    )
    assert job["status"] == "FAILURE"
    assert "FailedScheduling" in job["error"] and "Insufficient cpu" in job["error"], job["error"]
    assert f"removed Service {name}, Deployment {name}, Secret {name}-model-token" in log
    assert objects(kube, name) == {}
    assert deployment_of(server, name, "FAILED")


def test_drift_is_shown_and_reconciled(
    server: MLManagerProcess, kube: ControlPlane, churn: list[tuple[str, Any]]
) -> None:
    name = "churn-plain"
    record = deployment_of(server, name)
    with kube.client() as api:
        client.AppsV1Api(api).patch_namespaced_deployment_scale(
            name, NAMESPACE, {"spec": {"replicas": 0}}
        )
        client.CoreV1Api(api).delete_namespaced_service(name, NAMESPACE)
    live = requests.get(f"{server.api}/deployments/{record['id']}", auth=ADMIN, timeout=10).json()
    assert f"Deployment {name} scaled to 0 (recorded 1)" in live["drift"]
    assert f"Service {name} missing" in live["drift"]
    job, log = run(server, "RECONCILE", {"deployment_id": record["id"]})
    assert job["status"] == "SUCCESS", log
    assert "repaired" in log
    live = requests.get(f"{server.api}/deployments/{record['id']}", auth=ADMIN, timeout=10).json()
    assert live["drift"] is None
    assert "Service" in objects(kube, name)


def test_a_missing_permission_names_the_verb_and_resource(
    kube: ControlPlane, tmp_path: Path
) -> None:
    rules = [r for r in yaml.safe_load(RULES.read_text()) if "services" not in r["resources"]]
    rules.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "patch", "delete"]})
    token = service_account(kube, NAMESPACE, "no-services", rules)
    config = kube.write_kubeconfig(tmp_path / "restricted.kubeconfig", token, "no-services")
    cluster = Cluster(Settings(kubeconfig=config, namespace=NAMESPACE))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "probe", "namespace": NAMESPACE},
        "spec": {"ports": [{"port": 80}]},
    }
    with pytest.raises(NotAuthorized) as caught:
        cluster.apply(service)
    assert 'cannot patch resource "services"' in caught.value.message
    assert cluster.get("Deployment", "nothing-here") is None  # what the Role grants works


def test_the_mlflow_deployments_plugin_deploys_to_kubernetes(
    server: MLManagerProcess, kube: ControlPlane, churn: list[tuple[str, Any]]
) -> None:
    """`mlflow deployments create/get/delete -t mlmanager -C target=kubernetes`: the
    deployment's name is the objects' name."""
    env = plugin_environment(server)

    def mlflow_cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "mlflow", "deployments", *args, "-t", "mlmanager"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    name = "churn-plugin"
    mlflow_cli("create", "--name", name, "-m", churn[0][0], "-C", "target=kubernetes")
    assert {"Deployment", "Service", "Secret"} <= set(objects(kube, name))
    shown = mlflow_cli("get", "--name", name)
    assert {f"name: {name}", "target: kubernetes", "status: DEPLOYED"} <= set(shown.splitlines())
    mlflow_cli("delete", "--name", name)
    assert objects(kube, name) == {}


def _wait_for(what: str, check: Any, timeout: float = 300) -> Any:
    """Until ``check()`` is true (generous: a loaded CI machine reads a model in ~30 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s")


@dataclass
class PgRig:
    """One `mlmanager server` on PostgreSQL, and workers the tests start, kill and stop
    (the server never restarts)."""

    server: ServerProcess
    dbname: str
    logdir: Path
    worker_settings: dict[str, Any]
    workers: list[WorkerProcess] = field(default_factory=list)
    started: int = 0  # names each worker's log

    def start_worker(self, **settings: Any) -> WorkerProcess:
        worker = WorkerProcess(
            self.server.db_url,
            self.logdir,
            f"worker{self.started}",
            **{**self.worker_settings, **settings},
        )
        self.started += 1
        self.workers.append(worker)
        worker.wait_healthy(120)
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers.clear()


@pytest.fixture(scope="module")
def pg_rig(
    kube: ControlPlane, pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgRig]:
    root = tmp_path_factory.mktemp("k8s-pg")
    token = service_account(kube, NAMESPACE, "pg-worker", yaml.safe_load(RULES.read_text()))
    dbname = f"k8s_{time.time_ns()}"
    with pg_server.database(dbname) as url:
        engine = make_engine(settings_for(url, root))
        upgrade(engine)
        engine.dispose()
        cluster = {
            "kubeconfig": kube.write_kubeconfig(root / "worker.kubeconfig", token, "w"),
            "namespace": NAMESPACE,
        }
        server = ServerProcess(root / "server", url, **cluster)  # it observes deployments
        rig = PgRig(
            server,
            dbname,
            root,
            {
                **server.worker_settings(),
                **cluster,
                "kubernetes_rollout_timeout_seconds": 120,
                "job_retry_backoff_seconds": 0.2,
            },
        )
        try:
            server.wait_ready()
            yield rig
        finally:
            rig.stop_workers()
            server.stop()


@pytest.fixture
def rig(pg_rig: PgRig) -> Iterator[PgRig]:
    """The PostgreSQL rig, its workers stopped after the test."""
    try:
        yield pg_rig
    finally:
        pg_rig.stop_workers()


def register(server: Server, name: str, seeds: tuple[int, ...]) -> list[str]:
    """Versions of the registered model ``name``, one per seed: their model URIs."""
    uris = []
    with tracking_as(server.url, ADMIN, name):
        for seed in seeds:
            model, x = train(seed)
            version = mlflow.register_model(log_sklearn(model, x), name).version
            uris.append(f"models:/{name}/{version}")
    return uris


def test_two_deploys_of_one_name_on_two_workers_run_one_after_the_other(
    rig: PgRig, kube: ControlPlane, pg_server: PostgresServer
) -> None:
    """Two replace deploys of one name, each on its own worker, both at the name's lock
    (held by the test until both wait there): the second runs once the first is done and
    replaces it, so one deployment is left DEPLOYED and the cluster serves it."""
    name = "race"
    uris = register(rig.server, name, (4, 5))
    for _ in range(2):
        rig.start_worker(worker_threads=1)
    with pg_server.connect(rig.dbname) as blocker:
        blocker.execute("SELECT pg_advisory_lock(hashtext(%s))", [lock_key(NAMESPACE, name)])
        jobs = [
            submit(
                rig.server, "DEPLOY_KUBERNETES", {"model_uri": uri, "name": name, "replace": True}
            )["id"]
            for uri in uris
        ]
        _wait_for(
            "both jobs wait for the name",
            lambda: all("waiting for it" in log_of(rig.server, j) for j in jobs),
        )
        running = [
            requests.get(f"{rig.server.api}/jobs/{j}", auth=ADMIN, timeout=10).json() for j in jobs
        ]
        assert len({job["worker_id"] for job in running}) == 2, running  # one on each worker
    done = [wait_job(rig.server, j, timeout=240) for j in jobs]  # the lock ends with `blocker`
    logs = [log_of(rig.server, j) for j in jobs]
    assert [job["status"] for job in done] == ["SUCCESS", "SUCCESS"], logs
    records = [
        d
        for d in requests.get(
            f"{rig.server.api}/deployments?target=kubernetes", auth=ADMIN, timeout=10
        ).json()["deployments"]
        if d["name"] == name
    ]
    by_status = {
        status: [d for d in records if d["status"] == status] for status in ("DEPLOYED", "DELETED")
    }
    assert len(records) == 2 and len(by_status["DEPLOYED"]) == 1, records
    deployed, replaced = by_status["DEPLOYED"][0], by_status["DELETED"][0]
    second = jobs.index(deployed["job_id"])
    assert replaced["job_id"] == jobs[1 - second]
    assert f"replaced deployment {replaced['id']}" in logs[second]
    assert "is ours now" in logs[0] and "is ours now" in logs[1]
    with kube.client() as api:
        live = client.AppsV1Api(api).read_namespaced_deployment(name, NAMESPACE)
    assert live.spec.template.metadata.labels["mlmanager.io/deployment-id"] == str(deployed["id"])
    found = objects(kube, name)
    assert found["Deployment"] == [name] and found["Secret"] == [secret_name(name)]

    # A reconcile does not re-apply a name a job is changing (it could undo a rollout).
    with pg_server.connect(rig.dbname) as blocker:
        blocker.execute("SELECT pg_advisory_lock(hashtext(%s))", [lock_key(NAMESPACE, name)])
        job, log = run(rig.server, "RECONCILE", {"deployment_id": deployed["id"]})
    assert job["status"] == "FAILURE", log
    assert f"a job is changing {name} in {NAMESPACE} now" in job["error"], job["error"]
    job, log = run(rig.server, "RECONCILE", {"deployment_id": deployed["id"]})
    assert job["status"] == "SUCCESS" and "matches its record" in log, log


def test_a_worker_killed_mid_rollout_leaves_a_job_the_next_worker_converges(
    rig: PgRig, kube: ControlPlane
) -> None:
    """kwok paused, so the rollout cannot finish; the worker waiting for it is SIGKILLed
    (the server keeps running). A new worker takes the job over when the lease expires and
    carries on from the earlier attempt's record: once kwok runs again the job succeeds
    with one of each object and the deployment recorded once."""
    name = "churn-killed"
    server = rig.server
    settings: dict[str, Any] = {
        "kubernetes_rollout_timeout_seconds": 600,  # the wait outlives the first worker
        "job_lease_seconds": 3,
        "worker_sweep_seconds": 1,
    }
    (uri,) = register(server, "killed", (3,))
    first = rig.start_worker(**settings)
    kube.pause("kwok")
    kwok_paused = True
    try:
        job_id = submit(server, "DEPLOY_KUBERNETES", {"model_uri": uri, "name": name})["id"]
        _wait_for(
            "the first attempt waits for the rollout",
            lambda: "rollout of" in log_of(server, job_id),
        )
        assert objects(kube, name)["Deployment"] == [name]
        first.kill()
        rig.start_worker(**settings)

        def retried() -> bool:
            job = requests.get(f"{server.api}/jobs/{job_id}", auth=ADMIN, timeout=10).json()
            return bool(job["attempt"] == 2 and "carrying on" in log_of(server, job_id))

        _wait_for("the new worker carries on with the job", retried)
        kube.resume("kwok")
        kwok_paused = False
        job = wait_job(server, job_id)
        log = log_of(server, job_id)
        assert job["status"] == "SUCCESS", f"{job['error']}\n{log}"
        assert job["attempt"] == 2
        found = objects(kube, name)
        assert found["Deployment"] == [name] and found["Service"] == [name]
        assert found["Secret"] == [secret_name(name)]
        assert len(found["ReplicaSet"]) == 1 and len(found["Pod"]) == 1
        records = [
            d
            for d in requests.get(
                f"{server.api}/deployments?target=kubernetes", auth=ADMIN, timeout=10
            ).json()["deployments"]
            if d["name"] == name
        ]
        assert [(d["status"], d["job_id"]) for d in records] == [("DEPLOYED", job_id)]
        live = requests.get(f"{server.api}/deployments/{records[0]['id']}", auth=ADMIN, timeout=10)
        assert live.json()["drift"] is None
        assert live.json()["details"]["replicas"] == {"ready": 1, "desired": 1}
        assert _token_reads(server, records[0]["id"], _secret_token(kube, name)) == 200
    finally:
        if kwok_paused:
            kube.resume("kwok")


def _mlmanager(server: MLManagerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = plugin_environment(server)
    return subprocess.run(
        [sys.executable, "-m", "mlmanager", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_command_line_deploys_to_kubernetes(
    server: MLManagerProcess, kube: ControlPlane, churn: list[tuple[str, Any]]
) -> None:
    """`mlmanager deploy kubernetes` submits and follows the job to SUCCESS;
    `mlmanager deployments list/get` show the deployment with its live replicas."""
    name = "churn-cli"
    done = _mlmanager(
        server,
        "deploy",
        "kubernetes",
        "--model-uri",
        churn[1][0],
        "--name",
        name,
        "--base-replicas",
        "2",
        "--service-port",
        "8080",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    job_id = int(done.stderr.split("DEPLOY_KUBERNETES job ")[1].split()[0])
    assert f"job {job_id}: SUCCESS" in done.stderr
    assert "==> Step" in done.stdout and f"rollout of {name}:" in done.stdout  # followed
    record = deployment_of(server, name)
    assert record["job_id"] == job_id and record["model_uri"] == churn[1][0]
    assert set(objects(kube, name)) >= {"Deployment", "Service", "Secret"}

    listed = _mlmanager(server, "deployments", "list", "--target", "kubernetes")
    assert listed.returncode == 0, listed.stderr[-3000:]
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [str(record["id"]), "kubernetes", "DEPLOYED", name, "admin", churn[1][0]] in rows

    shown = _mlmanager(server, "deployments", "get", str(record["id"]))
    assert shown.returncode == 0, shown.stderr[-3000:]
    got = json.loads(shown.stdout)
    assert got["name"] == name and got["status"] == "DEPLOYED" and got["drift"] is None
    assert got["details"]["url"] == f"http://{name}.{NAMESPACE}.svc:8080"
    assert got["details"]["replicas"] == {"ready": 2, "desired": 2}

    missing = _mlmanager(server, "deployments", "get", "987654")
    assert missing.returncode != 0 and "987654" in missing.stderr
    assert "Traceback" not in missing.stderr
