"""Start-up while the database is away, and MLflow's telemetry, in real processes.

A real PostgreSQL is stopped before `mlmanager worker|server|up` start and started a
few seconds later (they wait for it, up to STARTUP_TIMEOUT_SECONDS), or never (they exit
with one line naming the cause, no traceback).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine

from tests.support.pg import PostgresServer, free_port
from tests.support.processes import ROOT, clean_environment
from tests.support.servers import ADMIN_PASSWORD, MLManagerProcess
from tests.support.workers import StartWorker, wait_until

pytestmark = pytest.mark.postgres
DOWN_SECONDS = 4.0


@pytest.fixture
def db_url(pg_url: str) -> str:
    return pg_url


@contextmanager
def database_down(pg_server: PostgresServer) -> Iterator[None]:
    """The test's PostgreSQL is stopped for the block, then started again (always)."""
    pg_server.stop("immediate")
    try:
        yield
    finally:
        pg_server.start()


def assert_one_clear_error(output: str, *needles: str) -> None:
    assert "Traceback" not in output, output
    errors = [ln for ln in output.splitlines() if ln.startswith("mlmanager: error:")]
    assert len(errors) == 1, output
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_worker_started_while_the_database_is_down_waits_for_it(
    engine: Engine, start_worker: StartWorker, pg_server: PostgresServer
) -> None:
    with database_down(pg_server):
        worker = start_worker(wait=False)
        time.sleep(DOWN_SECONDS)
        assert worker.proc.poll() is None, worker.log.read_text()[-3000:]
    worker.wait_healthy(60)
    assert "database not answering while checking the schema" in worker.log.read_text()


def test_worker_whose_database_never_comes_back_exits_with_one_line(
    engine: Engine, start_worker: StartWorker, pg_server: PostgresServer
) -> None:
    with database_down(pg_server):
        started = time.monotonic()
        worker = start_worker(wait=False, startup_timeout_seconds=3)
        code = worker.proc.wait(timeout=60)
        waited = time.monotonic() - started
    assert code != 0
    assert waited >= 3, "it must retry for STARTUP_TIMEOUT_SECONDS first"
    assert_one_clear_error(
        worker.log.read_text(), "did not answer within STARTUP_TIMEOUT_SECONDS=3", "127.0.0.1"
    )


def server_env(db_url: str, home: Path, port: int, **extra: str) -> dict[str, str]:
    return clean_environment() | {
        "DB_URL": db_url,
        "MLMANAGER_HOME": str(home),
        "MLMANAGER_PORT": str(port),
        "MLMANAGER_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLMANAGER_SECRET_KEY": "test-secret-key-0123456789abcdef",
        "GUNICORN_WORKERS": "1",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def test_server_started_while_the_database_is_down_waits_for_it(
    engine: Engine, db_url: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    with database_down(pg_server):
        proc = spawn_server(server_env(db_url, tmp_path / "home", port), log)
        try:
            time.sleep(DOWN_SECONDS)
            assert proc.poll() is None, log.read_text()[-3000:]
        except BaseException:
            stop_group(proc)
            raise
    try:

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(healthy, 90, "the server to answer")
    finally:
        stop_group(proc)
    assert "database not answering while checking the schema" in log.read_text()


def test_server_whose_database_never_comes_back_exits_with_one_line(
    engine: Engine, db_url: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    env = server_env(db_url, tmp_path / "home", free_port(), STARTUP_TIMEOUT_SECONDS="2")
    with database_down(pg_server):
        proc = subprocess.run(
            [sys.executable, "-m", "mlmanager", "server"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=ROOT,
        )
    assert proc.returncode != 0
    assert_one_clear_error(proc.stderr, "did not answer within STARTUP_TIMEOUT_SECONDS=2")


def test_up_started_while_the_database_is_down_waits_and_its_processes_have_no_telemetry(
    db_url: str, pg_server: PostgresServer, tmp_path: Path
) -> None:
    """`mlmanager up` migrates once the database answers, then runs the server and the
    worker; every process it starts (server, gunicorn workers, worker) runs with MLflow's
    telemetry switched off."""
    with database_down(pg_server):
        up = MLManagerProcess(tmp_path / "home", db_url, gunicorn_workers=1)
        time.sleep(DOWN_SECONDS)
        assert up.proc.poll() is None, up.log.read_text()[-3000:]
    try:
        up.wait_ready(120)
        children = descendants(up.proc.pid)
        assert len(children) >= 3, children  # server (gunicorn master), its worker, Bobby
        for pid in children:
            assert environ(pid).get("MLFLOW_DISABLE_TELEMETRY") == "true", command_line(pid)
    finally:
        up.stop()
    assert "database not answering while migrating the schema" in up.log.read_text()


def test_the_command_switches_telemetry_off_unless_the_operator_opts_in(tmp_path: Path) -> None:
    """In the `mlmanager` process itself (MLflow's client state once it is imported) and in
    the environment it gives its children; MLMANAGER_MLFLOW_TELEMETRY=true leaves both on.
    CI markers are removed: MLflow switches itself off in CI."""
    code = (
        "import os, sys\n"
        "from mlmanager import cli\n"
        "try:\n"
        "    cli.main(['db', 'current'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "from shared.settings import inherited_environment\n"
        "import mlflow.telemetry.utils as t\n"
        "print('process', os.environ.get('MLFLOW_DISABLE_TELEMETRY'), t.is_telemetry_disabled())\n"
        "print('children', inherited_environment().get('MLFLOW_DISABLE_TELEMETRY'))\n"
    )
    env = {
        k: v
        for k, v in clean_environment().items()
        if k not in ("CI", "PYTEST_CURRENT_TEST", "PYTEST_VERSION", "DO_NOT_TRACK")
    } | {"MLMANAGER_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}

    def run(**extra: str) -> list[str]:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=env | extra,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            cwd=ROOT,
        )
        return [ln for ln in proc.stdout.splitlines() if ln.startswith(("process", "children"))]

    assert run() == ["process true True", "children true"]
    # Opted in: nothing of ours switches it off (MLflow may still, e.g. in its own dev builds).
    opted = run(MLMANAGER_MLFLOW_TELEMETRY="true")
    assert opted[0].startswith("process None ") and opted[1] == "children None", opted


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (parents read from /proc/<pid>/stat)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        todo += children
    return found


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    pairs = (item.decode(errors="replace").partition("=") for item in raw if item)
    return {k: v for k, _, v in pairs}


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def spawn_server(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`mlmanager server` in a process group of its own (it execs into `mlflow server`,
    which starts gunicorn: the group is how the test stops them all)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mlmanager", "server"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_database_that_refuses_is_not_waited_for(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    """A wrong password or a missing database: the server answered, waiting cannot help."""
    from shared.db import at_startup, make_engine
    from shared.errors import DatabaseUnavailable
    from shared.migrations import require_current
    from tests.support.engines import settings_for

    for url in (pg_server.url("postgres", password="wrong-password"), pg_server.url("nosuch")):
        settings = settings_for(url, tmp_path, startup_timeout_seconds=30)
        engine = make_engine(settings)
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="refused ML Manager") as raised:
            at_startup(settings, "checking the schema", lambda e=engine: require_current(e))
        engine.dispose()
        assert time.monotonic() - started < 10, raised.value.message
        assert "wrong-password" not in raised.value.message
