"""DEPLOY_AWS / UNDEPLOY_AWS end to end: `mlmanager up` (server + worker, ENVIRONMENT=aws)
deploys through boto3 to moto's server (S3, SageMaker, STS) running as its own process,
extended in tests/support/moto_server.py with UpdateEndpoint, endpoints that take a few
reads to be InService, and an endpoint that fails as SageMaker reports a container that
never answers /ping.

What the stand-in cannot show (tests/support/moto_server.py): SageMaker pulling the image
and starting the container - so test_the_container_answers_as_sagemaker_starts_it runs
the container's process here, exactly as SageMaker starts it, on the archive the deploy
uploaded - and IAM checks of the role, quotas, real timings.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from mlmanager.client import MLManagerClient
from tests.support import custom_models  # (first: imports mlflow.pyfunc quietly)
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING
from tests.support.moto_server import Moto, running_moto
from tests.support.pg import free_port
from tests.support.processes import ROOT, clean_environment
from tests.support.servers import (
    ADMIN_PASSWORD,
    MLManagerProcess,
    job_log_text,
    run_to_end,
    tracking_as,
)
from tests.support.serving import MLRUNNER_JAR, ServingProcess

pytestmark = [
    INPUT_EXAMPLE_WARNING,
    pytest.mark.filterwarnings("ignore:.*Passing a Python object as `python_model`"),
]

REGION = "us-east-2"
ACCOUNT = "123456789012"  # moto's account
ACCESS_KEY = "AKIAMLMANAGERTEST01"
SECRET_KEY = "moto-secret-key-never-in-a-log-7f3a9c"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/mlmanager-sagemaker"
BUCKET = f"mlmanager-sagemaker-{REGION}-{ACCOUNT}"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    with running_moto(tmp_path_factory.mktemp("moto"), REGION, ACCESS_KEY, SECRET_KEY) as moto:
        yield moto


@pytest.fixture(scope="module")
def server(moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MLManagerProcess]:
    home = tmp_path_factory.mktemp("sagemaker") / "home"
    proc = MLManagerProcess(
        home,
        environment="aws",
        aws_endpoint_url=moto.url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        sagemaker_role=ROLE,
        sagemaker_poll_seconds=0.05,
        sagemaker_timeout_seconds=60,
    )
    try:
        proc.wait_ready()
        with tracking_as(proc.url, ("admin", ADMIN_PASSWORD), "sagemaker"):
            yield proc
    finally:
        proc.stop()


def iris_like(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(4.0, 1.5, (rows, len(FEATURES))), columns=FEATURES)


@pytest.fixture(scope="module")
def models(server: MLManagerProcess) -> tuple[str, str, LogisticRegression]:
    """Two versions of a classifier (URIs), and the second's model (to check answers)."""
    x = iris_like(200, 1)
    uris, model = [], None
    for seed in (1, 2):
        y = np.where(x.petal_length + seed * 0.1 * x.sepal_width > 6.0, "virginica", "setosa")
        model = LogisticRegression(max_iter=500).fit(x, y)
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                model, name="model", signature=infer_signature(x), input_example=x.head(5)
            )
        uris.append(info.model_uri)
    assert model is not None
    return uris[0], uris[1], model


@pytest.fixture(scope="module")
def api(server: MLManagerProcess) -> MLManagerClient:
    return MLManagerClient(server.url, "admin", ADMIN_PASSWORD)


def deployment(api: MLManagerClient, name: str, status: str = "DEPLOYED") -> dict[str, Any]:
    found = [d for d in api.deployments(target="sagemaker") if d["name"] == name]
    return next(d for d in found if d["status"] == status)


def names(moto: Moto, prefix: str) -> dict[str, list[str]]:
    """What exists in SageMaker and S3 for endpoint ``prefix``."""
    sm, s3 = moto.client("sagemaker"), moto.client("s3")
    objects = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"mlmanager/{prefix}/").get("Contents", [])
    return {
        "endpoints": [
            e["EndpointName"]
            for e in sm.list_endpoints()["Endpoints"]
            if e["EndpointName"] == prefix
        ],
        "configs": [
            c["EndpointConfigName"]
            for c in sm.list_endpoint_configs()["EndpointConfigs"]
            if c["EndpointConfigName"].startswith(f"{prefix}-config-")
        ],
        "models": [
            m["ModelName"]
            for m in sm.list_models()["Models"]
            if m["ModelName"].startswith(f"{prefix}-model-")
        ],
        "objects": [o["Key"] for o in objects],
    }


