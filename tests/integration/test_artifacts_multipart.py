"""MLflow's proxied multipart upload into the database store (shared.multipart), through
a real `mlmanager up` on SQLite and on PostgreSQL (the fixture ``served``).

MLflow's own client uploads with MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD; the refusals are
sent by hand, as a client that does not play by the rules would send them.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from sqlalchemy import func, select

from shared.db import SQLITE_READ_ONLY
from shared.models import ArtifactChunkRow
from shared.multipart import PartGrant, UploadSigner
from tests.support.artifacts import ADMIN, BOB, Served, sha
from tests.support.servers import SECRET_KEY

pytestmark = pytest.mark.postgres
MPU_API = "/api/2.0/mlflow-artifacts/mpu"
# Not a multiple of 1 MiB: each part ends with a short chunk.
PART_SIZE = 5_000_000


def mpu(
    served: Served,
    action: str,
    path: str,
    body: dict[str, Any],
    auth: Any = ADMIN,
    api: str = MPU_API,
) -> requests.Response:
    return requests.post(
        f"{served.proc.url}{api}/{action}/{path}", json=body, auth=auth, timeout=60
    )


def create(served: Served, path: str, name: str, num_parts: int) -> dict[str, Any]:
    r = mpu(served, "create", path, {"path": name, "num_parts": num_parts})
    assert r.status_code == 200, r.text
    created: dict[str, Any] = r.json()
    assert [c["part_number"] for c in created["credentials"]] == list(range(1, num_parts + 1))
    return created


def put(url: str, data: bytes, **kw: Any) -> requests.Response:
    """A part as MLflow's client sends it: plain requests, no credentials."""
    return requests.put(url, data=data, timeout=60, **kw)


def url_of(created: dict[str, Any], part: int) -> str:
    return str(created["credentials"][part - 1]["url"])


def chunks_of(served: Served, upload_id: str) -> int:
    """Chunks stored for the parts of ``upload_id``."""
    query = select(func.count()).where(ArtifactChunkRow.blob_id.startswith(f"{upload_id}."))
    with served.engine.connect().execution_options(**{SQLITE_READ_ONLY: True}) as conn:
        return int(conn.execute(query).scalar_one())


def chunk_sizes(served: Served, blob_id: str) -> list[int]:
    query = (
        select(func.length(ArtifactChunkRow.data))
        .where(ArtifactChunkRow.blob_id == blob_id)
        .order_by(ArtifactChunkRow.seq)
    )
    with served.engine.connect().execution_options(**{SQLITE_READ_ONLY: True}) as conn:
        return [int(n) for (n,) in conn.execute(query)]


def flipped(hex_digit: str) -> str:
    """Another hex digit than ``hex_digit`` (so an altered signature never equals the real one)."""
    return "1" if hex_digit == "0" else "0"


def with_query(url: str, **changes: Any) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


