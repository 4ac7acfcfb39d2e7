"""Upload ids and part URL signatures of the multipart upload (shared.multipart)."""

from __future__ import annotations

import time
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.errors import InvalidPayload, NotAuthorized
from shared.multipart import (
    MAX_PARTS,
    PART_PATH,
    UPLOAD_ID_LENGTH,
    UploadSigner,
    check_part_count,
    part_blob,
)

SIGNER = UploadSigner("server-secret", ttl_seconds=3600)


def test_an_upload_id_is_good_only_for_its_key_and_its_part_blobs_fit_the_column() -> None:
    upload_id = SIGNER.new_upload("1/run/artifacts/big.bin")
    assert len(upload_id) == UPLOAD_ID_LENGTH
    SIGNER.check_upload(upload_id, "1/run/artifacts/big.bin")
    for key, other in (
        ("1/run/artifacts/other.bin", upload_id),
        ("1/run/artifacts/big.bin", upload_id[:-1] + ("0" if upload_id[-1] != "0" else "1")),
        ("1/run/artifacts/big.bin", upload_id + "0"),
        ("1/run/artifacts/big.bin", ""),
    ):
        with pytest.raises(InvalidPayload):
            SIGNER.check_upload(other, key)
    with pytest.raises(InvalidPayload):  # another server's secret
        UploadSigner("other-secret", 3600).check_upload(upload_id, "1/run/artifacts/big.bin")
    assert len(part_blob(upload_id, MAX_PARTS)) <= 32  # artifact_chunks.blob_id


def test_a_part_url_signs_exactly_its_upload_part_key_and_expiry() -> None:
    upload_id = SIGNER.new_upload("k/f.bin")
    grants = SIGNER.part_grants(upload_id, "k/f.bin", 3)
    assert [g.part_number for g in grants] == [1, 2, 3]
    grant = grants[0]
    url = SIGNER.part_url("http://server:5001/", grant)
    parts = urlsplit(url)
    assert parts.path == f"{PART_PATH}/{upload_id}/1"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["key"] == "k/f.bin" and int(query["expires"]) == grant.expires
    SIGNER.check_part(grant, query["signature"])
    for changed in (
        replace(grant, part_number=2),
        replace(grant, upload_id=SIGNER.new_upload("k/f.bin")),
        replace(grant, key="k/g.bin"),
        replace(grant, expires=grant.expires + 1),
    ):
        with pytest.raises(NotAuthorized):
            SIGNER.check_part(changed, query["signature"])
    expired = replace(grant, expires=int(time.time()) - 1)
    with pytest.raises(NotAuthorized):
        SIGNER.check_part(expired, SIGNER.signature(expired))
    with pytest.raises(NotAuthorized):
        SIGNER.check_part(grant, "")


@pytest.mark.parametrize("count", [0, -1, MAX_PARTS + 1])
def test_an_upload_has_one_to_max_parts(count: int) -> None:
    with pytest.raises(InvalidPayload):
        check_part_count(count)
    check_part_count(MAX_PARTS)
