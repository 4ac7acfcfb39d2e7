"""`mlmanager server`: the MLflow server with the ML Manager app plugin, under gunicorn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shared.db import at_startup, get_engine
from shared.errors import ConfigError
from shared.home import admin_password, prepare_home, require_free_port, secret_key
from shared.migrations import require_current
from shared.settings import Settings, inherited_environment

APP_NAME = "mlmanager"
AUTH_CONFIG_FILE = "basic_auth.ini"
# No control socket: its default path is per user, so two servers would collide on it.
# Threaded workers: a client following a job's log (Server-Sent Events) holds a thread,
# not a whole worker process. gunicorn's gthread worker, closing idle connections when it
# stops (mlflow_server/gunicorn_worker.py: with one open, a stop lasted the grace period).
GUNICORN_OPTS = (
    "--worker-class mlflow_server.gunicorn_worker.ThreadWorker --threads 8 "
    "--timeout 120 --graceful-timeout 20 --keep-alive 5 --no-control-socket"
)


AUTH_FUNCTIONS = {
    "mlflow": "mlflow.server.auth:authenticate_request_basic_auth",
    "database": "mlflow_server.auth:authenticate_request_database",
}


def write_auth_config(settings: Settings) -> Path:
    """MLflow's basic-auth configuration (users and permissions live in MLflow's store)."""
    path = settings.home / AUTH_CONFIG_FILE
    text = (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {settings.backend_store_uri}\n"
        f"admin_username = {settings.mlmanager_admin_user}\n"
        f"authorization_function = {AUTH_FUNCTIONS[settings.auth_backend]}\n"
        "auth_cache_ttl_seconds = 30\n"
    )
    # The URI may hold the database password: owner-only, written atomically.
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


def server_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` command line and environment (secrets only in the environment)."""
    auth_config = write_auth_config(settings)
    password, _ = admin_password(settings)
    env = inherited_environment()
    env.update(
        {
            "MLFLOW_BACKEND_STORE_URI": settings.backend_store_uri,
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key(settings),
            "MLFLOW_AUTH_ADMIN_USERNAME": settings.mlmanager_admin_user,
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            # MLflow's own job runner would start several processes we do not use.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLMANAGER_HOME": str(settings.home),
        }
    )
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--app-name",
        APP_NAME,
        "--host",
        settings.mlmanager_host,
        "--port",
        str(settings.mlmanager_port),
        "--workers",
        str(settings.gunicorn_workers),
        "--gunicorn-opts",
        GUNICORN_OPTS,
        "--serve-artifacts",
        "--artifacts-destination",
        settings.artifacts_destination,
    ]
    if settings.mlmanager_allowed_hosts:
        # Through MLflow's variable: its command line refuses --allowed-hosts beside
        # --gunicorn-opts, while the Flask app under gunicorn reads the variable.
        env["MLFLOW_SERVER_ALLOWED_HOSTS"] = settings.mlmanager_allowed_hosts
    return cmd, env


def bootstrap_auth(env: dict[str, str]) -> None:
    """Create MLflow's auth tables and the admin user once, before gunicorn forks.

    MLflow's CLI does this only for its own ``basic-auth`` app name; without it,
    every gunicorn worker migrates the auth store at once and all but one fail.
    Runs in a child so the MLflow auth module reads the environment built here.
    """
    proc = subprocess.run(
        [sys.executable, "-c", "from mlflow.server.auth import bootstrap_admin_user as b; b()"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise ConfigError(
            "MLflow's user store could not be initialised: " + (lines[-1] if lines else "?")
        )
    env["_MLFLOW_AUTH_ADMIN_BOOTSTRAPPED"] = "true"


def prepare_server(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """Every check that must pass before the server starts, then its command."""
    settings.require_secure("server")
    if settings.auth_backend == "database" and not settings.database_url.startswith("postgresql"):
        raise ConfigError("AUTH_BACKEND=database needs a PostgreSQL database (DB_HOST or DB_URL)")
    prepare_home(settings)
    at_startup(settings, "checking the schema", lambda: require_current(get_engine(settings)))
    require_free_port(settings.mlmanager_host, settings.mlmanager_port, "MLMANAGER_PORT")
    cmd, env = server_command(settings)
    bootstrap_auth(env)
    return cmd, env


def exec_server(settings: Settings) -> None:
    """Replace this process by the MLflow server (signals then reach it directly)."""
    cmd, env = prepare_server(settings)
    sys.stderr.write(
        f"mlmanager: starting the MLflow server with app {APP_NAME} "
        f"({settings.gunicorn_workers} gunicorn workers) on {settings.server_url}\n"
    )
    sys.stderr.flush()
    os.execve(cmd[0], cmd, env)
