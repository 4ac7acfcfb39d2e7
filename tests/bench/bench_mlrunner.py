"""mlrunner: scoring 100k rows of an H2O GBM through the py4j batch path.

Anchors, in the same run, on the same 100k-row frame and the same model:
- H2O's own Python predict: ``model.predict(H2OFrame)`` in the H2O cluster, timed
  with the frame's upload and the download of the predictions (what a Python
  client pays) and, separately, the predict call alone on an uploaded frame;
- one py4j call per row (the same gateway and packed format, one row per
  call), timed on the first ``PER_ROW`` rows and reported as rows/s.

The batch path is what the database triggers use: ``JvmScorer.score_columns``,
packing the columns, one gateway call, unpacking the predictions; timed for the
whole frame in one call and in 10k-row blocks (a statement trigger's batch).
Model: GBM binomial classifier, 50 trees of depth 5, 10 numeric features and
one categorical; median of 3 runs each, warm JVM and warm H2O cluster.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.scoring import jvm
from shared.scoring.kinds import Column, ModelKind, SqlType
from shared.scoring.mojo import _representation

ROWS = 100_000
BLOCK = 10_000
PER_ROW = 2_000
REPEATS = 3
NUMERIC = [f"f{i}" for i in range(10)]


def frame_of(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(NUMERIC))), columns=NUMERIC)
    frame["segment"] = rng.choice(["retail", "smb", "enterprise", "public"], rows)
    return frame


def median_seconds(action: Callable[[], Any], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run() -> dict[str, Any]:
    import h2o
    from h2o.estimators import H2OGradientBoostingEstimator

    warnings.filterwarnings("ignore", message="Converting H2O frame to pandas")
    h2o.init(nthreads=-1, max_mem_size="2G", verbose=False)
    h2o.no_progress()
    try:
        train = frame_of(10_000, 1)
        signal = train.f0 + 0.5 * train.f1 - train.f2 * train.f3 + (train.segment == "smb")
        train["label"] = np.where(signal > 0.3, "yes", "no")
        types = {"segment": "enum", "label": "enum"}
        model = H2OGradientBoostingEstimator(ntrees=50, max_depth=5, seed=1)
        training = h2o.H2OFrame(train, column_types=types)
        model.train(x=[*NUMERIC, "segment"], y="label", training_frame=training)
        with tempfile.TemporaryDirectory() as tmp:
            payload = Path(model.save_mojo(path=tmp, force=True)).read_bytes()
        inputs = (*(Column(n, SqlType.DOUBLE) for n in NUMERIC), Column("segment", SqlType.TEXT))
        rep = _representation(
            payload, "bench:gbm", None, None, ModelKind.CLASSIFICATION, inputs, ("no", "yes")
        )
        scorer = jvm.JvmScorer(rep)

        frame = frame_of(ROWS, 2)
        columns = {name: frame[name].tolist() for name in frame.columns}

        def batch() -> list[list[Any]]:
            return scorer.score_columns(columns)

        def blocks() -> None:
            for start in range(0, ROWS, BLOCK):
                scorer.score_columns({n: v[start : start + BLOCK] for n, v in columns.items()})

        rows = [{n: [v[i]] for n, v in columns.items()} for i in range(PER_ROW)]

        def per_row() -> None:
            for row in rows:
                scorer.score_columns(row)

        def h2o_client() -> pd.DataFrame:
            uploaded = h2o.H2OFrame(frame, column_types={"segment": "enum"})
            return model.predict(uploaded).as_data_frame(use_multi_thread=False)

        uploaded = h2o.H2OFrame(frame, column_types={"segment": "enum"})

        def h2o_predict_only() -> None:
            model.predict(uploaded)

        batch()  # warm-up: the JVM's JIT and the cluster's
        h2o_client()
        # The two paths agree (labels), so the timings compare like with like.
        ours = batch()[0]
        theirs = [str(v) for v in h2o_client()["predict"]]
        disagreements = sum(a != b for a, b in zip(ours, theirs, strict=True))

        seconds = {
            "py4j_batch_100k_one_call": median_seconds(batch),
            "py4j_batch_10k_blocks": median_seconds(blocks),
            "h2o_python_predict_with_upload_download": median_seconds(h2o_client),
            "h2o_python_predict_only": median_seconds(h2o_predict_only),
            f"py4j_one_call_per_row_{PER_ROW}_rows": median_seconds(per_row),
        }
    finally:
        h2o.cluster().shutdown()
    rates = {
        name: (PER_ROW if name.startswith("py4j_one_call") else ROWS) / value
        for name, value in seconds.items()
    }
    batch_rate = rates["py4j_batch_100k_one_call"]
    ratios = {
        "batch_vs_h2o_python_client": batch_rate / rates["h2o_python_predict_with_upload_download"],
        "batch_vs_h2o_predict_only": batch_rate / rates["h2o_python_predict_only"],
        "batch_vs_one_call_per_row": batch_rate / rates[f"py4j_one_call_per_row_{PER_ROW}_rows"],
        "10k_blocks_vs_one_call_per_row": rates["py4j_batch_10k_blocks"]
        / rates[f"py4j_one_call_per_row_{PER_ROW}_rows"],
    }
    print(f"mlrunner, {ROWS} rows, GBM 50 trees, 11 features (median of {REPEATS})")
    for name, value in seconds.items():
        print(f"  {name:45s} {value:8.3f} s  {rates[name]:12,.0f} rows/s")
    for name, value in ratios.items():
        print(f"  {name:45s} {value:8.2f}x")
    print(f"  label disagreements with H2O: {disagreements} of {ROWS}")
    return {
        "rows": ROWS,
        "per_row_sample": PER_ROW,
        "model": "H2O GBM binomial, 50 trees, depth 5, 10 numeric + 1 categorical features",
        "seconds": seconds,
        "rows_per_second": rates,
        "ratios": ratios,
        "label_disagreements": disagreements,
        "gateway_stats": json.loads(jvm.gateway().call("stats")),
    }
