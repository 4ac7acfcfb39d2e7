"""Who may deploy what where, against a real `mlmanager up` (server and worker processes)
on SQLite and PostgreSQL: owner-or-admin for every way of changing a deployment, the
protected tables and the allowed schemas (checked at submit and again by the worker),
listing other users' jobs, and MLflow's read permission on the model being deployed.

Users: ann logs and registers a model and deploys it; bob may read it (MLflow's
default READ) but does not own ann's deployments; carol is denied ann's experiment and
registered model (MLflow 3.17's grant DENY: it refuses NO_PERMISSIONS as a grant).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlflow
import pytest
import requests
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine

from shared.ledger import Ledger
from tests.support import custom_models  # noqa: F401  (first: imports mlflow.pyfunc quietly)
from tests.support.engines import EngineFor
from tests.support.indb import features, read_rows
from tests.support.mlflow_store import INPUT_EXAMPLE_WARNING, log_sklearn
from tests.support.pg import PostgresServer
from tests.support.servers import ADMIN_PASSWORD, MLManagerProcess

pytestmark = [pytest.mark.postgres, INPUT_EXAMPLE_WARNING]

ADMIN = ("admin", ADMIN_PASSWORD)
ANN = ("ann", "ann-password-1234")
BOB = ("bob", "bob-password-1234")
CAROL = ("carol", "carol-password-1234")
# Ordinary users may deploy into these only (the allow-list setting under test); the
# SQLite database has one schema, main.
ALLOWED = "main,apps"
ENDED = ("SUCCESS", "FAILURE", "CANCELLED")


@dataclass
class World:
    server: MLManagerProcess
    schema: str  # where the tests deploy (allowed)
    other_schema: str  # not allowed for ordinary users
    run_id: str
    logged_uri: str  # models:/m-...
    registered: str  # registered model name, version 1, alias champion

    @property
    def is_sqlite(self) -> bool:
        return self.server.db_url.startswith("sqlite")


@contextmanager
def mlflow_user(user: tuple[str, str]) -> Iterator[None]:
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict(zip(keys, user, strict=True)))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def grant(server: MLManagerProcess, user: str, kind: str, resource: str, permission: str) -> None:
    """The MLflow permission of ``user`` on one experiment or registered model (instead of
    the one it had: a creator holds MANAGE)."""
    base = f"{server.url}/api/3.0/mlflow/users/permissions"
    resource_ref = {"username": user, "resource_type": kind, "resource_id": resource}
    requests.post(f"{base}/revoke", json=resource_ref, auth=ADMIN, timeout=30)
    r = requests.post(
        f"{base}/grant", json={**resource_ref, "permission": permission}, auth=ADMIN, timeout=30
    )
    assert r.status_code == 200, r.text


def set_admin(server: MLManagerProcess, user: str, is_admin: bool) -> None:
    r = requests.patch(
        f"{server.url}/api/2.0/mlflow/users/update-admin",
        json={"username": user, "is_admin": is_admin},
        auth=ADMIN,
        timeout=30,
    )
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    home = tmp_path_factory.mktemp(f"authz-{request.param}") / "home"
    cleanup = None
    if request.param == "sqlite":
        proc = MLManagerProcess(home, deploy_allowed_schemas=ALLOWED)
    else:
        pg: PostgresServer = request.getfixturevalue("pg_server")
        cleanup = pg.database(f"authz_{time.time_ns()}")
        proc = MLManagerProcess(home, db_url=cleanup.__enter__(), deploy_allowed_schemas=ALLOWED)
    previous_uri = mlflow.get_tracking_uri()
    try:
        proc.wait_ready()
        for user in (ANN, BOB, CAROL):
            proc.create_user(*user)
        mlflow.set_tracking_uri(proc.url)
        name = f"ann_model_{request.param}"
        with mlflow_user(ANN):
            experiment = mlflow.create_experiment(f"ann-{request.param}-{time.time_ns()}")
            mlflow.set_experiment(experiment_id=experiment)
            x = features(60, 1)
            logged_uri = log_sklearn(LogisticRegression().fit(x, x.score > 0), x)
            run_id = mlflow.last_active_run().info.run_id  # type: ignore[union-attr]
            mlflow.register_model(logged_uri, name)
            mlflow.MlflowClient().set_registered_model_alias(name, "champion", "1")
        grant(proc, "carol", "experiment", experiment, "DENY")
        grant(proc, "carol", "registered_model", name, "DENY")
        sqlite = request.param == "sqlite"
        yield World(
            proc,
            "main" if sqlite else "apps",
            "aux" if sqlite else "elsewhere",
            run_id,
            logged_uri,
            name,
        )
    finally:
        mlflow.set_tracking_uri(previous_uri)
        proc.stop()
        if cleanup is not None:
            cleanup.__exit__(None, None, None)


def call(world: World, method: str, path: str, auth: Any, **kw: Any) -> requests.Response:
    return requests.request(method, f"{world.server.api}{path}", auth=auth, timeout=60, **kw)


def post_job(world: World, auth: Any, handler: str, payload: dict[str, Any]) -> requests.Response:
    return call(world, "POST", "/jobs", auth, json={"handler_name": handler, "payload": payload})


def wait_job(world: World, job_id: int, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = call(world, "GET", f"/jobs/{job_id}", ADMIN).json()
        if job["status"] in ENDED:
            lines = call(world, "GET", f"/jobs/{job_id}/logs", ADMIN).json()["lines"]
            job["log"] = "\n".join(ln["message"] for ln in lines)
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end")


def run(world: World, auth: Any, handler: str, payload: dict[str, Any]) -> dict[str, Any]:
    r = post_job(world, auth, handler, payload)
    assert r.status_code == 201, r.text
    return wait_job(world, r.json()["id"])


def deploy_payload(world: World, table: str, **extra: Any) -> dict[str, Any]:
    return {
        "model_uri": world.logged_uri,
        "db_schema": world.schema,
        "db_table": table,
        "create_model_table": True,
        "primary_key": {"id": "BIGINT"},
        **extra,
    }


def undeploy_payload(world: World, table: str) -> dict[str, Any]:
    return {"model_uri": world.logged_uri, "db_schema": world.schema, "db_table": table}


def active_deployment(world: World, table: str) -> dict[str, Any] | None:
    name = f"{world.schema}.{table}"
    found = call(world, "GET", "/deployments?status=DEPLOYED&limit=500", ADMIN).json()
    mine = [d for d in found["deployments"] if d["name"] == name]
    return mine[0] if mine else None


def deployed_by_ann(world: World, table: str) -> dict[str, Any]:
    job = run(world, ANN, "DEPLOY_DATABASE", deploy_payload(world, table))
    assert job["status"] == "SUCCESS", job["log"]
    deployment = active_deployment(world, table)
    assert deployment is not None and deployment["user"] == "ann"
    return deployment


def refused(r: requests.Response, *words: str) -> dict[str, Any]:
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["error_code"] == "PERMISSION_DENIED"
    for word in words:
        assert word in body["message"], (word, body)
    return dict(body)


def test_only_the_owner_or_an_admin_replaces_or_undeploys_a_deployment(world: World) -> None:
    table = "owned"
    deployment = deployed_by_ann(world, table)
    name = f"{world.schema}.{table}"

    # bob, through every way of submitting a job
    refused(post_job(world, BOB, "UNDEPLOY_DATABASE", undeploy_payload(world, table)), name, "ann")
    replace = deploy_payload(world, table, replace=True, create_model_table=False)
    refused(post_job(world, BOB, "DEPLOY_DATABASE", replace), name, "ann")
    refused(post_job(world, BOB, "DEPLOY_DATABASE", {**replace, "dry_run": True}), name)
    r = requests.post(
        f"{world.server.url}/api/rest/initiate",
        auth=BOB,
        timeout=30,
        json={"handler_name": "UNDEPLOY_DATABASE", **undeploy_payload(world, table)},
    )
    refused(r, name, "ann")
    # The deployments route keeps hiding other users' deployments.
    assert call(world, "DELETE", f"/deployments/{deployment['id']}", BOB).status_code == 404
    assert active_deployment(world, table) == deployment

    # an admin may replace it (the deployment is then the admin's) ...
    job = run(world, ADMIN, "DEPLOY_DATABASE", replace)
    assert job["status"] == "SUCCESS", job["log"]
    now = active_deployment(world, table)
    assert now is not None and now["user"] == "admin" and now["id"] != deployment["id"]
    # ... so that ann no longer owns it ...
    refused(post_job(world, ANN, "UNDEPLOY_DATABASE", undeploy_payload(world, table)), "admin")
    # ... and undeploy it.
    job = run(world, ADMIN, "UNDEPLOY_DATABASE", undeploy_payload(world, table))
    assert job["status"] == "SUCCESS", job["log"]
    assert active_deployment(world, table) is None


def test_delete_of_ones_own_deployment_keeps_working(world: World) -> None:
    deployment = deployed_by_ann(world, "deleted_by_owner")
    r = call(world, "DELETE", f"/deployments/{deployment['id']}", ANN)
    assert r.status_code == 202, r.text
    assert wait_job(world, r.json()["id"])["status"] == "SUCCESS"
    assert active_deployment(world, "deleted_by_owner") is None


def catalog_of_our_jobs_table(world: World) -> list[tuple[Any, ...]]:
    """Columns and triggers of ML Manager's own jobs table."""
    if world.is_sqlite:
        return read_rows(
            world.server.db_url,
            "SELECT 'column', name FROM pragma_table_info('jobs') UNION ALL "
            "SELECT 'trigger', name FROM sqlite_master WHERE type = 'trigger' ORDER BY 1, 2",
        )
    return read_rows(
        world.server.db_url,
        "SELECT 'column', column_name::text FROM information_schema.columns "
        "WHERE table_schema = 'mlmanager' AND table_name = 'jobs' UNION ALL "
        "SELECT 'trigger', tgname::text FROM pg_trigger "
        "WHERE tgrelid = 'mlmanager.jobs'::regclass ORDER BY 1, 2",
    )


