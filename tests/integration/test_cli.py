"""The `mlmanager` command on bad input: one clear line, non-zero exit, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pg import free_port
from tests.support.processes import clean_environment

BASE_ENV = clean_environment()


def mlmanager(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlmanager", *args],
        env={**BASE_ENV, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_clear_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("mlmanager: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0]


def test_unknown_environment(tmp_path: Path) -> None:
    proc = mlmanager("db", "upgrade", env={"ENVIRONMENT": "mars", "MLMANAGER_HOME": str(tmp_path)})
    assert_one_clear_error(proc, "ENVIRONMENT", "mars")


def test_db_url_that_cannot_connect(tmp_path: Path) -> None:
    url = f"postgresql://mlm:Secret-pw-9@127.0.0.1:{free_port()}/nowhere"
    proc = mlmanager("db", "upgrade", env={"DB_URL": url, "MLMANAGER_HOME": str(tmp_path)})
    assert_one_clear_error(proc, "cannot", "127.0.0.1")
    assert "Secret-pw-9" not in proc.stderr


def test_unwritable_home(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    proc = mlmanager("up", env={"MLMANAGER_HOME": str(tmp_path / "file" / "home")})
    assert_one_clear_error(proc, "MLMANAGER_HOME")


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = mlmanager("up", env={"MLMANAGER_HOME": str(tmp_path), "MLMANAGER_PORT": str(port)})
    assert_one_clear_error(proc, str(port), "MLMANAGER_PORT")


@pytest.mark.parametrize("command", ["server", "worker"])
def test_server_and_worker_refuse_an_old_schema(tmp_path: Path, command: str) -> None:
    env = {
        "MLMANAGER_HOME": str(tmp_path),
        "MLMANAGER_PORT": str(free_port()),
        "WORKER_PORT": str(free_port()),
    }
    proc = mlmanager(command, env=env)
    assert_one_clear_error(proc, "mlmanager db upgrade")


def test_db_sql_renders_one_script_per_release_and_dialect(tmp_path: Path) -> None:
    proc = mlmanager("db", "sql", env={"MLMANAGER_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    paths = [Path(p) for p in proc.stdout.split()]
    assert {p.name for p in paths} >= {
        "mlmanager.0001_initial.postgresql.sql",
        "mlmanager.0001_initial.sqlite.sql",
    }
    pg_sql = next(p for p in paths if p.name.endswith("postgresql.sql")).read_text()
    assert 'CREATE SCHEMA IF NOT EXISTS "mlmanager"' in pg_sql
    assert "CREATE TABLE jobs" in pg_sql
    assert "JSONB" in pg_sql
