"""Building a model's representation: ONNX when it converts and agrees, else MLflow pyfunc.

``build_representation`` is the one way a representation is built (every target's
deploy calls it with the job's ``ModelSource``); ``representation_for`` is the same
for a bare model URI, checked on the model's input example: what a database deploy
onto an empty new table builds.
"""

from __future__ import annotations

import time

import pandas as pd
from loguru import logger

from shared.errors import InvalidPayload
from shared.model_source import NATIVE_FLAVORS, ModelSource
from shared.scoring.flavors import LoadedModel, detect_kind, load_model, sample_inputs
from shared.scoring.kinds import output_columns
from shared.scoring.onnx_convert import convert
from shared.scoring.parity import CheckRows, check_rows, compare, feature_frame, shown
from shared.scoring.representation import Representation, RepresentationFormat
from shared.scoring.runtime import model_archive, scorer_for


def representation_for(
    model_uri: str, method: str | None = None, tolerance: float = 1e-4
) -> Representation:
    """The representation a database deploy builds for ``model_uri`` with no table rows:
    downloaded once, checked on the model's input example (refused without one)."""
    with ModelSource.open(model_uri) as source:
        return build_representation(source, source_sample(source), method, tolerance)


def source_sample(source: ModelSource) -> pd.DataFrame:
    """The model's input example, its columns named as the signature's inputs."""
    example = source.input_example()
    if example is None or example.empty:
        raise InvalidPayload(
            f"no sample rows to check the conversion of {source.uri} on: the model has no "
            "input example (log it with input_example=...)"
        )
    return example


def build_representation(
    source: ModelSource,
    sample: pd.DataFrame,
    method: str | None = None,
    tolerance: float = 1e-4,
) -> Representation:
    """The fastest faithful representation of the model of ``source``.

    ``sample`` holds rows to check the conversion on (extra columns are
    ignored when the model has a signature). The first ONNX conversion that,
    on every checked row (``shared.scoring.parity``: the sample, its NULL
    variants, rows on split thresholds), gives equal labels and numbers within
    ``tolerance`` times ``max(1, |expected|)`` is kept, and the worst
    difference per column is logged; if none does, the deploy is refused with
    the mismatches shown. Models that do not convert become pyfunc.
    """
    if source.kind.is_h2o:
        from shared.scoring.mojo import build_mojo_representation

        return build_mojo_representation(source, sample, method, tolerance)
    loaded = load_model(str(source.path))
    try:
        return _build(source, loaded, sample, method, tolerance)
    finally:
        close = getattr(loaded.model, "close", None)
        if close is not None:  # a Spark pipeline's session
            close()


def _build(
    source: ModelSource,
    loaded: LoadedModel,
    sample: pd.DataFrame,
    method: str | None,
    tolerance: float,
) -> Representation:
    model_uri = source.uri
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
            run_id=source.run_id,
            model_version=source.version,
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
            scorer = scorer_for(candidate)
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
    if not verdicts and loaded.flavor in NATIVE_FLAVORS:
        raise InvalidPayload(
            f"the {loaded.flavor} model {model_uri} does not convert to ONNX, and the database "
            f"cannot load {loaded.flavor} itself: {'; '.join(conversion.failures)}"
        )
    if not verdicts:
        logger.info(
            "model {} does not convert to ONNX ({}); falling back to MLflow pyfunc (slower)",
            model_uri,
            "; ".join(conversion.failures),
        )
        # The model's files, so that scoring needs no tracking server.
        return representation(RepresentationFormat.PYFUNC, model_archive(source.path))
    assert rows is not None  # a verdict was made on them
    label, verdict = min(verdicts, key=lambda lv: len(lv[1].mismatches))
    raise InvalidPayload(
        f"ONNX does not reproduce {model_uri} on {len(verdict.mismatches)} values of the "
        f"{rows.describe()} checked (tolerance {tolerance:g}; closest conversion {label}, "
        f"worst difference per column: {verdict.report()}): {shown(verdict.mismatches)}"
    )