def protected_tables(world: World) -> list[tuple[str, str, str]]:
    """(schema, table, what the refusal names) nobody may deploy onto."""
    if world.is_sqlite:
        return [
            ("main", "jobs", "ML Manager's own"),
            ("main", "DEPLOYMENTS", "ML Manager's own"),
            ("main", "mlmanager_alembic_version", "ML Manager's own"),
            ("main", "sqlite_master", "SQLite's internal"),
            ("main", "sqlite_sequence", "SQLite's internal"),
        ]
    return [
        ("mlmanager", "jobs", "schema mlmanager"),
        ("mlmanager", "anything_new", "schema mlmanager"),
        ("information_schema", "tables", "system schema"),
        ("pg_catalog", "pg_class", "system schema"),
        ("pg_toast", "t", "system schema"),
        ("pg_temp_1", "t", "system schema"),
        ("public", "experiments", "MLflow's"),
        ("public", "users", "MLflow's"),
        ("public", "alembic_version", "MLflow's"),
    ]


def test_protected_tables_are_refused_to_everybody_at_submit(world: World) -> None:
    before = catalog_of_our_jobs_table(world)
    for schema, table, reason in protected_tables(world):
        for auth in (ADMIN, ANN):
            body = refused(
                post_job(
                    world, auth, "DEPLOY_DATABASE", deploy_payload(world, table, db_schema=schema)
                ),
                f"{schema}.{table}",
                reason,
            )
            assert body["field"] in ("db_schema", "db_table")
            dry = deploy_payload(world, table, db_schema=schema, dry_run=True)
            refused(post_job(world, auth, "DEPLOY_DATABASE", dry), reason)
            undeploy = {"model_uri": world.logged_uri, "db_schema": schema, "db_table": table}
            refused(post_job(world, auth, "UNDEPLOY_DATABASE", undeploy), reason)
        # A reference table is read from: the same rule.
        reference = deploy_payload(
            world, "fine", reference_schema=schema, reference_table=table, dry_run=True
        )
        body = refused(post_job(world, ADMIN, "DEPLOY_DATABASE", reference), reason)
        assert body["field"] in ("reference_schema", "reference_table")
    assert catalog_of_our_jobs_table(world) == before


