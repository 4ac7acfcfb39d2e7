"""Prediction columns as plain lists: what every scorer returns and a set-based UPDATE binds.

A leaf module (numpy only): the scorers (``runtime``, ``jvm``) and the model's own
predictions (``flavors``, ``mojo``) all shape their outputs here.
"""

from __future__ import annotations

import math
from typing import Any, TypeAlias

import numpy as np

from shared.scoring.kinds import ModelKind

Row: TypeAlias = tuple[Any, ...]


def columns_from(
    kind: ModelKind, primary: np.ndarray, probabilities: np.ndarray | None
) -> list[list[Any]]:
    """The prediction columns as lists (what a set-based UPDATE binds), NaN turned into ``None``.

    ``primary`` holds the labels (classification, clustering), the values
    (regression) or the 2-D outputs (multi-output); ``probabilities`` the class
    probabilities of a classifier, when it has them. A classification row whose
    probabilities hold a NaN gets a NULL label as well, since its argmax means nothing.
    """
    if kind is ModelKind.CLASSIFICATION:
        labels = _labels(primary.reshape(-1))
        if probabilities is None:
            return [labels]
        probs = np.asarray(probabilities, dtype=np.float64)
        unknown: np.ndarray = np.asarray(np.isnan(probs).any(axis=1))
        if unknown.any():
            gone = unknown.tolist()
            labels = [None if bad else label for label, bad in zip(labels, gone, strict=True)]
            probs = np.where(unknown[:, None], np.nan, probs)
        return [labels, *(_numbers(probs[:, j]) for j in range(probs.shape[1]))]
    if kind is ModelKind.REGRESSION:
        return [_numbers(primary.reshape(-1))]
    if kind is ModelKind.CLUSTERING:
        return [[int(v) for v in primary.reshape(-1).tolist()]]
    matrix = np.asarray(primary, dtype=np.float64).reshape(len(primary), -1)
    return [_numbers(matrix[:, j]) for j in range(matrix.shape[1])]


def _labels(values: np.ndarray) -> list[str | None]:
    """Labels as text: integer and boolean labels in one conversion, others one by one."""
    if values.dtype.kind in "iub":
        return values.astype(str).tolist()
    return [_text(label) for label in values.tolist()]


def _numbers(values: np.ndarray) -> list[float | None]:
    """Floats, with NaN as ``None`` (scanned only when a NaN is there)."""
    values = np.asarray(values, dtype=np.float64)
    missing = np.isnan(values)
    if not missing.any():
        return values.tolist()
    return [None if gone else v for v, gone in zip(values.tolist(), missing.tolist(), strict=True)]


def _text(label: object) -> str | None:
    if label is None or (isinstance(label, float) and math.isnan(label)):
        return None
    return label.decode() if isinstance(label, bytes) else str(label)


def is_null(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
