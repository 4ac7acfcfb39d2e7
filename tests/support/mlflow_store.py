"""A throwaway MLflow tracking store for the tests and benchmarks that log models."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature

from shared.model_source import ModelSource

if TYPE_CHECKING:
    from shared.scoring.representation import Representation

# Warnings of MLflow's own code under this project's pins, not of ours:
# its SQLite store under SQLAlchemy 2.1, and saving an input example under pandas 3
# (it compares an index with a range).
MLFLOW_SQLITE_STORE_WARNING = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)
INPUT_EXAMPLE_WARNING = pytest.mark.filterwarnings("ignore:Operation with range is deprecated")

# The log_model fixture of tests/unit/scoring: (flavor, model, features, **kwargs) -> model URI.
LogModel = Callable[..., str]


@contextmanager
def temporary_tracking_store(root: Path, experiment: str) -> Iterator[None]:
    """MLflow tracking and artifacts in a SQLite store under ``root``, for the block."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    try:
        experiment_id = mlflow.create_experiment(
            experiment, artifact_location=(root / "art").as_uri()
        )
        mlflow.set_experiment(experiment_id=experiment_id)
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def log_model(flavor: Any, model: Any, frame: Any, **kwargs: Any) -> str:
    """Log a model with an MLflow flavor module (``mlflow.sklearn``, ``mlflow.h2o``...) in a
    new run, with the frame's signature and first rows as input example (deploys take
    sample rows from it); its model URI."""
    with mlflow.start_run():
        info = flavor.log_model(
            model,
            name="model",
            signature=infer_signature(frame),
            input_example=frame.head(5),
            # Explicit requirements: inferring them starts a subprocess per model.
            pip_requirements=[],
            **kwargs,
        )
    return str(info.model_uri)


def log_sklearn(model: Any, frame: Any, **kwargs: Any) -> str:
    """``log_model`` for a scikit-learn model."""
    return log_model(mlflow.sklearn, model, frame, **kwargs)


def frame(rows: int, seed: int, text: bool = False) -> pd.DataFrame:
    """Generated features: three numeric columns and, optionally, a text column."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {
        "age": rng.integers(18, 90, rows).astype(np.float64),
        "income": rng.normal(50.0, 15.0, rows),
        "score": rng.uniform(-1.0, 1.0, rows),
    }
    if text:
        data["color"] = rng.choice(["red", "green", "blue"], rows).astype(object)
    return pd.DataFrame(data)


def build_from_uri(model_uri: str, sample: pd.DataFrame, **options: Any) -> Representation:
    """``build_representation`` of a model URI, as a deploy job calls it: the model
    downloaded once into a ``ModelSource``, removed afterwards."""
    from shared.scoring.build import build_representation  # converters: only when building

    with ModelSource.open(model_uri) as source:
        return build_representation(source, sample, **options)
