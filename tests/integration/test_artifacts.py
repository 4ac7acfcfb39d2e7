"""Artifacts stored in the database (shared.artifacts), through a real `mlmanager up`.

Each test runs on SQLite (the embedded default) and on a real PostgreSQL: the server
starts with no artifact setting, so it stores artifacts in its database; clients use
plain ``mlflow-artifacts:`` URIs, as they do with any MLflow server.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow.tracking import MlflowClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from shared.artifacts import CHUNK_SIZE, ArtifactChanged, ArtifactCorrupt, ArtifactStore
from shared.db import SQLITE_READ_ONLY, make_engine
from shared.errors import DatabaseUnavailable
from shared.models import ArtifactChunkRow, ArtifactFileRow
from tests.support.artifacts import ADMIN, ARTIFACTS_API, BOB, Served, migrate, sha
from tests.support.engines import settings_for
from tests.support.pg import PostgresServer, free_port
from tests.support.processes import RssSampler, clean_environment

pytestmark = pytest.mark.postgres


def test_logged_artifacts_live_in_the_database_and_come_back_intact(
    served: Served, tmp_path: Path
) -> None:
    exp, run_id = served.run_id("round-trip")
    run = served.client.get_run(run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    big = os.urandom(3 * CHUNK_SIZE + 123)  # several chunks, the last one short
    (tmp_path / "big.bin").write_bytes(big)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha")
    (tree / "sub" / "b.json").write_text('{"b": 1}')
    (tree / "empty.txt").write_bytes(b"")

    served.client.log_artifact(run_id, str(tmp_path / "big.bin"), "data")
    served.client.log_artifacts(run_id, str(tree), "tree")

    prefix = f"{exp}/{run_id}/artifacts"
    assert served.files(prefix) == {
        f"{prefix}/data/big.bin": (len(big), sha(big)),
        f"{prefix}/tree/a.txt": (5, sha(b"alpha")),
        f"{prefix}/tree/empty.txt": (0, sha(b"")),
        f"{prefix}/tree/sub/b.json": (8, sha(b'{"b": 1}')),
    }
    # Nothing went to the folder the server used before the database was the default.
    assert not (served.proc.home / "artifacts").exists()

    listed = {(f.path, f.is_dir, f.file_size) for f in served.client.list_artifacts(run_id)}
    assert listed == {("data", True, None), ("tree", True, None)}
    listed = {(f.path, f.file_size) for f in served.client.list_artifacts(run_id, "tree")}
    # (MLflow's JSON leaves out a size of 0, as protobuf omits default values.)
    assert listed == {("tree/a.txt", 5), ("tree/empty.txt", None), ("tree/sub", None)}

    out = Path(served.client.download_artifacts(run_id, "", str(tmp_path / "down")))
    assert (out / "data" / "big.bin").read_bytes() == big
    assert (out / "tree" / "sub" / "b.json").read_text() == '{"b": 1}'
    assert (out / "tree" / "empty.txt").read_bytes() == b""

    # Logging the same path again replaces the file; the old chunks go with it.
    chunks_before = served.chunks()
    (tmp_path / "big.bin").write_bytes(b"smaller")
    served.client.log_artifact(run_id, str(tmp_path / "big.bin"), "data")
    assert served.files(f"{prefix}/data") == {f"{prefix}/data/big.bin": (7, sha(b"smaller"))}
    assert served.chunks() == chunks_before - 4 + 1

    r = served.get(f"{ARTIFACTS_API}/{prefix}/no-such-file")
    assert r.status_code == 404, r.text


def test_mlflow_gc_of_a_deleted_run_removes_its_artifacts(served: Served, tmp_path: Path) -> None:
    exp, doomed = served.run_id("gc")
    _, kept = served.run_id("gc")
    for run_id in (doomed, kept):
        (tmp_path / "m.txt").write_text(run_id)
        served.client.log_artifact(run_id, str(tmp_path / "m.txt"), "model")
    served.client.delete_run(doomed)
    backend = served.proc.db_url
    if served.kind == "sqlite":
        backend = f"sqlite:///{served.proc.home / 'mlflow.db'}"
    env = clean_environment()
    env.update(
        MLFLOW_TRACKING_URI=served.proc.url,
        MLFLOW_TRACKING_USERNAME=ADMIN[0],
        MLFLOW_TRACKING_PASSWORD=ADMIN[1],
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    gc = subprocess.run(
        [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", backend, "--run-ids", doomed],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert gc.returncode == 0, gc.stderr[-3000:]
    assert served.files(f"{exp}/{doomed}") == {}
    assert list(served.files(f"{exp}/{kept}")) == [f"{exp}/{kept}/artifacts/model/m.txt"]


# --- permissions and paths -------------------------------------------------
@pytest.fixture(scope="module")
def private_run(served: Served, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A run of an experiment bob may not read (everyone else reads by default)."""
    exp, run_id = served.run_id("private")
    secret = tmp_path_factory.mktemp("secret") / "secret.txt"
    secret.write_text("the secret")
    served.client.log_artifact(run_id, str(secret), "s")
    served.grant(BOB[0], exp, "DENY")
    return f"{exp}/{run_id}/artifacts"


