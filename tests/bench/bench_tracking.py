"""Tracking benchmark (issue: "The ML Manager server").

Stock ``mlflow server`` (no auth, and with MLflow's basic-auth app) against ours
with the ``mlmanager`` app plugin, in one run: same PostgreSQL (a database each),
same gunicorn options and worker count. p50/p99 of ``log_metric`` and
``get_run`` through the MLflow client, the servers measured in interleaved rounds
so that drift of the machine hits them alike.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from mlmanager.server import GUNICORN_OPTS
from shared.settings import TELEMETRY_SWITCH
from tests.support.pg import PostgresServer, free_port

ROUNDS = int(os.environ.get("BENCH_TRACKING_ROUNDS", "5"))
CALLS_PER_ROUND = int(os.environ.get("BENCH_TRACKING_CALLS", "100"))
WORKERS = 2
ADMIN = ("admin", "bench-admin-password-1")
ROOT = Path(__file__).resolve().parents[2]


class Server:
    """One tracking server: ``stock`` or ``basic-auth`` MLflow, or ours for any kind
    starting with ``mlmanager`` (``extra_env`` adds settings, e.g. the artifact store)."""

    def __init__(
        self, kind: str, db_url: str, workdir: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DB_"))}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        env[TELEMETRY_SWITCH] = "true"
        home = workdir / kind
        home.mkdir()
        common = [
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(WORKERS),
            "--gunicorn-opts",
            GUNICORN_OPTS,
        ]
        if kind.startswith("mlmanager"):
            env.update(extra_env or {})
            env.update(
                DB_URL=db_url,
                MLMANAGER_HOME=str(home),
                MLMANAGER_PORT=str(self.port),
                MLMANAGER_ADMIN_PASSWORD=ADMIN[1],
                GUNICORN_WORKERS=str(WORKERS),
                MLMANAGER_SECRET_KEY="bench-secret-key-0123456789",
            )
            subprocess.run(
                [sys.executable, "-m", "mlmanager", "db", "upgrade"],
                env=env,
                check=True,
                capture_output=True,
            )
            cmd = [sys.executable, "-m", "mlmanager", "server"]
        else:
            env["MLFLOW_BACKEND_STORE_URI"] = db_url
            cmd = [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                *common,
                "--serve-artifacts",
                "--artifacts-destination",
                str(home / "artifacts"),
            ]
            if kind == "basic-auth":
                ini = home / "auth.ini"
                ini.write_text(
                    "[mlflow]\ndefault_permission = READ\n"
                    f"database_uri = {db_url}\nadmin_username = admin\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                    "auth_cache_ttl_seconds = 30\n"
                )
                env.update(
                    MLFLOW_AUTH_CONFIG_PATH=str(ini),
                    MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
                    MLFLOW_FLASK_SERVER_SECRET_KEY="bench-secret-key-0123456789",
                )
                cmd += ["--app-name", "basic-auth"]
        self.log = (workdir / f"{kind}.log").open("wb")
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.3)
        raise RuntimeError(f"{kind} server did not start")

    def stop(self) -> None:
        os.killpg(self.proc.pid, 15)
        self.proc.wait(timeout=60)
        self.log.close()


def measure(server: Server, state: dict[str, Any], samples: dict[str, list[float]]) -> None:
    from mlflow import MlflowClient

    if server.kind != "stock":
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN
    else:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
    client = MlflowClient(tracking_uri=server.url)
    if "run_id" not in state:
        exp = client.create_experiment(f"bench-{time.time_ns()}")
        state["run_id"] = client.create_run(exp).info.run_id
    run_id = state["run_id"]
    for i in range(CALLS_PER_ROUND):
        t0 = time.perf_counter()
        client.log_metric(run_id, "loss", 1.0 / (i + 1), step=state.setdefault("step", 0) + i)
        samples["log_metric"].append(time.perf_counter() - t0)
    state["step"] += CALLS_PER_ROUND
    for _ in range(CALLS_PER_ROUND):
        t0 = time.perf_counter()
        client.get_run(run_id)
        samples["get_run"].append(time.perf_counter() - t0)


def summary(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(sorted(values), n=100, method="inclusive")
    return {
        "p50_ms": round(q[49] * 1000, 3),
        "p99_ms": round(q[98] * 1000, 3),
        "samples": len(values),
    }


def run() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="mlm-bench-tracking-"))
    pg = PostgresServer()
    pg.init()
    pg.start()
    kinds = ["stock", "basic-auth", "mlmanager"]
    servers: list[Server] = []
    try:
        with pg.connect() as conn:
            for kind in kinds:
                conn.execute(f'CREATE DATABASE "{kind.replace("-", "_")}"')
        servers = [Server(k, pg.url(k.replace("-", "_")), workdir) for k in kinds]
        samples = {k: {"log_metric": [], "get_run": []} for k in kinds}
        states: dict[str, dict[str, Any]] = {k: {} for k in kinds}
        for _ in range(ROUNDS):
            for server in servers:
                measure(server, states[server.kind], samples[server.kind])
    finally:
        for server in servers:
            server.stop()
        pg.cleanup()
    result: dict[str, Any] = {
        kind: {op: summary(v) for op, v in ops.items()} for kind, ops in samples.items()
    }
    ratios = {}
    for op in ("log_metric", "get_run"):
        for q in ("p50_ms", "p99_ms"):
            ours = result["mlmanager"][op][q]
            basic = result["basic-auth"][op][q]
            ratios[f"{op}_{q}_mlmanager_over_basic_auth"] = round(ours / basic, 3)
            ratios[f"{op}_{q}_mlmanager_over_stock"] = round(ours / result["stock"][op][q], 3)
    result["ratios"] = ratios
    result["settings"] = {
        "gunicorn_workers": WORKERS,
        "gunicorn_opts": GUNICORN_OPTS,
        "rounds": ROUNDS,
        "calls_per_round": CALLS_PER_ROUND,
        "backend": "postgresql",
    }
    print(f"{'':12} {'log_metric p50':>15} {'p99':>8} {'get_run p50':>12} {'p99':>8}  (ms)")
    for kind in kinds:
        r = result[kind]
        print(
            f"{kind:12} {r['log_metric']['p50_ms']:15.2f} {r['log_metric']['p99_ms']:8.2f} "
            f"{r['get_run']['p50_ms']:12.2f} {r['get_run']['p99_ms']:8.2f}"
        )
    for key, value in ratios.items():
        print(f"{key}: {value}")
    return result
