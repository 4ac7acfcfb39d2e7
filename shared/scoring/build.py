"""Building a model's representation: ONNX when it converts and agrees, else MLflow pyfunc."""

from __future__ import annotations

import tempfile
import time
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
    sample_inputs,
)
from shared.scoring.kinds import Column, output_columns
from shared.scoring.onnx_convert import convert
from shared.scoring.parity import CheckRows, check_rows, compare, shown
from shared.scoring.representation import Representation, RepresentationFormat
from shared.scoring.runtime import Row, Scorer, model_archive


def build_representation(
    model_uri: str,
    sample: pd.DataFrame,
    method: str | None = None,
    tolerance: float = 1e-4,
) -> Representation:
    """The fastest faithful representation of ``model_uri``.

    ``sample`` holds rows to check the conversion on (extra columns are
    ignored when the model has a signature). The first ONNX conversion that,
    on every checked row (``shared.scoring.parity``: the sample, its NULL
    variants, rows on split thresholds), gives equal labels and numbers within
    ``tolerance`` times ``max(1, |expected|)`` is kept, and the worst
    difference per column is logged; if none does, the deploy is refused with
    the mismatches shown. Models that do not convert become pyfunc.
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
    rows: CheckRows | None = None
    verdicts = []
    started = time.monotonic()
    for label, payload in conversion.candidates():
        if rows is None:
            rows = check_rows(loaded.model, info.kind, info.method, frame)
            columns = {name: rows.frame[name].tolist() for name in rows.frame.columns}
        candidate = representation(RepresentationFormat.ONNX, payload)
        try:
            scorer = Scorer.from_representation(candidate)
        except InvalidPayload as exc:  # e.g. inputs the scorer cannot feed
            conversion.failures.append(f"{label}: {exc.message}")
            continue
        actual = scorer.score(columns)
        verdict = compare(outputs, rows, actual, tolerance, "ONNX")
        if not verdict.mismatches:
            for note in rows.notes:
                logger.info("{}", note)
            logger.info(
                "ONNX ({}) reproduces the model on {}; worst difference per column: {} "
                "(checked in {:.1f} s)",
                label,
                rows.describe(),
                verdict.report(),
                time.monotonic() - started,
            )
            return candidate
        logger.info(
            "ONNX ({}) differs from the model on {} values, worst per column: {}",
            label,
            len(verdict.mismatches),
            verdict.report(),
        )
        verdicts.append((label, verdict))
    if not verdicts:
        logger.info(
            "model {} does not convert to ONNX ({}); falling back to MLflow pyfunc (slower)",
            model_uri,
            "; ".join(conversion.failures),
        )
        return representation(RepresentationFormat.PYFUNC, _archive(model_uri))
    assert rows is not None  # a verdict was made on them
    label, verdict = min(verdicts, key=lambda lv: len(lv[1].mismatches))
    raise InvalidPayload(
        f"ONNX does not reproduce {model_uri} on {len(verdict.mismatches)} values of the "
        f"{rows.describe()} checked (tolerance {tolerance:g}; closest conversion {label}, "
        f"worst difference per column: {verdict.report()}): {shown(verdict.mismatches)}"
    )


def refuse_mismatches(
    model_uri: str,
    outputs: Sequence[Column],
    expected: list[Row],
    actual: list[Row],
    tolerance: float,
    scorer: str,
) -> None:
    """Refuse the deploy unless ``scorer``'s predictions reproduce the model's own."""
    rows = CheckRows(pd.DataFrame(index=range(len(expected))), expected, [""] * len(expected))
    mismatches = compare(outputs, rows, actual, tolerance, scorer).mismatches
    if mismatches:
        raise InvalidPayload(
            f"{scorer} does not reproduce {model_uri} on the {len(expected)} sample rows "
            f"(tolerance {tolerance:g}): {shown(mismatches)}"
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
