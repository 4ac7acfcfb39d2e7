"""The scorer interface: a batch of rows in, one list per prediction column out.

The implementations are ``shared.scoring.runtime`` (onnxruntime, MLflow pyfunc) and
``shared.scoring.jvm`` (mlrunner); ``runtime.scorer_for`` picks one by format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np

from shared.errors import InvalidPayload
from shared.scoring.columns import Row
from shared.scoring.representation import Representation

Batch: TypeAlias = Mapping[str, Sequence[Any]] | Sequence[Sequence[Any]] | np.ndarray


class Scorer(ABC):
    """Scores batches of rows with one representation (``runtime.scorer_for`` builds one)."""

    def __init__(self, representation: Representation) -> None:
        self.representation = representation

    def score(self, batch: Batch) -> list[Row]:
        """Predictions for a batch, one tuple per row in the order of ``outputs``.

        ``batch`` is either a mapping from input name to its column of values
        (other keys are ignored) or a sequence of rows holding the inputs in order.
        """
        return list(zip(*self.score_columns(batch), strict=True))

    def score_columns(self, batch: Batch) -> list[list[Any]]:
        """Like :meth:`score`, but one list per prediction column (for set-based writes)."""
        columns = self._columns(batch)
        if len(columns[0]) == 0:
            return [[] for _ in self.representation.outputs]
        return self._score(columns)

    @abstractmethod
    def _score(self, columns: list[Sequence[Any]]) -> list[list[Any]]: ...

    def _columns(self, batch: Batch) -> list[Sequence[Any]]:
        inputs = self.representation.inputs
        if isinstance(batch, Mapping):
            missing = [c.name for c in inputs if c.name not in batch]
            if missing:
                raise InvalidPayload(f"batch lacks model inputs: {', '.join(missing)}")
            columns = [batch[c.name] for c in inputs]
        else:
            rows = np.asarray(batch, dtype=object) if not isinstance(batch, np.ndarray) else batch
            if rows.size == 0:
                return [[] for _ in inputs]
            if rows.ndim != 2 or rows.shape[1] != len(inputs):
                raise InvalidPayload(
                    f"batch rows must hold the {len(inputs)} model inputs in order, "
                    f"got an array of shape {rows.shape}"
                )
            columns = list(rows.T)
        if len({len(column) for column in columns}) > 1:
            raise InvalidPayload("batch columns differ in length")
        return columns
