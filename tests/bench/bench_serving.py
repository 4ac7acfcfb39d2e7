"""Serving over HTTP: `mlrunner serve` against `mlflow models serve` (issue 13).

Same machine, same run, same models: a 100-tree XGBoost classifier and a logistic
regression, both on 20 numeric features, logged to a throwaway MLflow store. The
anchor is `mlflow models serve --env-manager local` (its default single uvicorn
worker) on the logged model; the candidate is `java -jar mlrunner.jar serve` on the
bundle `mlmanager serve` builds for the same model (its default threads: the
processors). Load comes from `wrk` (one thread, a Lua script that POSTs one fixed
body; it costs little CPU next to the servers), pinned to the same connection counts:
- single-row requests (``dataframe_split``) at 1 and 8 connections: requests/s,
  p50 and p99 latency;
- 1000-row requests at 2 connections: rows/s;
- time from start to the first 200 on /ping, and the resident memory of the serving
  process tree after the load.
Goals of the issue: at 8 connections at least 10x mlflow's single-row requests/s and
p99 at most 5 ms; at least 5x on 1000-row requests; ready within 2 s; RSS at most 300 MB.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import mlflow.sklearn
import mlflow.xgboost
import numpy as np
import pandas as pd
import xgboost
from sklearn.linear_model import LogisticRegression

from shared.model_source import ModelSource
from shared.serving import servable_representation
from tests.support.mlflow_store import log_model, temporary_tracking_store
from tests.support.processes import tree_rss
from tests.support.serving import ServingProcess, write_bundle

SECONDS = int(os.environ.get("BENCH_SERVING_SECONDS", "8"))
FEATURES = [f"f{i}" for i in range(20)]
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("WRK_BODY")):read("*a")
done = function(summary, latency, requests)
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("WRK_JSON {\\"requests\\": %d, \\"seconds\\": %f, \\"errors\\": %d, "
    .. "\\"p50_ms\\": %f, \\"p99_ms\\": %f}\\n", summary.requests, summary.duration / 1e6, bad,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def data(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=FEATURES)
    target = (frame["f0"] + frame["f1"] * frame["f2"] + rng.normal(0, 0.5, rows) > 0).astype(int)
    return frame, target.to_numpy()


def request_body(frame: pd.DataFrame) -> str:
    return json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))})


def wrk(url: str, body_file: Path, connections: int, script: Path) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{SECONDS}s", "--timeout", "10s"]
    done = subprocess.run(
        [*command, "-s", str(script), f"{url}/invocations"],
        env={**os.environ, "WRK_BODY": str(body_file)},
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRK_JSON "))
    result = json.loads(line.removeprefix("WRK_JSON "))
    result["requests_per_s"] = result["requests"] / result["seconds"]
    return dict(result)


def rss_mb(process: subprocess.Popen[bytes]) -> float:
    return tree_rss(process.pid) / 2**20


def measure(server: ServingProcess, bodies: dict[str, Path], script: Path) -> dict[str, Any]:
    server.wait_ready()
    result: dict[str, Any] = {"ready_s": server.ready_seconds}
    for connections in (1, 8):
        result[f"single_row_c{connections}"] = wrk(server.url, bodies["one"], connections, script)
    batch = wrk(server.url, bodies["thousand"], 2, script)
    batch["rows_per_s"] = batch["requests_per_s"] * 1000
    result["rows1000_c2"] = batch
    result["rss_mb"] = rss_mb(server.proc)
    server.stop()
    return result


def run() -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("the serving benchmark needs wrk (Debian package wrk: make system-deps)")
    results: dict[str, Any] = {"seconds_per_run": SECONDS, "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        root = Path(tmp)
        script = root / "post.lua"
        script.write_text(WRK_SCRIPT)
        frame, target = data(5000, seed=0)
        with temporary_tracking_store(root / "store", "bench_serving"):
            models = {
                "xgboost_100_trees": log_model(
                    mlflow.xgboost,
                    xgboost.XGBClassifier(n_estimators=100, max_depth=6).fit(frame, target),
                    frame,
                ),
                "logistic_regression": log_model(
                    mlflow.sklearn, LogisticRegression(max_iter=1000).fit(frame, target), frame
                ),
            }
            bodies = {"one": root / "one.json", "thousand": root / "thousand.json"}
            bodies["one"].write_text(request_body(frame.head(1)))
            bodies["thousand"].write_text(request_body(frame.head(1000)))
            for name, uri in models.items():
                local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(root / name)))
                with ModelSource.open(uri) as source:
                    representation, why = servable_representation(source)
                assert representation is not None, why
                sha256 = write_bundle(representation, root / f"{name}.bundle")
                anchor = ServingProcess.mlflow(local, root / f"{name}.mlflow.log")
                measured = {"mlflow_models_serve": measure(anchor, bodies, script)}
                candidate = ServingProcess.mlrunner(
                    root / f"{name}.bundle", sha256, root / f"{name}.mlrunner.log"
                )
                measured["mlrunner_serve"] = measure(candidate, bodies, script)
                measured["ratios"] = ratios(
                    measured["mlflow_models_serve"], measured["mlrunner_serve"]
                )
                results["models"][name] = measured
                print_table(name, measured)
    return results


def ratios(anchor: dict[str, Any], candidate: dict[str, Any]) -> dict[str, float]:
    return {
        "single_row_rps_c1": candidate["single_row_c1"]["requests_per_s"]
        / anchor["single_row_c1"]["requests_per_s"],
        "single_row_rps_c8": candidate["single_row_c8"]["requests_per_s"]
        / anchor["single_row_c8"]["requests_per_s"],
        "rows1000_rows_per_s": candidate["rows1000_c2"]["rows_per_s"]
        / anchor["rows1000_c2"]["rows_per_s"],
        "p99_c8": candidate["single_row_c8"]["p99_ms"] / anchor["single_row_c8"]["p99_ms"],
    }


def print_table(name: str, measured: dict[str, Any]) -> None:
    print(f"\n{name}: mlflow models serve | mlrunner serve | ratio")
    a, c, r = measured["mlflow_models_serve"], measured["mlrunner_serve"], measured["ratios"]
    for connections in (1, 8):
        key = f"single_row_c{connections}"
        print(
            f"  1 row, {connections} conn: {a[key]['requests_per_s']:9.0f} req/s | "
            f"{c[key]['requests_per_s']:9.0f} req/s | {r[f'single_row_rps_c{connections}']:.1f}x"
        )
        print(
            f"    p50/p99 ms: {a[key]['p50_ms']:.2f}/{a[key]['p99_ms']:.2f} | "
            f"{c[key]['p50_ms']:.2f}/{c[key]['p99_ms']:.2f}"
        )
    print(
        f"  1000 rows, 2 conn: {a['rows1000_c2']['rows_per_s']:9.0f} rows/s | "
        f"{c['rows1000_c2']['rows_per_s']:9.0f} rows/s | {r['rows1000_rows_per_s']:.1f}x"
    )
    print(f"  ready: {a['ready_s']:.2f} s | {c['ready_s']:.2f} s")
    print(f"  RSS:   {a['rss_mb']:.0f} MB | {c['rss_mb']:.0f} MB")
    errors = [
        a[k]["errors"] + c[k]["errors"] for k in ("single_row_c1", "single_row_c8", "rows1000_c2")
    ]
    if any(errors):
        print(f"  wrk counted errors (non-2xx or socket): {errors}")