def test_ordinary_users_deploy_only_into_the_allowed_schemas(world: World) -> None:
    elsewhere = {"db_schema": world.other_schema, "db_table": "t"}
    body = refused(
        post_job(world, BOB, "DEPLOY_DATABASE", deploy_payload(world, "t", **elsewhere)),
        f"schema {world.other_schema}",
        "DEPLOY_ALLOWED_SCHEMAS",
    )
    assert body["field"] == "db_schema"
    reference = deploy_payload(
        world, "t", reference_schema=world.other_schema, reference_table="r", dry_run=True
    )
    assert refused(post_job(world, BOB, "DEPLOY_DATABASE", reference))["field"] == (
        "reference_schema"
    )
    undeploy = {"model_uri": world.logged_uri, **elsewhere}
    refused(post_job(world, BOB, "UNDEPLOY_DATABASE", undeploy), "DEPLOY_ALLOWED_SCHEMAS")
    # Admins are not bound by the list (only by the protected tables).
    r = post_job(
        world, ADMIN, "DEPLOY_DATABASE", deploy_payload(world, "t", **elsewhere, dry_run=True)
    )
    assert r.status_code == 201, r.text
    wait_job(world, r.json()["id"])
    # Inside the list, an ordinary user's dry run is accepted and runs.
    job = run(world, BOB, "DEPLOY_DATABASE", deploy_payload(world, "bobs", dry_run=True))
    assert job["status"] == "SUCCESS", job["log"]