def test_a_user_without_read_cannot_list_download_or_write_artifacts(
    served: Served, private_run: str
) -> None:
    file_url = f"{ARTIFACTS_API}/{private_run}/s/secret.txt"
    assert served.get(file_url).text == "the secret"
    assert served.get(ARTIFACTS_API, params={"path": private_run}).status_code == 200

    assert served.get(file_url, auth=BOB).status_code == 403
    assert served.get(ARTIFACTS_API, auth=BOB, params={"path": private_run}).status_code == 403
    assert served.put(file_url, b"x", auth=BOB).status_code == 403
    r = requests.delete(f"{served.proc.url}{file_url}", auth=BOB, timeout=30)
    assert r.status_code == 403
    assert served.get(file_url).text == "the secret"


@pytest.mark.parametrize(
    "path",
    [
        "{run}/../../{run}/s/secret.txt",
        "../{run}/s/secret.txt",
        "{run}/s/../s/secret.txt",
        "%2e%2e/{run}/s/secret.txt",
        "{run}/%2e%2e/%2e%2e/{run}/s/secret.txt",
        "{run}%2f..%2f..%2f{run}/s/secret.txt",
        "/{run}/s/secret.txt",
        "%2f{run}/s/secret.txt",
        "//etc/passwd",
        "%2fetc%2fpasswd",
        "..%5c..%5c{run}/s/secret.txt",
    ],
)
def test_path_traversal_is_refused(served: Served, private_run: str, path: str) -> None:
    """Bob may read the public experiment 0: no spelling of a path reaches the private
    run's files through it; nobody reaches the server's own files. (Clients may resolve
    plain ``..`` segments before sending: the server then judges the resolved path.)"""
    target = path.format(run=private_run)
    for url in (f"{ARTIFACTS_API}/0/{target}", f"{ARTIFACTS_API}/{target}"):
        r = served.get(url, auth=BOB)
        assert r.status_code in (400, 403, 404), (url, r.status_code, r.text[:200])
        assert "the secret" not in r.text
        r = served.get(ARTIFACTS_API, auth=BOB, params={"path": url.split("artifacts/", 1)[1]})
        assert r.status_code in (400, 403, 404) or "secret" not in r.text, r.text[:200]
        r = served.get(url, auth=ADMIN)
        assert "root:" not in r.text


