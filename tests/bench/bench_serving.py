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

The third column is MLServer (``mlserver`` + ``mlserver-mlflow``, its default settings: one
inference worker) on the same logged model, through the same ``/invocations`` route. It is
not a project dependency: it gets its own virtualenv under the user's cache folder
(``~/.cache/mlmanager/mlserver-<version>``, made on first use, reused after), with MLflow,
XGBoost and scikit-learn pinned to this environment's versions so that it loads the same
model. If that install fails, the results say why (pip's last lines) and the other two
columns are still measured.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
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
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from shared.model_source import ModelSource
from shared.serving import servable_representation
from tests.support.mlflow_store import temporary_tracking_store
from tests.support.pg import free_port
from tests.support.processes import tree_rss
from tests.support.serving import ServingProcess, write_bundle

SECONDS = int(os.environ.get("BENCH_SERVING_SECONDS", "8"))
MLSERVER_VERSION = "1.7.1"
MLSERVER_VENV = Path.home() / ".cache" / "mlmanager" / f"mlserver-{MLSERVER_VERSION}"
# The libraries that load the logged models, at this environment's versions.
MODEL_LIBRARIES = ("mlflow", "xgboost-cpu", "scikit-learn", "pandas", "numpy")
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


def mlserver_install() -> tuple[Path | None, str]:
    """The ``mlserver`` command of MLServer's own virtualenv (made on first use), or ``None``
    and why it cannot be installed beside this environment's MLflow."""
    command = MLSERVER_VENV / "bin" / "mlserver"
    if command.exists():
        return command, ""
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in MODEL_LIBRARIES]
    packages = [f"mlserver=={MLSERVER_VERSION}", f"mlserver-mlflow=={MLSERVER_VERSION}", *pins]
    # uvloop 0.22 broke MLServer 1.7.1's inference workers ("There is no current event loop",
    # SeldonIO/MLServer#2286, unreleased fix): the last uvloop it works with.
    packages.append("uvloop==0.21.0")
    print(f"installing MLServer into {MLSERVER_VENV}: {' '.join(packages)}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(MLSERVER_VENV)], check=True)
    pip = [str(MLSERVER_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", *packages]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(MLSERVER_VENV, ignore_errors=True)
        return None, (done.stderr or done.stdout)[-3000:]
    return command, ""


def mlserver(command: Path, name: str, model_dir: Path, folder: Path, log: Path) -> ServingProcess:
    """MLServer on one MLflow model directory with its default settings, on free ports."""
    folder.mkdir()
    port = free_port()
    settings = {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port()}
    (folder / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": name,
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": str(model_dir)},
    }
    (folder / "model-settings.json").write_text(json.dumps(model))
    return ServingProcess(
        "mlserver",
        [str(command), "start", str(folder)],
        log,
        port,
        PATH=os.pathsep.join([str(command.parent), os.environ.get("PATH", "")]),
    )


def log_model(flavor: Any, model: Any, frame: pd.DataFrame) -> str:
    """Log a fitted model with its input and output signature; its model URI. (MLServer's MLflow
    runtime 1.7.1 fails to load a model whose signature has no outputs: to_metadata_tensors
    reads ``signature.outputs.inputs``.)"""
    signature = infer_signature(frame, model.predict(frame))
    with mlflow.start_run():
        info = flavor.log_model(
            model,
            name="model",
            signature=signature,
            input_example=frame.head(5),
            pip_requirements=[],
        )
    return str(info.model_uri)


def run() -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("the serving benchmark needs wrk (Debian package wrk: make system-deps)")
    results: dict[str, Any] = {"seconds_per_run": SECONDS, "models": {}}
    mlserver_command, why = mlserver_install()
    results["mlserver"] = {"version": MLSERVER_VERSION, "venv": str(MLSERVER_VENV)}
    if mlserver_command is None:
        results["mlserver"]["not_installed"] = why
        print(f"MLServer {MLSERVER_VERSION} does not install here, its column is left out:\n{why}")
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
                if mlserver_command is not None:
                    third = mlserver(
                        mlserver_command,
                        name,
                        local,
                        root / f"{name}.mlserver",
                        root / f"{name}.mlserver.log",
                    )
                    measured["mlserver"] = measure(third, bodies, script)
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
    servers = [k for k in ("mlflow_models_serve", "mlrunner_serve", "mlserver") if k in measured]
    columns = [measured[k] for k in servers]
    r = measured["ratios"]

    def row(label: str, cells: list[str], ratio: str = "") -> None:
        print(f"  {label:<18}" + "".join(f"{c:>20}" for c in cells) + f"   {ratio}")

    print(f"\n{name}:")
    row("", [k.replace("_", " ") for k in servers], "mlrunner/mlflow")
    for connections in (1, 8):
        key = f"single_row_c{connections}"
        row(
            f"1 row, {connections} conn",
            [f"{c[key]['requests_per_s']:.0f} req/s" for c in columns],
            f"{r[f'single_row_rps_c{connections}']:.1f}x",
        )
        row("  p50/p99 ms", [f"{c[key]['p50_ms']:.2f}/{c[key]['p99_ms']:.2f}" for c in columns])
    row(
        "1000 rows, 2 conn",
        [f"{c['rows1000_c2']['rows_per_s']:.0f} rows/s" for c in columns],
        f"{r['rows1000_rows_per_s']:.1f}x",
    )
    row("ready", [f"{c['ready_s']:.2f} s" for c in columns])
    row("RSS", [f"{c['rss_mb']:.0f} MB" for c in columns])
    keys = ("single_row_c1", "single_row_c8", "rows1000_c2")
    errors = {s: [c[k]["errors"] for k in keys] for s, c in zip(servers, columns, strict=True)}
    if any(any(e) for e in errors.values()):
        print(f"  wrk counted errors (non-2xx or socket): {errors}")