def test_mlflows_client_uploads_a_large_file_in_parts_and_it_downloads_identical(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = served.get("/api/3.0/mlflow/server-info")
    assert info.status_code == 200 and info.json()["multipart_uploads_enabled"] is True, info.text
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", "1000000")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(PART_SIZE))
    orphans = served.chunks(orphans_only=True)  # what earlier tests left: not ours to count
    exp, run_id = served.run_id("multipart")
    data = os.urandom(5 * PART_SIZE + 2_654_321)  # 6 parts, the last one shorter
    (tmp_path / "big.bin").write_bytes(data)
    served.client.log_artifact(run_id, str(tmp_path / "big.bin"), "data")

    key = f"{exp}/{run_id}/artifacts/data/big.bin"
    record = served.store.stat(key)
    assert record is not None and (record.size, record.sha256) == (len(data), sha(data))
    # Published as its parts' chunks, renumbered: 4 of 1 MiB and a short one per 5 MB part
    # (a single PUT would have stored 27 chunks of 1 MiB, the last one short).
    sizes = chunk_sizes(served, record.blob_id)
    part_chunks = [1 << 20] * 4 + [PART_SIZE - 4 * (1 << 20)]
    assert sizes == part_chunks * 5 + [1 << 20, 1 << 20, 2_654_321 - 2 * (1 << 20)]
    assert served.chunks(orphans_only=True) == orphans

    # Read back through the streamed route and MLflow's client: chunks of unequal size.
    r = served.get(f"/api/2.0/mlflow-artifacts/artifacts/{key}")
    assert r.status_code == 200 and sha(r.content) == sha(data)
    out = served.client.download_artifacts(run_id, "data/big.bin", str(tmp_path / "down"))
    assert Path(out).read_bytes() == data
    assert served.store.checksum(key) == sha(data)


def test_part_urls_are_refused_unless_signed_for_exactly_that_part(served: Served) -> None:
    exp, run_id = served.run_id("multipart-refusals")
    path = f"{exp}/{run_id}/artifacts/r"
    first = create(served, path, "f.bin", 2)
    other = create(served, path, "g.bin", 2)
    url = url_of(first, 1)
    grant = PartGrant(
        first["upload_id"], 1, f"{path}/f.bin", int(parse_qs(urlsplit(url).query)["expires"][0])
    )
    signature = parse_qs(urlsplit(url).query)["signature"][0]
    signer = UploadSigner(SECRET_KEY, 3600)
    assert signer.signature(grant) == signature  # what the test alters below is that URL
    expired = PartGrant(grant.upload_id, 1, grant.key, int(time.time()) - 1)
    refused = {
        "no signature": with_query(url, signature=""),
        "wrong signature": with_query(url, signature=signature[:-1] + flipped(signature[-1])),
        "expired": with_query(url, expires=expired.expires, signature=signer.signature(expired)),
        "expiry pushed back": with_query(url, expires=grant.expires + 3600),
        "junk expiry": with_query(url, expires="tomorrow"),
        "other part number": url.replace(f"/{first['upload_id']}/1?", f"/{first['upload_id']}/2?"),
        "tampered key": with_query(url, key=f"{path}/g.bin"),
        "other upload": url.replace(f"/{first['upload_id']}/", f"/{other['upload_id']}/"),
    }
    for why, bad in refused.items():
        for auth in (None, ADMIN):  # a login does not stand in for the signature
            r = put(bad, b"evil", auth=auth)
            assert r.status_code == 403, (why, r.status_code, r.text)
            assert r.json()["error_code"] == "PERMISSION_DENIED", why
    assert chunks_of(served, first["upload_id"]) == chunks_of(served, other["upload_id"]) == 0

    r = put(url, b"good")
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == sha(b"good")
    assert chunks_of(served, first["upload_id"]) == 1
    r = mpu(served, "abort", path, {"path": "f.bin", "upload_id": first["upload_id"]})
    assert r.status_code == 200, r.text
    assert chunks_of(served, first["upload_id"]) == 0


def test_a_part_sent_again_replaces_the_first_and_complete_checks_etags(
    served: Served,
) -> None:
    orphans = served.chunks(orphans_only=True)
    exp, run_id = served.run_id("multipart-resend")
    path = f"{exp}/{run_id}/artifacts"
    created = create(served, path, "f.bin", 2)
    one_a, one_b, two = os.urandom(1_500_000), os.urandom(1_200_000), b"the end"
    etag_a = put(url_of(created, 1), one_a).headers["ETag"]
    etag_b = put(url_of(created, 1), one_b).headers["ETag"]
    etag_2 = put(url_of(created, 2), two).headers["ETag"]
    assert chunks_of(served, created["upload_id"]) == 3  # part 1 (two chunks), part 2

    def complete(parts: list[dict[str, Any]]) -> requests.Response:
        body = {"path": "f.bin", "upload_id": created["upload_id"], "parts": parts}
        return mpu(served, "complete", path, body)

    stale = complete([{"part_number": 1, "etag": etag_a}, {"part_number": 2, "etag": etag_2}])
    assert stale.status_code == 400 and "part 1" in stale.json()["message"], stale.text
    assert served.store.stat(f"{path}/f.bin") is None

    r = complete([{"part_number": 1, "etag": etag_b}, {"part_number": 2, "etag": etag_2}])
    assert r.status_code == 200, r.text
    assert b"".join(served.store.read(f"{path}/f.bin")) == one_b + two
    assert chunks_of(served, created["upload_id"]) == 0
    assert served.chunks(orphans_only=True) == orphans


def test_complete_with_a_missing_part_publishes_nothing_and_abort_leaves_nothing(
    served: Served,
) -> None:
    orphans = served.chunks(orphans_only=True)
    exp, run_id = served.run_id("multipart-missing")
    path = f"{exp}/{run_id}/artifacts"
    created = create(served, path, "f.bin", 3)
    etags = {n: put(url_of(created, n), os.urandom(1_100_000)).headers["ETag"] for n in (1, 3)}
    body = {
        "path": "f.bin",
        "upload_id": created["upload_id"],
        "parts": [{"part_number": n, "etag": etags.get(n, sha(b""))} for n in (1, 2, 3)],
    }
    r = mpu(served, "complete", path, body)
    assert r.status_code == 400, r.text
    assert "part 2" in r.json()["message"] and "never stored" in r.json()["message"]
    assert served.store.stat(f"{path}/f.bin") is None
    assert chunks_of(served, created["upload_id"]) == 4  # the stored parts wait for abort

    # An upload id is good only for the file it was created for.
    r = mpu(served, "abort", path, {"path": "other.bin", "upload_id": created["upload_id"]})
    assert r.status_code == 400, r.text
    assert chunks_of(served, created["upload_id"]) == 4
    r = mpu(served, "abort", path, {"path": "f.bin", "upload_id": created["upload_id"]})
    assert r.status_code == 200, r.text
    assert chunks_of(served, created["upload_id"]) == 0
    assert served.store.stat(f"{path}/f.bin") is None
    assert served.chunks(orphans_only=True) == orphans


def test_a_part_whose_body_ends_short_stores_nothing(served: Served) -> None:
    exp, run_id = served.run_id("multipart-short")
    created = create(served, f"{exp}/{run_id}/artifacts", "f.bin", 1)
    url = urlsplit(url_of(created, 1))
    announced, sent = 3 * 2**20, 2 * 2**20 + 5  # two whole chunks, then the client stops
    with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
        sock.sendall(
            f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Length: {announced}\r\nConnection: close\r\n\r\n".encode()
        )
        sock.sendall(os.urandom(sent))
        sock.shutdown(socket.SHUT_WR)  # the body ends here; the answer still comes back
        answer = b""
        while data := sock.recv(65536):
            answer += data
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    assert chunks_of(served, created["upload_id"]) == 0


def test_parts_of_an_upload_never_completed_are_swept_as_orphans(served: Served) -> None:
    exp, run_id = served.run_id("multipart-orphans")
    created = create(served, f"{exp}/{run_id}/artifacts", "f.bin", 1)
    assert put(url_of(created, 1), b"abandoned").status_code == 200
    served.store.sweep_orphans()  # younger than ORPHAN_AGE: kept
    assert chunks_of(served, created["upload_id"]) == 1
    served.store.sweep_orphans(older_than=-dt.timedelta(seconds=1))  # as if a day went by
    assert chunks_of(served, created["upload_id"]) == 0


# --- permissions -------------------------------------------------------------
@pytest.fixture(scope="module")
def bobs_experiment(served: Served) -> str:
    """An experiment bob may edit (every other one he may only read, the default)."""
    exp, _ = served.run_id("bob-may-write")
    served.grant(BOB[0], exp, "EDIT")
    return exp


def test_a_user_who_may_only_read_cannot_create_complete_or_abort(
    served: Served, bobs_experiment: str
) -> None:
    exp, run_id = served.run_id("multipart-read-only")
    path = f"{exp}/{run_id}/artifacts"
    for action, body in (
        ("create", {"path": "f.bin", "num_parts": 1}),
        ("complete", {"path": "f.bin", "upload_id": "0" * 24, "parts": []}),
        ("abort", {"path": "f.bin", "upload_id": "0" * 24}),
    ):
        for api in (MPU_API, MPU_API.replace("/api/", "/ajax-api/")):  # MLflow serves both
            r = mpu(served, action, path, body, auth=BOB, api=api)
            assert r.status_code == 403, (api, action, r.status_code, r.text)
    # Where bob may write, he may upload in parts.
    r = mpu(
        served, "create", f"{bobs_experiment}/x/artifacts", {"path": "f.bin", "num_parts": 1}, BOB
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "path",
    [
        "{mine}/../{theirs}/r/artifacts",
        "{mine}/r/../../{theirs}/r/artifacts",
        "{mine}/%2e%2e/{theirs}/r/artifacts",
        "{mine}%2f..%2f{theirs}/r/artifacts",
        "%2e%2e/{theirs}/r/artifacts",
        "/{theirs}/r/artifacts",
        "%2f{theirs}/r/artifacts",
        "{mine}/..%5c{theirs}/r/artifacts",
    ],
)
def test_path_traversal_in_the_multipart_routes_is_refused(
    served: Served, bobs_experiment: str, path: str
) -> None:
    theirs, _ = served.run_id("multipart-theirs")
    target = path.format(mine=bobs_experiment, theirs=theirs)
    r = mpu(served, "create", target, {"path": "f.bin", "num_parts": 1}, BOB)
    assert r.status_code in (400, 403, 404), (target, r.status_code, r.text[:300])
    # Nor does a file name in the body climb out.
    r = mpu(
        served,
        "create",
        f"{bobs_experiment}/r/artifacts",
        {"path": f"../../{theirs}/r/artifacts/f.bin", "num_parts": 1},
        BOB,
    )
    if r.status_code == 200:  # only its base name is used
        assert f"/{theirs}/" not in r.json()["credentials"][0]["url"].replace("%2F", "/")
    assert not served.files(theirs)
