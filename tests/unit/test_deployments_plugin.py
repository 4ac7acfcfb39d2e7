"""The MLflow deployments plugin talks to the server MLflow's client talks to now."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlmanager.deployments import MLManagerDeploymentClient
from shared.settings import get_settings


@pytest.fixture
def fresh_settings_cache() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_plugin_follows_a_tracking_uri_changed_after_settings_were_read(
    monkeypatch: pytest.MonkeyPatch, fresh_settings_cache: None
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://first.example:5001")
    assert get_settings().mlflow_tracking_uri == "http://first.example:5001"  # cached now
    # What mlflow.set_tracking_uri does in a notebook: it sets the variable.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://second.example:5001")
    client = MLManagerDeploymentClient("mlmanager")
    assert client.api.base_url == "http://second.example:5001"


def test_azure_deployments_are_named_by_their_endpoint_and_replaced_by_a_flag(
    monkeypatch: pytest.MonkeyPatch, fresh_settings_cache: None
) -> None:
    """`mlflow deployments update -t mlmanager --name iris-ep -C target=azure`: the name
    is the endpoint (and, unless given, the registered model's name); update sets the
    payload's `replace` flag (SageMaker's is a mode: `deployment_mode=replace`)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://server.example:5001")
    client = MLManagerDeploymentClient("mlmanager")
    handler, payload = client._payload(
        "models:/iris/2", {"target": "azure"}, "iris-ep", replace=True
    )
    assert handler == "DEPLOY_AZURE"
    assert payload == {
        "model_uri": "models:/iris/2",
        "replace": True,
        "endpoint_name": "iris-ep",
        "model_name": "iris-ep",
    }
    _, payload = client._payload(
        "models:/iris/2", {"target": "sagemaker", "app_name": "iris"}, "iris", replace=True
    )
    assert payload["deployment_mode"] == "replace"


def test_predict_goes_to_the_service_the_ingress_or_the_url_set() -> None:
    from mlmanager.deployments import predict_url

    spec = {
        "namespace": "models",
        "name": "churn",
        "representation_id": 3,
        "runtime": "mlrunner",
        "image": "mlmanager/serving:0.1.0",
        "server_url": "http://mlmanager:5001",
        "model_uri": "models:/churn/2",
        "service_port": 8000,
    }
    assert predict_url(spec, None) == "http://churn.models.svc:8000"
    exposed = spec | {"ingress_host": "churn.models.example.com"}
    assert predict_url(exposed, None) == "http://churn.models.example.com"
    forwarded = "http://localhost:18{port}/{namespace}/{name}/"
    assert predict_url(exposed, forwarded) == "http://localhost:188000/models/churn"
