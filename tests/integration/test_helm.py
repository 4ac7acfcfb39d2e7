"""The Helm chart (infrastructure/helm/mlmanager), rendered by a real helm.

What is proved here: the chart lints and renders with the example values; every rendered
manifest is valid for the oldest and the newest Kubernetes the chart supports; bad values
stop the install with a message naming them; secrets reach the pods only from a Secret;
the pods run non-root and read-only; the worker's rights are the namespaced Role of
files/worker-role-rules.yaml; and the rendered migration, server and worker containers -
their commands and their environment resolved from the rendered ConfigMap and Secret - run
as local processes against a real PostgreSQL and carry out a database deploy.

What cannot be checked here (no container engine, no kubelet): that the images build and
start, volume permissions, NetworkPolicy enforcement, and probes hit through the kubelet.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import kubernetes_validate
import mlflow
import numpy as np
import pandas as pd
import psycopg
import pytest
import requests
import yaml
from mlflow.models import infer_signature
from pydantic import SecretStr
from sklearn.linear_model import LogisticRegression

from shared.settings import Settings
from tests.support import custom_models  # noqa: F401  (first: imports mlflow.pyfunc quietly)
from tests.support.helm import (
    CHART,
    NAMESPACE,
    RELEASE,
    Container,
    Manifest,
    container,
    example,
    find,
    load_yaml,
    notes,
    pod_spec,
    pod_specs,
    render,
    run_helm,
    template,
)
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING
from tests.support.pg import PG_PASSWORD, PG_USER, PostgresServer, free_port
from tests.support.processes import clean_environment, terminate, wait_http_ok

EXAMPLES = ["minimal", "production", "evaluation"]
FULLNAME = f"{RELEASE}-mlmanager"
SECRET_SETTINGS = {
    name.upper()
    for name, field in Settings.model_fields.items()
    if field.annotation is not None and SecretStr in getattr(field.annotation, "__args__", ())
}


def _supported_minors() -> list[str]:
    """The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest
    kubernetes-validate knows."""
    declared = load_yaml(CHART / "Chart.yaml")["kubeVersion"]
    oldest = re.fullmatch(r">=(\d+\.\d+)\.0-0", declared)
    assert oldest is not None, declared
    return [f"{oldest.group(1)}.0", kubernetes_validate.latest_version()]


@pytest.mark.parametrize("name", EXAMPLES)
def test_chart_lints_strictly_with_each_example(name: str) -> None:
    result = run_helm("lint", "--strict", str(CHART), "-f", str(example(name)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("version", _supported_minors())
@pytest.mark.parametrize("name", EXAMPLES)
def test_every_rendered_manifest_is_valid_for_the_oldest_and_newest_kubernetes(
    name: str, version: str
) -> None:
    manifests = render([example(name)], kube_version=version)
    kinds = {doc["kind"] for doc in manifests}
    assert {"Deployment", "Service", "ConfigMap", "Job", "Role", "NetworkPolicy"} <= kinds
    for doc in manifests:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {exc}")


def test_each_example_renders_what_it_is_for() -> None:
    minimal = render([example("minimal")])
    kinds = [doc["kind"] for doc in minimal]
    assert "Ingress" not in kinds and "HorizontalPodAutoscaler" not in kinds
    assert "StatefulSet" not in kinds
    assert find(minimal, "Secret", f"{FULLNAME}-secrets")
    assert find(minimal, "PersistentVolumeClaim", f"{FULLNAME}-artifacts")
    # Its ReadWriteOnce volume attaches to one node at a time.
    server = find(minimal, "Deployment", f"{FULLNAME}-server")
    assert server["spec"]["strategy"] == {"type": "Recreate"}

    production = render([example("production")])
    kinds = [doc["kind"] for doc in production]
    assert "Secret" not in kinds  # existingSecret: the chart creates none, not even for hooks
    ingress = find(production, "Ingress", f"{FULLNAME}-server")
    assert ingress["spec"]["tls"][0]["hosts"] == ["mlmanager.acme.example"]
    hpa = find(production, "HorizontalPodAutoscaler", f"{FULLNAME}-server")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert "replicas" not in find(production, "Deployment", f"{FULLNAME}-server")["spec"]
    assert find(production, "PodDisruptionBudget", f"{FULLNAME}-server")
    assert find(production, "PodDisruptionBudget", f"{FULLNAME}-worker")
    assert "PersistentVolumeClaim" not in kinds  # artifacts in the object store
    assert "strategy" not in find(production, "Deployment", f"{FULLNAME}-server")["spec"]
    server = container(production, "Deployment", f"{FULLNAME}-server", "server")
    assert server.env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://acme-mlmanager/artifacts"
    assert "mlmanager.acme.example" in server.env["MLMANAGER_ALLOWED_HOSTS"].split(",")
    assert server.external_secrets == {"mlmanager-secrets"}
    migrate = container(production, "Job", f"{FULLNAME}-migrate", "migrate")
    assert migrate.external_secrets == {"mlmanager-secrets"}

    evaluation = render([example("evaluation")])
    database = find(evaluation, "StatefulSet", f"{FULLNAME}-postgresql")
    assert database["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "mlmanager/postgres:"
    )
    worker = container(evaluation, "Deployment", f"{FULLNAME}-worker", "worker")
    assert worker.env["DB_HOST"] == f"{FULLNAME}-postgresql"
    pg = container(evaluation, "StatefulSet", f"{FULLNAME}-postgresql", "postgresql")
    assert pg.env["POSTGRES_PASSWORD"] == worker.env["DB_PASSWORD"]
    assert "mlmanager.plpython_path=/opt/mlmanager/plpython" in pg.argv


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_server_accepts_the_host_the_workers_call_it_by(name: str) -> None:
    """The local run resolves the Service's name to localhost; here the name itself: the
    workers' MLFLOW_URL host is one of the server's allowed Host headers (MLflow answers
    403 to any other), and it names the server's Service and port."""
    manifests = render([example(name)])
    server = container(manifests, "Deployment", f"{FULLNAME}-server", "server")
    worker = container(manifests, "Deployment", f"{FULLNAME}-worker", "worker")
    called = urlsplit(worker.env["MLFLOW_URL"])
    assert called.netloc in server.env["MLMANAGER_ALLOWED_HOSTS"].split(",")
    service = find(manifests, "Service", str(called.hostname))
    assert service["spec"]["ports"][0]["port"] == called.port
    assert (
        service["spec"]["selector"]
        == find(manifests, "Deployment", f"{FULLNAME}-server")["spec"]["selector"]["matchLabels"]
    )