def enqueue_directly(engine: Engine, handler: str, payload: dict[str, Any], user: str) -> int:
    """A job that never went through the server's checks."""
    return Ledger(engine).enqueue(handler, payload, user, max_attempts=1).id


def test_the_worker_refuses_jobs_that_bypassed_the_submit_checks(
    world: World, engine_for: EngineFor
) -> None:
    table = "bypassed"
    deployed_by_ann(world, table)
    engine = engine_for(world.server.db_url)
    before = catalog_of_our_jobs_table(world)
    protected_schema, protected_table, _ = protected_tables(world)[0]
    jobs = {
        "bob undeploys ann's": (
            "UNDEPLOY_DATABASE",
            undeploy_payload(world, table),
            "bob",
            "deployed by ann",
        ),
        "bob replaces ann's": (
            "DEPLOY_DATABASE",
            deploy_payload(world, table, replace=True, create_model_table=False),
            "bob",
            "deployed by ann",
        ),
        "admin onto our own table": (
            "DEPLOY_DATABASE",
            deploy_payload(world, protected_table, db_schema=protected_schema),
            "admin",
            "ML Manager",
        ),
        "admin's dry run onto our own table": (
            "DEPLOY_DATABASE",
            deploy_payload(world, protected_table, db_schema=protected_schema, dry_run=True),
            "admin",
            "ML Manager",
        ),
        "bob outside the allowed schemas": (
            "DEPLOY_DATABASE",
            deploy_payload(world, "t", db_schema=world.other_schema),
            "bob",
            "DEPLOY_ALLOWED_SCHEMAS",
        ),
        "a run the server did not resolve": (
            "DEPLOY_DATABASE",
            {**deploy_payload(world, "unresolved"), "model_uri": None, "run_id": world.run_id},
            "ann",
            "not resolved",
        ),
    }
    ids = {
        what: enqueue_directly(engine, handler, payload, user)
        for what, (handler, payload, user, _) in jobs.items()
    }
    for what, job_id in ids.items():
        job = wait_job(world, job_id)
        assert job["status"] == "FAILURE", (what, job["log"])
        assert jobs[what][3] in job["error"], (what, job["error"])
    deployment = active_deployment(world, table)
    assert deployment is not None and deployment["user"] == "ann"
    assert catalog_of_our_jobs_table(world) == before

    # The worker tells admins apart (it asks the server): an admin's job goes through.
    job_id = enqueue_directly(engine, "UNDEPLOY_DATABASE", undeploy_payload(world, table), "admin")
    job = wait_job(world, job_id)
    assert job["status"] == "SUCCESS", job["log"]
    assert active_deployment(world, table) is None


def test_listing_another_users_jobs_is_refused(world: World) -> None:
    r = call(world, "GET", "/jobs?user=ann", BOB)
    assert refused(r, "other users")["field"] == "user"
    assert call(world, "GET", "/jobs?user=bob", BOB).status_code == 200
    assert call(world, "GET", "/jobs", BOB).status_code == 200
    assert call(world, "GET", "/jobs?user=ann", ADMIN).status_code == 200


