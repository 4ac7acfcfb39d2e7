"""Fixtures of the integration tests: a migrated database, its ledger, real workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from shared.handlers import SPECS
from shared.ledger import Ledger
from shared.migrations import upgrade
from shared.settings import Settings
from tests.support.artifacts import served  # noqa: F401 (a fixture of several modules)
from tests.support.elasticsearch import es_node  # noqa: F401 (a fixture of several modules)
from tests.support.engines import EngineFor, settings_for
from tests.support.handlers import create_test_tables
from tests.support.mlflow_store import temporary_tracking_store
from tests.support.workers import StartWorker, WorkerProcess


@pytest.fixture(scope="module")
def tracking(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """A throwaway MLflow tracking store for the module's tests (one experiment per module)."""
    experiment = request.module.__name__.rsplit(".", 1)[-1]
    with temporary_tracking_store(tmp_path_factory.mktemp("mlflow"), experiment):
        yield


@pytest.fixture
def deployed_db(db_url: str, engine_for: EngineFor, tmp_path: Path) -> tuple[str, Engine, Settings]:
    """A migrated database to deploy onto: (URL, engine, settings)."""
    engine = engine_for(db_url)
    upgrade(engine)
    return db_url, engine, settings_for(db_url, tmp_path)


@pytest.fixture
def engine(db_url: str, engine_for: EngineFor) -> Engine:
    eng = engine_for(db_url)
    upgrade(eng)
    create_test_tables(eng)
    return eng


@pytest.fixture
def ledger(engine: Engine) -> Ledger:
    led = Ledger(engine)
    # The workers seed their handlers at start; the test may enqueue before that.
    led.seed_handlers({name: spec.description for name, spec in SPECS.items()})
    return led


@pytest.fixture
def start_worker(db_url: str, tmp_path: Path) -> Iterator[StartWorker]:
    workers: list[WorkerProcess] = []

    def start(wait: bool = True, **settings: object) -> WorkerProcess:
        settings.setdefault("job_retry_backoff_seconds", 0.1)
        worker = WorkerProcess(db_url, tmp_path, f"worker{len(workers)}", **settings)
        workers.append(worker)
        if wait:
            worker.wait_healthy()
        return worker

    yield start
    for worker in workers:
        worker.stop()
