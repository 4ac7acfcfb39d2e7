"""A real Elasticsearch node for the tests, and log lines written the way shippers write them.

The node is Elasticsearch 8.19's own server code run on this JVM by
``tests/elasticsearch`` (``make elasticsearch`` builds it from Maven Central into
ELASTICSEARCH_HOME). Without the build, the tests skip locally and fail in CI.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from tests.support.engines import IN_CI
from tests.support.pg import free_port

ELASTICSEARCH_HOME = Path(os.environ.get("ELASTICSEARCH_HOME", "/opt/mlmanager/elasticsearch"))


def node_available() -> bool:
    return (ELASTICSEARCH_HOME / "lib" / "elasticsearch-test-node.jar").exists()


class ElasticsearchNode:
    """One single-node cluster in a temporary folder, on free loopback ports."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mlm-es-"))
        self.log = self.root / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    "java",
                    "-Xms256m",
                    "-Xmx512m",
                    "-XX:+UseSerialGC",
                    "-cp",
                    f"{ELASTICSEARCH_HOME / 'lib'}/*",
                    "mlmanager.elasticsearch.TestNode",
                    str(ELASTICSEARCH_HOME),
                    str(self.root),
                    str(self.port),
                    str(free_port()),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while b"READY" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Elasticsearch did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def client(self) -> Elasticsearch:
        return Elasticsearch(self.url, request_timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


class PodLog:
    """Writes one pod's log lines as Filebeat does: one document per line, with the pod's
    name, the line's time and its byte offset in the container's log file."""

    def __init__(self, es: Elasticsearch, index: str, pod: str) -> None:
        self.es = es
        self.index = index
        self.pod = pod
        self.offset = 0
        self.start = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
        self.count = 0

    def line(self, message: str) -> dict[str, Any]:
        """The next line's document (not yet indexed)."""
        doc = {
            "@timestamp": (self.start + dt.timedelta(milliseconds=10 * self.count)).isoformat(),
            "log": {"offset": self.offset},
            "kubernetes": {"pod": {"name": self.pod}, "namespace": "mlmanager"},
            "message": message,
        }
        self.offset += len(message.encode()) + 1
        self.count += 1
        return doc

    def index_docs(self, docs: list[dict[str, Any]]) -> None:
        """Index documents in the order given, each visible to searches at once."""
        for doc in docs:
            self.es.index(index=self.index, document=doc, refresh=True)

    def write(self, *messages: str) -> None:
        self.index_docs([self.line(m) for m in messages])


@pytest.fixture(scope="module")
def es_node() -> Iterator[ElasticsearchNode]:
    """A node per test module (skipped locally without `make elasticsearch`, failed in CI)."""
    if not node_available():
        message = "no Elasticsearch test node: run `make elasticsearch`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    node = ElasticsearchNode()
    node.start()
    yield node
    node.stop()
