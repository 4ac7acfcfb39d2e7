"""Serving processes of the tests and the benchmark: `mlflow models serve` and `mlrunner serve`."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from mlmanager.serve import SERVE_JAVA_OPTS, serving_environment
from shared.scoring.representation import Representation
from shared.serving import bundle
from tests.support.pg import free_port

MLRUNNER_JAR = os.environ.get("MLRUNNER_JAR", "/opt/mlmanager/mlrunner/mlrunner.jar")


class ServingProcess:
    """A scoring server on a free local port; ``wait_ready`` waits for ``GET /ping`` to be 200."""

    def __init__(self, name: str, command: list[str], log: Path, port: int, **env: str) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.started = time.monotonic()
        self.ready_seconds: float | None = None
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**serving_environment(), **env}
            )

    @classmethod
    def mlflow(cls, model_dir: Path, log: Path) -> ServingProcess:
        """`mlflow models serve` on a local model directory (its default single worker)."""
        port = free_port()
        command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir)]
        command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
        return cls("mlflow", command, log, port)

    @classmethod
    def mlrunner(
        cls, bundle_file: Path | str, sha256: str, log: Path, *extra: str, jar: str = MLRUNNER_JAR
    ) -> ServingProcess:
        """`java -jar mlrunner.jar serve` on a bundle file."""
        port = free_port()
        command = ["java", *SERVE_JAVA_OPTS, "-jar", jar, "serve", "--model", str(bundle_file)]
        command += ["--sha256", sha256, "--host", "127.0.0.1", "--port", str(port), *extra]
        return cls("mlrunner", command, log, port)

    def wait_ready(self, timeout: float = 180) -> ServingProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/ping", timeout=1).status_code == 200:
                    self.ready_seconds = time.monotonic() - self.started
                    return self
            time.sleep(0.05)
        raise AssertionError(
            f"{self.name} not ready in {timeout}s:\n{self.log.read_text()[-3000:]}"
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def write_bundle(representation: Representation, path: Path) -> str:
    """Write a representation's bundle to ``path``; its SHA-256."""
    data = bundle(representation)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()
