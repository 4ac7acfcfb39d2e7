"""The parity check: the rows a converted model is compared with the model on, and the verdict.

A representation is kept only if it gives the model's own predictions on
every checked row. Five example rows proved too few (a forest converted with
double inputs agreed on them and disagreed on a tenth of breast_cancer), so
the check runs on:

- the sample rows (the table's, the reference table's, the input example),
  up to ``SAMPLE_LIMIT``;
- for every input, sample rows with that input set to NULL (NaN for numbers,
  ``None`` for text: what the model sees for a NULL), and one row of NULLs
  only;
- for tree models (scikit-learn trees and forests, XGBoost, LightGBM), rows
  whose feature sits on a split threshold and on the float32 neighbours of it,
  where float32 and double comparisons part (at most ``THRESHOLD_ROWS``).

A model that itself refuses missing values (scikit-learn's linear models and
GradientBoosting raise on NaN) has no prediction to reproduce for a NULL: its
NULL rows are left out of the check, and the log says so. Such rows then get
what the conversion gives (NULL predictions for linear models, the branch
scikit-learn's tree would take for trees: ``shared.scoring.runtime``).
The worst difference per prediction column goes to the job log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shared.errors import InvalidPayload
from shared.scoring.columns import Row
from shared.scoring.kinds import Column, ModelKind

SAMPLE_LIMIT = 5000
NULL_ROWS_PER_INPUT = 25
THRESHOLD_ROWS = 6000
_SHOWN_MISMATCHES = 5


@dataclass
class CheckRows:
    """The rows of one parity check, the model's predictions on them, and what each row is."""

    frame: pd.DataFrame
    expected: list[Row]
    origins: list[str]  # what each row is ("income NULL"...; "" for a sample row)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = ", ".join(f"{n} {what}" for what, n in self.counts.items() if n)
        return f"{len(self.frame)} rows ({parts})"


def check_rows(model: Any, kind: ModelKind, method: str, sample: pd.DataFrame) -> CheckRows:
    """The sample, its NULL variants and the rows next to split thresholds, with the
    model's own predictions (``model`` is an estimator with the scikit-learn API)."""
    from shared.scoring.flavors import predict_rows

    sample = sample.head(SAMPLE_LIMIT).reset_index(drop=True)
    groups: list[tuple[str, str, pd.DataFrame]] = [("sample rows", "sample", sample)]
    for name in sample.columns:
        groups.append(
            (
                "rows with a NULL feature",
                f"{name} NULL",
                _with_null(sample.head(NULL_ROWS_PER_INPUT), [name]),
            )
        )
    groups.append(("rows with a NULL feature", "all NULL", _with_null(sample.head(1), None)))
    near = threshold_rows(model, sample)
    if near is not None:
        groups.append(("rows near split thresholds", "near a threshold", near))
    frames: list[pd.DataFrame] = []
    expected: list[Row] = []
    origins: list[str] = []
    counts: dict[str, int] = {}
    notes: list[str] = []
    refusing: list[str] = []
    for what, origin, frame in groups:
        if frame.empty:
            continue
        try:
            predicted = predict_rows(model, kind, method, frame)
        except (ValueError, TypeError) as exc:  # how scikit-learn refuses NaN or None
            if what != "rows with a NULL feature":
                raise
            refusing.append(f"{origin} ({str(exc).splitlines()[0]})")
            continue
        frames.append(frame)
        expected.extend(predicted)
        origins.extend([origin if origin != "sample" else ""] * len(frame))
        counts[what] = counts.get(what, 0) + len(frame)
    if refusing:
        notes.append(
            "the model itself refuses missing values for "
            + "; ".join(refusing[:3])
            + (f"; and {len(refusing) - 3} more" if len(refusing) > 3 else "")
            + ": rows with a NULL there are not compared (the model has no prediction for them)"
        )
    combined = pd.concat(frames, ignore_index=True)
    return CheckRows(combined, expected, origins, counts, notes)


def _with_null(frame: pd.DataFrame, names: Sequence[str] | None) -> pd.DataFrame:
    """``frame`` with the named columns (``None``: all) set to what a NULL becomes."""
    copy = frame.copy()
    for name in frame.columns if names is None else names:
        column = copy[name]
        if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(
            column.dtype
        ):
            copy[name] = np.full(len(copy), np.nan)
        else:
            copy[name] = pd.Series([None] * len(copy), index=copy.index, dtype=object)
    return copy


