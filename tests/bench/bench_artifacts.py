"""Artifacts benchmark (issue: "Artifacts stored in the database").

Two ``mlmanager server`` processes on one PostgreSQL (a database each), same
gunicorn options: one stores artifacts in our database (the default,
``mlmanager-db:/``), the other in MLflow's local file store
(``MLFLOW_ARTIFACTS_DESTINATION=<dir>``). Clients use plain ``mlflow-artifacts:``
URIs through the server in both cases, so the comparison is the store, not the
route. Measured in interleaved rounds:

- upload and download MB/s of one large file (BENCH_ARTIFACTS_MB, 200 MB);
- files/s up and down for BENCH_ARTIFACTS_FILES (1,000) files of 10 KB;
- ``mlflow.sklearn.log_model`` + ``load_model`` round trip of a ~50 MB model;
- the servers' RSS growth (all gunicorn processes, sampled every 50 ms) during the
  large transfer.

Goals from the issue: large-file MB/s at least 0.8x the file store's, small files
at least 1x its files/s, RSS growth under 100 MB.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from shared.settings import configure_telemetry
from tests.bench.bench_tracking import ADMIN, Server
from tests.support.pg import PostgresServer
from tests.support.processes import RssSampler

LARGE_MB = int(os.environ.get("BENCH_ARTIFACTS_MB", "200"))
SMALL_FILES = int(os.environ.get("BENCH_ARTIFACTS_FILES", "1000"))
SMALL_BYTES = 10 * 1024
ROUNDS = int(os.environ.get("BENCH_ARTIFACTS_ROUNDS", "4"))
MODEL_COLUMNS = 2_100_000  # StandardScaler: mean_, var_, scale_ of 8 bytes -> ~50 MB


def _client(server: Server) -> Any:
    from mlflow import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN
    return MlflowClient(tracking_uri=server.url)


def measure(server: Server, data: dict[str, Path], out: dict[str, list[float]]) -> None:
    import mlflow
    import mlflow.sklearn

    client = _client(server)
    exp = client.create_experiment(f"bench-{time.time_ns()}")
    run_id = client.create_run(exp).info.run_id
    size_mb = data["large"].stat().st_size / 2**20

    with RssSampler(server.proc.pid) as rss:
        t0 = time.perf_counter()
        client.log_artifact(run_id, str(data["large"]), "big")
        out["large_upload_mb_s"].append(size_mb / (time.perf_counter() - t0))
        down = Path(tempfile.mkdtemp(prefix="bench-down-"))
        t0 = time.perf_counter()
        got = Path(client.download_artifacts(run_id, f"big/{data['large'].name}", str(down)))
        out["large_download_mb_s"].append(size_mb / (time.perf_counter() - t0))
    out["rss_growth_mb"].append(rss.growth_mb)
    if got.stat().st_size != data["large"].stat().st_size:
        raise RuntimeError(f"{server.kind}: downloaded {got.stat().st_size} bytes")
    shutil.rmtree(down)

    t0 = time.perf_counter()
    client.log_artifacts(run_id, str(data["small"]), "small")
    out["small_upload_files_s"].append(SMALL_FILES / (time.perf_counter() - t0))
    down = Path(tempfile.mkdtemp(prefix="bench-down-"))
    t0 = time.perf_counter()
    got = Path(client.download_artifacts(run_id, "small", str(down)))
    out["small_download_files_s"].append(SMALL_FILES / (time.perf_counter() - t0))
    count = sum(1 for _ in got.iterdir())
    if count != SMALL_FILES:
        raise RuntimeError(f"{server.kind}: downloaded {count} small files")
    shutil.rmtree(down)

    mlflow.set_tracking_uri(server.url)
    model = data["model"]
    t0 = time.perf_counter()
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.sklearn.log_model(model, name="model")
    loaded = mlflow.sklearn.load_model(info.model_uri)
    out["model_round_trip_s"].append(time.perf_counter() - t0)
    if loaded.mean_.shape != model.mean_.shape:
        raise RuntimeError(f"{server.kind}: model came back with another shape")


def _inputs(workdir: Path) -> dict[str, Any]:
    import numpy as np
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(7)
    large = workdir / "large.bin"
    with large.open("wb") as fh:
        for _ in range(LARGE_MB):
            fh.write(rng.bytes(2**20))
    small = workdir / "small"
    small.mkdir()
    for i in range(SMALL_FILES):
        (small / f"f{i:05d}.bin").write_bytes(rng.bytes(SMALL_BYTES))
    model = StandardScaler().fit(rng.random((2, MODEL_COLUMNS)))
    return {"large": large, "small": small, "model": model}


def run() -> dict[str, Any]:
    configure_telemetry()
    workdir = Path(tempfile.mkdtemp(prefix="mlm-bench-artifacts-"))
    data = _inputs(workdir)
    pg = PostgresServer()
    pg.init()
    pg.start()
    stores = {
        "database": {},
        "file": {"MLFLOW_ARTIFACTS_DESTINATION": str(workdir / "file-store")},
    }
    servers: dict[str, Server] = {}
    metrics = (
        "large_upload_mb_s",
        "large_download_mb_s",
        "small_upload_files_s",
        "small_download_files_s",
        "model_round_trip_s",
        "rss_growth_mb",
    )
    samples = {store: {m: [] for m in metrics} for store in stores}
    try:
        with pg.connect() as conn:
            for store in stores:
                conn.execute(f'CREATE DATABASE "artifacts_{store}"')
        for store, extra in stores.items():
            servers[store] = Server(
                f"mlmanager-{store}", pg.url(f"artifacts_{store}"), workdir, extra
            )
        order = list(servers)
        for _ in range(ROUNDS):
            # Each store goes first every other round: the one measured second finds the
            # first one's writes still being flushed from the page cache.
            for store in order:
                measure(servers[store], data, samples[store])
            order.reverse()
    finally:
        for server in servers.values():
            server.stop()
        pg.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        store: {m: round(statistics.median(v), 2) for m, v in ms.items()}
        for store, ms in samples.items()
    }
    db, fs = result["database"], result["file"]
    result["ratios"] = {
        f"{m}_database_over_file": round(db[m] / fs[m], 3) for m in metrics if m != "rss_growth_mb"
    }
    # Every round's value, in order (rounds alternate which store goes first: the
    # database in rounds 1, 3, ...), to show the spread behind each median.
    result["rounds"] = {
        store: {m: [round(x, 2) for x in v] for m, v in ms.items()} for store, ms in samples.items()
    }
    result["settings"] = {
        "large_mb": LARGE_MB,
        "small_files": SMALL_FILES,
        "small_bytes": SMALL_BYTES,
        "rounds": ROUNDS,
        "backend": "postgresql",
        "model_mb": round(MODEL_COLUMNS * 3 * 8 / 2**20, 1),
    }
    print(f"{'metric':24} {'database':>10} {'file':>10} {'db/file':>8}")
    for m in metrics:
        ratio = result["ratios"].get(f"{m}_database_over_file", float("nan"))
        print(f"{m:24} {db[m]:10.2f} {fs[m]:10.2f} {ratio:8.3f}")
    print("(medians of", ROUNDS, "interleaved rounds; rss_growth_mb: peak minus start, all")
    print(" server processes; the goal is under 100 MB for the database store)")
    return result
