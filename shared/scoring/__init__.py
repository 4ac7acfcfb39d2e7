"""Model representations for scoring inside the database (issue 5).

``build_representation`` (MLflow, converters) runs in the deploy job;
``scorer_for`` a representation runs where rows are scored and needs only numpy and onnxruntime.
Everything is imported on first use, so that registering the SQLite scoring
function (``shared.scoring.indb``) on every connection costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.scoring.build import build_representation, representation_for
    from shared.scoring.kinds import Column, ModelKind, SqlType, method_from
    from shared.scoring.representation import Representation, RepresentationFormat
    from shared.scoring.runtime import scorer_for
    from shared.scoring.scorer import Scorer

_HOMES = {
    "Column": "kinds",
    "ModelKind": "kinds",
    "SqlType": "kinds",
    "method_from": "kinds",
    "Representation": "representation",
    "RepresentationFormat": "representation",
    "Scorer": "scorer",
    "scorer_for": "runtime",
    "representation_for": "build",
    "build_representation": "build",
}
__all__ = [
    "Column",
    "ModelKind",
    "Representation",
    "RepresentationFormat",
    "Scorer",
    "SqlType",
    "build_representation",
    "method_from",
    "representation_for",
    "scorer_for",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"shared.scoring.{home}"), name)
