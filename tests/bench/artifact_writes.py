"""Does ``ArtifactStore.write`` on PostgreSQL get faster with several chunks per
transaction, or with ``SET STORAGE EXTERNAL`` on ``artifact_chunks.data`` (no TOAST
compression attempt)? A measurement script, not a benchmark of the suite:

    .venv/bin/python -m tests.bench.artifact_writes

Writes WRITES_MB (256) per write straight to the store (no server: the question is the
database side), for each combination of chunks per transaction (1 = SQLite's, 4,
16), storage (EXTENDED, PostgreSQL's default, or EXTERNAL) and data (random bytes, which
pglz gives up on quickly, and text-like bytes it compresses), in interleaved rounds, on a
cluster with fsync on (a production setting) and one with fsync off (the tests').
Prints the median MB/s of each.
"""

from __future__ import annotations

import itertools
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
from sqlalchemy import Engine, Table, delete, insert, text

from shared.artifacts import CHUNK_SIZE, ArtifactStore, _read_full
from shared.db import make_engine
from shared.models import ArtifactChunkRow, ArtifactFileRow, utcnow
from shared.settings import configure_telemetry
from tests.support.engines import settings_for
from tests.support.pg import PostgresServer

WRITES_MB = int(os.environ.get("ARTIFACT_WRITES_MB", "256"))
ROUNDS = int(os.environ.get("ARTIFACT_WRITES_ROUNDS", "3"))
PER_TRANSACTION = (1, 4, 16)
STORAGES = ("EXTENDED", "EXTERNAL")
_chunks = cast(Table, ArtifactChunkRow.__table__)


class Cycling:
    """``size`` bytes read from ``pattern`` over and over (no cost of making them)."""

    def __init__(self, pattern: bytes, size: int) -> None:
        self.view = memoryview(pattern)
        self.left = size
        self.at = 0

    def read(self, n: int) -> bytes:
        n = min(n, self.left, len(self.view) - self.at)
        piece = bytes(self.view[self.at : self.at + n])
        self.at = (self.at + n) % len(self.view)
        self.left -= n
        return piece


def patterns() -> dict[str, bytes]:
    rng = np.random.default_rng(7)
    size = 64 * CHUNK_SIZE
    numbers = rng.normal(size=size // 8)
    textual = "\n".join(f"{x:.6f}" for x in numbers).encode()[:size]
    return {"random": rng.bytes(size), "text": textual}


def write_chunks(engine: Engine, stream: BinaryIO, per_transaction: int) -> str:
    """ArtifactStore.write's chunk loop, committing every ``per_transaction`` chunks."""
    blob_id = uuid.uuid4().hex
    seq = 0
    with engine.connect() as conn:
        done = False
        while not done:
            with conn.begin():
                for _ in range(per_transaction):
                    data = _read_full(stream, CHUNK_SIZE)
                    if not data:
                        done = True
                        break
                    conn.execute(
                        insert(_chunks).values(
                            blob_id=blob_id, seq=seq, data=data, written_at=utcnow()
                        )
                    )
                    seq += 1
    return blob_id


def measure(pg: PostgresServer) -> dict[str, float]:
    engine = make_engine(settings_for(pg.url("postgres"), Path(tempfile.mkdtemp())))
    cast(Table, ArtifactFileRow.__table__).create(engine, checkfirst=True)
    _chunks.create(engine, checkfirst=True)
    with engine.connect() as conn:
        print(f"fsync = {conn.execute(text('SHOW fsync')).scalar_one()}")
    data = patterns()
    size = WRITES_MB * 2**20
    samples: dict[str, list[float]] = {}
    store = ArtifactStore(engine)
    for _ in range(ROUNDS):
        for storage, kind in itertools.product(STORAGES, data):
            with engine.begin() as conn:
                conn.execute(
                    text(f"ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE {storage}")
                )
            for n in PER_TRANSACTION:
                t0 = time.perf_counter()
                blob = write_chunks(engine, cast(BinaryIO, Cycling(data[kind], size)), n)
                seconds = time.perf_counter() - t0
                samples.setdefault(f"{storage} {kind} {n}/tx", []).append(WRITES_MB / seconds)
                with engine.begin() as conn:
                    conn.execute(delete(_chunks).where(_chunks.c.blob_id == blob))
            # The store itself, as a check that the copied loop measures what it does.
            t0 = time.perf_counter()
            store.write("check.bin", cast(BinaryIO, Cycling(data[kind], size)))
            seconds = time.perf_counter() - t0
            samples.setdefault(f"{storage} {kind} store", []).append(WRITES_MB / seconds)
            store.delete("check.bin")
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM artifact_chunks"))
    engine.dispose()
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    configure_telemetry()
    results: dict[str, dict[str, Any]] = {}
    for fsync in ("on", "off"):
        pg = PostgresServer()
        pg.init()
        pg.start(f"-c fsync={fsync} -c full_page_writes={fsync}")
        try:
            results[fsync] = measure(pg)
        finally:
            pg.cleanup()
    print(f"\nMB/s, median of {ROUNDS} rounds, {WRITES_MB} MB per write")
    print(f"{'variant':28} {'fsync on':>9} {'fsync off':>9}")
    for key in results["on"]:
        print(f"{key:28} {results['on'][key]:9.1f} {results['off'][key]:9.1f}")


if __name__ == "__main__":
    main()
