"""A deploy job asks the tracking server for its model once and downloads it once.

The handler code runs in this process (``run_job``) against a SQLite target database;
``tests.support.mlflow_calls`` counts what it asks of MLflow's store and artifact store
(what would be requests to a tracking server). Before ``ModelSource`` the same job
made 12 tracking calls (get_logged_model) and 8 downloads, measured with this test on
the code before it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import text

from shared.errors import InvalidPayload
from shared.migrations import upgrade
from shared.model_source import ModelSource, SourceKind
from shared.scoring import RepresentationFormat, representation_for
from tests.support.custom_models import Doubler
from tests.support.engines import EngineFor, settings_for
from tests.support.indb import features, insert_rows, run_job
from tests.support.mlflow_calls import counting_mlflow_calls
from tests.support.mlflow_store import (
    INPUT_EXAMPLE_WARNING,
    MLFLOW_SQLITE_STORE_WARNING,
    log_sklearn,
    temporary_tracking_store,
)

pytestmark = [MLFLOW_SQLITE_STORE_WARNING, INPUT_EXAMPLE_WARNING]


@pytest.fixture(scope="module")
def artifact_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("mlflow")
    with temporary_tracking_store(root, "model_source"):
        yield root / "art"


def test_a_deploy_job_reads_its_model_from_the_server_once(
    artifact_root: Path, engine_for: EngineFor, sqlite_url: str, tmp_path: Path
) -> None:
    """One call to resolve the logged model, one download; the files are gone afterwards."""
    train = features(200, 1)
    model = LogisticRegression(max_iter=500).fit(train, train.score > 0)
    uri = log_sklearn(model, train)
    engine = engine_for(sqlite_url)
    upgrade(engine)
    settings = settings_for(sqlite_url, tmp_path)
    with engine.begin() as conn:  # a table with rows: sample rows from it and the example
        conn.execute(
            text("CREATE TABLE loans (id BIGINT PRIMARY KEY, age REAL, income REAL, score REAL)")
        )
    rows = [(i, *r) for i, r in enumerate(features(30, 2).itertuples(index=False))]
    insert_rows(sqlite_url, "loans", ["id", "age", "income", "score"], rows, "main")
    before = set(Path(tempfile.gettempdir()).glob("mlmanager-model-*"))

    with counting_mlflow_calls(artifact_root) as calls:
        lines = run_job(
            engine,
            settings,
            "DEPLOY_DATABASE",
            {"model_uri": uri, "db_schema": "main", "db_table": "loans"},
        )

    print(calls.describe())
    assert any("30 from main.loans, 5 from the input example" in line for line in lines), lines
    assert len(calls.downloads) == 1, calls.describe()
    assert calls.tracking == {"get_logged_model": 1}, calls.describe()
    after = set(Path(tempfile.gettempdir()).glob("mlmanager-model-*"))
    assert after == before  # the job's private copy was removed
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM deployments")).all() == [("DEPLOYED",)]


def test_the_source_tells_the_model_kind_and_is_removed_on_close(artifact_root: Path) -> None:
    train = features(50, 3)
    sklearn_uri = log_sklearn(LogisticRegression().fit(train, train.score > 0), train)

    with mlflow.start_run() as run:  # no signature, no input example
        mlflow.pyfunc.log_model(name="custom", python_model=Doubler(), pip_requirements=[])

    with ModelSource.open(sklearn_uri) as source:
        assert source.kind is SourceKind.SKLEARN
        assert source.input_names == ["age", "income", "score"]
        assert source.run_id is not None and source.model_id == sklearn_uri.split("/")[-1]
        assert (source.path / "MLmodel").is_file()
        example = source.input_example()
        assert list(example.columns) == ["age", "income", "score"] and len(example) == 5
    assert not source.path.exists()
    with ModelSource.open(f"runs:/{run.info.run_id}/custom") as custom:
        assert custom.kind is SourceKind.PYFUNC and custom.run_id == run.info.run_id
        assert custom.input_example() is None
    with pytest.raises(InvalidPayload, match="no input example"):
        representation_for(f"runs:/{run.info.run_id}/custom")


def test_representation_for_builds_what_a_deploy_checks_on_the_input_example(
    artifact_root: Path,
) -> None:
    train = features(80, 4)
    model = LogisticRegression(max_iter=500).fit(train, train.income > 50)
    uri = log_sklearn(model, train)

    with counting_mlflow_calls(artifact_root) as calls:
        rep = representation_for(uri)

    assert rep.format is RepresentationFormat.ONNX and rep.model_uri == uri
    assert [c.name for c in rep.inputs] == ["age", "income", "score"]
    assert len(calls.downloads) == 1, calls.describe()
