"""DEPLOY_AZURE / UNDEPLOY_AZURE end to end: `mlmanager up` (server + worker,
ENVIRONMENT=azure) deploys through azure-ai-ml (SDK v2) and azure-identity to a local TLS
stand-in for Azure Resource Manager and Azure AD (tests/support/azure_arm.py, in this
process), with the model's files uploaded by the SDK to Azurite (npm, over HTTPS, reached
through a CONNECT proxy as the storage host ``devstoreaccount1.blob.localhost``). The
worker finds the stand-in only through AZURE_CLOUD_METADATA_URL (Resource Manager's
cloud metadata document), trusts its CA through REQUESTS_CA_BUNDLE, and signs in with
the service principal's secret, which the stand-in checks.

What the stand-in cannot show: Azure pulling the serving image and starting the
container (the image's routes are checked as registered, not called; the container
contract is the SageMaker one, proven by tests/integration/test_deploy_sagemaker.py),
quotas and VM sizes, RBAC checks of the service principal, real provisioning times, and
fields Azure adds to its answers that the SDK does not need.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from mlmanager.client import MLManagerClient
from tests.support import custom_models  # noqa: F401  (first: imports mlflow.pyfunc quietly)
from tests.support.azure_arm import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    CONTAINER,
    FAILURE,
    ArmStandIn,
    Certificates,
    ConnectProxy,
    make_certificates,
    start_azurite,
    stop,
)
from tests.support.engines import IN_CI
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING
from tests.support.pg import free_port
from tests.support.processes import ROOT, clean_environment
from tests.support.servers import (
    ADMIN_PASSWORD,
    MLManagerProcess,
    job_log_text,
    run_to_end,
    tracking_as,
)

pytestmark = [INPUT_EXAMPLE_WARNING]

AZURITE = Path(os.environ.get("AZURITE", "/opt/mlmanager/azurite/node_modules/.bin/azurite-blob"))
TENANT = "72f988bf-0000-4000-8000-00000000cafe"
CLIENT_ID = "5e1c7a2b-0000-4000-8000-0000000c1d00"
SECRET = "azure-client-secret-never-in-a-log-9b2e"
SUBSCRIPTION = "00000000-0000-4000-8000-00000000f00d"
GROUP = "mlmanager-rg"
WORKSPACE = "mlmanager-ws"
IMAGE = "mlmanagertest.azurecr.io/mlmanager-serving:{version}"
TIMEOUT = 15.0  # the worker's AZURE_TIMEOUT_SECONDS (provisioning here takes 0.3 s)
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@dataclass
class Azure:
    arm: ArmStandIn
    proxy: ConnectProxy
    certificates: Certificates
    storage_port: int

    def blobs(self) -> list[str]:
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient(
            f"https://127.0.0.1:{self.storage_port}/{AZURITE_ACCOUNT}",
            credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY},
            connection_verify=str(self.certificates.ca),
        )
        return [b.name for b in service.get_container_client(CONTAINER).list_blobs()]


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azure]:
    if not AZURITE.is_file():
        message = f"no Azurite at {AZURITE} (run `make azurite`, or set AZURITE)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from azure.storage.blob import BlobServiceClient

    root = tmp_path_factory.mktemp("azure")
    certificates = make_certificates(
        root, ["127.0.0.1", "localhost", f"{AZURITE_ACCOUNT}.blob.localhost"]
    )
    port = free_port()
    azurite = start_azurite(str(AZURITE), root, port, certificates)
    service = BlobServiceClient(
        f"https://127.0.0.1:{port}/{AZURITE_ACCOUNT}",
        credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY},
        connection_verify=str(certificates.ca),
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            service.create_container(CONTAINER)
            break
        except Exception:
            if azurite.poll() is not None or time.monotonic() > deadline:
                stop(azurite)
                raise AssertionError((root / "azurite.log").read_text()[-3000:]) from None
            time.sleep(0.2)
    proxy = ConnectProxy()
    arm = ArmStandIn(
        certificates,
        tenant=TENANT,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        subscription=SUBSCRIPTION,
        resource_group=GROUP,
        workspace=WORKSPACE,
        storage_port=port,
    ).start()
    try:
        yield Azure(arm, proxy, certificates, port)
    finally:
        arm.stop()
        proxy.stop()
        stop(azurite)


@pytest.fixture(scope="module")
def server(azure: Azure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLManagerProcess]:
    home = tmp_path_factory.mktemp("azureml") / "home"
    proc = MLManagerProcess(
        home,
        environment="azure",
        azure_username=CLIENT_ID,
        azure_password=SECRET,
        azure_tenant_id=TENANT,
        azure_subscription_id=SUBSCRIPTION,
        azure_resource_group=GROUP,
        azure_workspace=WORKSPACE,
        azure_cloud_metadata_url=azure.arm.metadata_url,
        azure_serving_image=IMAGE,
        azure_poll_seconds=0.05,
        azure_timeout_seconds=TIMEOUT,
        # requests' own variables: the CA of the stand-ins, the proxy to the storage host.
        requests_ca_bundle=azure.certificates.ca,
        https_proxy=azure.proxy.url,
        no_proxy="127.0.0.1",
    )
    try:
        proc.wait_ready(timeout=300)  # generous: the machine may be shared
        with tracking_as(proc.url, ("admin", ADMIN_PASSWORD), "azureml"):
            yield proc
    finally:
        proc.stop()


def iris_like(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(4.0, 1.5, (rows, len(FEATURES))), columns=FEATURES)


@pytest.fixture(scope="module")
def models(server: MLManagerProcess) -> tuple[str, str]:
    """Two versions of a classifier (URIs)."""
    x = iris_like(200, 1)
    uris = []
    for seed in (1, 2):
        y = np.where(x.petal_length + seed * 0.1 * x.sepal_width > 6.0, "virginica", "setosa")
        model = LogisticRegression(max_iter=500).fit(x, y)
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                model, name="model", signature=infer_signature(x), input_example=x.head(5)
            )
        uris.append(info.model_uri)
    return uris[0], uris[1]


@pytest.fixture(scope="module")
def api(server: MLManagerProcess) -> MLManagerClient:
    return MLManagerClient(server.url, "admin", ADMIN_PASSWORD)


def deployment(api: MLManagerClient, name: str, status: str = "DEPLOYED") -> dict[str, Any]:
    found = [d for d in api.deployments(target="azure") if d["name"] == name]
    return next(d for d in found if d["status"] == status)


def changes(calls: list[str]) -> list[str]:
    """The calls that change something (reads and polls left out)."""
    return [c for c in calls if not c.startswith("GET ")]


def body_of(arm: ArmStandIn, method: str, suffix: str, since: int = 0) -> Any:
    """The JSON body of the last ``method`` call whose path ends with ``suffix``."""
    with arm.lock:
        found = [c for c in arm.calls[since:] if c.method == method and c.path.endswith(suffix)]
    assert found, f"no {method} …{suffix}"
    return found[-1].body


def test_deploy_registers_the_model_and_serves_it_from_a_new_endpoint(
    azure: Azure, server: MLManagerProcess, api: MLManagerClient, models: tuple[str, str]
) -> None:
    """`mlmanager deploy azure`: register the model (files to Azurite), the serving image
    as an environment, create the endpoint, create the deployment, route all traffic to
    it; each waited for with progress lines."""
    arm = azure.arm
    since = len(arm.calls)
    env = clean_environment() | {
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD,
    }
    command = [sys.executable, "-m", "mlmanager", "deploy", "azure", "--model-uri", models[0]]
    command += ["--endpoint-name", "iris-ep", "--model-name", "iris"]
    started = time.monotonic()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    job = deployment(api, "iris-ep")
    job = api.job(job["job_id"])
    print(f"DEPLOY_AZURE through the CLI against the stand-ins: {elapsed:.1f}s")
    print("\n".join(f"{ln['time'][11:23]} {ln['message']}" for ln in api.logs(job["id"])["lines"]))
    calls = arm.call_log(since)
    assert arm.unknown() == []
    n = job["id"]
    assert changes(calls) == [
        "POST /datastores/workspaceblobstore/listSecrets",
        f"PUT /models/iris/versions/j{n}",
        f"PUT /environments/mlmanager-iris-ep/versions/j{n}",
        "PUT /onlineEndpoints/iris-ep",
        f"PUT /onlineEndpoints/iris-ep/deployments/mlm-j{n}",
        "PUT /onlineEndpoints/iris-ep",
    ]
    model = body_of(arm, "PUT", f"/models/iris/versions/j{n}", since)["properties"]
    assert model["modelType"] == "custom_model"
    assert model["modelUri"].startswith("azureml://")
    environment = body_of(arm, "PUT", f"/environments/mlmanager-iris-ep/versions/j{n}", since)
    assert environment["properties"]["image"].startswith("mlmanagertest.azurecr.io/")
    routes = environment["properties"]["inferenceConfig"]
    assert routes["scoringRoute"] == {"port": 8080, "path": "/invocations"}
    assert routes["readinessRoute"] == routes["livenessRoute"] == {"port": 8080, "path": "/ping"}
    created = body_of(arm, "PUT", "/onlineEndpoints/iris-ep", since)
    assert created["properties"]["authMode"] == "Key"
    assert created["properties"]["traffic"] == {f"mlm-j{n}": 100}
    deployed = body_of(arm, "PUT", f"/deployments/mlm-j{n}", since)
    assert deployed["sku"]["name"] == "Default" and deployed["sku"]["capacity"] == 1
    properties = deployed["properties"]
    assert properties["instanceType"] == "Standard_DS1_v2"  # the defaults 0.1 cores, 0.5 GB
    assert properties["endpointComputeType"] == "Managed"
    assert properties["model"].endswith(f"/models/iris/versions/j{n}")
    assert properties["environmentId"].endswith(f"/environments/mlmanager-iris-ep/versions/j{n}")
    assert any(b.endswith("/model/model.bundle") for b in azure.blobs())
    assert any("blob.localhost" in h for h in azure.proxy.hosts)

    live = arm.state.endpoints["iris-ep"].body
    assert live["properties"]["traffic"] == {f"mlm-j{n}": 100}
    record = deployment(api, "iris-ep")
    spec = record["spec"]
    assert spec["deployment"] == f"mlm-j{n}"
    assert spec["url"] == "https://iris-ep.eastus.inference.ml.azure.com/score"
    assert (spec["workspace"], spec["resource_group"]) == (WORKSPACE, GROUP)
    assert spec["runtime"] == "mlrunner" and spec["created_endpoint"] is True
    log = job_log_text(api, n)
    assert f"deployment mlm-j{n}: Creating" in log
    assert f"deployment mlm-j{n}: Succeeded" in log
    assert "endpoint iris-ep: Succeeded" in log


def test_an_existing_endpoint_is_refused_without_replace(
    api: MLManagerClient, models: tuple[str, str]
) -> None:
    payload = {"model_uri": models[1], "endpoint_name": "iris-ep", "model_name": "iris"}
    job = run_to_end(api, "DEPLOY_AZURE", payload)
    assert job["status"] == "FAILURE"
    assert "deploy with replace" in job["error"]


def test_replace_switches_the_traffic_to_a_new_deployment_and_deletes_the_old(
    azure: Azure, api: MLManagerClient, models: tuple[str, str]
) -> None:
    """The deployments plugin (`-C target=azure`), update: a new deployment (2 cores, 6 GB:
    Standard_DS2_v2), all traffic to it, then the old deployment deleted and its model
    and environment archived."""
    from mlflow.deployments import get_deploy_client

    arm = azure.arm
    before = deployment(api, "iris-ep")["spec"]
    since = len(arm.calls)
    client = get_deploy_client("mlmanager")
    answer = client.update_deployment(  # type: ignore[union-attr]
        "iris-ep",
        models[1],
        config={"target": "azure", "model_name": "iris", "cpu_cores": 2, "allocated_ram": 6},
    )
    job = api.job(answer["job_id"])
    assert job["status"] == "SUCCESS", (job, job_log_text(api, job["id"]))
    n, old = job["id"], before["deployment"]
    assert changes(arm.call_log(since)) == [
        "POST /datastores/workspaceblobstore/listSecrets",
        f"PUT /models/iris/versions/j{n}",
        f"PUT /environments/mlmanager-iris-ep/versions/j{n}",
        f"PUT /onlineEndpoints/iris-ep/deployments/mlm-j{n}",
        "PUT /onlineEndpoints/iris-ep",
        f"DELETE /onlineEndpoints/iris-ep/deployments/{old}",
        f"PUT /models/iris/versions/{before['model_version']}",  # archived
        f"PUT /environments/mlmanager-iris-ep/versions/{before['model_version']}",  # archived
    ]
    deployed = body_of(arm, "PUT", f"/deployments/mlm-j{n}", since)
    assert deployed["properties"]["instanceType"] == "Standard_DS2_v2"
    assert body_of(arm, "PUT", "/onlineEndpoints/iris-ep", since)["properties"]["traffic"] == {
        f"mlm-j{n}": 100
    }
    archived = body_of(arm, "PUT", f"/models/iris/versions/{before['model_version']}", since)
    assert archived["properties"]["isArchived"] is True
    assert sorted(d for e, d in arm.state.deployments if e == "iris-ep") == [f"mlm-j{n}"]
    assert [d["status"] for d in api.deployments(target="azure") if d["name"] == "iris-ep"][:2] == [
        "DEPLOYED",
        "DELETED",
    ]


def test_reconcile_recreates_a_deployment_deleted_by_hand(
    azure: Azure, api: MLManagerClient
) -> None:
    """The deployment removed behind ML Manager's back (as in the portal): RECONCILE puts
    the recorded deployment back (same model, environment and size)."""
    arm = azure.arm
    record = deployment(api, "iris-ep")
    name = record["spec"]["deployment"]
    with arm.lock:
        del arm.state.deployments[("iris-ep", name)]
    since = len(arm.calls)
    repair = run_to_end(api, "RECONCILE", {"deployment_id": record["id"]})
    assert repair["status"] == "SUCCESS", (repair, job_log_text(api, repair["id"]))
    assert f"create deployment {name}" in job_log_text(api, repair["id"])
    assert changes(arm.call_log(since)) == [f"PUT /onlineEndpoints/iris-ep/deployments/{name}"]
    properties = body_of(arm, "PUT", f"/deployments/{name}", since)["properties"]
    assert properties["instanceType"] == record["spec"]["instance_type"]
    assert properties["model"].endswith(f"/models/iris/versions/{record['spec']['model_version']}")


def test_undeploy_deletes_the_endpoint_it_created(
    azure: Azure, api: MLManagerClient, server: MLManagerProcess
) -> None:
    arm = azure.arm
    record = deployment(api, "iris-ep")
    since = len(arm.calls)
    job = api.delete_deployment(record["id"])
    for kind, data in api.follow(job["id"]):
        if kind == "end":
            assert data["status"] == "SUCCESS", (data, job_log_text(api, job["id"]))
    version = record["spec"]["model_version"]
    assert changes(arm.call_log(since)) == [
        "DELETE /onlineEndpoints/iris-ep",
        f"PUT /models/iris/versions/{version}",
        f"PUT /environments/mlmanager-iris-ep/versions/{version}",
    ]
    assert "iris-ep" not in arm.state.endpoints
    assert not [k for k in arm.state.deployments if k[0] == "iris-ep"]
    assert deployment(api, "iris-ep", status="DELETED")["id"] == record["id"]


def test_a_failed_provisioning_leaves_nothing_behind(
    azure: Azure, api: MLManagerClient, models: tuple[str, str]
) -> None:
    """The deployment ends Failed (its container never gets ready): the job fails with
    Azure's reason, deletes the endpoint it created, archives the model and environment,
    and records the deployment FAILED with the reason."""
    arm = azure.arm
    since = len(arm.calls)
    payload = {"model_uri": models[0], "endpoint_name": "failing-ep", "model_name": "iris"}
    job = run_to_end(api, "DEPLOY_AZURE", payload)
    assert job["status"] == "FAILURE"
    assert "liveness probe failed" in job["error"], job["error"]
    n = job["id"]
    assert changes(arm.call_log(since))[-4:] == [
        f"DELETE /onlineEndpoints/failing-ep/deployments/mlm-j{n}",
        "DELETE /onlineEndpoints/failing-ep",
        f"PUT /environments/mlmanager-failing-ep/versions/j{n}",  # archived
        f"PUT /models/iris/versions/j{n}",  # archived
    ]
    assert "failing-ep" not in arm.state.endpoints
    assert arm.state.models[("iris", f"j{n}")]["properties"]["isArchived"] is True
    record = deployment(api, "failing-ep", status="FAILED")
    assert FAILURE.partition(": ")[2] in record["spec"]["failure_reason"]


def test_a_deployment_that_never_finishes_times_out_and_leaves_nothing(
    azure: Azure, api: MLManagerClient, models: tuple[str, str]
) -> None:
    arm = azure.arm
    payload = {"model_uri": models[0], "endpoint_name": "slow-ep", "model_name": "iris"}
    job = run_to_end(api, "DEPLOY_AZURE", payload)
    assert job["status"] == "FAILURE"
    assert f"still Creating after {TIMEOUT:.0f}s" in job["error"], job["error"]
    assert "slow-ep" not in arm.state.endpoints
    assert (
        "gave up waiting" in deployment(api, "slow-ep", status="FAILED")["spec"]["failure_reason"]
    )


def test_the_client_secret_is_in_no_log(
    azure: Azure, server: MLManagerProcess, api: MLManagerClient
) -> None:
    """The secret reached Azure AD (the stand-in checks it: every deploy above signed in)
    but no job's log, no job, and neither the server's nor the worker's output."""
    assert any(c.path.endswith("/oauth2/v2.0/token") for c in azure.arm.calls)
    jobs = api.jobs(limit=100)
    assert len(jobs) >= 5
    for job in jobs:
        assert SECRET not in job_log_text(api, job["id"])
        assert SECRET not in json.dumps(job)
    assert SECRET not in server.log.read_text()
