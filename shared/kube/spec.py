"""The Kubernetes target's desired state and names (no client code: the server reads it).

A Kubernetes deployment is named (``KubernetesDeploymentSpec.name``, a DNS label); every
object it creates carries that name and the labels of :func:`labels`. The record's spec
holds everything the manifests are rendered from, so observe, reconcile and rollback
re-render them without the original payload.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TARGET = "kubernetes"
FIELD_MANAGER = "mlmanager"
CONTAINER_PORT = 8080
# Where the serving image holds mlrunner (the path `make mlrunner` installs it at).
MLRUNNER_JAR = "/opt/mlmanager/mlrunner/mlrunner.jar"
MODEL_ROUTE = "/api/2.0/mlmanager/deployments/{id}/model"
NAME_PATTERN = r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


class KubernetesDeploymentSpec(BaseModel):
    """A model served by pods behind a Service: what the deploy applied."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: Literal["kubernetes"] = "kubernetes"
    namespace: str
    name: str = Field(pattern=NAME_PATTERN, description="name of every object created")
    representation_id: int = Field(description="model_representations row the pods serve")
    runtime: Literal["mlrunner", "mlflow"] = Field(
        description="mlrunner serve (ONNX/MOJO) or mlflow models serve (the others)"
    )
    image: str
    server_url: str = Field(description="this server as the pods reach it")
    model_uri: str
    model_sha256: str | None = Field(None, description="SHA-256 of the bundle (mlrunner)")
    model_version: str | None = None
    service_port: int = 80
    base_replicas: int = 1
    autoscaling_enabled: bool = False
    max_replicas: int = 2
    target_cpu_utilization: int = 50
    disable_nginx: bool = False
    threads: int = Field(1, description="serving threads (the payload's gunicorn_workers)")
    cpu_request: float | None = None
    memory_request: str | None = None
    cpu_limit: float | None = None
    memory_limit: str | None = None
    ingress_host: str | None = Field(None, description="the Ingress host, when expose_external")

    def payload_fields(self) -> dict[str, object]:
        """The DEPLOY_KUBERNETES payload fields that render this spec again (a rollback)."""
        out: dict[str, object] = {
            "name": self.name,
            "service_port": self.service_port,
            "base_replicas": self.base_replicas,
            "autoscaling_enabled": self.autoscaling_enabled,
            "max_replicas": self.max_replicas,
            "target_cpu_utilization": self.target_cpu_utilization,
            "disable_nginx": self.disable_nginx,
            "gunicorn_workers": self.threads,
            "expose_external": self.ingress_host is not None,
            "resource_requests_enabled": self.cpu_request is not None,
            "resource_limits_enabled": self.cpu_limit is not None,
        }
        for field in ("cpu_request", "memory_request", "cpu_limit", "memory_limit"):
            if getattr(self, field) is not None:
                out[field] = getattr(self, field)
        return out


def object_name(name: str | None, model_uri: str, run_id: str | None) -> str:
    """The deployment's name: the given one, else the registered model's, else the run's."""
    if name:
        return name
    match = re.match(r"^models:/([^/@]+)", model_uri)
    base = match.group(1) if match and not match.group(1).startswith("m-") else f"mlm-{run_id}"
    slug = _NOT_DNS.sub("-", base.lower()).strip("-")[:40].rstrip("-")
    if not slug or not slug[0].isalpha():
        slug = f"mlm-{slug}"[:40].rstrip("-")
    return slug


def model_url(spec: KubernetesDeploymentSpec, deployment_id: int) -> str:
    """The token route a pod fetches its model from (``mlflow_server/model_route.py``)."""
    return spec.server_url.rstrip("/") + MODEL_ROUTE.format(id=deployment_id)


def service_url(spec: KubernetesDeploymentSpec) -> str:
    """Where the Service answers inside the cluster."""
    return f"http://{spec.name}.{spec.namespace}.svc:{spec.service_port}"


def secret_name(name: str) -> str:
    return f"{name}-model-token"


def selector(name: str) -> dict[str, str]:
    """What the Service, the PDB and the Deployment select (never changes for a name)."""
    return {"app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": FIELD_MANAGER}


def labels(
    name: str, deployment_id: int, run_id: str | None, version: str | None
) -> dict[str, str]:
    out = {
        **selector(name),
        "app.kubernetes.io/name": "mlmanager-model",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "mlmanager",
        "mlmanager.io/deployment-id": str(deployment_id),
    }
    if run_id:
        out["mlmanager.io/run-id"] = _label_value(run_id)
    if version:
        out["mlmanager.io/model-version"] = _label_value(version)
    return out


def _label_value(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", value)[:63].strip("-._")
