"""The rules of who may deploy where (shared.deploy_rules), without a database: the
server and the worker both apply them (tests/integration/test_authorization.py runs
them through both)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from shared.deploy_rules import check_database_job, protected_reason
from shared.deployments import Deployment, DeploymentStats
from shared.errors import NotAuthorized
from shared.handlers import DeployDatabasePayload, UndeployDatabasePayload
from shared.settings import load_settings

SETTINGS = load_settings(db_schema="mlmanager", deploy_allowed_schemas=" apps , Scoring,")
OPEN = load_settings(db_schema="mlmanager")


@pytest.mark.parametrize(
    ("dialect", "schema", "table"),
    [
        ("postgresql", "mlmanager", "jobs"),
        ("postgresql", "MLManager", "anything"),
        ("postgresql", "pg_catalog", "pg_class"),
        ("postgresql", "pg_toast", "t"),
        ("postgresql", "pg_temp_7", "t"),
        ("postgresql", "information_schema", "tables"),
        ("postgresql", "public", "runs"),
        ("postgresql", "public", "model_versions"),
        ("postgresql", "public", "users"),
        ("postgresql", "public", "alembic_version"),
        ("sqlite", "main", "jobs"),
        ("sqlite", "main", "Job_Logs"),
        ("sqlite", "main", "mlmanager_alembic_version"),
        ("sqlite", "main", "sqlite_master"),
        ("sqlite", "main", "sqlite_sequence"),
    ],
)
def test_protected_tables(dialect: str, schema: str, table: str) -> None:
    assert protected_reason(dialect, schema, table, SETTINGS) is not None


@pytest.mark.parametrize(
    ("dialect", "schema", "table"),
    [
        ("postgresql", "apps", "jobs"),  # a user's own table may be called jobs
        ("postgresql", "public", "loans"),
        ("sqlite", "main", "loans"),
        ("sqlite", "main", "runs"),  # MLflow's tables are in another SQLite file
    ],
)
def test_unprotected_tables(dialect: str, schema: str, table: str) -> None:
    assert protected_reason(dialect, schema, table, SETTINGS) is None


def deploy(**extra: Any) -> DeployDatabasePayload:
    fields = {"model_uri": "models:/m-1", "db_schema": "apps", "db_table": "t", **extra}
    return DeployDatabasePayload.model_validate(fields)


def deployment(user: str) -> Deployment:
    now = dt.datetime.now(dt.UTC)
    return Deployment(
        id=1,
        target="database",
        name="apps.t",
        status="DEPLOYED",
        model_uri=None,
        run_id=None,
        spec=None,
        stats=DeploymentStats(),
        job_id=1,
        user=user,
        created_at=now,
        updated_at=now,
    )


class AdminQuestions:
    """An ``is_admin`` that counts how often it is asked (the worker asks the server)."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.answer


def test_another_users_deployment_needs_an_admin_and_the_question_is_asked_only_then() -> None:
    nobody = AdminQuestions(False)
    check_database_job("postgresql", deploy(), None, "bob", SETTINGS, nobody)
    check_database_job(
        "postgresql", deploy(replace=True), deployment("bob"), "bob", SETTINGS, nobody
    )
    assert nobody.asked == 0
    with pytest.raises(NotAuthorized, match="deployed by ann") as refused:
        check_database_job(
            "postgresql", deploy(replace=True), deployment("ann"), "bob", SETTINGS, nobody
        )
    assert refused.value.field == "db_table"
    admin = AdminQuestions(True)
    check_database_job(
        "postgresql", deploy(replace=True), deployment("ann"), "root", SETTINGS, admin
    )
    assert admin.asked == 1


def test_allowed_schemas_bind_ordinary_users_only() -> None:
    outside = deploy(db_schema="elsewhere")
    with pytest.raises(NotAuthorized, match="schema elsewhere") as refused:
        check_database_job("postgresql", outside, None, "bob", SETTINGS, AdminQuestions(False))
    assert refused.value.field == "db_schema"
    check_database_job("postgresql", outside, None, "root", SETTINGS, AdminQuestions(True))
    check_database_job("postgresql", deploy(db_schema="Scoring"), None, "bob", SETTINGS, bool)
    check_database_job("sqlite", deploy(db_schema="SCORING"), None, "bob", SETTINGS, bool)
    # PostgreSQL names are quoted: "APPS" is another schema than the allowed apps.
    with pytest.raises(NotAuthorized, match="schema APPS"):
        check_database_job("postgresql", deploy(db_schema="APPS"), None, "bob", SETTINGS, bool)
    check_database_job("postgresql", outside, None, "bob", OPEN, AdminQuestions(False))
    reference = deploy(reference_schema="elsewhere", reference_table="r")
    with pytest.raises(NotAuthorized) as refused:
        check_database_job("postgresql", reference, None, "bob", SETTINGS, AdminQuestions(False))
    assert refused.value.field == "reference_schema"
    # The owner removes their deployment even from a schema no longer allowed.
    undeploy = UndeployDatabasePayload.model_validate(
        {"model_uri": "models:/m-1", "db_schema": "elsewhere", "db_table": "t"}
    )
    check_database_job("postgresql", undeploy, deployment("bob"), "bob", SETTINGS, bool)
    with pytest.raises(NotAuthorized):
        check_database_job("postgresql", undeploy, None, "bob", SETTINGS, AdminQuestions(False))


def test_protected_tables_are_refused_to_admins_too() -> None:
    admin = AdminQuestions(True)
    for payload, field in (
        (deploy(db_schema="mlmanager"), "db_schema"),
        (deploy(db_schema="public", db_table="runs"), "db_table"),
        (deploy(reference_schema="information_schema", reference_table="t"), "reference_schema"),
        (deploy(reference_table="jobs"), None),
    ):
        dialect = "sqlite" if field is None else "postgresql"
        with pytest.raises(NotAuthorized, match="may not be used") as refused:
            check_database_job(dialect, payload, None, "root", OPEN, admin)
        assert refused.value.field == (field or "reference_table")
