"""SageMaker deploy benchmark (issue 16: "how long a deploy takes against the stand-ins").

Against the tests' moto server (tests/support/moto_server.py: endpoints InService after
two reads): ``DEPLOY_AWS`` jobs through a running `mlmanager up` for one logged
scikit-learn model (one create, then replaces), the job's time on the worker and per
step (from the job log). It does not include SageMaker's real provisioning (minutes).

No anchor: MLflow's own SageMaker client (``mlflow.deployments`` ``sagemaker`` target)
polls every 5 s and reads the status with ListEndpoints, so against the stand-in it
measures its sleep, not its work (tried: its create waited its whole timeout).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import requests
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from mlmanager.client import MLManagerClient
from tests.support.pg import free_port
from tests.support.processes import ROOT
from tests.support.servers import ADMIN_PASSWORD, MLManagerProcess

REPLACES = int(os.environ.get("BENCH_SAGEMAKER_REPLACES", "5"))
REGION = "us-east-2"
KEYS = {"aws_access_key_id": "AKIABENCH", "aws_secret_access_key": "bench-secret-key"}
ROLE = "arn:aws:iam::123456789012:role/mlmanager-sagemaker"
STEP = re.compile(r"Step (\d)/\d done in ([\d.]+)s")


def seconds(job: dict[str, Any]) -> float:
    started = dt.datetime.fromisoformat(job["started_at"])
    return (dt.datetime.fromisoformat(job["finished_at"]) - started).total_seconds()


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(values), 3),
        "max_s": round(max(values), 3),
        "runs": len(values),
    }


def ml_manager(api: MLManagerClient, uri: str) -> dict[str, Any]:
    first: float | None = None
    replaces: list[float] = []
    steps: dict[str, list[float]] = {}
    for i in range(REPLACES + 1):
        job = api.submit("DEPLOY_AWS", {"model_uri": uri, "app_name": "bench"})
        for kind, data in api.follow(job["id"]):
            if kind == "end":
                job = data
        assert job["status"] == "SUCCESS", job
        if i == 0:
            first = seconds(job)
            continue
        replaces.append(seconds(job))
        for line in api.logs(job["id"])["lines"]:
            found = STEP.search(line["message"])
            if found:
                steps.setdefault(f"step_{found[1]}", []).append(float(found[2]))
    return {
        "first_deploy_s": first,
        "replace": summary(replaces),
        "replace_steps_median_s": {k: round(statistics.median(v), 3) for k, v in steps.items()},
    }


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-sagemaker-") as tmp:
        root = Path(tmp)
        port = free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "tests.support.moto_server", str(port), str(root / "calls")],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        moto_url = f"http://127.0.0.1:{port}"
        server = MLManagerProcess(
            root / "home",
            environment="aws",
            aws_endpoint_url=moto_url,
            sagemaker_role=ROLE,
            sagemaker_poll_seconds=0.05,
            **KEYS,
        )
        try:
            server.wait_ready()
            requests.get(f"{moto_url}/moto-api/", timeout=10)
            os.environ["MLFLOW_TRACKING_USERNAME"] = "admin"
            os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN_PASSWORD
            mlflow.set_tracking_uri(server.url)
            rng = np.random.default_rng(1)
            x = pd.DataFrame(rng.normal(size=(200, 4)), columns=["a", "b", "c", "d"])
            model = LogisticRegression(max_iter=500).fit(x, x.a + x.b > 0)
            with mlflow.start_run():
                info = mlflow.sklearn.log_model(
                    model, name="model", signature=infer_signature(x), input_example=x.head(5)
                )
            api = MLManagerClient(server.url, "admin", ADMIN_PASSWORD)
            ours = ml_manager(api, info.model_uri)
        finally:
            server.stop()
            moto.terminate()
            moto.wait(timeout=30)
    return {
        "ml_manager": ours,
        "note": "against moto (tests/support/moto_server.py), no real provisioning; the "
        "job's time on the worker, ONNX build and parity check included",
    }
