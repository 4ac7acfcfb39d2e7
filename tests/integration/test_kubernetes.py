"""DEPLOY_KUBERNETES end to end against a real control plane (``tests/support/kube.py``).

One `mlmanager up` (SQLite) whose worker talks to the API server with a ServiceAccount
token bound to a Role of exactly ``worker-role-rules.yaml`` (the chart's rules): every
deploy here proves those rules are enough. kwok plays the node, so pods become Ready
without running; the test that the pod really serves runs the container's command,
arguments and environment, as read back from the API server, as a local process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
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
import yaml
from kubernetes import client
from sklearn.linear_model import LogisticRegression

from shared.errors import NotAuthorized
from shared.kube.cluster import Cluster
from shared.kube.spec import CONTAINER_PORT, MLRUNNER_JAR, secret_name, selector
from shared.settings import Settings
from tests.support import custom_models  # noqa: F401 (first: imports mlflow.pyfunc quietly)
from tests.support.kube import ControlPlane, control_plane  # noqa: F401 (fixture)
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING, log_sklearn
from tests.support.pg import free_port
from tests.support.processes import ROOT, clean_environment
from tests.support.servers import ADMIN_PASSWORD, MLManagerProcess, tracking_as
from tests.support.serving import MLRUNNER_JAR as LOCAL_JAR

pytestmark = [INPUT_EXAMPLE_WARNING]
ADMIN = ("admin", ADMIN_PASSWORD)
RULES = ROOT / "infrastructure/helm/mlmanager/files/worker-role-rules.yaml"
NAMESPACE = "models"
WORKER_SA = "mlmanager-worker"


def _service_account(plane: ControlPlane, name: str, rules: list[dict[str, Any]]) -> str:
    """A ServiceAccount in NAMESPACE bound to a Role of ``rules``; its token."""
    with plane.client() as api:
        rbac = client.RbacAuthorizationV1Api(api)
        core = client.CoreV1Api(api)
        core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": name}})
        rbac.create_namespaced_role(NAMESPACE, {"metadata": {"name": name}, "rules": rules})
        rbac.create_namespaced_role_binding(
            NAMESPACE,
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}],
            },
        )
        request = core.create_namespaced_service_account_token(
            name, NAMESPACE, {"spec": {"expirationSeconds": 7200}}
        )
    return str(request.status.token)


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
    token = _service_account(kube, WORKER_SA, yaml.safe_load(RULES.read_text()))
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


def submit(server: MLManagerProcess, handler: str, payload: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(
        f"{server.api}/jobs",
        json={"handler_name": handler, "payload": payload},
        auth=ADMIN,
        timeout=30,
    )
    assert r.status_code in (200, 201, 202), r.text
    return dict(r.json())


def wait_job(server: MLManagerProcess, job_id: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(f"{server.api}/jobs/{job_id}", auth=ADMIN, timeout=10).json()
        if job["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end in {timeout}s:\n{log_of(server, job_id)}")


def log_of(server: MLManagerProcess, job_id: int) -> str:
    logs = requests.get(f"{server.api}/jobs/{job_id}/logs", auth=ADMIN, timeout=10).json()
    return "\n".join(line["message"] for line in logs["lines"])


def run(
    server: MLManagerProcess, handler: str, payload: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    job = wait_job(server, submit(server, handler, payload)["id"])
    return job, log_of(server, job["id"])


def deployment_of(server: MLManagerProcess, name: str, status: str = "DEPLOYED") -> dict[str, Any]:
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


def test_the_pod_really_serves(
    server: MLManagerProcess, kube: ControlPlane, churn: list[tuple[str, Any]], tmp_path: Path
) -> None:
    """The container of the pod template, run here: it fetches its model through the token
    route with the token of the Secret and answers as the model predicts."""
    name = "churn-plain"
    with kube.client() as api:
        template = client.AppsV1Api(api).read_namespaced_deployment(name, NAMESPACE).spec.template
        secret = client.CoreV1Api(api).read_namespaced_secret(secret_name(name), NAMESPACE)
    container = template.spec.containers[0]
    env = {}
    for var in container.env:
        if var.value_from is not None:
            ref = var.value_from.secret_key_ref
            assert ref.name == secret.metadata.name
            import base64

            env[var.name] = base64.b64decode(secret.data[ref.key]).decode()
        else:
            env[var.name] = var.value
    port = free_port()
    command = [*container.command, *container.args]
    assert command[0] == "java" and MLRUNNER_JAR in command
    command[0] = shutil.which("java") or "java"
    command[command.index(MLRUNNER_JAR)] = LOCAL_JAR  # where this machine has the image's jar
    command[command.index(str(CONTAINER_PORT))] = str(port)
    command[command.index("0.0.0.0")] = "127.0.0.1"  # the pod binds every address
    log = tmp_path / "pod.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env={"PATH": os.environ["PATH"], **env}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError(log.read_text())
        x = frame(20, 7)
        answer = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_split": {"columns": list(x.columns), "data": x.values.tolist()}},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == list(churn[0][1].predict(x))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _token_reads(server: MLManagerProcess, deployment_id: int, token: str) -> int:
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
    token = _service_account(kube, "no-services", rules)
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
    env = {
        **clean_environment(),
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_TRACKING_USERNAME": ADMIN[0],
        "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
        "PYTHONPATH": str(ROOT),
    }

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


def _child_pid(parent: int, command: str) -> int:
    """The process ``parent`` started as ``python -m mlmanager <command>``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, UnicodeDecodeError):
            continue  # gone meanwhile
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and argv[-3:-1] == [
            "mlmanager",
            command,
        ]:
            return int(entry.name)
    raise AssertionError(f"no `mlmanager {command}` child of {parent}")


