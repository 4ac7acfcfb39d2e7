"""The worker's small HTTP endpoint: /health, /metrics and the POST /job wake-up."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WorkerEndpoint:
    """Serves the worker's health, metrics and wake-up on a background thread."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        metrics: Callable[[], str],
        wake: Callable[[], None],
    ) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/health":
                    ok, details = endpoint.health()
                    self._send(200 if ok else 503, json.dumps(details), "application/json")
                elif self.path == "/metrics":
                    self._send(200, endpoint.metrics(), "text/plain; version=0.0.4")
                else:
                    self._send(404, '{"error": "not found"}', "application/json")

            def do_POST(self) -> None:
                if self.path == "/job":
                    endpoint.wake()
                    self._send(202, '{"status": "woken"}', "application/json")
                else:
                    self._send(404, '{"error": "not found"}', "application/json")

            def _send(self, code: int, body: str, ctype: str) -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # health probes would flood the log

        self.health = health
        self.metrics = metrics
        self.wake = wake
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="worker-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
