"""Where the CPU of a large artifact transfer goes, per store: a measurement script, not
a benchmark of the suite (the MB/s comparison is ``make bench BENCH=artifacts``):

    .venv/bin/python -m tests.bench.artifact_cpu

One ``mlmanager server`` per store on one PostgreSQL (as bench_artifacts), then for
each store CPU_FILES uploads of one CPU_MB file and as many downloads, through MLflow's
client. Prints MB/s and the CPU seconds spent by the server's processes, by PostgreSQL's
and by the client, from /proc (clock ticks), for each direction, and the MB the server's
and PostgreSQL's processes passed to write() or sendfile() (``wchar``; not socket
sends: for PostgreSQL, its files, through the page cache; the file store's downloads
count here as they go out by ``sendfile``). On two cores the store that needs less CPU
per byte leaves more to the client: the file store downloads with ``sendfile`` (almost
no server CPU), ours hashes and copies every MiB. Uploads: PostgreSQL 15 passes a
stored byte to write() about four times (its WAL; zeros for a new WAL segment,
``wal_init_zero``; a zero page when the table grows; the page), the file store once.
CPU_PG_OPTIONS (``-c name=value`` ...) sets PostgreSQL options.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from shared.settings import configure_telemetry
from tests.bench.bench_artifacts import _client
from tests.bench.bench_tracking import Server
from tests.support.pg import PostgresServer

CPU_MB = int(os.environ.get("CPU_MB", "200"))
CPU_FILES = int(os.environ.get("CPU_FILES", "3"))
_TICKS = os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    rows = subprocess.run(
        ["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    children: dict[int, list[int]] = {}
    for row in rows:
        fields = row.split()
        if len(fields) == 2:
            children.setdefault(int(fields[1]), []).append(int(fields[0]))
    found, todo = [], [pid]
    while todo:
        each = todo.pop()
        found.append(each)
        todo += children.get(each, [])
    return found


def _cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # ended meanwhile
            continue
        ticks += int(stat[11]) + int(stat[12])  # utime + stime
    return ticks / _TICKS


def _written_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            io = Path(f"/proc/{pid}/io").read_text()
        except FileNotFoundError:  # ended meanwhile
            continue
        total += int(next(line for line in io.splitlines() if line.startswith("wchar:")).split()[1])
    return total / 2**20


def _postgres_pids(pg: PostgresServer) -> list[int]:
    postmaster = int((pg.datadir / "postmaster.pid").read_text().split()[0])
    return _descendants(postmaster)


def main() -> None:
    configure_telemetry()
    workdir = Path(tempfile.mkdtemp(prefix="mlm-artifact-cpu-"))
    large = workdir / "large.bin"
    rng = np.random.default_rng(7)
    with large.open("wb") as fh:
        for _ in range(CPU_MB):
            fh.write(rng.bytes(2**20))
    pg = PostgresServer()
    pg.init()
    pg.start(os.environ.get("CPU_PG_OPTIONS", ""))
    servers: dict[str, Server] = {}
    try:
        with pg.connect() as conn:
            for store in ("database", "file"):
                conn.execute(f'CREATE DATABASE "cpu_{store}"')
        servers["database"] = Server("mlmanager-database", pg.url("cpu_database"), workdir, {})
        servers["file"] = Server(
            "mlmanager-file",
            pg.url("cpu_file"),
            workdir,
            {"MLFLOW_ARTIFACTS_DESTINATION": str(workdir / "file-store")},
        )
        total = CPU_MB * CPU_FILES
        print(
            f"{'store':9} {'way':5} {'MB/s':>6}  CPU s per {total} MB: server postgres client"
            "  MB written: server postgres"
        )
        for store, server in servers.items():
            client = _client(server)
            run_id = client.create_run(client.create_experiment(f"cpu-{store}")).info.run_id
            for way in ("up", "down"):
                server_pids = _descendants(server.proc.pid)
                before = (
                    _cpu_seconds(server_pids),
                    _cpu_seconds(_postgres_pids(pg)),
                    time.process_time(),
                    _written_mb(server_pids),
                    _written_mb(_postgres_pids(pg)),
                )
                t0 = time.perf_counter()
                for i in range(CPU_FILES):
                    if way == "up":
                        client.log_artifact(run_id, str(large), f"f{i}")
                    else:
                        client.download_artifacts(run_id, f"f{i}/{large.name}", tempfile.mkdtemp())
                seconds = time.perf_counter() - t0
                server_pids, postgres_pids = _descendants(server.proc.pid), _postgres_pids(pg)
                used = (
                    _cpu_seconds(server_pids) - before[0],
                    _cpu_seconds(postgres_pids) - before[1],
                    time.process_time() - before[2],
                    _written_mb(server_pids) - before[3],
                    _written_mb(postgres_pids) - before[4],
                )
                print(
                    f"{store:9} {way:5} {total / seconds:6.0f}  "
                    f"{used[0]:24.2f} {used[1]:8.2f} {used[2]:6.2f} "
                    f"{used[3]:20.0f} {used[4]:8.0f}",
                    flush=True,
                )
    finally:
        for server in servers.values():
            server.stop()
        pg.cleanup()


if __name__ == "__main__":
    main()
