"""What a pyfunc pod runs (``python -m shared.kube.pod``): fetch, unpack, serve.

A model mlrunner cannot serve is served by MLflow's scoring server in the pyfunc image.
The pod has no user's credentials, only its deployment's model token (from the token
Secret, in ``MLRUNNER_MODEL_TOKEN``): it fetches the MLflow model directory as a zip from
the token route (``mlflow_server/model_route.py``), checks the zip against the SHA-256 the
route sends, unpacks it under ``/tmp`` (the one writable folder of its read-only root)
and replaces itself with ``mlflow models serve --env-manager local`` on that directory.

Standard library only: it runs in the pyfunc image before anything else is imported.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

TOKEN_ENV = "MLRUNNER_MODEL_TOKEN"
SHA256_HEADER = "X-Model-SHA256"
FETCH_TIMEOUT_SECONDS = 300


def fetch(url: str, token: str, into: Path) -> Path:
    """The model directory, unpacked from the zip at ``url`` into ``into``."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    digest = hashlib.sha256()
    archive = into / "model.zip"
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as answer:
        expected = answer.headers.get(SHA256_HEADER)
        with archive.open("wb") as out:
            while chunk := answer.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    if expected and digest.hexdigest() != expected:
        raise SystemExit(f"the model from {url} is corrupt: SHA-256 {digest.hexdigest()}")
    model = into / "model"
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.namelist():  # nothing may land outside the model folder
            if not (model / member).resolve().is_relative_to(model.resolve()):
                raise SystemExit(f"the model archive holds a path outside it: {member}")
        zipped.extractall(model)
    archive.unlink()
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.kube.pod", description=__doc__)
    parser.add_argument("--model", required=True, help="the token route of the deployment")
    parser.add_argument("--token-env", default=TOKEN_ENV)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    token = os.environ.get(args.token_env)
    if not token:
        raise SystemExit(f"no model token in {args.token_env}")
    workdir = Path(tempfile.mkdtemp(prefix="mlmanager-model-"))
    model = fetch(args.model, token, workdir)
    print(f"fetched the model from {args.model} into {model}", flush=True)
    # MLflow's server starts uvicorn through a shell: this Python's scripts must be on PATH.
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop(args.token_env)  # the serving process has no use for it
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model)]
    command += ["--env-manager", "local", "--host", args.host, "--port", str(args.port)]
    command += ["--workers", str(args.workers)]
    os.execve(sys.executable, command, env)


if __name__ == "__main__":
    main()
