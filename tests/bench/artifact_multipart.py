"""What does completing a multipart upload cost (``ArtifactStore.publish_parts``)? A
measurement script, not a benchmark of the suite:

    .venv/bin/python -m tests.bench.artifact_multipart

Stores MULTIPART_MB (200) of random bytes as 10 MB parts (``write_part``, as the part
route does), then times ``publish_parts``: reading every part back to check its ETag and
hash the file, then renumbering the chunks and publishing the row in one transaction.
For scale it also times a plain ``checksum`` read of the published file (the read-back
alone) and ``write`` of the same bytes in one stream. On PostgreSQL (fsync on, as in
production) and on SQLite. Prints seconds and MB/s, median of ROUNDS.
"""

from __future__ import annotations

import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine, Table

from shared.artifacts import ArtifactStore, UploadedPart
from shared.db import make_engine
from shared.models import ArtifactChunkRow, ArtifactFileRow
from shared.multipart import part_blob, upload_blobs_prefix
from shared.settings import configure_telemetry
from tests.support.engines import settings_for
from tests.support.pg import PostgresServer

MULTIPART_MB = int(os.environ.get("MULTIPART_MB", "200"))
PART_SIZE = 10 * 2**20
ROUNDS = int(os.environ.get("MULTIPART_ROUNDS", "3"))


def measure(engine: Engine) -> dict[str, float]:
    cast(Table, ArtifactFileRow.__table__).create(engine, checkfirst=True)
    cast(Table, ArtifactChunkRow.__table__).create(engine, checkfirst=True)
    store = ArtifactStore(engine)
    data = os.urandom(MULTIPART_MB * 2**20)
    samples: dict[str, list[float]] = {}
    for round_ in range(ROUNDS):
        upload_id = f"{round_:024d}"
        parts = []
        t0 = time.perf_counter()
        for number, start in enumerate(range(0, len(data), PART_SIZE), 1):
            blob = part_blob(upload_id, number)
            etag = store.write_part(blob, io.BytesIO(data[start : start + PART_SIZE]), None)
            parts.append(UploadedPart(number, blob, etag))
        samples.setdefault("parts written (one after another)", []).append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        store.publish_parts("big.bin", parts, upload_blobs_prefix(upload_id))
        samples.setdefault("complete (publish_parts)", []).append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        store.checksum("big.bin")
        samples.setdefault("read back alone (checksum)", []).append(time.perf_counter() - t0)
        store.delete("big.bin")
        t0 = time.perf_counter()
        store.write("big.bin", io.BytesIO(data))
        samples.setdefault("one-stream write, for scale", []).append(time.perf_counter() - t0)
        store.delete("big.bin")
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    configure_telemetry()
    results: dict[str, dict[str, Any]] = {}
    pg = PostgresServer()
    pg.init()
    pg.start("-c fsync=on -c full_page_writes=on")
    try:
        engine = make_engine(settings_for(pg.url("postgres"), Path(tempfile.mkdtemp())))
        results["postgresql"] = measure(engine)
        engine.dispose()
    finally:
        pg.cleanup()
    folder = Path(tempfile.mkdtemp())
    engine = make_engine(settings_for(f"sqlite:///{folder / 'bench.db'}", folder))
    results["sqlite"] = measure(engine)
    engine.dispose()
    print(f"\nseconds (MB/s), median of {ROUNDS} rounds, {MULTIPART_MB} MB in 10 MB parts")
    for kind, numbers in results.items():
        for step, seconds in numbers.items():
            print(f"{kind:11} {step:36} {seconds:7.2f} s ({MULTIPART_MB / seconds:6.1f} MB/s)")


if __name__ == "__main__":
    main()
