"""The cloud targets' shared core (shared/cloud.py) and SageMaker's names and images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.azureml import Workspace, deployment_name, instance_type_for
from shared.cloud import DeploymentFailed, Undo, wait_for
from shared.deployments import (
    AzureDeploymentSpec,
    Deployment,
    SageMakerDeploymentSpec,
    SageMakerVariant,
    parse_spec,
)
from shared.errors import ConfigError, InvalidPayload
from shared.handlers import SPECS
from shared.sagemaker import ServingImages, archive_key, resource_name
from shared.settings import load_settings


def states(*values: str) -> object:
    it = iter(values)
    return lambda: next(it)


def test_wait_for_logs_each_state_and_returns_the_final_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    read = states("Creating", "Creating", "InService")
    done = wait_for(
        "endpoint e",
        read,  # type: ignore[arg-type]
        done=frozenset({"InService"}),
        failed=frozenset({"Failed"}),
        reason=lambda: "",
        timeout=10,
        poll=0,
    )
    assert done == "InService"


def test_wait_for_fails_with_the_cloud_reason() -> None:
    with pytest.raises(DeploymentFailed, match="endpoint e is Failed: no /ping"):
        wait_for(
            "endpoint e",
            states("Creating", "Failed"),  # type: ignore[arg-type]
            done=frozenset({"InService"}),
            failed=frozenset({"Failed"}),
            reason=lambda: "no /ping",
            timeout=10,
            poll=0,
        )


def test_wait_for_gives_up_after_its_timeout() -> None:
    with pytest.raises(DeploymentFailed, match="still Creating after 0s"):
        wait_for(
            "endpoint e",
            lambda: "Creating",
            done=frozenset({"InService"}),
            failed=frozenset({"Failed"}),
            reason=lambda: "",
            timeout=0.05,
            poll=0.01,
        )


def test_undo_runs_newest_first_and_goes_on_past_a_failed_action() -> None:
    done: list[str] = []
    undo = Undo()
    undo.push("archive", lambda: done.append("archive"))

    def broken() -> None:
        raise RuntimeError("gone already")

    undo.push("model", broken)
    undo.push("endpoint", lambda: done.append("endpoint"))
    undo.run()
    assert done == ["endpoint", "archive"]
    assert undo.actions == []


def test_names_hold_the_job_and_fit_sagemaker_limits() -> None:
    long = "a" * 63
    assert resource_name("iris", 7, "model") == "iris-model-j7"
    assert len(resource_name(long, 123456, "config")) == 63
    assert archive_key("iris", 7) == "mlmanager/iris/j7/model.tar.gz"


def test_images_come_from_the_regions_file(tmp_path: Path) -> None:
    settings = load_settings()
    images = ServingImages.of(settings, "us-east-2")
    assert images.image("111122223333", "mlrunner").startswith(
        "111122223333.dkr.ecr.us-east-2.amazonaws.com/mlmanager-serving:"
    )
    assert "/mlflow-pyfunc:" in images.image("111122223333", "mlflow")
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({"sagemaker": {"regions": [], "serving_image": "", "pyfunc_image": ""}})
    )
    with pytest.raises(InvalidPayload, match=rf"eu-west-1 .*{path}"):
        ServingImages.of(load_settings(sagemaker_images_file=path), "eu-west-1")


def test_a_sagemaker_record_reads_back_typed_and_undeploys_by_its_endpoint() -> None:
    spec = SageMakerDeploymentSpec(
        endpoint_name="iris",
        region="us-east-2",
        url="https://runtime.sagemaker.us-east-2.amazonaws.com/endpoints/iris/invocations",
        endpoint_config="iris-config-j1",
        variants=[SageMakerVariant(name="v", model="m", weight=1, model_data="s3://b/k")],
        image="i",
        runtime="mlrunner",
        instance_type="ml.m5.xlarge",
        instance_count=1,
    )
    stored = spec.model_dump(mode="json", exclude={"target"})
    assert parse_spec("sagemaker", stored) == spec
    record = Deployment(
        id=1,
        target="sagemaker",
        name="iris",
        status="DEPLOYED",
        model_uri="models:/m-1",
        run_id=None,
        spec=spec,
        stats=None,  # type: ignore[arg-type]
        job_id=1,
        user="u",
        created_at=None,  # type: ignore[arg-type]
        updated_at=None,  # type: ignore[arg-type]
    )
    assert record.undeploy_job() == (
        "UNDEPLOY_AWS",
        {"model_uri": "models:/m-1", "app_name": "iris", "sagemaker_region": "us-east-2"},
    )


@pytest.mark.parametrize(
    ("cores", "ram", "expected"),
    [
        (0.1, 0.5, "Standard_DS1_v2"),  # the original payload's defaults
        (1, 4, "Standard_F2s_v2"),
        (2, 8, "Standard_E2s_v3"),
        (3, 8, "Standard_F4s_v2"),
        (4, 20, "Standard_E4s_v3"),
        (64, 400, "Standard_E64s_v3"),
    ],
)
def test_azure_cores_and_memory_map_to_the_smallest_vm_size(
    cores: float, ram: float, expected: str
) -> None:
    assert instance_type_for(cores, ram) == expected


def test_azure_sizes_beyond_the_largest_vm_are_refused_naming_the_field() -> None:
    with pytest.raises(InvalidPayload, match="no managed online endpoint VM size") as raised:
        instance_type_for(2, 1000)
    assert raised.value.field == "allocated_ram"


def azure_spec(**changes: object) -> AzureDeploymentSpec:
    values: dict[str, object] = {
        "endpoint_name": "iris-ep",
        "subscription_id": "sub",
        "resource_group": "rg",
        "workspace": "ws",
        "region": "East US",
        "url": "https://iris-ep.eastus.inference.ml.azure.com/score",
        "deployment": deployment_name(7),
        "model_name": "iris",
        "model_version": "j7",
        "environment": "mlmanager-iris-ep:j7",
        "image": "r.azurecr.io/mlmanager-serving:1",
        "runtime": "mlrunner",
        "instance_type": "Standard_DS1_v2",
        "created_endpoint": True,
    }
    return AzureDeploymentSpec.model_validate(values | changes)


def test_an_azure_record_reads_back_typed_and_undeploys_by_its_endpoint() -> None:
    spec = azure_spec()
    assert spec.deployment == "mlm-j7"
    assert parse_spec("azure", spec.model_dump(mode="json", exclude={"target"})) == spec
    record = Deployment(
        id=1,
        target="azure",
        name="iris-ep",
        status="DEPLOYED",
        model_uri="models:/iris/1",
        run_id=None,
        spec=spec,
        stats=None,  # type: ignore[arg-type]
        job_id=7,
        user="u",
        created_at=None,  # type: ignore[arg-type]
        updated_at=None,  # type: ignore[arg-type]
    )
    assert record.undeploy_job() == (
        "UNDEPLOY_AZURE",
        {
            "model_uri": "models:/iris/1",
            "endpoint_name": "iris-ep",
            "workspace": "ws",
            "resource_group": "rg",
        },
    )
    SPECS["UNDEPLOY_AZURE"].payload_model.model_validate(record.undeploy_job()[1])  # type: ignore[index]


def test_the_azure_workspace_comes_from_the_payload_or_the_settings() -> None:
    settings = load_settings(
        azure_subscription_id="sub", azure_resource_group="rg", azure_workspace="ws"
    )
    assert Workspace.of(settings, None, None) == Workspace("sub", "rg", "ws")
    assert Workspace.of(settings, "other-rg", "other") == Workspace("sub", "other-rg", "other")
    with pytest.raises(InvalidPayload, match="AZURE_WORKSPACE") as raised:
        Workspace.of(load_settings(azure_subscription_id="sub"), "rg", None)
    assert raised.value.field == "workspace"
    with pytest.raises(ConfigError, match="AZURE_SUBSCRIPTION_ID"):
        Workspace.of(load_settings(), "rg", "ws")
