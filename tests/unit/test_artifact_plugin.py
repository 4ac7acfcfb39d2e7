"""The ``mlmanager-db`` scheme is known to MLflow whichever module a process imports first."""

from __future__ import annotations

import subprocess
import sys

import pytest

FIRST_IMPORTS = ["shared.artifacts", "mlflow", "mlflow.store.artifact.artifact_repository_registry"]


@pytest.mark.parametrize("first", FIRST_IMPORTS)
def test_the_scheme_is_registered_without_a_warning(first: str, tmp_path: object) -> None:
    code = (
        "import warnings; warnings.simplefilter('error')\n"
        f"import {first}\n"
        "from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository\n"
        "from shared.artifacts import DatabaseArtifactRepository\n"
        "repo = get_artifact_repository('mlmanager-db:/runs/1')\n"
        "assert isinstance(repo, DatabaseArtifactRepository), type(repo)\n"
        "print(repo.root)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={
            "DB_URL": f"sqlite:///{tmp_path}/x.db",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PATH": "/usr/bin:/bin",
        },
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "runs/1"
