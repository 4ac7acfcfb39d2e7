"""Building the representation of an H2O model: its MOJO, checked against H2O's own predictions.

Two kinds of model reach here: MLflow's ``h2o`` flavor (exported to a MOJO at
deploy time, in an H2O cluster started on demand or at ``H2O_URL``) and a MOJO
zip logged as an artifact (``runs:/<run>/path/model.zip``). Either way the
MOJO is loaded into mlrunner, which tells the model's kind, inputs and
classes, and the runner's outputs on the sample rows must equal H2O's own
predictions (from the H2O cluster) before the deploy touches any table.

Build-time code: imports MLflow, pandas and the ``h2o`` package (the ``h2o`` extra).
"""

from __future__ import annotations

import tempfile
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loguru import logger

from shared.errors import InvalidPayload, TargetUnavailable
from shared.model_source import H2O_FLAVOR, ModelSource, SourceKind
from shared.scoring.columns import columns_from
from shared.scoring.flavors import signature_inputs
from shared.scoring.jvm import JvmScorer
from shared.scoring.kinds import Column, ModelKind, SqlType, output_column_names, output_columns
from shared.scoring.parity import feature_frame, refuse_mismatches
from shared.scoring.representation import Representation, RepresentationFormat

_KINDS = {
    "classification": ModelKind.CLASSIFICATION,
    "regression": ModelKind.REGRESSION,
    "clustering": ModelKind.CLUSTERING,
}
_H2O_LOCK = threading.Lock()


def h2o_session() -> Any:
    """The ``h2o`` module, connected to a cluster (``H2O_URL``, else a local one started once)."""
    try:
        import h2o
    except ImportError as exc:
        raise TargetUnavailable(
            "deploying an H2O model needs the h2o package in the worker: "
            "pip install 'mlmanager[h2o]'"
        ) from exc
    from shared.settings import get_settings

    settings = get_settings()
    with _H2O_LOCK:
        cluster = h2o.cluster()
        if cluster is None or not cluster.is_running():
            if settings.h2o_url:
                h2o.connect(url=settings.h2o_url, verbose=False)
            else:
                h2o.init(max_mem_size=settings.h2o_max_mem_size, verbose=False)
            h2o.no_progress()
    return h2o


def build_mojo_representation(
    source: ModelSource, sample: pd.DataFrame, method: str | None, tolerance: float
) -> Representation:
    """The MOJO representation of an H2O model, refused unless it reproduces H2O's predictions."""
    if method not in (None, "predict"):
        raise InvalidPayload(
            f"an H2O model only has predict, not {method}", field="library_specific"
        )
    h2o = h2o_session()
    model_uri, run_id, version = source.uri, source.run_id, source.version
    with tempfile.TemporaryDirectory(prefix="mlmanager-h2o-") as tmp:
        own, payload, logged_inputs = _h2o_model(h2o, source, Path(tmp))
    probe = mojo_representation(payload, model_uri, run_id, version, ModelKind.REGRESSION, (), ())
    description = JvmScorer(probe).describe()
    kind = _KINDS.get(str(description["kind"]).lower())
    if kind is None:
        raise InvalidPayload(f"mlrunner cannot score H2O models of kind {description['kind']}")
    inputs = logged_inputs or tuple(
        Column(str(c["name"]), SqlType.TEXT if c["type"] == "text" else SqlType.DOUBLE)
        for c in description["inputs"]
    )
    classes = tuple(str(c) for c in description.get("classes") or ())
    rep = mojo_representation(payload, model_uri, run_id, version, kind, inputs, classes)
    frame = feature_frame(sample, inputs)
    expected = _h2o_predictions(h2o, own, rep, frame)
    actual = JvmScorer(rep).score({name: frame[name].tolist() for name in frame.columns})
    refuse_mismatches(model_uri, rep.outputs, expected, actual, tolerance, "mlrunner")
    logger.info(
        "model {}: H2O {} MOJO ({} inputs), mlrunner agrees with H2O on {} sample rows",
        model_uri,
        kind.value,
        len(inputs),
        len(frame),
    )
    return rep


def mojo_representation(
    payload: bytes,
    model_uri: str,
    run_id: str | None,
    version: str | None,
    kind: ModelKind,
    inputs: tuple[Column, ...],
    classes: tuple[str, ...],
) -> Representation:
    """A ``mojo`` representation of the MOJO ``payload`` (prediction columns from the kind)."""
    names = output_column_names(classes) if kind is ModelKind.CLASSIFICATION else ()
    return Representation(
        format=RepresentationFormat.MOJO,
        payload=payload,
        inputs=inputs,
        outputs=output_columns(kind, classes, names),
        kind=kind,
        classes=classes,
        method="predict",
        flavor=H2O_FLAVOR,
        model_uri=model_uri,
        run_id=run_id,
        model_version=version,
    )


def _h2o_model(
    h2o: Any, source: ModelSource, workdir: Path
) -> tuple[Any, bytes, tuple[Column, ...] | None]:
    """The model in the H2O cluster, its MOJO bytes and its signature's inputs."""
    if source.kind is SourceKind.MOJO:
        local = source.path
        payload = local.read_bytes()
        try:
            with zipfile.ZipFile(local) as archive:
                is_mojo = "model.ini" in archive.namelist()
        except zipfile.BadZipFile:
            is_mojo = False
        if not is_mojo:
            raise InvalidPayload(f"{source.uri} is not an H2O MOJO (a zip holding model.ini)")
        return h2o.import_mojo(str(local)), payload, None
    from mlflow import h2o as h2o_flavor

    model = h2o_flavor.load_model(str(source.path), dst_path=str(workdir))
    mojo = Path(model.save_mojo(path=str(workdir / "mojo"), force=True))
    return model, mojo.read_bytes(), signature_inputs(source.signature)


def _h2o_predictions(
    h2o: Any, model: Any, rep: Representation, frame: pd.DataFrame
) -> list[tuple[Any, ...]]:
    """H2O's own predictions on ``frame`` (in the cluster), as output tuples."""
    types = {c.name: "enum" if c.sql_type.is_text else "numeric" for c in rep.inputs}
    h2o_frame = h2o.H2OFrame(frame, column_types=types)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "single-thread conversion" advice
        predicted = model.predict(h2o_frame).as_data_frame(use_multi_thread=False)
    first = predicted.iloc[:, 0].to_numpy()
    if rep.kind is ModelKind.CLASSIFICATION:
        labels = np.array([None if pd.isna(v) else str(v) for v in first], dtype=object)
        width = len(rep.classes)
        probabilities = predicted.iloc[:, 1 : 1 + width].to_numpy(dtype=np.float64)
        columns = columns_from(rep.kind, labels, probabilities if width else None)
    else:
        columns = columns_from(rep.kind, first, None)
    return list(zip(*columns, strict=True))
