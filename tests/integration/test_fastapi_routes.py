"""MLflow's FastAPI routes on a real `mlmanager up` (issue 22): served, and behind our auth.

`mlflow server` under gunicorn serves Flask alone; ours also serves MLflow's FastAPI
routes (mlflow_server/native.py). An OpenTelemetry SDK exports spans to /v1/traces and
the trace is then found through MLflow's trace search; every native route needs a user.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from tests.support.processes import ROOT, clean_environment
from tests.support.servers import ADMIN_PASSWORD, MLManagerProcess, started_server

ADMIN = ("admin", ADMIN_PASSWORD)
CAROL = ("carol", "carol-password-Aa1!")

# Prints MLflow's own route table (Flask url_map + the native routes of its basic-auth
# FastAPI app, as `mlflow server --app-name basic-auth` builds it under uvicorn) and,
# for each route, which part of our dispatcher answers it.
ROUTE_TABLE = """
import json, os, re
os.environ["_MLFLOW_SGI_NAME"] = "uvicorn"
from mlflow.server import auth
reference = auth.create_app()
from mlflow.server import app as flask_app
from mlflow_server.native import Dispatcher, native_routes
def sample(path):
    return re.sub(r"<[^>]+>|\\{[^}]+\\}", "x", path)
skip = {"HEAD", "OPTIONS"}
routes = [(m, r.rule) for r in flask_app.url_map.iter_rules() for m in r.methods - skip]
natives = [(m, r.path) for r in native_routes(reference) for m in r.methods]
ours = Dispatcher(flask_app)
print(json.dumps({
    "native": natives,
    "unserved": [(m, p) for m, p in routes + natives if ours.serves(m, sample(p)) is None],
}))
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MLManagerProcess]:
    home = tmp_path_factory.mktemp(f"fastapi-{request.param}") / "home"
    with started_server(request, home, request.param, "fastapi") as proc:
        proc.create_user(*CAROL)
        yield proc


def _experiment(server: MLManagerProcess, name: str) -> str:
    r = requests.post(
        f"{server.url}/api/2.0/mlflow/experiments/create", json={"name": name}, auth=ADMIN
    )
    assert r.status_code == 200, r.text
    return str(r.json()["experiment_id"])


def test_otlp_spans_are_readable_through_trace_search(server: MLManagerProcess) -> None:
    from mlflow import MlflowClient
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    experiment = _experiment(server, f"otlp-{time.time_ns()}")
    auth = requests.auth._basic_auth_str(*ADMIN)
    exporter = OTLPSpanExporter(
        endpoint=f"{server.url}/v1/traces",
        headers={"x-mlflow-experiment-id": experiment, "Authorization": auth},
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("predict") as span:
        span.set_attribute("rows", 3)
    provider.shutdown()

    import os

    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN
    try:
        traces = MlflowClient(tracking_uri=server.url).search_traces(locations=[experiment])
    finally:
        del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
    assert [t.data.spans[0].name for t in traces] == ["predict"]


def test_v1_traces_needs_a_user_and_permission(server: MLManagerProcess) -> None:
    experiment = _experiment(server, f"private-{time.time_ns()}")
    r = requests.post(
        f"{server.url}/v1/traces",
        data=b"",
        headers={"x-mlflow-experiment-id": experiment, "Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 401, r.text
    # carol has READ (the default permission): MLflow's basic-auth refuses her a trace create.
    r = requests.post(
        f"{server.url}/v1/traces",
        data=b"",
        headers={"x-mlflow-experiment-id": experiment, "Content-Type": "application/x-protobuf"},
        auth=CAROL,
    )
    assert r.status_code == 403, r.text


def _table(server: MLManagerProcess) -> dict[str, list[list[str]]]:
    env = clean_environment()
    env.update(
        PYTHONPATH=str(ROOT),
        MLFLOW_FLASK_SERVER_SECRET_KEY="route-table-key",
        MLFLOW_AUTH_CONFIG_PATH=str(server.home / "basic_auth.ini"),
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    proc = subprocess.run(
        [sys.executable, "-c", ROUTE_TABLE], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_every_route_of_mlflow_server_is_ours_and_every_native_one_needs_a_user(
    server: MLManagerProcess,
) -> None:
    table = _table(server)
    assert table["unserved"] == []
    assert any(path == "/v1/traces" for _, path in table["native"])
    public = re.compile(r"^/health$|/mlflow/server-info$")
    for method, path in table["native"]:
        url = server.url + re.sub(r"\{[^}]+\}", "x", path)
        r = requests.request(method, url, timeout=30)
        if public.search(path):
            assert r.status_code == 200, (method, path, r.status_code)
        else:
            assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
