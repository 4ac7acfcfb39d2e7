"""Rollback's payloads: the deploy that puts a replaced deployment back, per target,
valid for its handler's payload model (what the server validates at submit)."""

from __future__ import annotations

import datetime as dt

from shared.deployments import (
    DatabaseDeploymentSpec,
    Deployment,
    DeploymentStats,
    redeploy_job,
)
from shared.handlers import SPECS
from shared.kube.spec import KubernetesDeploymentSpec

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def deployment(target: str, spec: object) -> Deployment:
    return Deployment(
        id=4,
        target=target,
        name="x",
        status="DELETED",
        model_uri="models:/churn/2",
        run_id="abc",
        spec=spec,  # type: ignore[arg-type]
        stats=DeploymentStats(),
        job_id=3,
        user="ann",
        created_at=NOW,
        updated_at=NOW,
    )


def test_a_database_deployment_is_redeployed_onto_its_table_with_replace() -> None:
    spec = DatabaseDeploymentSpec(
        db_schema="ml", db_table="churn", representation_id=1, format="onnx",
        kind="classification", trigger="t", trigger_mode="row", mode="sync", keys=[("id", "INT")],
        features=["a"], prediction_columns=["prediction"], max_batch_size=500,
    )  # fmt: skip
    handler, payload = redeploy_job(deployment("database", spec))
    valid = SPECS[handler].payload_model.model_validate(payload)
    assert handler == "DEPLOY_DATABASE"
    assert valid.model_dump(include={"model_uri", "db_schema", "db_table", "replace"}) == {
        "model_uri": "models:/churn/2", "db_schema": "ml", "db_table": "churn", "replace": True,
    }  # fmt: skip
    assert (valid.trigger_mode, valid.mode, valid.max_batch_size) == ("row", "sync", 500)


def test_a_kubernetes_deployment_is_redeployed_with_its_recorded_options() -> None:
    spec = KubernetesDeploymentSpec(
        namespace="models", name="churn", representation_id=2, runtime="mlrunner", image="i",
        server_url="http://s", model_uri="models:/churn/2", base_replicas=3,
        autoscaling_enabled=True, max_replicas=6, threads=4, cpu_request=0.5,
        memory_request="1Gi", ingress_host="churn.example.com", disable_nginx=True,
    )  # fmt: skip
    handler, payload = redeploy_job(deployment("kubernetes", spec))
    valid = SPECS[handler].payload_model.model_validate(payload)
    assert handler == "DEPLOY_KUBERNETES"
    assert valid.model_dump(exclude_defaults=True) == {
        "model_uri": "models:/churn/2", "name": "churn", "replace": True, "base_replicas": 3,
        "autoscaling_enabled": True, "max_replicas": 6, "gunicorn_workers": 4,
        "disable_nginx": True, "expose_external": True, "resource_requests_enabled": True,
        "memory_request": "1Gi",
    }  # fmt: skip