def test_deploy_creates_the_endpoint_and_waits_for_in_service(
    server: MLManagerProcess, moto: Moto, api: MLManagerClient, models: tuple[str, str, Any]
) -> None:
    """`mlmanager deploy sagemaker`: archive to S3, CreateModel, CreateEndpointConfig,
    CreateEndpoint, then DescribeEndpoint until InService, with progress lines."""
    moto.reset_calls()
    env = clean_environment() | {
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD,
    }
    started = time.monotonic()
    command = [sys.executable, "-m", "mlmanager", "deploy", "sagemaker"]
    command += ["--model-uri", models[0], "--app-name", "iris", "--sagemaker-region", REGION]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"deploy through the CLI against moto: {elapsed:.1f}s")

    print("calls:", " ".join(moto.calls()))
    calls = [c for c in moto.calls() if not c.startswith("sagemaker:Describe")]
    sagemaker_calls = [c for c in calls if c.startswith("sagemaker:")]
    assert sagemaker_calls == [
        "sagemaker:CreateModel",
        "sagemaker:CreateEndpointConfig",
        "sagemaker:CreateEndpoint",
    ]
    assert "sts:GetCallerIdentity" in calls
    assert f"s3:PUT /{BUCKET}" in calls  # the bucket, created because it was missing
    assert any(c.startswith(f"s3:PUT /{BUCKET}/mlmanager/iris/") for c in calls)
    assert moto.calls().count("sagemaker:DescribeEndpoint") >= 2  # waited through Creating

    live = moto.client("sagemaker").describe_endpoint(EndpointName="iris")
    assert live["EndpointStatus"] == "InService"
    record = deployment(api, "iris")
    spec = record["spec"]
    assert spec["endpoint_name"] == "iris"
    assert spec["region"] == REGION
    assert (
        spec["url"]
        == f"https://runtime.sagemaker.{REGION}.amazonaws.com/endpoints/iris/invocations"
    )
    assert spec["endpoint_config"] == live["EndpointConfigName"]
    assert spec["runtime"] == "mlrunner"
    assert spec["image"].startswith(f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mlmanager-serving:")
    job = api.job(record["job_id"])
    ran = dt.datetime.fromisoformat(job["finished_at"]) - dt.datetime.fromisoformat(
        job["started_at"]
    )
    print(f"DEPLOY_AWS job {job['id']}: {ran.total_seconds():.1f}s on the worker")
    print("\n".join(f"{ln['time'][11:23]} {ln['message']}" for ln in api.logs(job["id"])["lines"]))
    log = job_log_text(api, record["job_id"])
    assert "endpoint iris: Creating" in log
    assert "endpoint iris: InService" in log


def test_the_container_answers_as_sagemaker_starts_it(
    moto: Moto, api: MLManagerClient, models: tuple[str, str, Any], tmp_path: Path
) -> None:
    """The archive the deploy uploaded, unpacked as SageMaker unpacks it into /opt/ml/model
    (here a temporary directory), served by the image's `serve` with SageMaker's
    arguments; /ping and /invocations answer with the model's own predictions."""
    spec = deployment(api, "iris")["spec"]
    bucket, key = spec["variants"][-1]["model_data"].removeprefix("s3://").split("/", 1)
    archive = moto.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    model_dir = tmp_path / "opt-ml-model"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(model_dir, filter="data")
    port = free_port()
    serving = ServingProcess(
        "sagemaker",
        [str(ROOT / "infrastructure/sagemaker/serve"), "serve"],
        tmp_path / "serve.log",
        port,
        SAGEMAKER_MODEL_DIR=str(model_dir),
        SAGEMAKER_BIND_TO_PORT=str(port),
        MLRUNNER_JAR=MLRUNNER_JAR,
    ).wait_ready()
    try:
        rows = iris_like(20, 7)
        body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        answer = requests.post(f"{serving.url}/invocations", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        first = LogisticRegression(max_iter=500)
        x = iris_like(200, 1)
        first.fit(x, np.where(x.petal_length + 0.1 * x.sepal_width > 6.0, "virginica", "setosa"))
        assert answer.json()["predictions"] == first.predict(rows).tolist()
    finally:
        serving.stop()


def test_replace_moves_the_endpoint_to_a_new_configuration_and_deletes_the_old(
    moto: Moto, api: MLManagerClient, models: tuple[str, str, Any]
) -> None:
    """The deployments plugin (`-C target=sagemaker`), update: UpdateEndpoint to a new
    configuration; the old configuration, model and archive are deleted once InService."""
    from mlflow.deployments import get_deploy_client

    before = deployment(api, "iris")["spec"]
    moto.reset_calls()
    client = get_deploy_client("mlmanager")
    client.update_deployment(  # type: ignore[union-attr]
        "iris", models[1], config={"target": "sagemaker", "app_name": "iris"}
    )
    assert "sagemaker:UpdateEndpoint" in moto.calls()
    after = deployment(api, "iris")["spec"]
    assert after["endpoint_config"] != before["endpoint_config"]
    live = moto.client("sagemaker").describe_endpoint(EndpointName="iris")
    assert live["EndpointConfigName"] == after["endpoint_config"]
    left = names(moto, "iris")
    assert left["configs"] == [after["endpoint_config"]]
    assert left["models"] == [after["variants"][0]["model"]]
    assert len(left["objects"]) == 1
    assert [d["status"] for d in api.deployments(target="sagemaker") if d["name"] == "iris"] == [
        "DEPLOYED",
        "DELETED",
    ]


def test_add_keeps_the_old_variant_beside_the_new(
    moto: Moto, api: MLManagerClient, models: tuple[str, str, Any]
) -> None:
    job = run_to_end(
        api,
        "DEPLOY_AWS",
        {"model_uri": models[0], "app_name": "iris", "deployment_mode": "add"},
    )
    assert job["status"] == "SUCCESS", job
    spec = deployment(api, "iris")["spec"]
    assert len(spec["variants"]) == 2
    config = moto.client("sagemaker").describe_endpoint_config(
        EndpointConfigName=spec["endpoint_config"]
    )
    assert [v["ModelName"] for v in config["ProductionVariants"]] == [
        v["model"] for v in spec["variants"]
    ]
    assert names(moto, "iris")["configs"] == [spec["endpoint_config"]]


def test_create_refuses_an_existing_endpoint(
    api: MLManagerClient, models: tuple[str, str, Any]
) -> None:
    job = run_to_end(
        api, "DEPLOY_AWS", {"model_uri": models[0], "app_name": "iris", "deployment_mode": "create"}
    )
    assert job["status"] == "FAILURE"
    assert "already exists" in job["error"]


def shown(server: MLManagerProcess, deployment_id: int) -> dict[str, Any]:
    """GET /deployments/{id} (with the target's live drift)."""
    r = requests.get(
        f"{server.api}/deployments/{deployment_id}", auth=("admin", ADMIN_PASSWORD), timeout=30
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_undeploy_deletes_what_the_deploys_created(
    server: MLManagerProcess, moto: Moto, api: MLManagerClient
) -> None:
    """An endpoint deleted by hand shows as drift, RECONCILE re-creates it from the
    recorded configuration; deleted by hand again, the undeploy still deletes what is
    left: configuration, models and archives."""
    record = deployment(api, "iris")
    assert shown(server, record["id"])["drift"] is None
    moto.client("sagemaker").delete_endpoint(EndpointName="iris")
    assert shown(server, record["id"])["drift"] == ["endpoint iris missing"]
    repair = run_to_end(api, "RECONCILE", {"deployment_id": record["id"]})
    assert repair["status"] == "SUCCESS", repair
    assert "create endpoint iris" in job_log_text(api, repair["id"])
    live = moto.client("sagemaker").describe_endpoint(EndpointName="iris")
    assert live["EndpointConfigName"] == record["spec"]["endpoint_config"]
    moto.client("sagemaker").delete_endpoint(EndpointName="iris")
    job = api.delete_deployment(record["id"])
    for kind, data in api.follow(job["id"]):
        if kind == "end":
            assert data["status"] == "SUCCESS", data
    assert names(moto, "iris") == {"endpoints": [], "configs": [], "models": [], "objects": []}
    assert deployment(api, "iris", status="DELETED")["id"] == record["id"]


def test_a_failed_endpoint_leaves_nothing_behind(
    server: MLManagerProcess, moto: Moto, api: MLManagerClient, models: tuple[str, str, Any]
) -> None:
    """The endpoint ends Failed (its container never answers /ping): the job fails with
    SageMaker's FailureReason, removes the endpoint, configuration, model and archive it
    created, and records the deployment FAILED with the reason."""
    job = run_to_end(api, "DEPLOY_AWS", {"model_uri": models[0], "app_name": "failing-iris"})
    assert job["status"] == "FAILURE"
    assert "did not pass the ping health check" in job["error"]
    assert names(moto, "failing-iris") == {
        "endpoints": [],
        "configs": [],
        "models": [],
        "objects": [],
    }
    record = deployment(api, "failing-iris", status="FAILED")
    assert "did not pass the ping health check" in record["spec"]["failure_reason"]


def test_a_rolled_back_update_keeps_the_old_model_serving(
    moto: Moto, api: MLManagerClient, models: tuple[str, str, Any]
) -> None:
    """Blue/green: SageMaker rolls a failed update back (the stand-in: endpoints named
    *-rollback). The job fails with the FailureReason, deletes the configuration, model
    and archive it created, and the earlier deployment stays DEPLOYED and serving."""
    first = run_to_end(api, "DEPLOY_AWS", {"model_uri": models[0], "app_name": "iris-rollback"})
    assert first["status"] == "SUCCESS", first
    before = deployment(api, "iris-rollback")
    job = run_to_end(api, "DEPLOY_AWS", {"model_uri": models[1], "app_name": "iris-rollback"})
    assert job["status"] == "FAILURE"
    assert "did not pass the ping health check" in job["error"]
    live = moto.client("sagemaker").describe_endpoint(EndpointName="iris-rollback")
    assert (live["EndpointStatus"], live["EndpointConfigName"]) == (
        "InService",
        before["spec"]["endpoint_config"],
    )
    left = names(moto, "iris-rollback")
    assert left["configs"] == [before["spec"]["endpoint_config"]]
    assert left["models"] == [before["spec"]["variants"][0]["model"]]
    assert len(left["objects"]) == 1
    assert deployment(api, "iris-rollback")["id"] == before["id"]


def test_a_cancelled_deploy_removes_what_it_created(
    moto: Moto, api: MLManagerClient, models: tuple[str, str, Any]
) -> None:
    """Cancelled while the endpoint is still Creating: the wait stops at its next poll and
    the endpoint, configuration, model and archive are deleted."""
    job = api.submit("DEPLOY_AWS", {"model_uri": models[0], "app_name": "slow-iris"})
    deadline = time.monotonic() + 120
    while "endpoint slow-iris: Creating" not in job_log_text(api, job["id"]):
        assert time.monotonic() < deadline, job_log_text(api, job["id"])
        time.sleep(0.2)
    api.cancel(job["id"])
    for kind, data in api.follow(job["id"]):
        if kind == "end":
            assert data["status"] == "CANCELLED", data
    assert names(moto, "slow-iris") == {"endpoints": [], "configs": [], "models": [], "objects": []}
    assert deployment(api, "slow-iris", status="FAILED")["spec"]["failure_reason"]


def test_a_model_mlrunner_cannot_serve_goes_to_mlflows_pyfunc_image(
    moto: Moto, api: MLManagerClient, server: MLManagerProcess
) -> None:
    """A custom pyfunc model (no ONNX): the archive is the MLflow model directory and the
    model runs MLflow's pyfunc image of the region."""
    import cloudpickle

    x = pd.DataFrame({"income": [1.0, 2.0], "score": [0.5, 0.1]})
    cloudpickle.register_pickle_by_value(custom_models)
    try:
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=custom_models.Doubler(),
                signature=infer_signature(x, x.income * 2.0 + x.score),
                input_example=x,
                pip_requirements=[],
            )
    finally:
        cloudpickle.unregister_pickle_by_value(custom_models)
    job = run_to_end(api, "DEPLOY_AWS", {"model_uri": info.model_uri, "app_name": "doubler"})
    assert job["status"] == "SUCCESS", job
    spec = deployment(api, "doubler")["spec"]
    assert spec["runtime"] == "mlflow"
    assert spec["image"] == (
        f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mlflow-pyfunc:{mlflow.__version__}"
    )
    bucket, key = spec["variants"][0]["model_data"].removeprefix("s3://").split("/", 1)
    archive = moto.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert {"MLmodel", "python_model.pkl"} <= set(tar.getnames())


def test_a_region_without_images_is_a_clear_error(
    api: MLManagerClient, models: tuple[str, str, Any]
) -> None:
    payload = {"model_uri": models[0], "app_name": "far", "sagemaker_region": "af-south-9"}
    job = run_to_end(api, "DEPLOY_AWS", payload)
    assert job["status"] == "FAILURE"
    assert "af-south-9" in job["error"] and "config.json" in job["error"]


def test_the_secret_key_is_in_no_log(server: MLManagerProcess, api: MLManagerClient) -> None:
    """Not in any job's log (all the jobs above), nor in the server's and worker's output."""
    jobs = api.jobs(limit=100)
    assert len(jobs) >= 5
    for job in jobs:
        assert SECRET_KEY not in job_log_text(api, job["id"])
        assert SECRET_KEY not in json.dumps(job)
    assert SECRET_KEY not in server.log.read_text()
