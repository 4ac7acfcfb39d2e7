"""The model a job deploys: resolved and downloaded once, into a private directory.

A deploy reads a model many times: its flavors and signature, its input example,
the estimator itself, the files a pyfunc representation stores, an H2O MOJO.
Read through the URI, each of these asked the tracking server again and
downloaded the model again. :meth:`ModelSource.open` asks once and downloads
once, into a temporary directory of this process's user (mode 0700, removed by
:meth:`ModelSource.close`, which the handler runs when the job ends however it
ends); every later read is of those files. Every deployment target takes one.

Measured per ``DEPLOY_DATABASE`` job of a scikit-learn model onto a table with
rows (``tests/integration/test_model_source.py`` counts the tracking-store calls
and artifact downloads): 12 tracking calls and 8 downloads before, 1 and 1 now.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from shared.errors import InvalidPayload

# Flavors whose loaded object is a scikit-learn style estimator (shared.scoring.flavors
# converts them to ONNX); any other MLflow model is scored as pyfunc.
ESTIMATOR_FLAVORS = ("sklearn", "xgboost", "lightgbm")
# Flavors whose framework the database never loads: ONNX or a refusal, no pyfunc fallback.
NATIVE_FLAVORS = ("keras", "spark")
H2O_FLAVOR = "h2o"
_VERSION_URI = re.compile(r"models:/(?P<name>[^/@]+)/(?P<version>\d+)")
_ALIAS_URI = re.compile(r"models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)")
_RUN_URI = re.compile(r"runs:/(?P<run>[^/]+)/.+")


class SourceKind(StrEnum):
    """What a model is, as far as deploying it goes."""

    SKLEARN = "sklearn"
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"
    H2O = "h2o"  # MLflow's h2o flavor: exported to a MOJO at deploy time
    MOJO = "mojo"  # an H2O MOJO zip logged as an artifact (no MLflow model around it)
    KERAS = "keras"  # Keras 3: exported to ONNX at deploy time (the keras extra)
    SPARK = "spark"  # a Spark ML PipelineModel: converted to ONNX (the spark extra)
    PYFUNC = "pyfunc"  # anything else MLflow can load

    @property
    def is_h2o(self) -> bool:
        return self in (SourceKind.H2O, SourceKind.MOJO)


def is_mojo_artifact(model_uri: str) -> bool:
    """Whether ``model_uri`` names a zip artifact (an H2O MOJO), not an MLflow model."""
    return model_uri.lower().endswith(".zip")


@dataclass(frozen=True)
class ModelSource:
    """One model's files on this machine, and what its ``MLmodel`` says about it.

    ``path`` is the model's directory (the MOJO file for ``SourceKind.MOJO``);
    ``uri`` the URI it was resolved from (what a deployment records).
    """

    uri: str
    path: Path
    kind: SourceKind
    flavors: dict[str, Any]
    signature: Any  # mlflow.models.ModelSignature | None
    run_id: str | None
    model_id: str | None  # MLflow's logged model id (m-...), if the model has one
    version: str | None  # the registered model version the URI names, if any
    _workdir: Path | None = None

    @classmethod
    def open(cls, model_uri: str) -> ModelSource:
        """Download ``model_uri`` into a new private temporary directory; close it after use."""
        import mlflow.artifacts

        workdir = Path(tempfile.mkdtemp(prefix="mlmanager-model-"))  # mode 0700
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(workdir))
            )
            source = cls.from_local(model_uri, local, workdir)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return source

    @classmethod
    def from_local(cls, model_uri: str, local: Path, workdir: Path | None = None) -> ModelSource:
        """The source of a model already on disk (``workdir`` is removed by ``close``)."""
        if is_mojo_artifact(model_uri):
            run = _RUN_URI.fullmatch(model_uri)
            return cls(
                uri=model_uri,
                path=local,
                kind=SourceKind.MOJO,
                flavors={},
                signature=None,
                run_id=run["run"] if run else None,
                model_id=None,
                version=None,
                _workdir=workdir,
            )
        from mlflow.models import Model

        if not (local / "MLmodel").is_file():
            raise InvalidPayload(f"{model_uri} is not an MLflow model (it has no MLmodel file)")
        model = Model.load(str(local))
        return cls(
            uri=model_uri,
            path=local,
            kind=_kind_of(model.flavors),
            flavors=dict(model.flavors),
            signature=model.signature,
            run_id=model.run_id,
            model_id=getattr(model, "model_id", None),
            version=_version_of(model_uri),
            _workdir=workdir,
        )

    def close(self) -> None:
        """Remove the downloaded files (a second call does nothing)."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> ModelSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def input_names(self) -> list[str] | None:
        """The model's input names from its signature, if it has named inputs."""
        if self.signature is None or not self.signature.inputs.has_input_names():
            return None
        return [str(n) for n in self.signature.inputs.input_names()]

    def input_example(self) -> Any:
        """The logged input example as a pandas DataFrame, or ``None``."""
        if self.kind is SourceKind.MOJO:  # an artifact, not an MLflow model: no example
            return None
        import pandas as pd
        from mlflow.models import Model

        example = Model.load(str(self.path)).load_input_example(str(self.path))
        if example is None:
            return None
        return example if isinstance(example, pd.DataFrame) else pd.DataFrame(example)


def _kind_of(flavors: dict[str, Any]) -> SourceKind:
    if H2O_FLAVOR in flavors:
        return SourceKind.H2O
    for flavor in (*ESTIMATOR_FLAVORS, *NATIVE_FLAVORS):
        if flavor in flavors:
            return SourceKind(flavor)
    return SourceKind.PYFUNC


def _version_of(model_uri: str) -> str | None:
    """The registered model version a ``models:/`` URI names (an alias costs one call)."""
    if match := _VERSION_URI.fullmatch(model_uri):
        return match["version"]
    if match := _ALIAS_URI.fullmatch(model_uri):
        import mlflow

        version = mlflow.MlflowClient().get_model_version_by_alias(match["name"], match["alias"])
        return str(version.version)
    return None
