"""The server's gunicorn worker (mlflow_server/gunicorn_worker.py), as a real gunicorn
process serving a tiny app. A stopping worker closes its idle keep-alive connections at
once and a silent connection when its keep-alive timeout passes, while a request in
flight still finishes; gunicorn's own gthread worker held either kind of connection, and
the stop, for the whole grace period (both tests fail with ``--worker-class gthread``)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tests.support.pg import free_port
from tests.support.processes import ROOT, clean_environment, wait_http_ok

WORKER = "mlflow_server.gunicorn_worker.ThreadWorker"
# Far longer than the tests' waits: a connection held until the grace period ends fails
# a test on its own timeouts, not on a measured duration.
GRACE_SECONDS = "600"
MARKER = "GUNICORN_TEST_MARKER"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``/slow?S``: touches the file named by $GUNICORN_TEST_MARKER, then answers after S
    seconds; anything else answers at once."""
    if environ["PATH_INFO"] == "/slow":
        Path(os.environ[MARKER]).touch()
        time.sleep(float(environ["QUERY_STRING"]))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def _get_once(port: int, path: str) -> tuple[int, bytes]:
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=60)) as conn:
        return _get(conn, path)


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes ``sock`` within a minute (no bytes, then EOF)."""
    sock.settimeout(60)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


@contextlib.contextmanager
def _gunicorn(tmp_path: Path, keep_alive: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """gunicorn serving :func:`app` with our worker, answering; killed afterwards if the
    test left it running."""
    port = free_port()
    env = clean_environment()
    env.update(PYTHONPATH=str(ROOT), **{MARKER: str(tmp_path / "slow-started")})
    with (tmp_path / "gunicorn.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"),
                *("--worker-class", WORKER, "--threads", "4", "--no-control-socket"),
                *("--graceful-timeout", GRACE_SECONDS, "--keep-alive", keep_alive),
                "tests.integration.test_gunicorn_worker:app",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/", proc, tmp_path / "gunicorn.log", timeout=60)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_stopping_worker_closes_idle_connections_and_finishes_requests_in_flight(
    tmp_path: Path,
) -> None:
    with (
        _gunicorn(tmp_path, keep_alive=GRACE_SECONDS) as (proc, port),
        contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=60)) as idle,
    ):
        assert _get(idle, "/") == (200, b"ok")  # kept alive: HTTP/1.1, no Connection: close
        slow: list[tuple[int, bytes]] = []
        in_flight = threading.Thread(target=lambda: slow.append(_get_once(port, "/slow?2")))
        in_flight.start()
        while not (tmp_path / "slow-started").exists():
            time.sleep(0.05)

        proc.send_signal(signal.SIGTERM)
        assert idle.sock is not None
        assert _closed_by_server(idle.sock), "an idle keep-alive connection outlived SIGTERM"
        in_flight.join(timeout=60)
        assert slow == [(200, b"ok")]  # the request in flight had its grace period
        assert proc.wait(timeout=60) == 0


def test_a_stopping_worker_closes_a_silent_connection_when_its_keep_alive_ends(
    tmp_path: Path,
) -> None:
    with _gunicorn(tmp_path, keep_alive="1") as (proc, port):
        with socket.create_connection(("127.0.0.1", port)) as silent:
            # Accepted, then (no request within gunicorn's 5 s wait for data) left to
            # wait for one until its keep-alive timeout: gunicorn's "pending" connection.
            time.sleep(6)
            proc.send_signal(signal.SIGTERM)
            assert _closed_by_server(silent), "a silent connection held the stop"
        assert proc.wait(timeout=60) == 0