def _responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """``count`` HTTP responses read off ``sock`` in order: (status, body)."""
    stream = sock.makefile("rb")
    answers = []
    for _ in range(count):
        status = int(stream.readline().split()[1])
        length = 0
        while (line := stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        answers.append((status, stream.read(length)))
    return answers


def test_uploads_pipelined_on_one_connection_each_land_intact(served: Served) -> None:
    """Uploads to our store read the body from gunicorn's socket itself
    (mlflow_server/request_body.py): the bytes gunicorn already buffered come first and
    the next request's bytes, sent right behind a body, are left to gunicorn."""
    import base64

    exp, run_id = served.run_id("pipelined")
    prefix = f"{ARTIFACTS_API}/{exp}/{run_id}/artifacts"
    auth = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
    files = {
        "a.bin": os.urandom(3 * CHUNK_SIZE + 123),
        "b.bin": os.urandom(5000),
        "c.bin": os.urandom(CHUNK_SIZE),
    }
    requests_bytes = b"".join(
        f"PUT {prefix}/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Length: {len(data)}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
        + data
        for name, data in files.items()
    )
    with socket.create_connection(("127.0.0.1", served.proc.port), timeout=60) as sock:
        sock.sendall(requests_bytes)  # all three at once, one behind the other
        assert [status for status, _ in _responses(sock, len(files))] == [200] * len(files)
    stored = served.files(f"{exp}/{run_id}/artifacts")
    assert stored == {
        f"{exp}/{run_id}/artifacts/{name}": (len(data), sha(data)) for name, data in files.items()
    }
    for name, data in files.items():
        assert served.get(f"{prefix}/{name}").content == data


# --- concurrency -----------------------------------------------------------
def test_two_clients_uploading_to_one_run_both_land(served: Served, tmp_path: Path) -> None:
    exp, run_id = served.run_id("two-clients")
    contents = {f"c{c}/f{i}.bin": os.urandom(50_000 + i) for c in (1, 2) for i in range(15)}
    errors: list[BaseException] = []

    def upload(client_no: int) -> None:
        client = MlflowClient(tracking_uri=served.proc.url)
        folder = tmp_path / f"c{client_no}"
        folder.mkdir()
        try:
            for name, data in contents.items():
                if name.startswith(f"c{client_no}/"):
                    local = folder / name.split("/")[1]
                    local.write_bytes(data)
                    client.log_artifact(run_id, str(local), f"c{client_no}")
            # Both clients also write one shared path: one of the two wins, whole.
            shared = folder / "shared.bin"
            shared.write_bytes(bytes([client_no]) * 3 * CHUNK_SIZE)
            client.log_artifact(run_id, str(shared))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(c,)) for c in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    prefix = f"{exp}/{run_id}/artifacts"
    stored = served.files(prefix)
    expected = {f"{prefix}/{n}": (len(d), sha(d)) for n, d in contents.items()}
    assert {k: v for k, v in stored.items() if not k.endswith("shared.bin")} == expected
    winner = {sha(bytes([c]) * 3 * CHUNK_SIZE) for c in (1, 2)}
    assert stored[f"{prefix}/shared.bin"][1] in winner
    assert served.store.checksum(f"{prefix}/shared.bin") == stored[f"{prefix}/shared.bin"][1]


KILLED_UPLOADER = """
import socket, sys, time
host, port, path, auth = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((host, port))
s.sendall(
    f"PUT {path} HTTP/1.1\\r\\nHost: {host}:{port}\\r\\nAuthorization: Basic {auth}\\r\\n"
    f"Content-Length: {40 * 1024 * 1024}\\r\\nContent-Type: application/octet-stream\\r\\n\\r\\n"
    .encode()
)
# Enough that some chunks are committed (PostgreSQL: 2 writers, 8 chunks per commit each).
s.sendall(b"x" * (30 * 1024 * 1024))
print("sent", flush=True)
time.sleep(600)
"""


