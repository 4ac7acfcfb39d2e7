"""The REST API against a real `mlmanager up` (server and worker processes), on SQLite
and on PostgreSQL."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from shared.deployments import DatabaseDeploymentSpec, DeploymentStore, SageMakerDeploymentSpec
from shared.handlers import SPECS
from tests.support.pg import PostgresServer
from tests.support.processes import clean_environment
from tests.support.servers import ADMIN_PASSWORD, MLManagerProcess

ADMIN = ("admin", ADMIN_PASSWORD)
ANN = ("ann", "ann-password-1234")
BOB = ("bob", "bob-password-1234")

# A valid payload per handler (fields and defaults of REFERENCE.md).
VALID = {
    "DEPLOY_DATABASE": {"run_id": "abc123", "db_schema": "ml", "db_table": "iris"},
    "UNDEPLOY_DATABASE": {"run_id": "abc123", "db_schema": "ml", "db_table": "iris"},
    "DEPLOY_KUBERNETES": {"model_uri": "models:/iris/1", "base_replicas": 2},
    "UNDEPLOY_KUBERNETES": {"run_id": "abc123"},
    "DEPLOY_AWS": {"run_id": "abc123", "app_name": "iris-app"},
    "DEPLOY_AZURE": {
        "run_id": "abc123",
        "workspace": "ws",
        "endpoint_name": "iris-ep",
        "resource_group": "rg",
        "model_name": "iris",
    },
    "SCHEDULE_RETRAIN": {
        "run_id": "abc123",
        "name": "iris",
        "cron_exp": "0 3 * * *",
        "model_name": "iris",
        "metric": "accuracy",
    },
    "WATCH_ELASTICSEARCH": {
        "context_name": "ctx",
        "entity_id": "e1",
        "job_name": "retrain-iris",
        "completion_msgs": ["done"],
    },
    # A handler not offered under ENVIRONMENT=default: these jobs may run before they are
    # cancelled, and then fail without switching anything the other tests use.
    "ENABLE_SERVICE": {"service": "DEPLOY_AWS"},
    "DISABLE_SERVICE": {"service": "DEPLOY_AWS"},
    "RECORD": {"steps": 1},
    "NOOP": {},
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MLManagerProcess]:
    home = tmp_path_factory.mktemp(f"api-{request.param}") / "home"
    if request.param == "sqlite":
        proc = MLManagerProcess(home)
        cleanup = None
    else:
        pg: PostgresServer = request.getfixturevalue("pg_server")
        cleanup = pg.database(f"api_{int(time.time() * 1000)}")
        proc = MLManagerProcess(home, db_url=cleanup.__enter__())
    try:
        proc.wait_ready()
        proc.create_user(*ANN)
        proc.create_user(*BOB)
        yield proc
    finally:
        proc.stop()
        if cleanup is not None:
            cleanup.__exit__(None, None, None)


@pytest.fixture(scope="module")
def known_run(server: MLManagerProcess) -> str:
    """A run, and version 1 of registered model iris made from it: submitting a deploy
    resolves the model it names (tests/integration/test_authorization.py)."""
    mlflow_api = f"{server.url}/api/2.0/mlflow"

    def post(path: str, body: dict[str, Any]) -> Any:
        r = requests.post(f"{mlflow_api}/{path}", json=body, auth=ADMIN, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    run_id = str(post("runs/create", {"experiment_id": "0"})["run"]["info"]["run_id"])
    post("registered-models/create", {"name": "iris"})
    source = f"runs:/{run_id}/model"
    post("model-versions/create", {"name": "iris", "source": source, "run_id": run_id})
    return run_id


def existing(payload: dict[str, Any], run_id: str) -> dict[str, Any]:
    """``payload`` naming ``run_id`` instead of VALID's made-up run."""
    return {k: run_id if v == "abc123" else v for k, v in payload.items()}


def call(
    server: MLManagerProcess, method: str, path: str, auth: Any = ADMIN, **kw: Any
) -> requests.Response:
    return requests.request(method, f"{server.api}{path}", auth=auth, timeout=30, **kw)


def submit(server: MLManagerProcess, handler: str, payload: dict[str, Any], auth: Any = ANN) -> Any:
    r = call(server, "POST", "/jobs", auth, json={"handler_name": handler, "payload": payload})
    assert r.status_code == 201, r.text
    return r.json()


