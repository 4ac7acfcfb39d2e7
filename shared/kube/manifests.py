"""The objects of one Kubernetes deployment, rendered from its spec by our code.

``render`` is pure: the same record gives the same manifests (a dry run shows them,
observe compares them, reconcile re-applies them). The token ``Secret`` is rendered only
when a new token is handed in: its value is never stored, so a record cannot re-render it.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from shared.kube.pod import TOKEN_ENV
from shared.kube.spec import (
    CONTAINER_PORT,
    MLRUNNER_JAR,
    KubernetesDeploymentSpec,
    labels,
    model_url,
    secret_name,
    selector,
)
from shared.serving import SERVE_JAVA_OPTS

Manifest = dict[str, Any]
TOKEN_KEY = "token"
RUN_AS = 10001


def millicores(cpu: float) -> str:
    return f"{round(cpu * 1000)}m"


def _metadata(spec: KubernetesDeploymentSpec, object_labels: dict[str, str]) -> dict[str, Any]:
    return {"name": spec.name, "namespace": spec.namespace, "labels": object_labels}


def _container(spec: KubernetesDeploymentSpec, deployment_id: int) -> dict[str, Any]:
    if spec.runtime == "mlrunner":
        command = ["java", *SERVE_JAVA_OPTS, "-jar", MLRUNNER_JAR, "serve"]
        args = [
            "--model", model_url(spec, deployment_id),
            "--sha256", str(spec.model_sha256),
            "--token-env", TOKEN_ENV,
            "--host", "0.0.0.0",
            "--port", str(CONTAINER_PORT),
            "--threads", str(spec.threads),
        ]  # fmt: skip
    else:
        # The pyfunc image holds our package: shared.kube.pod fetches the MLflow model
        # through the token route, then runs `mlflow models serve` on it.
        command = ["python", "-m", "shared.kube.pod"]
        args = [
            "--model", model_url(spec, deployment_id),
            "--token-env", TOKEN_ENV,
            "--host", "0.0.0.0",
            "--port", str(CONTAINER_PORT),
            "--workers", str(spec.threads),
        ]  # fmt: skip
    resources: dict[str, dict[str, str]] = {}
    if spec.cpu_request is not None or spec.memory_request is not None:
        resources["requests"] = {
            k: v
            for k, v in (
                ("cpu", millicores(spec.cpu_request) if spec.cpu_request else None),
                ("memory", spec.memory_request),
            )
            if v
        }
    if spec.cpu_limit is not None or spec.memory_limit is not None:
        resources["limits"] = {
            k: v
            for k, v in (
                ("cpu", millicores(spec.cpu_limit) if spec.cpu_limit else None),
                ("memory", spec.memory_limit),
            )
            if v
        }
    probe = {"httpGet": {"path": "/ping", "port": "http"}}
    return {
        "name": "model",
        "image": spec.image,
        "command": command,
        "args": args,
        "env": [
            {
                "name": TOKEN_ENV,
                "valueFrom": {"secretKeyRef": {"name": secret_name(spec.name), "key": TOKEN_KEY}},
            },
            {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
            {"name": "MLFLOW_TRACKING_URI", "value": spec.server_url},
        ],
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "initialDelaySeconds": 60,
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": resources,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def deployment(
    spec: KubernetesDeploymentSpec,
    deployment_id: int,
    object_labels: dict[str, str],
    *,
    replicas: bool = True,
) -> Manifest:
    """The Deployment; ``replicas`` False leaves the count to the autoscaler."""
    body: dict[str, Any] = {
        "selector": {"matchLabels": selector(spec.name)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "revisionHistoryLimit": 3,
        "template": {
            "metadata": {"labels": object_labels},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": RUN_AS,
                    "runAsGroup": RUN_AS,
                    "fsGroup": RUN_AS,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [_container(spec, deployment_id)],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        },
    }
    if replicas:
        body = {"replicas": spec.base_replicas, **body}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, object_labels),
        "spec": body,
    }


def render(
    spec: KubernetesDeploymentSpec,
    deployment_id: int,
    run_id: str | None,
    *,
    token: str | None = None,
    replicas: bool = True,
) -> list[Manifest]:
    """Every object of the deployment, in apply order (the Secret first, when a token is
    given; the Deployment before what routes to it)."""
    object_labels = labels(spec.name, deployment_id, run_id, spec.model_version)
    objects: list[Manifest] = []
    if token is not None:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _metadata(spec, object_labels) | {"name": secret_name(spec.name)},
                "type": "Opaque",
                "stringData": {TOKEN_KEY: token},
            }
        )
    objects.append(deployment(spec, deployment_id, object_labels, replicas=replicas))
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(spec, object_labels),
            "spec": {
                "type": "ClusterIP",
                "selector": selector(spec.name),
                "ports": [
                    {
                        "name": "http",
                        "port": spec.service_port,
                        "targetPort": "http",
                        "protocol": "TCP",
                    }
                ],
            },
        }
    )
    objects += optional_objects(spec, object_labels)
    return objects


def optional_objects(
    spec: KubernetesDeploymentSpec, object_labels: dict[str, str]
) -> list[Manifest]:
    """The autoscaler, disruption budget and Ingress the spec asks for."""
    objects: list[Manifest] = []
    if spec.autoscaling_enabled:
        objects.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": _metadata(spec, object_labels),
                "spec": {
                    "scaleTargetRef": {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": spec.name,
                    },
                    "minReplicas": spec.base_replicas,
                    "maxReplicas": max(spec.max_replicas, spec.base_replicas),
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {
                                    "type": "Utilization",
                                    "averageUtilization": spec.target_cpu_utilization,
                                },
                            },
                        }
                    ],
                },
            }
        )
    if spec.base_replicas > 1 or (spec.autoscaling_enabled and spec.max_replicas > 1):
        objects.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": _metadata(spec, object_labels),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(spec.name)}},
            }
        )
    if spec.ingress_host is not None:
        ingress: dict[str, Any] = {
            "rules": [
                {
                    "host": spec.ingress_host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {
                                    "service": {"name": spec.name, "port": {"name": "http"}}
                                },
                            }
                        ]
                    },
                }
            ]
        }
        if not spec.disable_nginx:
            ingress = {"ingressClassName": "nginx", **ingress}
        objects.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": _metadata(spec, object_labels),
                "spec": ingress,
            }
        )
    return objects


def kinds_of(spec: KubernetesDeploymentSpec) -> list[tuple[str, str]]:
    """(apiVersion, kind) of every object a spec creates (the Secret included)."""
    objects = render(spec, 0, None, token="")
    return [(o["apiVersion"], o["kind"]) for o in objects]


def to_yaml(objects: list[Manifest], *, hide_secrets: bool = True) -> str:
    """The manifests as one YAML stream (a Secret's values shown as <hidden>)."""
    shown = []
    for o in json.loads(json.dumps(objects)):  # no shared dicts: no YAML anchors
        if hide_secrets and o["kind"] == "Secret":
            o = {**o, "stringData": dict.fromkeys(o.get("stringData", {}), "<hidden>")}
        shown.append(o)
    return yaml.safe_dump_all(shown, sort_keys=False)
