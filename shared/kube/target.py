"""Observe and reconcile a Kubernetes deployment (``shared.targets.Target``).

Observe reads each object the record's manifests name and says what differs: an object
deleted, a Deployment scaled or edited by hand (replicas, image, command, serving another
deployment's model), the token Secret gone. Reconcile server-side applies the rendered
manifests again (a missing Secret gets a new token, the old ones revoked); applying what
already matches changes nothing, so a rerun only finishes the repair. A job that changes a
name (a deploy, a replace, an undeploy) holds its lock (:func:`name_lock`, PostgreSQL) to
the end: reconcile does not wait for it, it refuses (the job converges the name itself,
and re-applying the record it is replacing would undo its rollout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from shared.db import SessionLock
from shared.deployment_tokens import issue, revoke
from shared.deployments import Deployment
from shared.errors import DeploymentConflict, InvalidPayload
from shared.kube.cluster import Cluster, Manifest, rollout_of
from shared.kube.manifests import render
from shared.kube.spec import TARGET, KubernetesDeploymentSpec, secret_name, service_url
from shared.settings import Settings
from shared.targets import LiveState, Target

# One-key advisory locks, as the SageMaker handler's per endpoint (the two-key space is the
# scheduler's).
NAME_LOCK = "SELECT pg_try_advisory_lock(hashtext(:key))"


def lock_key(namespace: str, name: str) -> str:
    """The advisory lock key of a deployment name (what the tests hold to race jobs)."""
    return f"mlmanager.deploy:kubernetes:{namespace}:{name}"


def name_lock(engine: Engine, namespace: str, name: str) -> SessionLock | None:
    """The lock of (namespace, name), not taken yet; None where there is none (SQLite runs
    one worker)."""
    if engine.dialect.name != "postgresql":
        return None
    return SessionLock(engine, NAME_LOCK, key=lock_key(namespace, name))


@dataclass(frozen=True)
class KubernetesLiveState(LiveState):
    replicas_ready: int = 0
    replicas_desired: int = 0
    missing: tuple[str, ...] = ()
    secret_missing: bool = False

    def details(self, spec: KubernetesDeploymentSpec) -> dict[str, Any]:
        out: dict[str, Any] = {
            "url": service_url(spec),
            "replicas": {"ready": self.replicas_ready, "desired": self.replicas_desired},
        }
        if spec.ingress_host:
            out["external_url"] = f"http://{spec.ingress_host}"
        return out


def spec_of(deployment: Deployment) -> KubernetesDeploymentSpec:
    if not isinstance(deployment.spec, KubernetesDeploymentSpec):
        raise InvalidPayload(f"deployment {deployment.id} has no kubernetes spec")
    return deployment.spec


def desired(deployment: Deployment) -> list[Manifest]:
    """The record's objects as applied (no Secret: its token is not stored)."""
    spec = spec_of(deployment)
    return render(spec, deployment.id, deployment.run_id, replicas=not spec.autoscaling_enabled)


class KubernetesTarget(Target):
    name = TARGET

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine

    def cluster(self, spec: KubernetesDeploymentSpec) -> Cluster:
        return Cluster(self.settings, spec.namespace)

    def observe(self, deployment: Deployment) -> KubernetesLiveState:
        spec = spec_of(deployment)
        cluster = self.cluster(spec)
        try:
            return self.observe_in(cluster, deployment)
        finally:
            cluster.close()

    def observe_in(self, cluster: Cluster, deployment: Deployment) -> KubernetesLiveState:
        spec = spec_of(deployment)
        drift: list[str] = []
        missing: list[str] = []
        ready = desired_count = 0
        for manifest in desired(deployment):
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            live = cluster.get(kind, name)
            if live is None:
                missing.append(kind)
                drift.append(f"{kind} {name} missing")
                continue
            if kind == "Deployment":
                state = rollout_of(live)
                ready, desired_count = state.ready, state.desired
                drift += _deployment_drift(manifest, live, deployment.id, spec)
            elif kind == "Service":
                want = [(p["port"], p["targetPort"]) for p in manifest["spec"]["ports"]]
                have = [(p.get("port"), p.get("targetPort")) for p in live["spec"].get("ports", [])]
                if want != have or live["spec"].get("selector") != manifest["spec"]["selector"]:
                    drift.append(f"Service {name} ports or selector changed")
        secret_missing = cluster.get("Secret", secret_name(spec.name)) is None
        if secret_missing:
            drift.append(f"Secret {secret_name(spec.name)} missing")
        return KubernetesLiveState(
            drift=tuple(drift),
            replicas_ready=ready,
            replicas_desired=desired_count,
            missing=tuple(missing),
            secret_missing=secret_missing,
        )

    def reconcile(self, deployment: Deployment) -> list[str]:
        spec = spec_of(deployment)
        held = name_lock(self.engine, spec.namespace, spec.name) if self.engine else None
        if held is not None and not held.take():
            raise DeploymentConflict(
                f"a job is changing {spec.name} in {spec.namespace} now: it converges it "
                "(reconcile once it has ended)"
            )
        cluster = self.cluster(spec)
        try:
            live = self.observe_in(cluster, deployment)
            if live.in_sync:
                return []
            steps: list[str] = []
            if live.secret_missing:
                if self.engine is None:
                    raise InvalidPayload("a new model token needs the database")
                with self.engine.begin() as conn:
                    revoke(conn, deployment.id)
                    token = issue(conn, deployment.id)
                cluster.apply(render(spec, deployment.id, deployment.run_id, token=token)[0])
                steps.append(f"new model token in Secret {secret_name(spec.name)}")
            for manifest in desired(deployment):
                cluster.apply(manifest)
            steps.append(f"re-applied {', '.join(live.drift)}")
            return steps
        finally:
            cluster.close()
            if held is not None:
                held.release()


def _deployment_drift(
    want: Manifest, live: Manifest, deployment_id: int, spec: KubernetesDeploymentSpec
) -> list[str]:
    drift: list[str] = []
    name = want["metadata"]["name"]
    replicas = live["spec"].get("replicas")
    if not spec.autoscaling_enabled and replicas != spec.base_replicas:
        drift.append(f"Deployment {name} scaled to {replicas} (recorded {spec.base_replicas})")
    template = live["spec"]["template"]
    serves = (template.get("metadata") or {}).get("labels", {}).get("mlmanager.io/deployment-id")
    if serves != str(deployment_id):
        drift.append(f"Deployment {name} serves deployment {serves}, not {deployment_id}")
    containers = {c["name"]: c for c in template["spec"].get("containers", [])}
    for container in want["spec"]["template"]["spec"]["containers"]:
        have = containers.get(container["name"])
        if have is None:
            drift.append(f"Deployment {name} lost its container {container['name']}")
            continue
        for key in ("image", "command", "args"):
            if have.get(key) != container[key]:
                drift.append(f"Deployment {name}: container {container['name']} {key} changed")
    return drift
