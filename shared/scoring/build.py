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
    is_h2o_model,
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
    if is_h2o_model(model_uri):
        from shared.scoring.mojo import build_mojo_representation

        return build_mojo_representation(model_uri, sample, method, tolerance)
    loaded = load_model(model_uri)
    inputs = loaded.signature_inputs or sample_inputs(sample)
    frame = feature_frame(sample, inputs)
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
    for payload in conversion.candidates[:-1]:
        candidate = representation(RepresentationFormat.ONNX, payload)
        actual = Scorer.from_representation(candidate).score(columns)
        if not _mismatches(outputs, expected, actual, tolerance, "ONNX"):
            return candidate
    candidate = representation(RepresentationFormat.ONNX, conversion.candidates[-1])
    actual = Scorer.from_representation(candidate).score(columns)
    refuse_mismatches(model_uri, outputs, expected, actual, tolerance, "ONNX")
    return candidate


def refuse_mismatches(
    model_uri: str,
    outputs: Sequence[Column],
    expected: list[Row],
    actual: list[Row],
    tolerance: float,
    scorer: str,
) -> None:
    """Refuse the deploy unless ``scorer``'s predictions reproduce the model's own."""
    mismatches = _mismatches(outputs, expected, actual, tolerance, scorer)
    if not mismatches:
        return
    shown = "; ".join(mismatches[:_SHOWN_MISMATCHES])
    if len(mismatches) > _SHOWN_MISMATCHES:
        shown += f"; and {len(mismatches) - _SHOWN_MISMATCHES} more"
    raise InvalidPayload(
        f"{scorer} does not reproduce {model_uri} on the {len(expected)} sample rows "
        f"(tolerance {tolerance:g}): {shown}"
    )


def _archive(model_uri: str) -> bytes:
    """The model's files, so that scoring needs no tracking server."""
    with tempfile.TemporaryDirectory(prefix="mlmanager-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        return model_archive(Path(local))


def feature_frame(sample: pd.DataFrame, inputs: tuple[Column, ...]) -> pd.DataFrame:
    missing = [c.name for c in inputs if c.name not in sample.columns]
    if missing:
        raise InvalidPayload(f"the sample rows lack model inputs: {', '.join(missing)}")
    if sample.empty:
        raise InvalidPayload("no sample rows to check the model's conversion on")
    return sample[[c.name for c in inputs]]


def _mismatches(
    outputs: Sequence[Column], expected: list[Row], actual: list[Row], tolerance: float, scorer: str
) -> list[str]:
    """One line per differing value: row, column, model value, the scorer's value."""
    found = []
    for row, (want, got) in enumerate(zip(expected, actual, strict=True)):
        for column, wanted, value in zip(outputs, want, got, strict=True):
            if not _agrees(wanted, value, tolerance):
                found.append(f"row {row} {column.name}: model {wanted!r}, {scorer} {value!r}")
    return found


def _agrees(wanted: object, value: object, tolerance: float) -> bool:
    if isinstance(wanted, float) and isinstance(value, float):
        return math.isclose(value, wanted, rel_tol=0.0, abs_tol=tolerance * max(1.0, abs(wanted)))
    return wanted == value
