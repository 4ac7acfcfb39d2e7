"""Starting real `mlmanager` processes in the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Settings of the developer's shell must not leak into the processes under test.
OUR_PREFIXES = ("DB_", "MLMANAGER_", "MLFLOW_", "JOB_", "AUTH_", "WORKER_", "ELASTICSEARCH_")


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(OUR_PREFIXES)}


def spawn_mlmanager(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``mlmanager <command>`` with its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mlmanager", command],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
