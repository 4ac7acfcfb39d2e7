"""Where does a large upload's time go, database store against file store? A measurement
script, not a benchmark of the suite:

    .venv/bin/python -m tests.bench.artifact_upload_cost
    ARTIFACT_COST_PG="-c wal_init_zero=off" .venv/bin/python -m tests.bench.artifact_upload_cost

The same two servers as ``bench_artifacts`` (one PostgreSQL, a database each), one
ARTIFACT_COST_MB (200) file uploaded through each per round. For each upload it prints
MB/s, the CPU seconds of the client, of the server's processes and of PostgreSQL's, and
the bytes the server's and PostgreSQL's processes passed to write() (``write_chars``:
what went into the page cache, whether or not it reached the disk yet). On PostgreSQL
15 a stored byte is written about four times: to the WAL, as zeros into a new WAL
segment (``wal_init_zero``), as a zero page when the table grows, and as the page
itself; the file store writes it once. Where copying into the page cache is costly
(a VM), that is the difference between the stores' upload speeds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import psutil

from shared.settings import configure_telemetry
from tests.bench.bench_tracking import ADMIN, Server
from tests.support.pg import PostgresServer

SIZE_MB = int(os.environ.get("ARTIFACT_COST_MB", "200"))
ROUNDS = int(os.environ.get("ARTIFACT_COST_ROUNDS", "3"))


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            times = p.cpu_times()
        except psutil.Error:  # a process that ended meanwhile
            continue
        total += times.user + times.system
    return total


def _written(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.io_counters().write_chars
        except psutil.Error:
            continue
    return total


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def main() -> None:
    from mlflow import MlflowClient

    configure_telemetry()
    workdir = Path(tempfile.mkdtemp(prefix="mlm-upload-cost-"))
    big = workdir / "big.bin"
    big.write_bytes(os.urandom(SIZE_MB * 2**20))
    pg = PostgresServer()
    pg.init()
    pg.start(os.environ.get("ARTIFACT_COST_PG", ""))
    servers: dict[str, Server] = {}
    try:
        with pg.connect() as conn:
            for store in ("database", "file"):
                conn.execute(f'CREATE DATABASE "cost_{store}"')
        servers["database"] = Server("mlmanager-database", pg.url("cost_database"), workdir)
        servers["file"] = Server(
            "mlmanager-file",
            pg.url("cost_file"),
            workdir,
            {"MLFLOW_ARTIFACTS_DESTINATION": str(workdir / "file-store")},
        )
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN
        postmaster = int(pg.datadir.joinpath("postmaster.pid").read_text().split()[0])
        me = [psutil.Process()]
        print(f"{SIZE_MB} MB per upload; CPU seconds; MB passed to write()")
        for r in range(ROUNDS):
            for store, server in servers.items():
                client = MlflowClient(tracking_uri=server.url)
                run_id = client.create_run(client.create_experiment(f"{store}-{r}")).info.run_id
                serving, database = _tree(server.proc.pid), _tree(postmaster)
                cpu0 = [_cpu_seconds(g) for g in (me, serving, database)]
                written0 = [_written(g) for g in (serving, database)]
                t0 = time.perf_counter()
                client.log_artifact(run_id, str(big), "big")
                elapsed = time.perf_counter() - t0
                database = _tree(postmaster)  # backends started meanwhile
                cpu = [
                    _cpu_seconds(g) - c for g, c in zip((me, serving, database), cpu0, strict=True)
                ]
                written = [
                    _written(g) - w for g, w in zip((serving, database), written0, strict=True)
                ]
                print(
                    f"round {r} {store:8} {SIZE_MB / elapsed:6.0f} MB/s  cpu: client "
                    f"{cpu[0]:5.2f} server {cpu[1]:5.2f} postgres {cpu[2]:5.2f}  written: "
                    f"server {written[0] / 2**20:5.0f} postgres {written[1] / 2**20:5.0f}",
                    flush=True,
                )
    finally:
        for server in servers.values():
            server.stop()
        pg.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
