"""The server's gunicorn worker (mlflow_server/gunicorn_worker.py), as a real gunicorn
process serving a tiny app: a stopping worker closes its idle keep-alive connections at
once (gunicorn's own gthread worker held them, and the stop, for the whole grace period)
while a request in flight still finishes."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tests.support.pg import free_port
from tests.support.processes import ROOT, clean_environment

# Both far longer than the test's waits: were an idle connection kept until either ends,
# the test would fail on its own timeouts, not on a measured duration.
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


def test_a_stopping_worker_closes_idle_connections_and_finishes_requests_in_flight(
    tmp_path: Path,
) -> None:
    port = free_port()
    marker = tmp_path / "slow-started"
    env = clean_environment()
    env.update(PYTHONPATH=str(ROOT), **{MARKER: str(marker)})
    with (tmp_path / "gunicorn.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"),
                *("--worker-class", "mlflow_server.gunicorn_worker.ThreadWorker"),
                *("--graceful-timeout", GRACE_SECONDS, "--keep-alive", GRACE_SECONDS),
                *("--threads", "4", "--no-control-socket"),
                "tests.integration.test_gunicorn_worker:app",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    with contextlib.ExitStack() as stack:
        stack.callback(_killed, proc)
        deadline = time.monotonic() + 60
        while True:
            try:
                assert _get_once(port, "/") == (200, b"ok")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "gunicorn.log"
                ).read_text()
                time.sleep(0.1)

        idle = stack.enter_context(
            contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=60))
        )
        assert _get(idle, "/") == (200, b"ok")  # kept alive: HTTP/1.1, no Connection: close
        slow: list[tuple[int, bytes]] = []
        in_flight = threading.Thread(target=lambda: slow.append(_get_once(port, "/slow?2")))
        in_flight.start()
        while not marker.exists():
            time.sleep(0.05)

        proc.send_signal(signal.SIGTERM)
        assert idle.sock is not None
        try:
            closed = idle.sock.recv(1) == b""  # the server closed it, well before the grace
        except TimeoutError:
            closed = False
        assert closed, "the idle keep-alive connection stayed open after SIGTERM"
        in_flight.join(timeout=60)
        assert slow == [(200, b"ok")]  # the request in flight had its grace period
        assert proc.wait(timeout=60) == 0


def _killed(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
