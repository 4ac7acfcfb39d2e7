"""``mlmanager serve MODEL_URI``: one logged model over HTTP with MLflow's scoring protocol.

The model's representation is built and checked exactly as a database deploy builds
it (``build_representation`` on the model's input example); an ONNX or MOJO
representation is written as a bundle to a temporary file and served by
``java -jar mlrunner.jar serve``. A model that has none (a custom pyfunc, a
``predict_proba`` model, a model logged without an input example) is served by
``mlflow models serve --env-manager local`` on the same host and port, and the
command says so: the routes are the same either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from loguru import logger

from shared.model_source import ModelSource
from shared.serving import SERVE_JAVA_OPTS, bundle, servable_representation
from shared.settings import inherited_environment


@dataclass(frozen=True)
class ServePlan:
    """What ``mlmanager serve`` runs: the command, which runtime that is, and why."""

    command: list[str]
    runtime: str  # "mlrunner" or "mlflow"
    reason: str  # why this runtime


def plan(
    model_uri: str,
    host: str,
    port: int,
    threads: int | None,
    workdir: Path,
) -> ServePlan:
    """The serving process for ``model_uri``: mlrunner on a bundle written under ``workdir``,
    or MLflow's scoring server when mlrunner cannot serve the model."""
    from shared.scoring.jvm import find_jar, find_java

    with ModelSource.open(model_uri) as source:
        representation, reason = servable_representation(source)
    if representation is None:
        command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri]
        command += ["--env-manager", "local", "--host", host, "--port", str(port)]
        return ServePlan(command, "mlflow", reason)
    data = bundle(representation)
    path = workdir / "model.bundle"
    path.write_bytes(data)
    command = [find_java(), *SERVE_JAVA_OPTS, "-jar", str(find_jar()), "serve"]
    command += ["--model", str(path), "--sha256", hashlib.sha256(data).hexdigest()]
    command += ["--host", host, "--port", str(port)]
    if threads is not None:
        command += ["--threads", str(threads)]
    return ServePlan(command, "mlrunner", reason)


def serving_environment() -> dict[str, str]:
    """The serving process's environment: MLflow's server runs ``uvicorn`` through a shell,
    found on the PATH only when this Python's scripts directory is on it (a virtualenv that
    is not activated)."""
    env = inherited_environment()
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    return env


def run(model_uri: str, host: str, port: int, threads: int | None) -> int:
    """Serve ``model_uri`` until stopped; the serving process's exit code.

    SIGTERM and SIGINT are passed on to the serving process, which drains its requests.
    """
    with tempfile.TemporaryDirectory(prefix="mlmanager-serve-") as tmp:
        chosen = plan(model_uri, host, port, threads, Path(tmp))
        if chosen.runtime == "mlflow":
            logger.warning(
                "mlrunner cannot serve {}: {}; serving it with `mlflow models serve` instead "
                "(same routes, slower)",
                model_uri,
                chosen.reason,
            )
        else:
            logger.info("serving {} with mlrunner ({})", model_uri, chosen.reason)
        process = subprocess.Popen(chosen.command, env=serving_environment())

        def forward(signum: int, _frame: FrameType | None) -> None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, forward)
        return process.wait()
