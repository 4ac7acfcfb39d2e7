"""Fixtures of the scoring tests: a throwaway MLflow tracking store and a model logger."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import mlflow
import pandas as pd
import pytest
from loguru import logger
from mlflow.models import infer_signature

from tests.support.mlflow_store import LogModel, temporary_tracking_store

# MLflow's own pyfunc module warns about its own type hints when first imported
# (mlflow/types/responses.py); import it once here with just that warning ignored.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType")
    import mlflow.pyfunc


@pytest.fixture(scope="session")
def tracking_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """MLflow tracking and artifacts in a temporary SQLite store for the whole session."""
    with temporary_tracking_store(tmp_path_factory.mktemp("mlflow"), "scoring"):
        yield


@pytest.fixture
def log_model(tracking_store: None) -> LogModel:
    """Log ``model`` with the given flavor module in a new run and return its ``runs:/`` URI."""

    def log(flavor: Any, model: Any, features: pd.DataFrame, **kwargs: Any) -> str:
        kwargs.setdefault("signature", infer_signature(features))
        # The model's parameter is named per flavor, and pyfunc's first one is another.
        args = () if flavor is mlflow.pyfunc else (model,)
        if flavor is mlflow.pyfunc:
            kwargs["python_model"] = model
        with mlflow.start_run():
            # Explicit requirements: inferring them starts a subprocess per model.
            info = flavor.log_model(*args, name="model", pip_requirements=[], **kwargs)
        return str(info.model_uri)

    return log


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """The messages loguru emits during the test."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="DEBUG")
    yield lines
    logger.remove(sink)
