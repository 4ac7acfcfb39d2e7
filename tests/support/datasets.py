"""Data the scoring tests share."""

from __future__ import annotations

import numpy as np
import pandas as pd


def churn_with_nulls(rows: int = 1500) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The NULL case of issue 21: a text and two numeric features and a yes/no target.

    Returns (the complete features, the same with a tenth of each column missing, target).
    """
    rng = np.random.default_rng(5)
    features = pd.DataFrame(
        {
            "plan": rng.choice(["basic", "plus", "pro"], rows).astype(object),
            "usage": rng.gamma(2.0, 30.0, rows),
            "tenure": rng.integers(0, 60, rows).astype(np.float64),
        }
    )
    target = np.where(
        (features.usage > 60) ^ (features.plan == "pro") ^ (features.tenure < 12), "yes", "no"
    )
    with_nulls = features.copy()
    for column in with_nulls.columns:
        with_nulls.loc[rng.random(rows) < 0.1, column] = None
    return features, with_nulls, target