def test_a_client_killed_mid_upload_leaves_no_file(served: Served) -> None:
    import base64

    exp, run_id = served.run_id("killed")
    prefix = f"{exp}/{run_id}/artifacts"
    orphans = served.chunks(orphans_only=True)  # what earlier tests left: not ours to count
    auth = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            KILLED_UPLOADER,
            "127.0.0.1",
            str(served.proc.port),
            f"{ARTIFACTS_API}/{prefix}/half.bin",
            auth,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "sent"
    # Let the server write some of what it received, then kill the client.
    deadline = time.monotonic() + 30
    while served.chunks(orphans_only=True) == orphans and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served.chunks(orphans_only=True) > orphans
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()

    # The server notices the short body and drops the chunks; no file was ever published.
    deadline = time.monotonic() + 30
    while served.chunks(orphans_only=True) > orphans and time.monotonic() < deadline:
        assert served.files(prefix) == {}
        time.sleep(0.2)
    assert served.files(prefix) == {}
    assert served.chunks(orphans_only=True) == orphans
    assert served.client.list_artifacts(run_id) == []


def _received(served: Served, path: str, **kw: Any) -> tuple[int, bytes, str | None]:
    """GET ``path``: status, the bytes that arrived, and the transfer's error (if cut short)."""
    got = bytearray()
    with served.get(path, stream=True, **kw) as r:
        try:
            for data in r.iter_content(CHUNK_SIZE):
                got += data
        except requests.RequestException as exc:
            return r.status_code, bytes(got), type(exc).__name__
    return r.status_code, bytes(got), None


@pytest.mark.parametrize("chunks", [1, 3])
def test_a_corrupt_file_never_downloads_whole(served: Served, tmp_path: Path, chunks: int) -> None:
    """Downloads stream from the database (no temporary copy): the sha256 is checked as
    they go and the last chunk is held back until it passed, so stored bytes changed
    behind the store's back cut the transfer short instead of completing it."""
    exp, run_id = served.run_id(f"corrupt-{chunks}")
    data = os.urandom(chunks * CHUNK_SIZE - 10)
    (tmp_path / "c.bin").write_bytes(data)
    served.client.log_artifact(run_id, str(tmp_path / "c.bin"))
    key = f"{exp}/{run_id}/artifacts/c.bin"
    url = f"{ARTIFACTS_API}/{key}"
    assert _received(served, url) == (200, data, None)  # intact: sent whole

    blob = select(ArtifactFileRow.blob_id).where(ArtifactFileRow.path == key).scalar_subquery()
    last = ArtifactChunkRow.__table__.update().where(
        ArtifactChunkRow.blob_id == blob, ArtifactChunkRow.seq == chunks - 1
    )
    tampered = bytearray(data[(chunks - 1) * CHUNK_SIZE :])
    tampered[0] ^= 0xFF  # same size, one byte flipped
    with served.engine.begin() as conn:
        conn.execute(last.values(data=bytes(tampered)))

    status, got, error = _received(served, url)
    if status == 200:  # cut short after the chunks before the last
        assert error is not None, len(got)
        assert len(got) <= (chunks - 1) * CHUNK_SIZE
        assert got == data[: len(got)]
    else:  # nothing was sent yet (one chunk): the server's error answer
        assert status == 500 and chunks == 1, (status, got[:200])
    with pytest.raises(ArtifactCorrupt, match="do not match its checksum"):
        served.store.checksum(key)


def test_a_range_request_is_answered_by_mlflows_route(served: Served, tmp_path: Path) -> None:
    exp, run_id = served.run_id("range")
    data = os.urandom(2 * CHUNK_SIZE + 7)
    (tmp_path / "r.bin").write_bytes(data)
    served.client.log_artifact(run_id, str(tmp_path / "r.bin"))
    url = f"{ARTIFACTS_API}/{exp}/{run_id}/artifacts/r.bin"
    start = CHUNK_SIZE - 3
    r = served.get(url, headers={"Range": f"bytes={start}-{start + 9}"})
    assert r.status_code == 206, r.text
    assert r.content == data[start : start + 10]
    head = requests.head(f"{served.proc.url}{url}", auth=ADMIN, timeout=60)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)