def wait_job(server: MLManagerProcess, job_id: int, auth: Any = ANN, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = call(server, "GET", f"/jobs/{job_id}", auth).json()
        if job["status"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end: {job}")


def test_nothing_but_health_answers_without_a_user(server: MLManagerProcess) -> None:
    assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
    spec = call(server, "GET", "/openapi.json").json()
    values = {
        "job_id": "1",
        "deployment_id": "1",
        "name": "NOOP",
        "upload_id": "0" * 24,
        "part_number": "1",
    }
    for path, operations in spec["paths"].items():
        concrete = path.format(**values)
        for method, operation in operations.items():
            # A route whose URL is its credential (security [], the artifact part route)
            # takes no login: without its signature it refuses (403) with or without one.
            expected = 403 if operation.get("security") == [] else 401
            r = requests.request(method, f"{server.url}{concrete}", json={}, timeout=10)
            assert r.status_code == expected, (method, path, r.status_code)
            r = requests.request(
                method, f"{server.url}{concrete}", json={}, auth=("ann", "wrong"), timeout=10
            )
            assert r.status_code == expected, (method, path, "wrong password")
    unauthenticated = [
        (path, method)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == []
    ]
    assert unauthenticated == [
        ("/api/2.0/mlmanager/artifact-parts/{upload_id}/{part_number}", "put")
    ]


def test_server_processes_load_the_specs_but_not_the_worker(server: MLManagerProcess) -> None:
    """The server imports payload specs only: RECORD (of HANDLER_SPEC_MODULES) is offered and
    runs, yet no gunicorn process maps onnxruntime, and the app, built in the environment of
    a real gunicorn worker, has imported no ``bobby`` module."""
    handlers = {h["name"] for h in call(server, "GET", "/handlers").json()["handlers"]}
    assert {"RECORD", "DEPLOY_DATABASE"} <= handlers
    job = submit(server, "RECORD", {"steps": 1})
    assert wait_job(server, job["id"])["status"] == "SUCCESS"
    gunicorn = [
        p
        for p in psutil.Process(server.proc.pid).children(recursive=True)
        if any("gunicorn" in part for part in p.cmdline())
    ]
    assert len(gunicorn) >= 2, "no gunicorn master and worker found"  # master + workers
    for proc in gunicorn:
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libpython" in maps or "/python3" in maps  # the map of a Python process
        assert "onnxruntime" not in maps, f"gunicorn process {proc.pid} loaded onnxruntime"
    env = gunicorn[-1].environ()
    check = (
        "import sys\n"
        "from mlflow_server.app import create_app\n"
        "create_app()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('bobby', 'onnxruntime')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", check],
        env=env,
        cwd=gunicorn[-1].cwd(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_only_admins_switch_handlers(server: MLManagerProcess) -> None:
    r = call(server, "POST", "/handlers/NOOP/disable", ANN)
    assert r.status_code == 403
    assert r.json()["error_code"] == "PERMISSION_DENIED"
    r = call(
        server,
        "POST",
        "/jobs",
        ANN,
        json={"handler_name": "DISABLE_SERVICE", "payload": {"service": "NOOP"}},
    )
    assert r.status_code == 403
    assert call(server, "POST", "/handlers/NOOP/disable").json()["enabled"] is False
    r = call(server, "POST", "/jobs", ANN, json={"handler_name": "NOOP", "payload": {}})
    assert r.status_code == 409
    assert "disabled" in r.json()["message"]
    assert call(server, "POST", "/handlers/NOOP/enable").json()["enabled"] is True
    assert call(server, "POST", "/handlers/ENABLE_SERVICE/disable").status_code == 400
    assert call(server, "POST", "/handlers/NO_SUCH/enable").status_code == 404
    handlers = {h["name"]: h for h in call(server, "GET", "/handlers", ANN).json()["handlers"]}
    assert {"DEPLOY_DATABASE", "DEPLOY_KUBERNETES", "RECORD"} <= set(handlers)
    assert handlers["RECORD"]["workers"] == 1  # the worker of `mlmanager up`
    assert handlers["DEPLOY_KUBERNETES"]["workers"] == 1  # bobby/handlers/kubernetes.py
    assert "DEPLOY_AWS" not in handlers  # ENVIRONMENT=default offers no SageMaker


def test_users_see_and_cancel_only_their_own_jobs(server: MLManagerProcess) -> None:
    job = submit(server, "RECORD", {"steps": 2}, auth=BOB)
    for method, path in (
        ("GET", f"/jobs/{job['id']}"),
        ("GET", f"/jobs/{job['id']}/logs"),
        ("GET", f"/jobs/{job['id']}/logs/stream"),
        ("POST", f"/jobs/{job['id']}/cancel"),
    ):
        r = call(server, method, path, ANN)
        assert r.status_code == 404, (method, path)
        assert r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    r = requests.post(
        f"{server.url}/api/rest/logs", json={"task_id": job["id"]}, auth=ANN, timeout=10
    )
    assert r.status_code == 404
    r = call(server, "GET", "/jobs?user=bob", ANN)
    assert (r.status_code, r.json()["field"]) == (403, "user")
    ann_jobs = call(server, "GET", "/jobs?user=ann", ANN).json()["jobs"]
    assert all(j["user"] == "ann" for j in ann_jobs)
    admin_jobs = call(server, "GET", "/jobs?user=bob", ADMIN).json()["jobs"]
    assert job["id"] in [j["id"] for j in admin_jobs]
    assert call(server, "GET", f"/jobs/{job['id']}", ADMIN).status_code == 200


def test_submit_list_get_logs_and_follow_a_job(server: MLManagerProcess) -> None:
    job = submit(server, "RECORD", {"steps": 3, "sleep": 0.6, "lines": 5})
    assert job["status"] == "PENDING"
    assert job["user"] == "ann"
    assert job["created_at"].endswith("Z") and len(job["created_at"]) == 24  # ...T..:..:..123Z

    # Follow the log as Server-Sent Events until the job ends.
    events = []
    with requests.get(
        f"{server.api}/jobs/{job['id']}/logs/stream", auth=ANN, stream=True, timeout=60
    ) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        for raw in r.iter_lines(decode_unicode=True):
            if raw == "":
                if event:
                    events.append(event)
                event = {}
            elif not raw.startswith(":"):
                key, _, value = raw.partition(": ")
                event[key] = value
    assert events[-1]["event"] == "end"
    assert json.loads(events[-1]["data"])["status"] == "SUCCESS"
    streamed = [json.loads(e["data"]) for e in events if e["event"] == "log"]
    assert [ln["line"] for ln in streamed] == list(range(1, len(streamed) + 1))
    assert "Step 5/5: effect" in [ln["message"] for ln in streamed]

    # Incremental reads return the same lines.
    first = call(server, "GET", f"/jobs/{job['id']}/logs?limit=4", ANN).json()
    assert [ln["line"] for ln in first["lines"]] == [1, 2, 3, 4]
    rest = call(server, "GET", f"/jobs/{job['id']}/logs?after={first['next_after']}", ANN).json()
    assert [ln["message"] for ln in first["lines"] + rest["lines"]] == [
        ln["message"] for ln in streamed
    ]

    done = call(server, "GET", f"/jobs/{job['id']}", ANN).json()
    assert done["status"] == "SUCCESS" and done["finished_at"] >= done["started_at"]
    listed = call(server, "GET", "/jobs?handler=RECORD&status=SUCCESS&limit=500", ANN).json()
    assert job["id"] in [j["id"] for j in listed["jobs"]]
    ids = [j["id"] for j in call(server, "GET", "/jobs?limit=500", ANN).json()["jobs"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    assert call(server, "GET", "/jobs?status=DONE", ANN).status_code == 400
    assert call(server, "GET", "/jobs?limit=0", ANN).json()["field"] == "limit"
    assert call(server, "POST", f"/jobs/{job['id']}/cancel", ANN).status_code == 409


def test_cancel_a_running_job(server: MLManagerProcess) -> None:
    job = submit(server, "RECORD", {"steps": 40, "sleep": 20})
    deadline = time.monotonic() + 30
    while call(server, "GET", f"/jobs/{job['id']}", ANN).json()["status"] != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = call(server, "POST", f"/jobs/{job['id']}/cancel", ANN)
    assert r.status_code == 200 and r.json()["cancel_requested"] is True
    assert wait_job(server, job["id"], timeout=20)["status"] == "CANCELLED"


def test_original_routes_for_old_clients(server: MLManagerProcess) -> None:
    r = requests.post(
        f"{server.url}/api/rest/initiate",
        auth=ANN,
        timeout=10,
        json={"handler_name": "RECORD", "lines": 3},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "PENDING" and body["job_id"] > 0
    wait_job(server, body["job_id"])
    r = requests.post(
        f"{server.url}/api/rest/logs", auth=ANN, timeout=10, json={"task_id": body["job_id"]}
    )
    assert r.status_code == 200
    logs = r.json()
    assert logs["status"] == "SUCCESS"
    assert f"line 3 of job {body['job_id']}" in logs["logs"]
    r = requests.post(
        f"{server.url}/api/rest/initiate",
        auth=ANN,
        timeout=10,
        json={"handler_name": "RECORD", "colour": "red"},
    )
    assert r.status_code == 400 and r.json()["field"] == "colour"


def _invalid_value(annotation: Any) -> Any:
    text = str(annotation)
    return "not-a-mapping" if "dict" in text else {"not": "valid"}


@pytest.mark.parametrize("handler", sorted(VALID))
def test_each_handler_payload_is_validated_field_by_field(
    server: MLManagerProcess, handler: str, known_run: str
) -> None:
    spec = SPECS[handler]
    auth = ADMIN
    valid = existing(VALID[handler], known_run)
    r = call(server, "POST", "/jobs", auth, json={"handler_name": handler, "payload": valid})
    if spec.environments is not None:
        assert r.status_code == 400 and "ENVIRONMENT" in r.json()["message"]
    else:
        assert r.status_code == 201, r.text
        call(server, "POST", f"/jobs/{r.json()['id']}/cancel", auth)
    for name, field in spec.payload_model.model_fields.items():
        bad = {**VALID[handler], name: _invalid_value(field.annotation)}
        r = call(server, "POST", "/jobs", auth, json={"handler_name": handler, "payload": bad})
        assert r.status_code == 400, (handler, name, r.text)
        assert r.json()["field"] == name, (handler, name, r.json())
    r = call(
        server,
        "POST",
        "/jobs",
        auth,
        json={"handler_name": handler, "payload": {**VALID[handler], "colour": "red"}},
    )
    assert (r.status_code, r.json()["field"]) == (400, "colour")


def test_unknown_handler_and_bad_bodies(server: MLManagerProcess) -> None:
    r = call(server, "POST", "/jobs", ANN, json={"handler_name": "DEPLOY_MARS", "payload": {}})
    assert (r.status_code, r.json()["field"]) == (400, "handler_name")
    r = call(server, "POST", "/jobs", ANN, data="not json", headers={"Content-Type": "text/plain"})
    assert r.status_code == 400
    r = call(server, "POST", "/jobs", ANN, json={"handler_name": "NOOP", "payload": {}, "x": 1})
    assert (r.status_code, r.json()["field"]) == (400, "x")
    r = call(
        server,
        "POST",
        "/jobs",
        ANN,
        json={
            "handler_name": "DEPLOY_DATABASE",
            "payload": {"run_id": "a", "db_schema": 'x"; DROP TABLE jobs; --', "db_table": "t"},
        },
    )
    assert (r.status_code, r.json()["field"]) == (400, "db_schema")
    r = call(
        server,
        "POST",
        "/jobs",
        ADMIN,
        json={"handler_name": "DISABLE_SERVICE", "payload": {"service": "NO\u0000OP"}},
    )
    assert (r.status_code, r.json()["field"]) == (400, "service")
    assert call(server, "GET", "/jobs?handler=NO%00OP", ANN).json()["field"] == "handler"
    own = submit(server, "NOOP", {})
    r = call(server, "GET", f"/jobs/{own['id']}/logs?after=9223372036854775806", ANN)
    assert (r.status_code, r.json()["field"]) == (400, "after")
    assert call(server, "GET", "/jobs/999999999", ANN).status_code == 404
    assert call(server, "GET", "/deployments/1", ANN).status_code == 404
    assert call(server, "GET", "/deployments", ANN).json() == {
        "deployments": [],
        "next_offset": None,
    }


def test_mlflow_client_logs_and_registers_through_the_server(
    server: MLManagerProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ANN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ANN[1])
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    exp = client.create_experiment(f"api-{time.time_ns()}")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "auc", 0.9)
    name = f"model-{time.time_ns()}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    assert version.version == "1"
    assert client.get_registered_model(name).name == name


@pytest.mark.postgres
def test_database_logins_create_mlflow_users(pg_server: PostgresServer, tmp_path: Path) -> None:
    """AUTH_BACKEND=database: a PostgreSQL role logs in with its own password."""
    with pg_server.database(f"dbauth_{time.time_ns()}") as url:
        with pg_server.connect() as conn:
            conn.execute("DROP ROLE IF EXISTS alice")
            conn.execute("CREATE ROLE alice LOGIN PASSWORD 'alice-db-password-1'")
        proc = MLManagerProcess(tmp_path / "home", db_url=url, auth_backend="database")
        try:
            proc.wait_ready()
            alice = ("alice", "alice-db-password-1")
            assert call(proc, "GET", "/jobs", alice).status_code == 200
            job = submit(proc, "RECORD", {}, auth=alice)
            assert job["user"] == "alice"
            assert call(proc, "GET", "/jobs", ("alice", "wrong-password-1")).status_code == 401
            assert call(proc, "GET", "/jobs", ("mallory", "any-password-12")).status_code == 401
            assert call(proc, "GET", "/jobs", ADMIN).status_code == 200  # MLflow's admin too
            # Credentials that are not basic auth, and hostile bodies: as with MLflow's users.
            for url in (f"{proc.api}/jobs", f"{proc.url}/api/2.0/mlflow/experiments/search"):
                r = requests.get(url, headers={"Authorization": "Bearer abc.def.ghi"}, timeout=10)
                assert (r.status_code, r.json()["error_code"]) == (401, "UNAUTHENTICATED"), url
            r = requests.post(
                f"{proc.url}/api/2.0/mlflow/runs/search",
                data='{"experiment_ids": ["0"], "max_results": 1e400}',
                headers={"Content-Type": "application/json"},
                auth=alice,
                timeout=10,
            )
            assert r.status_code == 400 and "max_results" in r.json()["message"], r.text
            users = requests.get(
                f"{proc.url}/api/2.0/mlflow/users/get?username=alice", auth=ADMIN, timeout=10
            )
            assert users.status_code == 200 and users.json()["user"]["username"] == "alice"
            # The database password is not what MLflow stores for alice.
            log = proc.log.read_text()
            assert "alice-db-password-1" not in log
        finally:
            proc.stop()
            with pg_server.connect() as conn:
                conn.execute("DROP OWNED BY alice")
                conn.execute("DROP ROLE alice")


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    server: MLManagerProcess, tmp_path: Path
) -> None:
    """Property-based calls of every operation of the OpenAPI document (but the SSE stream,
    which only ends with its job and is tested above)."""
    schema = tmp_path / "openapi.json"
    schema.write_text(call(server, "GET", "/openapi.json").text)
    st = Path(sys.executable).with_name("st")
    try:
        proc = _schemathesis(st, schema, server)
    finally:
        # The fuzzer may have disabled handlers the tests after this one need, and
        # queued long jobs: undo both.
        for handler in call(server, "GET", "/handlers").json()["handlers"]:
            call(server, "POST", f"/handlers/{handler['name']}/enable")
        for status in ("PENDING", "RUNNING"):
            for job in call(server, "GET", f"/jobs?status={status}&limit=500").json()["jobs"]:
                call(server, "POST", f"/jobs/{job['id']}/cancel")
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert " passed" in proc.stdout


def _schemathesis(st: Path, schema: Path, server: MLManagerProcess) -> Any:
    return subprocess.run(
        [
            str(st),
            "run",
            str(schema),
            "--url",
            server.url,
            "--auth",
            f"{ADMIN[0]}:{ADMIN[1]}",
            "--checks",
            "not_a_server_error,response_schema_conformance,"
            "status_code_conformance,content_type_conformance",
            "--max-examples",
            "15",
            "--seed",
            "20261128",
            "--exclude-path-regex",
            "stream",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


# --- hostile input (issue 21): a 4xx with a JSON body on every route, never a 5xx -------
# Routes of ours and of MLflow's behind our app, each with a body holding @V@ where the
# hostile value goes, and the field it lands in.
HOSTILE_BODIES = [
    (
        "/api/2.0/mlmanager/jobs",
        '{"handler_name": "DEPLOY_KUBERNETES", '
        '"payload": {"model_uri": "models:/iris/1", "cpu_request": @V@}}',
        "payload.cpu_request",
    ),
    (
        "/api/rest/initiate",
        '{"handler_name": "DEPLOY_KUBERNETES", "model_uri": "models:/iris/1", "cpu_request": @V@}',
        "cpu_request",
    ),
    ("/api/rest/logs", '{"task_id": @V@}', "task_id"),
    ("/api/2.0/mlflow/runs/search", '{"experiment_ids": ["0"], "max_results": @V@}', "max_results"),
    ("/ajax-api/2.0/mlflow/experiments/search", '{"max_results": @V@}', "max_results"),
    (
        "/api/2.0/mlflow/runs/log-metric",
        '{"run_id": "abc", "key": "m", "value": @V@, "timestamp": 1}',
        "value",
    ),
    (
        "/api/2.0/mlflow/experiments/create",
        '{"name": "hostile", "tags": [{"key": "k", "value": @V@}]}',
        "tags.0.value",
    ),
]
DEEP = "[" * 10_000 + "]" * 10_000
HOSTILE_VALUES = {
    "1e400": ("1e400", "64-bit float"),
    "-1e400": ("-1e400", "64-bit float"),
    "NaN": ("NaN", "not a JSON number"),
    "Infinity": ("Infinity", "not a JSON number"),
    "-Infinity": ("-Infinity", "not a JSON number"),
    "5000 digits": ("9" * 5000, "integer of 5000 digits"),
    "10000 levels": (DEEP, "levels deep"),
    # Half a UTF-16 pair: a string no driver can encode (a 500 on PostgreSQL).
    "lone surrogate": ('"\\ud800"', "lone UTF-16 surrogate"),
}
HOSTILE_AUTHORIZATION = {
    "bearer": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl",
    "digest": 'Digest username="admin", realm="mlflow", nonce="1", response="2"',
    "basic, not base64": "Basic !!not-base64!!",
    "basic, empty": "Basic ",
    "basic, not UTF-8": "Basic " + base64.b64encode(b"\xe9t\xe9:password").decode(),
    "basic, NUL in user": "Basic "
    + base64.b64encode(b"ad\x00min:" + ADMIN_PASSWORD.encode()).decode(),
}


def _is_ours(path: str) -> bool:
    return path.startswith(("/api/2.0/mlmanager/", "/api/rest/"))


@pytest.mark.parametrize("name", sorted(HOSTILE_AUTHORIZATION))
def test_credentials_that_are_not_basic_auth_answer_401_json_on_every_route(
    server: MLManagerProcess, name: str
) -> None:
    routes = [
        ("GET", "/api/2.0/mlmanager/jobs"),
        ("POST", "/api/2.0/mlmanager/jobs"),
        ("POST", "/api/rest/initiate"),
        ("GET", "/api/2.0/mlflow/experiments/search?max_results=1"),
        ("POST", "/ajax-api/2.0/mlflow/runs/search"),
        ("GET", "/ajax-api/2.0/mlflow/users/current"),
        ("GET", "/"),  # the UI's page
    ]
    for method, path in routes:
        r = requests.request(
            method,
            f"{server.url}{path}",
            headers={"Authorization": HOSTILE_AUTHORIZATION[name]},
            json={"handler_name": "NOOP"},
            timeout=30,
        )
        assert r.status_code == 401, (name, method, path, r.status_code, r.text[:500])
        assert r.json()["error_code"] == "UNAUTHENTICATED", (name, path)
        assert r.headers["WWW-Authenticate"].startswith("Basic"), (name, path)


@pytest.mark.parametrize("name", sorted(HOSTILE_VALUES))
def test_hostile_json_values_answer_400_naming_the_field_on_every_route(
    server: MLManagerProcess, name: str
) -> None:
    """Non-finite or over-long numbers and 10,000-level nesting, inside a field and as the
    whole body, from an admin and from a user (MLflow checks a user's permissions on the
    body before its handler runs); nothing is stored."""
    value, words = HOSTILE_VALUES[name]
    before = call(server, "GET", "/jobs?handler=DEPLOY_KUBERNETES&limit=500").json()["jobs"]
    for path, template, field in HOSTILE_BODIES:
        if name == "10000 levels":
            field = "body"  # too deep for any parser to say where
        for body in (template.replace("@V@", value), value):
            # Bodies are read only for a user: a stranger learns nothing from them.
            r = requests.post(
                f"{server.url}{path}",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            assert r.status_code == 401, (name, path, r.status_code, r.text[:300])
            for auth in (ADMIN, ANN):
                r = requests.post(
                    f"{server.url}{path}",
                    data=body,
                    headers={"Content-Type": "application/json"},
                    auth=auth,
                    timeout=30,
                )
                where = (name, path, body[:80], auth[0], r.status_code, r.text[:500])
                assert r.status_code == 400, where
                error = r.json()
                assert error["error_code"] == "INVALID_PARAMETER_VALUE", where
                assert words in error["message"], where
                if body == value:
                    continue  # the bad value is the whole body
                assert field in error["message"], where
                # Ours name the field; MLflow's keep MLflow's format (no "field").
                assert error.get("field") == (field if _is_ours(path) else None), where
    after = call(server, "GET", "/jobs?handler=DEPLOY_KUBERNETES&limit=500").json()["jobs"]
    assert after == before


def test_mlflow_routes_refuse_bodies_that_are_not_objects(server: MLManagerProcess) -> None:
    """MLflow's handlers assume an object, or a string holding one (old clients' double
    encoding): anything else was a 500 (str.get, json.loads of a non-JSON string)."""
    bodies = ['"abc"', "[1, 2]", '"[[1]]"', json.dumps(DEEP), '"{\\"max_results\\": NaN}"']
    for path in ("/api/2.0/mlflow/runs/search", "/ajax-api/2.0/mlflow/experiments/create"):
        for body in bodies:
            for auth in (ADMIN, ANN):
                r = requests.post(
                    f"{server.url}{path}",
                    data=body,
                    headers={"Content-Type": "application/json"},
                    auth=auth,
                    timeout=30,
                )
                where = (path, body[:80], auth[0], r.status_code, r.text[:500])
                assert r.status_code == 400, where
                assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE", where
    # A double-encoded object still works, as MLflow promises old clients.
    r = requests.post(
        f"{server.url}/api/2.0/mlflow/experiments/search",
        data=json.dumps(json.dumps({"max_results": 1})),
        headers={"Content-Type": "application/json"},
        auth=ANN,
        timeout=30,
    )
    assert r.status_code == 200, r.text


def _client_env(server: MLManagerProcess, user: tuple[str, str] = ANN) -> dict[str, str]:
    env = clean_environment()
    env.update(
        MLFLOW_TRACKING_URI=server.url,
        MLFLOW_TRACKING_USERNAME=user[0],
        MLFLOW_TRACKING_PASSWORD=user[1],
        PYTHONPATH=str(Path(__file__).parents[2]),
    )
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=180, check=False)


def test_command_line_lists_follows_and_cancels_jobs(server: MLManagerProcess) -> None:
    env = _client_env(server)
    mlm = [sys.executable, "-m", "mlmanager"]
    ok = submit(server, "RECORD", {"steps": 2, "sleep": 0.4, "lines": 2})
    proc = _run([*mlm, "jobs", "logs", str(ok["id"]), "--follow"], env)
    assert proc.returncode == 0, proc.stderr
    assert "==> Step 2/4: working 1" in proc.stdout
    assert f"line 2 of job {ok['id']}" in proc.stdout
    assert "SUCCESS" in proc.stderr

    bad = submit(server, "RECORD", {"fail_times": 9}, auth=ANN)
    # max_attempts 3 with a 0.2 s backoff: ends FAILURE, and the command says so by its code.
    proc = _run([*mlm, "jobs", "logs", str(bad["id"]), "--follow"], env)
    assert proc.returncode == 1
    assert "boom on attempt 3" in proc.stdout + proc.stderr

    listed = _run([*mlm, "jobs", "list", "--handler", "RECORD", "--limit", "5"], env)
    assert listed.returncode == 0 and str(bad["id"]) in listed.stdout

    slow = submit(server, "RECORD", {"steps": 50, "sleep": 25})
    proc = _run([*mlm, "jobs", "cancel", str(slow["id"])], env)
    assert proc.returncode == 0, proc.stderr
    assert wait_job(server, slow["id"])["status"] == "CANCELLED"
    proc = _run([*mlm, "jobs", "cancel", "987654321"], env)
    assert proc.returncode != 0 and "no job 987654321" in proc.stderr


def test_command_line_deploy_validates_flags_with_the_payload_model(
    server: MLManagerProcess, known_run: str
) -> None:
    env = _client_env(server)
    mlm = [sys.executable, "-m", "mlmanager", "deploy", "database"]
    proc = _run([*mlm, "--run-id", "abc", "--db-schema", "bad name", "--db-table", "t"], env)
    assert proc.returncode != 0
    assert "--db-schema" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run(
        [
            *mlm,
            "--run-id",
            known_run,
            "--db-schema",
            "ml",
            "--db-table",
            "iris",
            "--df-schema",
            '{"x": "DOUBLE"}',
            "--trigger-mode",
            "row",
            "--no-follow",
        ],
        env,
    )
    assert proc.returncode == 0, proc.stderr
    job_id = int(proc.stderr.split("job ")[1].split()[0])
    job = call(server, "GET", f"/jobs/{job_id}", ANN).json()
    assert job["handler_name"] == "DEPLOY_DATABASE"
    assert job["payload"]["df_schema"] == {"x": "DOUBLE"}
    assert job["payload"]["trigger_mode"] == "row"
    call(server, "POST", f"/jobs/{job_id}/cancel", ANN)


def test_mlflow_deployments_plugin_drives_a_job_to_its_end(server: MLManagerProcess) -> None:
    env = _client_env(server)

    def mlflow_deployments(*args: str) -> subprocess.CompletedProcess[str]:
        return _run([sys.executable, "-m", "mlflow", "deployments", *args], env)

    def create(*config: str) -> subprocess.CompletedProcess[str]:
        options = [item for pair in config for item in ("-C", pair)]
        return mlflow_deployments(
            "create", "-t", "mlmanager", "--name", "rec", "-m", "models:/m/1", *options
        )

    proc = create("handler=RECORD", "steps=2", "lines=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = create("handler=RECORD", "fail_times=9")
    assert proc.returncode != 0
    assert "ended FAILURE" in proc.stderr and "boom on attempt" in proc.stderr
    proc = create("target=database", "db_schema=a b", "db_table=t")
    assert proc.returncode != 0 and "db_schema" in proc.stderr
    proc = mlflow_deployments("list", "-t", "mlmanager")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_deployments_are_listed_per_user_and_delete_submits_the_undeploy_job(
    server: MLManagerProcess, engine_for: Any
) -> None:
    store = DeploymentStore(engine_for(server.db_url))
    table = store.record(
        target="database",
        name="ml.iris",
        user="ann",
        run_id="run1",
        spec=DatabaseDeploymentSpec(
            db_schema="ml",
            db_table="iris",
            representation_id=1,
            format="onnx",
            kind="regression",
            trigger="RUNMODEL_iris_run1",
            trigger_mode="row",
            mode="sync",
            keys=[("id", "BIGINT")],
            features=["a"],
            prediction_columns=["prediction"],
        ),
    )
    cloud = store.record(
        target="sagemaker",
        name="iris-app",
        user="ann",
        run_id="run1",
        spec=SageMakerDeploymentSpec(
            endpoint_name="iris-app",
            region="us-east-2",
            url="https://runtime.sagemaker.us-east-2.amazonaws.com/endpoints/iris-app/invocations",
            endpoint_config="iris-app-config-j1",
            variants=[],
            image="mlmanager-serving:1",
            runtime="mlrunner",
            instance_type="ml.m5.large",
            instance_count=1,
        ),
    )
    theirs = store.record(target="kubernetes", name="svc", user="bob", run_id="run2")

    mine = call(server, "GET", "/deployments?limit=500", ANN).json()["deployments"]
    assert {d["id"] for d in mine} >= {table.id, cloud.id}
    assert theirs.id not in {d["id"] for d in mine}
    got = call(server, "GET", f"/deployments/{table.id}", ANN).json()
    assert (got["target"], got["status"], got["run_id"]) == ("database", "DEPLOYED", "run1")
    assert got["created_at"].endswith("Z")
    assert call(server, "GET", f"/deployments/{theirs.id}", ANN).status_code == 404
    assert call(server, "DELETE", f"/deployments/{theirs.id}", ANN).status_code == 404

    r = call(server, "DELETE", f"/deployments/{table.id}", ANN)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["handler_name"] == "UNDEPLOY_DATABASE"
    assert job["payload"] == {"run_id": "run1", "db_schema": "ml", "db_table": "iris"}
    call(server, "POST", f"/jobs/{job['id']}/cancel", ANN)
    # Its undeploy job is offered only where ENVIRONMENT is aws (this server: default).
    r = call(server, "DELETE", f"/deployments/{cloud.id}", ANN)
    assert r.status_code == 400 and "UNDEPLOY_AWS" in r.json()["message"], r.text
    assert "aws" in r.json()["message"]
    assert call(server, "GET", f"/deployments/{theirs.id}", ADMIN).status_code == 200
