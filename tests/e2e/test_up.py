"""`mlmanager up` end to end: real server and worker processes on a temp home."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests

from shared.migrations import head_revision
from tests.support.pg import free_port
from tests.support.processes import clean_environment

pytestmark = pytest.mark.e2e


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    home: Path
    base: str
    worker_port: int
    out: Path
    err: Path

    def wait_for(self, url: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlmanager up exited early:\n{self.err.read_text()}")
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{url} not ready in {timeout}s")

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)


@contextmanager
def mlmanager_up(tmp_path: Path) -> Iterator[Up]:
    port, worker_port = free_port(), free_port()
    home = tmp_path / "home"
    env = clean_environment()
    env.update(MLMANAGER_HOME=str(home), MLMANAGER_PORT=str(port), WORKER_PORT=str(worker_port))
    out, err = tmp_path / "up.out", tmp_path / "up.err"
    # Output goes to files: an unread pipe would fill up and block the children.
    with out.open("wb") as fout, err.open("wb") as ferr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlmanager", "up"], env=env, stdout=fout, stderr=ferr
        )
    up = Up(proc, home, f"http://127.0.0.1:{port}", worker_port, out, err)
    try:
        up.wait_for(f"{up.base}/health")
        up.wait_for(f"http://127.0.0.1:{worker_port}/health")
        yield up
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_up_serves_mlflow_with_login_and_stops_every_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mlmanager_up(tmp_path) as up:
        password_file = up.home / "admin_password"
        assert oct(password_file.stat().st_mode & 0o777) == "0o600"
        password = password_file.read_text().strip()
        base = up.base

        # Nothing but /health answers without a user.
        search = f"{base}/api/2.0/mlflow/experiments/search?max_results=5"
        version = f"{base}/api/2.0/mlmanager/version"
        assert requests.get(search).status_code == 401
        assert requests.get(version).status_code == 401
        assert requests.get(version, auth=("admin", "wrong-password")).status_code == 401
        info = requests.get(version, auth=("admin", password)).json()
        assert info["schema_revision"] == head_revision()

        # The MLflow client logs a run through the authenticated server and reads it back.
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=base)
        exp_id = client.create_experiment("e2e")
        run = client.create_run(exp_id)
        client.log_param(run.info.run_id, "alpha", "0.5")
        client.log_metric(run.info.run_id, "rmse", 0.25)
        client.set_terminated(run.info.run_id)
        got = client.get_run(run.info.run_id)
        assert got.data.params == {"alpha": "0.5"}
        assert got.data.metrics == {"rmse": 0.25}
        assert (up.home / "mlflow.db").exists()
        assert (up.home / "mlmanager.db").exists()

        children = up.children()
        # mlmanager server -> mlflow -> gunicorn master + 2 workers, and the worker
        assert len(children) >= 4
    assert up.proc.returncode == 0, up.err.read_text()
    assert "ML Manager is up at" in up.out.read_text()
    assert password not in up.out.read_text() + up.err.read_text()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"children still running after stop: {alive}"


def test_up_exits_non_zero_when_a_child_dies(tmp_path: Path) -> None:
    with mlmanager_up(tmp_path) as up:
        children = up.children()
        worker = next(p for p in children if p.cmdline()[-1] == "worker")
        worker.kill()
        up.proc.wait(timeout=60)
    assert up.proc.returncode != 0
    assert "mlmanager: error: the worker exited with code -9" in up.err.read_text()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"the server outlived the dead worker: {alive}"