def test_a_database_restart_mid_read_is_a_clear_error_and_a_retry_works(
    served: Served, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if served.kind != "postgresql":
        pytest.skip("SQLite is a file: there is no database server to restart")
    pg: PostgresServer = request.getfixturevalue("pg_server")
    exp, run_id = served.run_id("restart")
    data = os.urandom(6 * CHUNK_SIZE)
    (tmp_path / "big.bin").write_bytes(data)
    served.client.log_artifact(run_id, str(tmp_path / "big.bin"))
    key = f"{exp}/{run_id}/artifacts/big.bin"

    reading = served.store.read(key)
    assert next(reading) == data[:CHUNK_SIZE]
    pg.restart()
    with pytest.raises(DatabaseUnavailable, match=r"did not answer.*retry"):
        for _ in reading:
            pass
    assert b"".join(served.store.read(key)) == data
    # Through the server too (its pool lost its connections in the restart).
    out = served.client.download_artifacts(run_id, "big.bin", str(tmp_path / "down"))
    assert Path(out).read_bytes() == data


def test_no_request_fails_after_a_database_restart(
    served: Served, request: pytest.FixtureRequest
) -> None:
    """A restart drops every connection the server's pools hold. The first request to find
    one lost drops them all (as SQLAlchemy does) and tries again, so none after it fails
    on the next stale connection; small files are read and written on the driver
    (ArtifactStore._on_driver), which must behave the same."""
    if served.kind != "postgresql":
        pytest.skip("SQLite is a file: there is no database server to restart")
    pg: PostgresServer = request.getfixturevalue("pg_server")
    exp, run_id = served.run_id("restart-pools")
    base = f"{ARTIFACTS_API}/{exp}/{run_id}/artifacts"
    big = os.urandom(3 * CHUNK_SIZE)
    assert served.put(f"{base}/big.bin", big).ok
    for i in range(4):
        assert served.put(f"{base}/small/{i}.txt", f"small {i}".encode()).ok

    # Downloads at once, two connections each: every worker's pool holds several.
    def download(_: int) -> bytes:
        return served.get(f"{base}/big.bin").content

    with ThreadPoolExecutor(8) as pool:
        assert all(got == big for got in pool.map(download, range(16)))
    pg.restart()

    statuses = []
    for i in range(24):
        statuses.append(served.get(f"{base}/small/{i % 4}.txt").status_code)
        statuses.append(served.put(f"{base}/after/{i}.txt", b"after").status_code)
    assert statuses == [200] * 48, statuses
    assert served.get(f"{base}/big.bin").content == big


def test_a_file_replaced_while_it_is_read_is_an_error_not_a_mix(served: Served) -> None:
    """Downloads fetch batches on two connections ahead of the client (PostgreSQL): a file
    replaced meanwhile still ends in ArtifactChanged, never old bytes followed by new."""
    key = "replaced/while-read.bin"
    old, new = os.urandom(12 * CHUNK_SIZE), os.urandom(12 * CHUNK_SIZE)
    served.store.write(key, io.BytesIO(old))
    reading = served.store.read(key)
    got = next(reading)
    served.store.write(key, io.BytesIO(new))
    with pytest.raises(ArtifactChanged, match="replaced or deleted while it was read"):
        for data in reading:
            got += data
    assert old.startswith(got) and len(got) < len(old)
    assert b"".join(served.store.read(key)) == new


def test_a_database_restart_mid_upload_publishes_nothing_and_a_retry_works(
    served: Served, request: pytest.FixtureRequest
) -> None:
    """An upload's chunks go in on two connections at once (PostgreSQL): one of them
    failing stops the upload, nothing is published, and the same upload works again."""
    if served.kind != "postgresql":
        pytest.skip("SQLite is a file: there is no database server to restart")
    pg: PostgresServer = request.getfixturevalue("pg_server")
    data = os.urandom(40 * CHUNK_SIZE)

    class RestartHalfway(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() == 20 * CHUNK_SIZE:
                pg.restart()
            return super().read(size)

    key = "restarted/mid-upload.bin"
    with pytest.raises(OperationalError):
        served.store.write(key, RestartHalfway(data))
    assert served.store.stat(key) is None
    served.store.write(key, io.BytesIO(data))
    assert b"".join(served.store.read(key)) == data


def test_a_database_that_does_not_answer_is_mlflows_retryable_503(tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    from shared.artifacts import DatabaseArtifactRepository

    nobody = f"postgresql+psycopg://u:p@127.0.0.1:{free_port()}/x"
    engine = make_engine(settings_for(nobody, tmp_path), pre_ping=False)
    repo = DatabaseArtifactRepository("mlmanager-db:/x", store=ArtifactStore(engine))
    try:
        with pytest.raises(MlflowException) as caught:
            repo.list_artifacts()
    finally:
        engine.dispose()
    assert caught.value.get_http_status_code() == 503
    assert "retry" in caught.value.message


def test_chunks_are_stored_without_compression_on_postgresql(served: Served) -> None:
    """Migration 0008: no pglz attempt on each chunk (it made writes slower, not smaller
    enough to matter for model files); the TOAST table still takes the 1 MiB rows."""
    if served.kind != "postgresql":
        pytest.skip("a PostgreSQL column setting")
    exp, run_id = served.run_id("storage")
    served.client.log_text(run_id, "0" * (3 * CHUNK_SIZE), "zeros.txt")
    key = f"{exp}/{run_id}/artifacts/zeros.txt"
    with served.engine.connect() as conn:
        storage = conn.execute(
            text(
                "SELECT attstorage FROM pg_attribute "
                "WHERE attrelid = 'artifact_chunks'::regclass AND attname = 'data'"
            )
        ).scalar_one()
        stored = conn.execute(
            select(func.sum(func.pg_column_size(ArtifactChunkRow.data)))
            .select_from(ArtifactChunkRow)
            .join(ArtifactFileRow, ArtifactFileRow.blob_id == ArtifactChunkRow.blob_id)
            .where(ArtifactFileRow.path == key)
        ).scalar_one()
    assert storage == "e"
    # Highly compressible bytes take their full size (EXTENDED would store ~1% of it).
    assert stored >= 3 * CHUNK_SIZE
    assert served.store.checksum(key) == sha(b"0" * (3 * CHUNK_SIZE))


# --- a large file: memory stays bounded both ways ---------------------------
HUGE = 2**30  # 1 GiB
# Growth of the whole server (every gunicorn process) while 1 GiB goes through it: a
# server holding the file (or even a tenth of it) would exceed this.
RSS_BOUND_MB = 200


class GeneratedBody:
    """``size`` random bytes made as they are sent, never held whole and never on disk:
    a file-like body, so requests sends it with a Content-Length as MLflow's client
    sends a file. Hashes what it hands out."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent = 0
        self.digest = hashlib.sha256()
        self._block = memoryview(b"")
        self._offset = 0

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.sent
        n = left if n < 0 else min(n, left)
        if n == 0:
            return b""
        if self._offset == len(self._block):
            self._block = memoryview(os.urandom(CHUNK_SIZE))
            self._offset = 0
        piece = bytes(self._block[self._offset : self._offset + n])
        self._offset += len(piece)
        self.sent += len(piece)
        self.digest.update(piece)
        return piece


def test_a_1gb_file_goes_up_and_down_with_the_servers_memory_bounded(served: Served) -> None:
    if served.kind != "postgresql":
        pytest.skip("run once, on PostgreSQL (the store's code is the same on SQLite)")
    exp, run_id = served.run_id("huge")
    key = f"{exp}/{run_id}/artifacts/big/huge.bin"
    url = f"{served.proc.url}{ARTIFACTS_API}/{key}"
    # Every worker imports the upload and download routes first, so the bound measures
    # the transfer, not a first request's imports.
    for i in range(4):
        served.client.log_text(run_id, "warm" * 1000, f"warm/{i}.txt")
        assert served.get(f"{ARTIFACTS_API}/{exp}/{run_id}/artifacts/warm/{i}.txt").ok
    body = GeneratedBody(HUGE)
    try:
        with RssSampler(served.proc.proc.pid) as up:
            r = requests.put(url, data=body, auth=ADMIN, timeout=600)
        assert r.status_code == 200, r.text
        assert body.sent == HUGE
        expected = body.digest.hexdigest()
        assert served.files(key) == {key: (HUGE, expected)}

        digest, size = hashlib.sha256(), 0
        with (
            RssSampler(served.proc.proc.pid) as down,
            requests.get(url, auth=ADMIN, stream=True, timeout=600) as r,
        ):
            assert r.status_code == 200, r.text
            for data in r.iter_content(CHUNK_SIZE):
                digest.update(data)
                size += len(data)
        assert (size, digest.hexdigest()) == (HUGE, expected)
    finally:
        served.store.delete(key)  # 1 GiB less for the other tests' database
    print(f"server RSS growth: upload {up.growth_mb:.0f} MB, download {down.growth_mb:.0f} MB")
    # Sampled during the transfers, not only before and after them.
    assert up.samples > 2 and down.samples > 2
    assert up.growth_mb < RSS_BOUND_MB, f"upload: server RSS grew {up.growth_mb:.0f} MB"
    assert down.growth_mb < RSS_BOUND_MB, f"download: server RSS grew {down.growth_mb:.0f} MB"


def test_files_rows_reference_only_complete_uploads(served: Served) -> None:
    """Every published file has all its chunks (checked on what the other tests left)."""
    with served.engine.connect().execution_options(**{SQLITE_READ_ONLY: True}) as conn:
        rows = conn.execute(select(ArtifactFileRow.blob_id, ArtifactFileRow.chunks)).all()
        assert rows
        for blob_id, chunks in rows:
            n = conn.execute(
                select(func.count()).where(ArtifactChunkRow.blob_id == blob_id)
            ).scalar()
            assert n == chunks


# --- moving an existing store in -------------------------------------------
def test_migrate_copies_a_file_store_into_the_database_with_checksums(
    served: Served, tmp_path: Path
) -> None:
    """A run logged while the server used a folder finds its files after the migration."""
    exp, run_id = served.run_id("migrated")
    old_store = tmp_path / "old-artifacts"
    model = old_store / exp / run_id / "artifacts" / "model"
    model.mkdir(parents=True)
    payload = os.urandom(2 * CHUNK_SIZE + 7)
    (model / "model.pkl").write_bytes(payload)
    (model / "MLmodel").write_text("flavors: {}")
    assert served.client.list_artifacts(run_id) == []

    done = migrate(served, "--from", str(old_store))
    assert done.returncode == 0, done.stderr
    assert "copied 2 files" in done.stdout and "skipped 0" in done.stdout
    prefix = f"{exp}/{run_id}/artifacts/model"
    assert served.files(prefix) == {
        f"{prefix}/model.pkl": (len(payload), sha(payload)),
        f"{prefix}/MLmodel": (11, sha(b"flavors: {}")),
    }
    out = served.client.download_artifacts(run_id, "model/model.pkl", str(tmp_path / "d"))
    assert Path(out).read_bytes() == payload
    assert (model / "model.pkl").exists()  # the source is left as it was

    again = migrate(served, "--from", f"file://{old_store}", "-q")
    assert again.returncode == 0, again.stderr
    assert "copied 0 files" in again.stdout and "skipped 2" in again.stdout

    missing = migrate(served, "--from", str(tmp_path / "nowhere"))
    assert missing.returncode == 1
    assert "no such folder" in missing.stderr
