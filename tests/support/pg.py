"""A real PostgreSQL server for the tests, started from the Debian binaries.

PostgreSQL refuses to run as root, so when the tests run as root the server is
initialised and started as the ``postgres`` user (``runuser``). Databases are
created and dropped per test by pytest-postgresql's ``DatabaseJanitor``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from pytest_postgresql.janitor import DatabaseJanitor

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PLPYTHON_LIBS = os.environ.get("PLPYTHON_LIBS", "/opt/mlmanager/plpython")
# The JVM scorer's jar the database's sessions start (`make mlrunner` installs it).
MLRUNNER_JAR = os.environ.get("MLRUNNER_JAR", "/opt/mlmanager/mlrunner/mlrunner.jar")
PG_USER = "postgres"
PG_PASSWORD = "pg-test-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binaries_available() -> bool:
    return (PG_BIN / "pg_ctl").exists() and (PG_BIN / "initdb").exists()


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self.root = Path(tempfile.mkdtemp(prefix="mlm-pg-"))
        self.datadir = self.root / "data"
        self.logfile = self.root / "server.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, PG_USER, PG_USER)
            self.root.chmod(0o755)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_root:
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        if self._as_root:
            shutil.chown(pwfile, PG_USER, PG_USER)
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            PG_USER,
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C",
        )
        pwfile.unlink()

    def start(self, extra_options: str = "") -> None:
        """Start the cluster; ``extra_options`` (``-c name=value`` ...) override ours."""
        opts = (
            f"-p {self.port} -h {self.host} -k {self.root} "
            # fsync off is safe for the tests' crashes (a killed server, not a lost OS
            # cache); synchronous_commit stays on, or an immediate stop would lose
            # commits the ledger was told had happened.
            "-c fsync=off -c full_page_writes=off "
            "-c max_connections=200 "
            # Where PL/Python finds numpy/onnxruntime (`make plpython-deps`).
            f"-c mlmanager.plpython_path={PLPYTHON_LIBS} "
            f"-c mlmanager.mlrunner_jar={MLRUNNER_JAR} {extra_options}"
        )
        self._run(
            str(PG_BIN / "pg_ctl"),
            "start",
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", mode, "-w", check=False
        )

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop("immediate")
        time.sleep(down_seconds)
        self.start()

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str, user: str = PG_USER, password: str = PG_PASSWORD) -> str:
        return f"postgresql+psycopg://{user}:{password}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=PG_USER,
            password=PG_PASSWORD,
            dbname=dbname,
            autocommit=True,
        )

    @contextmanager
    def database(self, name: str) -> Iterator[str]:
        """A fresh, empty database for one test; dropped afterwards."""
        janitor = DatabaseJanitor(
            user=PG_USER,
            host=self.host,
            port=self.port,
            dbname=name,
            password=PG_PASSWORD,
        )
        janitor.init()
        try:
            yield self.url(name)
        finally:
            janitor.drop()