def test_the_schema_knows_every_setting_by_its_variable_name() -> None:
    """`config:` accepts exactly the settings' names, so a misspelt one (which the settings
    would ignore) stops the install."""
    schema = load_yaml(CHART / "values.schema.json")
    names = schema["properties"]["config"]["propertyNames"]["enum"]
    assert sorted(names) == sorted(name.upper() for name in Settings.model_fields)


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_variable_the_chart_sets_is_a_setting(name: str) -> None:
    manifests = render([example(name)])
    settings = {n.upper() for n in Settings.model_fields}
    for doc in manifests:
        if doc["kind"] in ("ConfigMap", "Secret"):
            assert set(doc["data"]) <= settings, (
                doc["metadata"]["name"],
                set(doc["data"]) - settings,
            )


def _hook_events(manifests: list[Manifest]) -> str:
    job = find(manifests, "Job", f"{FULLNAME}-migrate")
    return str(job["metadata"]["annotations"]["helm.sh/hook"])


def test_migrations_run_as_a_hook_before_every_install_and_upgrade() -> None:
    minimal = render([example("minimal")])
    assert _hook_events(minimal) == "pre-install,pre-upgrade"
    migrate = container(minimal, "Job", f"{FULLNAME}-migrate", "migrate")
    assert migrate.argv == ["mlmanager", "db", "upgrade"]
    # Hooks run before the release's ConfigMap and Secret exist: the Job reads hook copies
    # made earlier (lower weight) from the same templates.
    for kind in ("ConfigMap", "Secret"):
        copy = find(minimal, kind, f"{FULLNAME}-migrate")
        assert int(copy["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0
        release_name = f"{FULLNAME}-{'config' if kind == 'ConfigMap' else 'secrets'}"
        assert copy["data"] == find(minimal, kind, release_name)["data"]
    # The in-chart database must exist before the first migration.
    assert _hook_events(render([example("evaluation")])) == "post-install,pre-upgrade"


def test_notes_say_how_to_log_in() -> None:
    minimal = notes([example("minimal")])
    secret = f"{FULLNAME}-secrets"
    assert f"get secret {secret}" in minimal and "MLMANAGER_ADMIN_PASSWORD" in minimal
    service = find(render([example("minimal")]), "Service", f"{FULLNAME}-server")
    assert f"port-forward svc/{service['metadata']['name']} 5001:5001" in minimal
    production = notes([example("production")])
    assert "get secret mlmanager-secrets" in production
    assert "export MLFLOW_TRACKING_URI=https://mlmanager.acme.example" in production


BAD_VALUES = [
    ({"server.replicaCount": -1}, "/server/replicaCount"),
    ({"auth.backend": "ldap"}, "/auth/backend"),
    ({"server.replicas": 3}, "replicas"),
    ({"database.port": "five"}, "/database/port"),
    ({"config.log_level": "DEBUG"}, "invalid propertyName 'log_level'"),
    ({"config.WORKER_THREAD": "8"}, "invalid propertyName 'WORKER_THREAD'"),
    ({"config.DB_PASSWORD": "hunter2"}, "config.DB_PASSWORD is a secret"),
    ({"config.WORKER_PORT": "6000"}, "config.WORKER_PORT is set by the chart: use worker.port"),
    ({"auth.adminPassword": ""}, "auth.adminPassword is required"),
    ({"database.host": ""}, "database: set database.host"),
    ({"server.replicaCount": 3}, "more than one server replica needs artifacts.destination"),
]


@pytest.mark.parametrize(("sets", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_bad_values_stop_the_install_with_a_message_naming_them(
    sets: dict[str, object], message: str
) -> None:
    result = template([example("minimal")], sets)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("name", EXAMPLES)
def test_secrets_reach_the_pods_only_from_a_secret(name: str) -> None:
    manifests = render([example(name)])
    for doc in manifests:
        if doc["kind"] == "ConfigMap":
            assert not SECRET_SETTINGS & set(doc["data"]), doc["metadata"]["name"]
    for where, spec in pod_specs(manifests):
        for c in spec["containers"]:
            for entry in c.get("env", []):
                secret_like = entry["name"] in SECRET_SETTINGS or "PASSWORD" in entry["name"]
                assert not (secret_like and "value" in entry), (where, entry["name"])
    server = container(manifests, "Deployment", f"{FULLNAME}-server", "server")
    if server.external_secrets:  # existingSecret: every key is the operator's
        assert server.external_secrets == {load_yaml(example(name))["existingSecret"]}
    else:
        assert {
            "MLMANAGER_ADMIN_PASSWORD",
            "MLMANAGER_SECRET_KEY",
            "DB_PASSWORD",
        } <= server.from_secret


@pytest.mark.parametrize("name", EXAMPLES)
def test_pods_run_non_root_read_only_without_capabilities(name: str) -> None:
    for where, spec in pod_specs(render([example(name)])):
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] != 0, where
        for c in spec["containers"]:
            security = c["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert c["resources"]["requests"], where


def test_only_the_worker_gets_kubernetes_rights_and_only_in_its_namespace() -> None:
    manifests = render([example("production")])
    kinds = {doc["kind"] for doc in manifests}
    assert not {"ClusterRole", "ClusterRoleBinding"} & kinds
    role = find(manifests, "Role", f"{FULLNAME}-worker")
    assert role["rules"] == load_yaml(CHART / "files" / "worker-role-rules.yaml")
    binding = find(manifests, "RoleBinding", f"{FULLNAME}-worker")
    account = pod_spec(find(manifests, "Deployment", f"{FULLNAME}-worker"))["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    worker = container(manifests, "Deployment", f"{FULLNAME}-worker", "worker")
    assert worker.env["NAMESPACE"] == NAMESPACE
    for other in (f"{FULLNAME}-server", f"{FULLNAME}-migrate"):
        kind = "Job" if other.endswith("migrate") else "Deployment"
        assert pod_spec(find(manifests, kind, other))["automountServiceAccountToken"] is False


def test_network_policies_keep_the_worker_in_the_namespace() -> None:
    manifests = render([example("minimal")])
    worker = find(manifests, "NetworkPolicy", f"{FULLNAME}-worker")
    assert worker["spec"]["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": [{"port": "health", "protocol": "TCP"}]}
    ]
    server = find(manifests, "NetworkPolicy", f"{FULLNAME}-server")
    sources = server["spec"]["ingress"][0]["from"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    } in sources


# ----------------------------------------------------------------------------------------
# The chart's configuration really runs.


class LocalPod:
    """What a pod gives its containers, provided on this machine: the volumes the chart
    mounts become folders, the Services' cluster DNS names resolve to localhost (where the
    server listens), and a pod's own address 0.0.0.0 becomes the loopback. Every other
    value of the rendered environment is passed through unchanged."""

    def __init__(self, root: Path, mounts: list[str], services: list[str]) -> None:
        self.paths = {m: root / m.strip("/").replace("/", "_") for m in mounts}
        for path in self.paths.values():
            path.mkdir(parents=True, exist_ok=True)
        self.services = services

    def _value(self, value: str) -> str:
        for mount, path in sorted(self.paths.items(), key=lambda kv: -len(kv[0])):
            if value == mount or value.startswith(mount + "/"):
                return str(path) + value[len(mount) :]
        if value == "0.0.0.0":
            return "127.0.0.1"
        parts = urlsplit(value)
        if parts.scheme in ("http", "https") and parts.hostname in self.services:
            return urlunsplit(parts._replace(netloc=f"localhost:{parts.port}"))
        return value

    def environment(self, c: Container) -> dict[str, str]:
        env = clean_environment()
        env.update({k: self._value(v) for k, v in c.env.items()})
        env["HOME"] = str(self.paths["/home/mlmanager"])
        # The image's PATH: its virtualenv's console scripts first.
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        return env

    def spawn(self, c: Container, log: Path) -> subprocess.Popen[bytes]:
        assert c.argv[0] == "mlmanager", c.argv  # the image's console script
        with log.open("ab") as out:
            return subprocess.Popen(
                c.argv, env=self.environment(c), stdout=out, stderr=subprocess.STDOUT
            )


def _probe_url(manifests: list[Manifest], kind: str, name: str, probe: str) -> str:
    (c,) = pod_spec(find(manifests, kind, name))["containers"]
    get = c[probe]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    return f"http://127.0.0.1:{ports[get['port']]}{get['path']}"


@pytest.fixture
def chart_database(pg_server: PostgresServer) -> Iterator[tuple[PostgresServer, str]]:
    name = f"helm_{time.time_ns()}"
    with pg_server.database(name):
        yield pg_server, name


@pytest.mark.postgres
@INPUT_EXAMPLE_WARNING
def test_the_rendered_containers_migrate_serve_and_deploy_against_postgresql(
    chart_database: tuple[PostgresServer, str], tmp_path: Path
) -> None:
    pg, dbname = chart_database
    port, worker_port = free_port(), free_port()
    admin_password = "chart-admin-password-7"
    manifests = render(
        [example("minimal")],
        {
            "database.host": "127.0.0.1",
            "database.port": pg.port,
            "database.name": dbname,
            "database.user": PG_USER,
            "database.password": PG_PASSWORD,
            "auth.adminPassword": admin_password,
            "server.service.port": port,
            "worker.port": worker_port,
            # One gunicorn process: the machine running the tests has two cores.
            "server.gunicornWorkers": 1,
        },
    )
    migrate = container(manifests, "Job", f"{FULLNAME}-migrate", "migrate")
    server = container(manifests, "Deployment", f"{FULLNAME}-server", "server")
    worker = container(manifests, "Deployment", f"{FULLNAME}-worker", "worker")
    mounts = ["/home/mlmanager", "/tmp", "/var/lib/mlmanager/artifacts"]
    for kind, name in (("Deployment", f"{FULLNAME}-server"), ("Deployment", f"{FULLNAME}-worker")):
        (c,) = pod_spec(find(manifests, kind, name))["containers"]
        assert {m["mountPath"] for m in c["volumeMounts"]} <= set(mounts)
    pod = LocalPod(tmp_path / "pod", mounts, [f"{FULLNAME}-server"])

    # The hook: `mlmanager db upgrade` with the hook's own ConfigMap and Secret.
    result = subprocess.run(
        migrate.argv, env=pod.environment(migrate), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "is at revision" in result.stdout

    procs: list[subprocess.Popen[bytes]] = []
    try:
        server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
        procs.append(pod.spawn(server, server_log))
        procs.append(pod.spawn(worker, worker_log))
        # The probes of the rendered pod specs, on the real processes.
        for probe in ("readinessProbe", "livenessProbe"):
            wait_http_ok(
                _probe_url(manifests, "Deployment", f"{FULLNAME}-server", probe),
                procs[0],
                server_log,
            )
            wait_http_ok(
                _probe_url(manifests, "Deployment", f"{FULLNAME}-worker", probe),
                procs[1],
                worker_log,
            )
        _deploy_and_score(f"http://localhost:{port}", admin_password, pg, dbname)
    finally:
        for proc in procs:
            terminate(proc, timeout=30)


def _deploy_and_score(url: str, password: str, pg: PostgresServer, dbname: str) -> None:
    """Log a model through the server, deploy it onto a table through the server and the
    worker, insert rows with a plain client and read the predictions back."""
    rng = np.random.default_rng(5)
    x = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    model = LogisticRegression().fit(x, (x.a + x.b > 0).astype(int))
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        env.setenv("MLFLOW_TRACKING_PASSWORD", password)
        mlflow.set_tracking_uri(url)
        try:
            mlflow.set_experiment("helm-chart")
            with mlflow.start_run():
                info = mlflow.sklearn.log_model(
                    model, name="model", signature=infer_signature(x), input_example=x.head(5)
                )
        finally:
            mlflow.set_tracking_uri(previous)
    auth = ("admin", password)
    api = f"{url}/api/2.0/mlmanager"
    payload: dict[str, Any] = {
        "model_uri": info.model_uri,
        "db_schema": "scored",
        "db_table": "chart_rows",
        "create_model_table": True,
        "primary_key": {"id": "BIGINT"},
    }
    answer = requests.post(
        f"{api}/jobs",
        json={"handler_name": "DEPLOY_DATABASE", "payload": payload},
        auth=auth,
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["id"]
    deadline = time.monotonic() + 180
    while (job := requests.get(f"{api}/jobs/{job_id}", auth=auth, timeout=30).json())[
        "status"
    ] not in ("SUCCESS", "FAILURE", "CANCELLED"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    logs = requests.get(f"{api}/jobs/{job_id}/logs", auth=auth, timeout=30).json()["lines"]
    assert job["status"] == "SUCCESS", "\n".join(line["message"] for line in logs)

    rows = x.head(7)
    plain_url = pg.url(dbname).replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain_url) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO scored.chart_rows (id, a, b) VALUES (%s, %s, %s)",
            [(i, float(r.a), float(r.b)) for i, r in enumerate(rows.itertuples())],
        )
        cur.execute("SELECT prediction FROM scored.chart_rows ORDER BY id")
        got = [row[0] for row in cur.fetchall()]
    assert [int(v) for v in got] == [int(v) for v in model.predict(rows)]


# ----------------------------------------------------------------------------------------
# The real API server (the Kubernetes target's rig, tests/support/kube.py of the k8s work).

try:
    from tests.support.kube import ControlPlane, control_plane  # noqa: F401
except ImportError:  # the rig is not in this checkout yet
    ControlPlane = None  # type: ignore[assignment,misc]

PLURALS = {
    "ConfigMap": ("v1", "configmaps"),
    "Secret": ("v1", "secrets"),
    "Service": ("v1", "services"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims"),
    "Deployment": ("apps/v1", "deployments"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "Job": ("batch/v1", "jobs"),
    "Role": ("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "Ingress": ("networking.k8s.io/v1", "ingresses"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
}


def _path(doc: Manifest) -> str:
    version, plural = PLURALS[doc["kind"]]
    prefix = "/api/v1" if version == "v1" else f"/apis/{version}"
    return f"{prefix}/namespaces/{NAMESPACE}/{plural}/{doc['metadata']['name']}"


def test_the_api_server_test_knows_where_every_rendered_kind_is_applied() -> None:
    kinds = {doc["kind"] for name in EXAMPLES for doc in render([example(name)])}
    assert kinds <= set(PLURALS), kinds - set(PLURALS)


@pytest.mark.skipif(
    ControlPlane is None, reason="needs tests/support/kube.py (the Kubernetes target's rig)"
)
@pytest.mark.parametrize("name", EXAMPLES)
def test_the_rendered_chart_applies_to_a_real_api_server(name: str, control_plane: Any) -> None:
    """Server-side apply of every rendered manifest (hooks included), the worker's rights
    checked with SubjectAccessReview, then everything removed."""
    plane = control_plane
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {plane.admin_token}"
    # Per request too: requests lets REQUESTS_CA_BUNDLE override a session's own CA.
    session.request = functools.partial(session.request, verify=str(plane.ca))  # type: ignore[method-assign]
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    session.post(f"{plane.server}/api/v1/namespaces", json=namespace, timeout=30)
    manifests = render([example(name)])
    applied = []
    try:
        for doc in manifests:
            answer = session.patch(
                f"{plane.server}{_path(doc)}",
                params={"fieldManager": "helm-chart-test", "force": "true"},
                data=yaml.safe_dump(doc),
                headers={"Content-Type": "application/apply-patch+yaml"},
                timeout=30,
            )
            assert answer.status_code in (200, 201), (
                doc["kind"],
                doc["metadata"]["name"],
                answer.text,
            )
            applied.append(doc)
        account = f"system:serviceaccount:{NAMESPACE}:{FULLNAME}-worker"
        for rule in load_yaml(CHART / "files" / "worker-role-rules.yaml"):
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        assert _allowed(
                            session, plane.server, account, group, resource, verb, NAMESPACE
                        )
        assert not _allowed(session, plane.server, account, "", "secrets", "get", "kube-system")
        assert not _allowed(session, plane.server, account, "", "nodes", "list", None)
    finally:
        for doc in reversed(applied):
            session.delete(f"{plane.server}{_path(doc)}", timeout=30)


def _allowed(
    session: requests.Session,
    server: str,
    user: str,
    group: str,
    resource: str,
    verb: str,
    namespace: str | None,
) -> bool:
    sub, _, subresource = resource.partition("/")
    attributes: dict[str, str] = {"group": group, "resource": sub, "verb": verb}
    if subresource:
        attributes["subresource"] = subresource
    if namespace:
        attributes["namespace"] = namespace
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts"],
            "resourceAttributes": attributes,
        },
    }
    answer = session.post(
        f"{server}/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review, timeout=30
    )
    assert answer.status_code == 201, answer.text
    return bool(answer.json()["status"].get("allowed"))