def test_a_model_the_user_may_not_read_is_not_deployed(world: World) -> None:
    base = {k: v for k, v in deploy_payload(world, "carols").items() if k != "model_uri"}
    name = world.registered
    run_uri = f"runs:/{world.run_id}/model"
    model_id = world.logged_uri.removeprefix("models:/")
    for model, named in (
        ({"run_id": world.run_id}, world.run_id),
        ({"model_uri": run_uri}, world.run_id),
        ({"model_uri": world.logged_uri}, model_id),
        ({"model_uri": f"models:/{name}/1"}, name),
        ({"model_uri": f"models:/{name}@champion"}, name),
        ({"model_uri": f"models:/{name}/latest"}, name),
    ):
        refused(post_job(world, CAROL, "DEPLOY_DATABASE", {**base, **model}), named, "carol")
        refused(post_job(world, CAROL, "DEPLOY_KUBERNETES", model), named)
    # What does not exist is a 404 naming it, for everybody.
    for model, named in (
        ({"run_id": "nosuchrun0"}, "nosuchrun0"),
        ({"model_uri": "runs:/nosuchrun0/model"}, "nosuchrun0"),
        ({"model_uri": "models:/m-0123456789abcdef0123456789abcdef"}, "m-0123456789abcdef"),
        ({"model_uri": f"models:/{name}/99"}, "99"),
        ({"model_uri": f"models:/{name}@nosuchalias"}, "nosuchalias"),
        ({"model_uri": "models:/no_such_model/1"}, "no_such_model"),
    ):
        r = post_job(world, ADMIN, "DEPLOY_DATABASE", {**base, **model})
        assert r.status_code == 404, r.text
        assert named in r.json()["message"]

    # Whoever may read it deploys the model that was checked: the stored payload names it.
    for model, stored in (
        ({"run_id": world.run_id}, world.logged_uri),
        ({"model_uri": f"models:/{name}@champion"}, f"models:/{name}/1"),
        ({"model_uri": f"models:/{name}/latest"}, f"models:/{name}/1"),
    ):
        r = post_job(world, BOB, "DEPLOY_DATABASE", {**base, **model, "dry_run": True})
        assert r.status_code == 201, r.text
        assert (r.json()["payload"]["model_uri"], r.json()["payload"].get("run_id")) == (
            stored,
            None,
        )
        job = wait_job(world, r.json()["id"])
        assert job["status"] == "SUCCESS", job["log"]
        assert stored in job["log"]


def test_without_read_access_the_owner_rules_for_jobs_and_deployments_stay(
    world: World,
) -> None:
    table = "ann_keeps"
    deployment = deployed_by_ann(world, table)
    # carol may not change it (owner rule, whatever her model rights) ...
    refused(post_job(world, CAROL, "UNDEPLOY_DATABASE", undeploy_payload(world, table)), "ann")
    # ... nor see or cancel ann's jobs and logs ...
    job = call(world, "GET", f"/jobs/{deployment['job_id']}", ANN).json()
    for method, path in (
        ("GET", f"/jobs/{job['id']}"),
        ("GET", f"/jobs/{job['id']}/logs"),
        ("POST", f"/jobs/{job['id']}/cancel"),
    ):
        assert call(world, method, path, CAROL).status_code == 404, (method, path)
    # ... and ann, the owner, undeploys without needing to read the model again.
    grant(world.server, "ann", "registered_model", world.registered, "DENY")
    job = run(world, ANN, "UNDEPLOY_DATABASE", {**undeploy_payload(world, table)})
    assert job["status"] == "SUCCESS", job["log"]
    refused(
        post_job(
            world,
            ANN,
            "DEPLOY_DATABASE",
            {**deploy_payload(world, table), "model_uri": f"models:/{world.registered}/1"},
        ),
        world.registered,
    )


def test_the_worker_reads_admin_status_from_mlflow_not_from_the_job(
    world: World, engine_for: EngineFor
) -> None:
    """Whether the job's user is an admin is read when the job runs: bob's job is refused,
    and the same job succeeds once bob is made admin (nothing on the job claims it, so
    nothing a client sends could)."""
    table = "promoted"
    deployed_by_ann(world, table)
    engine = engine_for(world.server.db_url)
    job_id = enqueue_directly(engine, "UNDEPLOY_DATABASE", undeploy_payload(world, table), "bob")
    job = wait_job(world, job_id)
    assert job["status"] == "FAILURE" and "deployed by ann" in job["error"], job["log"]
    set_admin(world.server, "bob", True)
    try:
        job_id = enqueue_directly(
            engine, "UNDEPLOY_DATABASE", undeploy_payload(world, table), "bob"
        )
        job = wait_job(world, job_id)
        assert job["status"] == "SUCCESS", job["log"]
        assert active_deployment(world, table) is None
    finally:
        set_admin(world.server, "bob", False)