def _wait_for(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s")


def test_a_worker_killed_mid_rollout_leaves_a_job_the_next_worker_converges(
    kube: ControlPlane, tmp_path: Path
) -> None:
    """kwok paused, so the rollout cannot finish; the worker waiting for it is SIGKILLed.
    A new worker takes the job over when the lease expires and carries on from the
    earlier attempt's record: once kwok runs again the job succeeds with one of each
    object and the deployment recorded once."""
    name = "churn-killed"
    token = _service_account(kube, "killed-worker", yaml.safe_load(RULES.read_text()))
    settings: dict[str, Any] = {
        "kubeconfig": kube.write_kubeconfig(tmp_path / "worker.kubeconfig", token, "w"),
        "namespace": NAMESPACE,
        "kubernetes_rollout_timeout_seconds": 600,  # the wait outlives the first worker
        "job_lease_seconds": 3,
        "worker_sweep_seconds": 1,
    }
    home = tmp_path / "home"
    first = MLManagerProcess(home, **settings)
    second: MLManagerProcess | None = None
    kwok_paused = False
    try:
        first.wait_ready()
        with tracking_as(first.url, ADMIN, "killed"):
            model, x = train(3)
            uri = f"models:/killed/{mlflow.register_model(log_sklearn(model, x), 'killed').version}"
        kube.pause("kwok")
        kwok_paused = True
        job_id = submit(first, "DEPLOY_KUBERNETES", {"model_uri": uri, "name": name})["id"]
        _wait_for(
            "the first attempt waits for the rollout", lambda: "rollout of" in log_of(first, job_id)
        )
        assert objects(kube, name)["Deployment"] == [name]
        worker = _child_pid(first.proc.pid, "worker")
        os.kill(worker, signal.SIGKILL)
        # `mlmanager up` stops its server when its worker dies; a new one on the same
        # home starts meanwhile (the killed worker's lease expires, nothing else runs it).
        second = MLManagerProcess(home, **settings)
        first.proc.wait(timeout=60)
        second.wait_ready()
        server = second

        def retried() -> bool:
            job = requests.get(f"{server.api}/jobs/{job_id}", auth=ADMIN, timeout=10).json()
            return bool(job["attempt"] == 2 and "carrying on" in log_of(server, job_id))

        _wait_for("the new worker carries on with the job", retried)
        kube.resume("kwok")
        kwok_paused = False
        job = wait_job(second, job_id)
        log = log_of(second, job_id)
        assert job["status"] == "SUCCESS", f"{job['error']}\n{log}"
        assert job["attempt"] == 2
        found = objects(kube, name)
        assert found["Deployment"] == [name] and found["Service"] == [name]
        assert found["Secret"] == [secret_name(name)]
        assert len(found["ReplicaSet"]) == 1 and len(found["Pod"]) == 1
        records = [
            d
            for d in requests.get(
                f"{second.api}/deployments?target=kubernetes", auth=ADMIN, timeout=10
            ).json()["deployments"]
            if d["name"] == name
        ]
        assert [(d["status"], d["job_id"]) for d in records] == [("DEPLOYED", job_id)]
        live = requests.get(f"{second.api}/deployments/{records[0]['id']}", auth=ADMIN, timeout=10)
        assert live.json()["drift"] is None
        assert live.json()["details"]["replicas"] == {"ready": 1, "desired": 1}
        assert _token_reads(second, records[0]["id"], _secret_token(kube, name)) == 200
    finally:
        if kwok_paused:
            kube.resume("kwok")
        for proc in (first, second):
            if proc is not None:
                proc.stop()


def _mlmanager(server: MLManagerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **clean_environment(),
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_TRACKING_USERNAME": ADMIN[0],
        "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
        "PYTHONPATH": str(ROOT),
    }
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