def threshold_rows(model: Any, sample: pd.DataFrame) -> pd.DataFrame | None:
    """Sample rows moved onto each split threshold of a tree model and its float32 neighbours.

    Only for models that read the inputs directly (a tree at the end of a
    pipeline splits transformed values, which the sample rows cover).
    """
    splits = _splits(model, sample)
    if splits is None or not splits:
        return None
    numeric = [
        i
        for i, dtype in enumerate(sample.dtypes)
        if pd.api.types.is_float_dtype(dtype) or pd.api.types.is_integer_dtype(dtype)
    ]
    pairs = sorted({(f, t) for f, t in splits if f in numeric and math.isfinite(t)})
    per_split = 4
    if len(pairs) * per_split > THRESHOLD_ROWS:
        keep = np.random.default_rng(0).choice(len(pairs), THRESHOLD_ROWS // per_split, False)
        pairs = [pairs[i] for i in sorted(keep)]
    if not pairs:
        return None
    base = sample.iloc[np.arange(len(pairs) * per_split) % len(sample)].reset_index(drop=True)
    base = base.astype({sample.columns[i]: np.float64 for i in numeric})
    values = []
    for feature, threshold in pairs:
        single = np.float32(threshold)
        values.append(
            (
                feature,
                [
                    float(threshold),
                    float(single),
                    float(np.nextafter(single, np.float32(-np.inf))),
                    float(np.nextafter(single, np.float32(np.inf))),
                ],
            )
        )
    columns = {i: base.iloc[:, i].to_numpy(copy=True) for i in numeric}
    for n, (feature, candidates) in enumerate(values):
        for k, value in enumerate(candidates):
            columns[feature][n * per_split + k] = value
    for i, column in columns.items():
        base[sample.columns[i]] = column
    return base


def _splits(model: Any, sample: pd.DataFrame) -> list[tuple[int, float]] | None:
    """(input position, threshold) of every split of a tree model, ``None`` for other models."""
    if hasattr(model, "estimators_") or hasattr(model, "tree_"):
        estimators = np.ravel(model.estimators_) if hasattr(model, "estimators_") else [model]
        found: list[tuple[int, float]] = []
        for estimator in estimators:
            tree = getattr(estimator, "tree_", None)
            if tree is None:
                return None
            inner = tree.feature >= 0
            found.extend(
                zip(tree.feature[inner].tolist(), tree.threshold[inner].tolist(), strict=True)
            )
        return found
    names = [str(c) for c in sample.columns]
    if hasattr(model, "get_booster"):  # XGBoost: features by name (f0... when unnamed)
        table = model.get_booster().trees_to_dataframe()
        table = table[table["Feature"] != "Leaf"]
        return [
            (_position(str(f), names), float(t))
            for f, t in zip(table["Feature"], table["Split"], strict=True)
        ]
    if hasattr(model, "booster_"):  # LightGBM
        table = model.booster_.trees_to_dataframe()
        table = table[table["split_feature"].notna()]
        return [
            (_position(str(f), names), float(t))
            for f, t in zip(table["split_feature"], table["threshold"], strict=True)
        ]
    return None


def _position(feature: str, names: list[str]) -> int:
    if feature in names:
        return names.index(feature)
    for prefix in ("f", "Column_"):
        if feature.startswith(prefix) and feature[len(prefix) :].isdigit():
            return int(feature[len(prefix) :])
    return -1


@dataclass(frozen=True)
class Verdict:
    """How a scorer's predictions compare with the model's on the checked rows."""

    mismatches: list[str]
    worst: dict[str, str]

    def report(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in self.worst.items())


def compare(
    outputs: Sequence[Column],
    rows: CheckRows,
    actual: list[Row],
    tolerance: float,
    scorer: str,
) -> Verdict:
    """Every differing value (row, column, model's, scorer's); the worst difference per column."""
    found: list[str] = []
    worst_numbers = [0.0] * len(outputs)
    differing = [0] * len(outputs)
    for row, (want, got) in enumerate(zip(rows.expected, actual, strict=True)):
        for j, (column, wanted, value) in enumerate(zip(outputs, want, got, strict=True)):
            if isinstance(wanted, float) and isinstance(value, float):
                worst_numbers[j] = max(worst_numbers[j], abs(value - wanted))
            if not _agrees(wanted, value, tolerance):
                differing[j] += 1
                origin = f" ({rows.origins[row]})" if rows.origins[row] else ""
                found.append(
                    f"row {row}{origin} {column.name}: model {wanted!r}, {scorer} {value!r}"
                )
    worst = {}
    for j, column in enumerate(outputs):
        if column.sql_type.is_text or column.sql_type.name in ("INTEGER", "BIGINT"):
            worst[column.name] = f"{differing[j]} differ"
        else:
            worst[column.name] = f"{worst_numbers[j]:.3g}"
    return Verdict(found, worst)


def _agrees(wanted: object, value: object, tolerance: float) -> bool:
    if isinstance(wanted, float) and isinstance(value, float):
        return math.isclose(value, wanted, rel_tol=0.0, abs_tol=tolerance * max(1.0, abs(wanted)))
    return wanted == value


def shown(mismatches: list[str]) -> str:
    """The first mismatches, and how many more."""
    text = "; ".join(mismatches[:_SHOWN_MISMATCHES])
    if len(mismatches) > _SHOWN_MISMATCHES:
        text += f"; and {len(mismatches) - _SHOWN_MISMATCHES} more"
    return text


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


def feature_frame(sample: pd.DataFrame, inputs: tuple[Column, ...]) -> pd.DataFrame:
    """The sample's model inputs, in input order; refused when one is missing or no row is."""
    missing = [c.name for c in inputs if c.name not in sample.columns]
    if missing:
        raise InvalidPayload(f"the sample rows lack model inputs: {', '.join(missing)}")
    if sample.empty:
        raise InvalidPayload("no sample rows to check the model's conversion on")
    return sample[[c.name for c in inputs]]
