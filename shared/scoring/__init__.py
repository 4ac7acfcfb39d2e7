"""Model representations for scoring inside the database (issue 5).

``build_representation`` (MLflow, converters) runs in the deploy job;
``Scorer`` runs where rows are scored and needs only numpy and onnxruntime, so
the build side is imported only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.scoring.kinds import Column, ModelKind, SqlType, method_from
from shared.scoring.representation import Representation, RepresentationFormat
from shared.scoring.runtime import Scorer

if TYPE_CHECKING:
    from shared.scoring.build import build_representation

__all__ = [
    "Column",
    "ModelKind",
    "Representation",
    "RepresentationFormat",
    "Scorer",
    "SqlType",
    "build_representation",
    "method_from",
]


def __getattr__(name: str) -> Any:
    if name == "build_representation":
        from shared.scoring.build import build_representation

        return build_representation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
