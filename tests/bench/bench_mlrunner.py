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

In the database, same run: the model deployed by DEPLOY_DATABASE (MLflow's h2o
flavor, exported to MOJO) onto a PostgreSQL table with a statement trigger; a
100k-row ``INSERT ... SELECT`` into it against the same INSERT into a plain twin
table (same columns, key and fillfactor, no trigger), median of 3, the model
loaded by a warm-up insert first.
Model: GBM binomial classifier, 50 trees of depth 5, 10 numeric features and
one categorical; median of 3 runs each, warm JVM and warm H2O cluster.
"""

from __future__ import annotations

import json
import pwd
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
from shared.scoring.mojo import mojo_representation

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


def in_database(h2o: Any, model: Any, train: pd.DataFrame, frame: pd.DataFrame) -> dict[str, Any]:
    """100k-row INSERT ... SELECT into the deployed table against a plain twin (seconds)."""
    import mlflow.h2o

    from tests.bench import bench_indb as indb
    from tests.support.mlflow_store import log_model, temporary_tracking_store

    try:
        with indb.bench_postgres("bench-mlrunner-") as db:
            features = train[[*NUMERIC, "segment"]]
            with temporary_tracking_store(db.workdir, "mlrunner"):
                uri = log_model(mlflow.h2o, model, features)
                indb.deploy(db.engine, db.settings, uri, "h2o_scored", "statement")
            columns = ", ".join(["id", *NUMERIC, "segment"])
            with indb.connect(db.url) as conn:
                numeric = ", ".join(f"{name} double precision" for name in NUMERIC)
                conn.execute(
                    f"CREATE TABLE apps.h2o_source (id bigint PRIMARY KEY, {numeric}, segment text)"
                )
                with conn.cursor().copy(f"COPY apps.h2o_source ({columns}) FROM STDIN") as copy:
                    for number, row in enumerate(frame.itertuples(index=False), 1):
                        copy.write_row((number, *row))
                conn.execute("VACUUM ANALYZE apps.h2o_source")
                plain = indb.create_plain_twin(conn, "h2o_scored")
                insert = f"INSERT INTO apps.{{}} ({columns}) SELECT {columns} FROM apps.h2o_source"
                conn.execute(insert.format("h2o_scored") + " WHERE id <= 1000")  # loads the model
                seconds: dict[str, list[float]] = {"plain": [], "scored": []}
                for _ in range(REPEATS):
                    for name, table in (("plain", plain), ("scored", "h2o_scored")):
                        indb.emptied(conn, table)
                        seconds[name].append(indb.timed(conn, insert.format(table)))
                (unscored,) = conn.execute(
                    "SELECT count(*) FROM apps.h2o_scored WHERE prediction IS NULL"
                ).fetchone()  # type: ignore[misc]
                agree = conn.execute(
                    "SELECT prediction FROM apps.h2o_scored ORDER BY id LIMIT 2000"
                ).fetchall()
    finally:
        # The database's sessions started a gateway as the server's user: it outlives them.
        jvm.stop(jvm.state_dir(pwd.getpwnam("postgres").pw_uid))
    theirs = model.predict(h2o.H2OFrame(frame.head(2000), column_types={"segment": "enum"}))
    expected = [str(v) for v in theirs.as_data_frame(use_multi_thread=False)["predict"]]
    plain_s = statistics.median(seconds["plain"])
    scored_s = statistics.median(seconds["scored"])
    return {
        "plain_insert_s": plain_s,
        "scored_insert_s": scored_s,
        "scored_rows_per_s": ROWS / scored_s,
        "scored_vs_plain": scored_s / plain_s,
        "unscored_rows": int(unscored),
        "label_disagreements_first_2000": sum(
            a != b for (a,), b in zip(agree, expected, strict=True)
        ),
    }


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
        rep = mojo_representation(
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
        database = in_database(h2o, model, train, frame)
        gateway_stats = json.loads(jvm.gateway().call("stats"))
    finally:
        h2o.cluster().shutdown()
        jvm.stop()
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
    print(
        f"  in PostgreSQL, 100k-row INSERT ... SELECT: plain {database['plain_insert_s']:.3f} s, "
        f"scored {database['scored_insert_s']:.3f} s ({database['scored_rows_per_s']:,.0f} rows/s, "
        f"{database['scored_vs_plain']:.2f}x plain); unscored rows {database['unscored_rows']}, "
        f"label disagreements {database['label_disagreements_first_2000']} of 2000"
    )
    return {
        "rows": ROWS,
        "per_row_sample": PER_ROW,
        "model": "H2O GBM binomial, 50 trees, depth 5, 10 numeric + 1 categorical features",
        "seconds": seconds,
        "rows_per_second": rates,
        "ratios": ratios,
        "label_disagreements": disagreements,
        "in_database": database,
        "gateway_stats": gateway_stats,
    }
