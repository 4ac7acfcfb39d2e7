"""Custom MLflow pyfunc models of the tests (logged pickled by value, so that a database's
Python, which cannot import ``tests``, can load them)."""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd

# MLflow's pyfunc module warns about its own type hints when first imported.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*Any type hint is inferred as AnyType")
    from mlflow.pyfunc import PythonModel


class Doubler(PythonModel):
    """A model no ONNX converter knows: twice the income plus the score."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return model_input["income"] * 2.0 + model_input["score"]


class Picky(PythonModel):
    """Refuses any batch holding a score above 0.9 (a row the model cannot take)."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        if (model_input["score"] > 0.9).any():
            raise ValueError("score above 0.9")
        return model_input["income"] * 2.0 + model_input["score"]
