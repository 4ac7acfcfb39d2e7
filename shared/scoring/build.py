"""Building a model's representation: ONNX when it converts and agrees, else MLflow pyfunc."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import mlflow.artifacts
import pandas as pd
from loguru import logger

from shared.errors import InvalidPayload
from shared.scoring.flavors import (
    detect_kind,
    load_model,
    model_version,
    predict_rows,
    sample_inputs,
)
from shared.scoring.kinds import Column, output_columns
from shared.scoring.onnx_convert import convert
from shared.scoring.representation import Representation, RepresentationFormat
from shared.scoring.runtime import Row, Scorer, model_archive

_SHOWN_MISMATCHES = 5


def build_representation(
    model_uri: str,
    sample: pd.DataFrame,
    method: str | None = None,
    tolerance: float = 1e-4,
) -> Representation:
    """The fastest faithful representation of ``model_uri``.

    ``sample`` holds rows to check the conversion on (extra columns are
    ignored when the model has a signature). An ONNX model is kept only if, on
    every sample row, labels are equal and numbers differ by at most
    ``tolerance`` times ``max(1, |expected|)``; otherwise the deploy is refused
    with the mismatches shown. Models that do not convert become pyfunc.
    """
    loaded = load_model(model_uri)
    inputs = loaded.signature_inputs or sample_inputs(sample)
    frame = _feature_frame(sample, inputs)
    info = detect_kind(loaded, method, frame)
    outputs = output_columns(info.kind, info.classes, info.output_names)

    def representation(fmt: RepresentationFormat, payload: bytes) -> Representation:
        return Representation(
            format=fmt,
            payload=payload,
            inputs=inputs,
            outputs=outputs,
            kind=info.kind,
            classes=info.classes,
            method=info.method,
            flavor=loaded.flavor,
            model_uri=model_uri,
            run_id=loaded.run_id,
            model_version=model_version(model_uri),
        )

    conversion = convert(loaded, info, inputs)
    if not conversion.candidates:
        logger.info(
            "model {} does not convert to ONNX ({}); falling back to MLflow pyfunc (slower)",
            model_uri,
            "; ".join(conversion.failures),
        )
        return representation(RepresentationFormat.PYFUNC, _archive(model_uri))
    expected = predict_rows(loaded.model, info.kind, info.method, frame)
    columns = {name: frame[name].tolist() for name in frame.columns}
    mismatches: list[str] = []
    for payload in conversion.candidates:
        candidate = representation(RepresentationFormat.ONNX, payload)
        actual = Scorer.from_representation(candidate).score(columns)
        mismatches = _mismatches(outputs, expected, actual, tolerance)
        if not mismatches:
            return candidate
    shown = "; ".join(mismatches[:_SHOWN_MISMATCHES])
    if len(mismatches) > _SHOWN_MISMATCHES:
        shown += f"; and {len(mismatches) - _SHOWN_MISMATCHES} more"
    raise InvalidPayload(
        f"the ONNX conversion of {model_uri} does not reproduce the model on the "
        f"{len(frame)} sample rows (tolerance {tolerance:g}): {shown}"
    )


def _archive(model_uri: str) -> bytes:
    """The model's files, so that scoring needs no tracking server."""
    with tempfile.TemporaryDirectory(prefix="mlmanager-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        return model_archive(Path(local))


def _feature_frame(sample: pd.DataFrame, inputs: tuple[Column, ...]) -> pd.DataFrame:
    missing = [c.name for c in inputs if c.name not in sample.columns]
    if missing:
        raise InvalidPayload(f"the sample rows lack model inputs: {', '.join(missing)}")
    if sample.empty:
        raise InvalidPayload("no sample rows to check the model's conversion on")
    return sample[[c.name for c in inputs]]


def _mismatches(
    outputs: Sequence[Column], expected: list[Row], actual: list[Row], tolerance: float
) -> list[str]:
    """One line per differing value: row, column, model value, ONNX value."""
    found = []
    for row, (want, got) in enumerate(zip(expected, actual, strict=True)):
        for column, wanted, value in zip(outputs, want, got, strict=True):
            if not _agrees(wanted, value, tolerance):
                found.append(f"row {row} {column.name}: model {wanted!r}, ONNX {value!r}")
    return found


def _agrees(wanted: object, value: object, tolerance: float) -> bool:
    if isinstance(wanted, float) and isinstance(value, float):
        return math.isclose(value, wanted, rel_tol=0.0, abs_tol=tolerance * max(1.0, abs(wanted)))
    return wanted == value
