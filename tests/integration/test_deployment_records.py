"""The deployment record: typed spec and runtime stats, stored and read through one store."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine

from shared.deployments import DatabaseDeploymentSpec, DeploymentStats, DeploymentStore
from shared.migrations import upgrade
from tests.support.engines import EngineFor

SPEC = DatabaseDeploymentSpec(
    db_schema="ml",
    db_table="iris",
    representation_id=3,
    format="onnx",
    kind="classification",
    trigger="RUNMODEL_iris_abc",
    trigger_mode="statement",
    mode="sync",
    keys=[("id", "BIGINT")],
    features=["sepal_length", "sepal_width"],
    prediction_columns=["prediction", "setosa"],
    created_table=True,
    max_batch_size=500,
)


@pytest.fixture
def engine(db_url: str, engine_for: EngineFor) -> Engine:
    eng = engine_for(db_url)
    upgrade(eng)
    return eng


def test_a_database_record_round_trips_typed(engine: Engine) -> None:
    store = DeploymentStore(engine)
    recorded = store.record(target="database", name="ml.iris", user="ann", run_id="r", spec=SPEC)
    read = store.get(recorded.id)
    assert read.spec == SPEC and isinstance(read.spec, DatabaseDeploymentSpec)
    assert read.stats == DeploymentStats() and read.undeployed_by_job is None
    assert read.undeploy_job() == (
        "UNDEPLOY_DATABASE",
        {"run_id": "r", "db_schema": "ml", "db_table": "iris"},
    )
    with engine.connect() as conn:
        (listed,) = DeploymentStore.deployed(conn, target="database", user="ann")
        DeploymentStore.retire(conn, listed, job_id=9)
        conn.commit()
        assert DeploymentStore.retired_by(conn, "database", "ml.iris", 9) is not None
    assert store.get(recorded.id).details["undeployed_by_job"] == 9
    # A target without a spec model yet (SageMaker today) records none.
    cloud = store.record(target="sagemaker", name="app", user="ann", run_id="r")
    assert store.get(cloud.id).spec is None and store.get(cloud.id).details == {}


def test_a_spec_refuses_an_unknown_trigger_mode_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="trigger_mode"):
        DatabaseDeploymentSpec.model_validate({**SPEC.model_dump(), "trigger_mode": "hourly"})
