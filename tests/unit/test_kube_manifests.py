"""The Kubernetes target's manifests: rendered from the record, valid (strict) against the
OpenAPI schemas of the oldest and newest Kubernetes minors we support, and shaped as the
README says (rolling with maxUnavailable 0, probes, non-root read-only pods)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from shared.kube.manifests import render, to_yaml
from shared.kube.spec import KubernetesDeploymentSpec, object_name

# The oldest and newest Kubernetes minors the target supports (README): every kind it
# creates is GA in 1.25 (autoscaling/v2, policy/v1), the oldest kubernetes-validate knows.
SUPPORTED = ("1.25.0", "1.37.0")


def spec(**fields: Any) -> KubernetesDeploymentSpec:
    base: dict[str, Any] = {
        "namespace": "models",
        "name": "churn",
        "representation_id": 3,
        "runtime": "mlrunner",
        "image": "mlmanager/mlrunner:1",
        "server_url": "http://mlmanager.mlmanager.svc:5001",
        "model_uri": "models:/churn/2",
        "model_sha256": "ab" * 32,
        "model_version": "2",
    }
    return KubernetesDeploymentSpec(**(base | fields))


SHAPES = {
    "plain": spec(),
    "autoscaled": spec(
        base_replicas=2,
        autoscaling_enabled=True,
        max_replicas=5,
        cpu_request=0.5,
        memory_request="512Mi",
        cpu_limit=1.0,
        memory_limit="2048Mi",
    ),
    "external": spec(ingress_host="churn.models.example.com", service_port=8000),
    "external-default-class": spec(ingress_host="churn.example.com", disable_nginx=True),
    "pyfunc": spec(runtime="mlflow", image="mlmanager/pyfunc:1", model_sha256=None),
}


@pytest.mark.parametrize("version", SUPPORTED)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_manifest_is_valid_for_the_supported_versions(shape: str, version: str) -> None:
    for manifest in render(SHAPES[shape], 12, "0123abcd", token="secret-token"):
        kubernetes_validate.validate(manifest, version, strict=True)


def test_what_each_shape_creates() -> None:
    kinds = {n: [o["kind"] for o in render(s, 1, None, token="t")] for n, s in SHAPES.items()}
    assert kinds["plain"] == ["Secret", "Deployment", "Service"]
    assert kinds["autoscaled"] == [
        "Secret", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
    ]  # fmt: skip
    assert kinds["external"] == ["Secret", "Deployment", "Service", "Ingress"]
    assert [o["kind"] for o in render(SHAPES["plain"], 1, None)] == ["Deployment", "Service"]


def test_the_deployment_rolls_without_losing_capacity_and_runs_locked_down() -> None:
    objects = {o["kind"]: o for o in render(SHAPES["autoscaled"], 12, "0123abcd", token="t")}
    deployment = objects["Deployment"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["mlmanager.io/deployment-id"] == "12"
    assert pod["metadata"]["labels"]["mlmanager.io/run-id"] == "0123abcd"
    assert pod["metadata"]["labels"]["mlmanager.io/model-version"] == "2"
    # The selector never names the deployment id: a replace rolls the same Deployment.
    assert "mlmanager.io/deployment-id" not in deployment["spec"]["selector"]["matchLabels"]
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ping"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "1000m", "memory": "2048Mi"},
    }
    args = container["args"]
    assert args[args.index("--model") + 1] == (
        "http://mlmanager.mlmanager.svc:5001/api/2.0/mlmanager/deployments/12/model"
    )
    assert args[args.index("--threads") + 1] == "1"
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    # With an autoscaler the count is the autoscaler's, except at creation.
    assert "replicas" not in render(SHAPES["autoscaled"], 12, None, replicas=False)[0]["spec"]


def test_ingress_class_is_nginx_unless_disabled() -> None:
    def ingress(shape: str) -> dict[str, Any]:
        return next(o for o in render(SHAPES[shape], 1, None) if o["kind"] == "Ingress")

    assert ingress("external")["spec"]["ingressClassName"] == "nginx"
    assert "ingressClassName" not in ingress("external-default-class")["spec"]


def test_a_dry_run_never_shows_the_token() -> None:
    shown = to_yaml(render(SHAPES["plain"], 1, None, token="very-secret-token"))
    assert "very-secret-token" not in shown and "<hidden>" in shown


@pytest.mark.parametrize(
    ("name", "uri", "run_id", "expected"),
    [
        ("given", "models:/churn/1", "r1", "given"),
        (None, "models:/Churn_Model/3", "r1", "churn-model"),
        (None, "models:/churn@prod", "r1", "churn"),
        (None, "runs:/0a1b/model", "0a1b", "mlm-0a1b"),
        (None, "models:/m-0123", "ff00", "mlm-ff00"),
        (None, "models:/42answers/1", "r1", "mlm-42answers"),
    ],
)
def test_object_names(name: str | None, uri: str, run_id: str, expected: str) -> None:
    assert object_name(name, uri, run_id) == expected


def test_a_pyfunc_pod_fetches_its_model_with_the_token() -> None:
    """The pyfunc image's pod gets the token route and the token's variable, never a
    model URI it would need user credentials to read."""
    (deployment,) = [o for o in render(SHAPES["pyfunc"], 12, None) if o["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    argv = container["command"] + container["args"]
    assert argv[:3] == ["python", "-m", "shared.kube.pod"]
    model = argv[argv.index("--model") + 1]
    assert model == "http://mlmanager.mlmanager.svc:5001/api/2.0/mlmanager/deployments/12/model"
    token_env = argv[argv.index("--token-env") + 1]
    assert token_env in {v["name"] for v in container["env"] if "valueFrom" in v}
    assert "models:/churn/2" not in argv
