"""A real Kubernetes control plane on loopback for the tests: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok (which plays the kubelet of one fake
node: pods bound to it become Running and Ready without any container running).

The binaries come from ``make kube`` (``tests/kube/build.sh``, cached in
``KUBE_HOME``, default ``/opt/mlmanager/kube``). Certificates, the service-account
signing key and the admin's static token are generated per session; nothing listens
beyond 127.0.0.1.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import requests
import yaml

from tests.support.pg import free_port

KUBE_HOME = Path(os.environ.get("KUBE_HOME", "/opt/mlmanager/kube"))
BIN = KUBE_HOME / "bin"
STAGES = KUBE_HOME / "stages" / "stages.yaml"
COMMANDS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
NODE_NAME = "kwok-node-0"
SERVICE_RANGE = "10.96.0.0/24"  # allocated in etcd only: nothing is routed there


def missing_binaries() -> list[str]:
    return [c for c in COMMANDS if not (BIN / c).is_file()] + (
        [] if STAGES.is_file() else ["stages/stages.yaml"]
    )


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(pki: Path) -> None:
    """A CA, the API server's serving certificate (for 127.0.0.1) and the SA signing key."""
    pki.mkdir(parents=True)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=pki)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=mlmanager-test-ca",
        "-days", "2", "-out", "ca.crt", cwd=pki,
    )  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server.key", cwd=pki)
    _openssl(
        "req", "-new", "-key", "server.key", "-subj", "/CN=kube-apiserver", "-out", "server.csr",
        cwd=pki,
    )  # fmt: skip
    (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=pki,
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def kubeconfig(server: str, ca: Path, token: str, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        "current-context": "test",
    }


@dataclass
class ControlPlane:
    """The running control plane; ``kubeconfig`` is the cluster admin's."""

    root: Path
    port: int = 0
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: list[BinaryIO] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.root / "pki" / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    def write_kubeconfig(self, path: Path, token: str, user: str) -> Path:
        path.write_text(yaml.safe_dump(kubeconfig(self.server, self.ca, token, user)))
        return path

    def _spawn(self, name: str, args: Iterable[str]) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 (closed by stop)
        self.logs.append(log)
        self.procs[name] = subprocess.Popen(
            [str(BIN / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def start(self) -> None:
        missing = missing_binaries()
        if missing:
            raise RuntimeError(
                f"the test control plane is not built ({', '.join(missing)} missing in "
                f"{KUBE_HOME}): run make kube"
            )
        pki = self.root / "pki"
        _certificates(pki)
        (self.root / "tokens.csv").write_text(f'{self.admin_token},admin,admin,"system:masters"\n')
        client, peer = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self.port = free_port()
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--secure-port={self.port}",
                f"--tls-cert-file={pki / 'server.crt'}",
                f"--tls-private-key-file={pki / 'server.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={self.root / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--anonymous-auth=false",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-cluster-ip-range={SERVICE_RANGE}",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        self.write_kubeconfig(self.kubeconfig, self.admin_token, "admin")
        self._wait("kube-apiserver", "/readyz", 90)
        common = [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--v=1"]
        self._spawn(
            "kube-controller-manager",
            [
                *common,
                "--secure-port=0",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=false",
                # Deployments, ReplicaSets, HPAs, PDBs, garbage collection, namespaces,
                # service accounts; no node IPAM (kwok gives the pods their addresses).
                "--controllers=*,-node-ipam-controller",
                "--concurrent-deployment-syncs=2",
                # kwok renews the node's lease; a test that stops kwok (SIGSTOP) for a
                # while must not see the node NotReady and its pods evicted.
                "--node-monitor-grace-period=10m",
            ],
        )
        self._spawn("kube-scheduler", [*common, "--secure-port=0"])
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--config={self._stages()}",
                "--manage-nodes-with-label-selector=type=kwok",
                "--server-address=127.0.0.1:0",
            ],
        )
        from kubernetes import client

        with self.client() as api:
            client.CoreV1Api(api).create_node(fake_node())
        self._wait_node_ready(60)

    def _stages(self) -> Path:
        """kwok's stages without ``pod-complete``, which ends a Job's pod as soon as it runs:
        here a Job's pod runs until a test ends it (``finish_pod``), as its container would."""
        kept = [
            doc
            for doc in yaml.safe_load_all(STAGES.read_text())
            if doc and doc["metadata"]["name"] != "pod-complete"
        ]
        path = self.root / "stages.yaml"
        path.write_text(yaml.safe_dump_all(kept))
        return path

    def _wait(self, name: str, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                answer = requests.get(
                    self.server + path,
                    headers={"Authorization": f"Bearer {self.admin_token}"},
                    verify=str(self.ca),
                    timeout=2,
                )
                if answer.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{name} not ready in {timeout}s:\n{self.log_tail(name)}")

    def _wait_node_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if node_ready(self):
                return
            time.sleep(0.3)
        raise RuntimeError(f"node {NODE_NAME} not Ready in {timeout}s:\n{self.log_tail('kwok')}")

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({proc.returncode}):\n{self.log_tail(name)}")

    def client(self, token: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` as the admin (or as ``token``)."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.server
        configuration.ssl_ca_cert = str(self.ca)
        configuration.api_key = {"authorization": f"Bearer {token or self.admin_token}"}
        return client.ApiClient(configuration)

    def pause(self, name: str) -> None:
        """SIGSTOP ``name`` (``resume`` continues it): with kwok paused, pods are bound to
        the node but never become Running or Ready."""
        self.procs[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # if a test paused it
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)  # the API server drains for longer than a test needs
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()


def finish_pod(plane: ControlPlane, namespace: str, pod: str, exit_code: int) -> None:
    """End a pod kwok keeps Running as its container would have ended: phase and container
    state (the Job controller then marks its Job complete or failed)."""
    from kubernetes import client

    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with plane.client() as api:
        core = client.CoreV1Api(api)
        current = core.read_namespaced_pod(pod, namespace)
        statuses = [
            {
                "name": c.name,
                "image": c.image,
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Completed" if exit_code == 0 else "Error",
                        "startedAt": now,
                        "finishedAt": now,
                    }
                },
            }
            for c in current.spec.containers
        ]
        core.patch_namespaced_pod_status(
            pod,
            namespace,
            {
                "status": {
                    "phase": "Succeeded" if exit_code == 0 else "Failed",
                    "containerStatuses": statuses,
                }
            },
        )


def service_account(
    plane: ControlPlane, namespace: str, name: str, rules: list[dict[str, Any]]
) -> str:
    """A ServiceAccount in ``namespace`` bound to a Role of exactly ``rules``; its token."""
    from kubernetes import client

    with plane.client() as api:
        rbac = client.RbacAuthorizationV1Api(api)
        core = client.CoreV1Api(api)
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        )
        request = core.create_namespaced_service_account_token(
            name, namespace, {"spec": {"expirationSeconds": 7200}}
        )
    return str(request.status.token)


def node_ready(plane: ControlPlane) -> bool:
    from kubernetes import client

    with plane.client() as api:
        node = client.CoreV1Api(api).read_node(NODE_NAME)
    conditions = node.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def fake_node() -> dict[str, Any]:
    """The node kwok plays: large enough for every test's pods, no taints."""
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "labels": {"type": "kwok", "kubernetes.io/hostname": NODE_NAME},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
        },
        "status": {"allocatable": capacity, "capacity": capacity},
    }


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The control plane, started once per session (fails, not skips, without `make kube`)."""
    plane = ControlPlane(tmp_path_factory.mktemp("kube"))
    try:
        plane.start()
    except RuntimeError as exc:
        plane.stop()
        pytest.fail(str(exc))
    yield plane
    plane.stop()
