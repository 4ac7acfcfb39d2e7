"""The stored form of a deployed model and its metadata."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.scoring.kinds import Column, ModelKind


class RepresentationFormat(StrEnum):
    ONNX = "onnx"
    PYFUNC = "pyfunc"
    MOJO = "mojo"  # an H2O MOJO, scored by mlrunner (the JVM)


@dataclass(frozen=True)
class Representation:
    """A model ready to score rows, as stored in ``model_representations``.

    ``payload`` is the ONNX model for ``onnx``, the model's files as a zip
    archive for ``pyfunc`` and the MOJO zip for ``mojo``; ``checksum`` is its
    sha256, so a cached session can tell a replaced model from the one it loaded.
    """

    format: RepresentationFormat
    payload: bytes
    inputs: tuple[Column, ...]
    outputs: tuple[Column, ...]
    kind: ModelKind
    classes: tuple[str, ...]
    method: str
    flavor: str
    model_uri: str
    run_id: str | None = None
    model_version: str | None = None
    checksum: str = field(init=False)

    def __post_init__(self) -> None:
        # Rows read back from model_representations carry plain strings.
        object.__setattr__(self, "format", RepresentationFormat(self.format))
        object.__setattr__(self, "kind", ModelKind(self.kind))
        object.__setattr__(self, "checksum", hashlib.sha256(self.payload).hexdigest())


def representation_from(row: Mapping[str, Any]) -> Representation:
    """A ``Representation`` from a ``model_representations`` row.

    JSON columns may arrive parsed (SQLAlchemy) or as text (PL/Python, sqlite3).
    """

    def parsed(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    return Representation(
        format=row["format"],
        payload=bytes(row["payload"]),
        inputs=tuple(Column(c["name"], c["sql_type"]) for c in parsed(row["inputs"])),
        outputs=tuple(Column(c["name"], c["sql_type"]) for c in parsed(row["outputs"])),
        kind=row["kind"],
        classes=tuple(parsed(row["classes"])),
        method=row["method"],
        flavor=row["flavor"],
        model_uri=row["model_uri"],
        run_id=row["run_id"],
        model_version=row["model_version"],
    )
