"""MLflow artifacts stored in our database, in chunks (the ``mlmanager-db:`` scheme).

Layout: ``artifact_files`` has one row per published file (path, size, sha256,
modification time, number of chunks); ``artifact_chunks`` holds its bytes as
CHUNK_SIZE pieces under the file's ``blob_id``. Guarantees:

- **Bounded memory both ways.** A write reads its stream CHUNK_SIZE at a time and
  hands each chunk to PG_WRITERS connections inserting at once (one on SQLite) while
  it reads the next; a read fetches READ_AHEAD chunks per query on READERS connections
  at once (one on SQLite) while the batch before is sent. A transfer holds a few
  chunks, whatever the file's size. (One connection each way gave half the file
  store's upload speed: the database's work per MiB, not the network, was the limit.)
- **A partial upload is never visible.** Chunks go under a fresh ``blob_id``, in short
  transactions (one chunk each on SQLite, which has one writer at a time: one long
  transaction would stop the job ledger for the whole upload; a few on PostgreSQL).
  The file row is published last, in one transaction that also drops the chunks of
  the file it replaces, after checking every chunk is there. A file smaller than a
  chunk is read whole first, then its chunk and its row go in one transaction (one
  statement on PostgreSQL). An upload that dies leaves only chunks no file row names;
  ``sweep_orphans`` removes those older than ORPHAN_AGE.
- **Reads check what they return.** The bytes are hashed as they stream and compared
  with the stored sha256; a file replaced or deleted while it was read is an error,
  never a mix of two versions.

``ArtifactStore`` runs every artifact query; ``DatabaseArtifactRepository`` is the MLflow
artifact repository plugin (entry point group ``mlflow.artifact_repository``) that the
server uses as its ``--artifacts-destination`` (``mlmanager-db:/``), so clients keep
plain ``mlflow-artifacts:`` URIs and never need database credentials.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import functools
import hashlib
import os
import posixpath
import queue
import tempfile
import threading
import uuid
from collections.abc import AsyncIterable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, TypeVar, cast
from urllib.parse import urlparse

from mlflow.entities import FileInfo
from mlflow.entities.multipart_upload import (
    CreateMultipartUploadResponse,
    MultipartUploadCredential,
    MultipartUploadPart,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)
from mlflow.store.artifact.artifact_repo import (
    ArtifactRepository,
    MultipartUploadMixin,
    StreamUploadMixin,
)
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.pool import PoolProxiedConnection

from shared.db import SQLITE_READ_ONLY
from shared.errors import DatabaseUnavailable, InvalidPayload, MLManagerError, NotFound
from shared.models import ArtifactChunkRow, ArtifactFileRow, utcnow
from shared.multipart import UploadSigner, check_part_count, part_blob, upload_blobs_prefix

SCHEME = "mlmanager-db"
DATABASE_DESTINATION = f"{SCHEME}:/"
# 1 MiB: large enough that a 1 GB file is 1,000 round trips, small enough that the
# server holds little per transfer.
CHUNK_SIZE = 1024 * 1024
# PostgreSQL commits a write's chunks this many at a time (still inserting each as it
# arrives: memory stays one chunk). Measured with tests/bench/artifact_writes.py, fsync
# on: 1 -> 16 per transaction took random bytes from 79 to 96 MB/s, compressible ones
# from 60 to 88. SQLite keeps one per transaction (its single writer, see write).
PG_CHUNKS_PER_TRANSACTION = 8
# Connections inserting one upload's chunks at once on PostgreSQL (SQLite has one writer).
PG_WRITERS = 2
# Chunks fetched per round trip when a file is read; a download holds twice this (one
# batch going to the client, the next coming from the database).
READ_AHEAD = 2
# Connections fetching one download's batches at once on PostgreSQL.
READERS = 2
# An upload that wrote nothing for this long is dead: its chunks are swept.
ORPHAN_AGE = dt.timedelta(hours=24)
# Two uploads publishing one new path at once on PostgreSQL: the loser retries.
PUBLISH_ATTEMPTS = 3

T = TypeVar("T")

_files = cast(Table, ArtifactFileRow.__table__)
_chunks = cast(Table, ArtifactChunkRow.__table__)


class ArtifactChanged(MLManagerError):
    """The file was replaced or deleted while it was being read."""

    http_status = 409
    error_code = "RESOURCE_CONFLICT"


class IncompleteUpload(MLManagerError):
    """The client's body ended before the length it announced."""

    http_status = 400
    error_code = "INVALID_PARAMETER_VALUE"


class ArtifactCorrupt(MLManagerError):
    """Stored bytes do not match the stored checksum or size."""


@dataclass(frozen=True)
class ArtifactFile:
    """A published file (what ``artifact_files`` says about it)."""

    path: str
    size: int
    sha256: str
    mtime: dt.datetime
    blob_id: str = ""
    chunks: int = 0


class Chunks(Iterator[bytes]):
    """A file's bytes as ``ArtifactStore.open`` streams them, holding a connection (a
    file of more than one chunk): iterate to the end, or close (or leave the ``with``
    block) to give it back."""

    def __init__(self, conn: Connection | None, chunks: Iterator[bytes]) -> None:
        self._conn = conn
        self._chunks = chunks

    def __next__(self) -> bytes:
        return next(self._chunks)

    def __enter__(self) -> Chunks:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        cast(Any, self._chunks).close()
        if self._conn is not None:
            self._conn.close()


@dataclass(frozen=True)
class UploadedPart:
    """A part of a multipart upload as the client lists it at ``complete``: its number,
    the blob it was stored as, and the ETag (sha256) the server answered for it."""

    number: int
    blob_id: str
    etag: str


@dataclass(frozen=True)
class Entry:
    """One child of a folder: a file (with its size) or a sub-folder."""

    name: str
    is_dir: bool
    size: int | None


def clean_path(path: str | None) -> str:
    """A stored key: relative, ``/``-separated, no ``.``/``..`` segments; '' is the root.

    The server validated the path already (MLflow's ``validate_path_is_safe``); this is
    the store's own check, for callers that do not go through the server.
    """
    if not path:
        return ""
    if "\\" in path or "\x00" in path or path.startswith("/"):
        raise InvalidPayload(f"invalid artifact path {path!r}: use a relative '/' path")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidPayload(f"invalid artifact path {path!r}: '..' is not allowed")
    return "/".join(parts)


def _folder_range(prefix: str) -> tuple[str, str]:
    """Keys under ``prefix/`` are exactly those in [prefix/, prefix0) byte-wise ('0' follows
    '/'); the paths' collation is byte-wise on both dialects (shared.models)."""
    return f"{prefix}/", f"{prefix}0"


def _under(prefix: str) -> Any:
    """Files in folder ``prefix`` and its sub-folders (every file for the root '')."""
    if not prefix:
        return _files.c.path.isnot(None)
    low, high = _folder_range(prefix)
    return (_files.c.path >= low) & (_files.c.path < high)


def _at_or_under(key: str) -> Any:
    """The file ``key`` or every file under folder ``key``."""
    return (_files.c.path == key) | _under(key) if key else _under(key)


def _read_full(stream: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes (fewer only at the end of the stream)."""
    parts: list[bytes] = []
    wanted = size
    while wanted > 0:
        data = stream.read(wanted)
        if not data:
            break
        parts.append(data)
        wanted -= len(data)
    return b"".join(parts)


def _bytes_in_binary(dbapi_conn: Any, _record: Any) -> None:
    """psycopg dumps ``bytes`` parameters in binary (not as hex text) on this connection."""
    from psycopg.types.string import BytesBinaryDumper

    dbapi_conn.adapters.register_dumper(bytes, BytesBinaryDumper)


def _driver_error(
    engine: Engine, pooled: PoolProxiedConnection, sql: str, exc: Exception
) -> OperationalError:
    """What SQLAlchemy does with a driver's error under a statement of its own, for our
    statements run on the driver: a lost connection is dropped with every connection the
    pool opened before it (a restarted server dropped them all: found one by one, each
    request would fail on the next), and the error is SQLAlchemy's OperationalError,
    ``connection_invalidated``, so ``_once_more_if_stale`` and ``_unavailable`` treat
    both kinds of statement alike."""
    lost = bool(engine.dialect.is_disconnect(cast(Any, exc), pooled.driver_connection, None))
    if lost:
        engine.pool._invalidate(pooled, exc)  # what SQLAlchemy's Connection calls
    return OperationalError(sql, None, exc, hide_parameters=True, connection_invalidated=lost)


def _binary_rows(conn: Connection, query: Any) -> list[tuple[Any, ...]]:
    """``query``'s rows fetched by psycopg in binary (bytea unescaped by no one); the SQL
    is SQLAlchemy's, compiled for this connection."""
    import psycopg

    compiled = query.compile(dialect=conn.dialect)
    cursor = conn.connection.driver_connection.cursor(binary=True)  # type: ignore[union-attr]
    try:
        return list(cursor.execute(str(compiled), compiled.params).fetchall())
    except psycopg.OperationalError as exc:
        raise _driver_error(conn.engine, conn.connection, str(compiled), exc) from exc
    finally:
        cursor.close()


@dataclass(frozen=True)
class _Compiled:
    """A statement SQLAlchemy compiled once for a dialect, its parameters named by
    ``bindparam``: run on the driver's cursor (``ArtifactStore._on_driver``) with
    ``params``."""

    sql: str
    defaults: dict[str, Any]

    @classmethod
    def of(cls, statement: Any, dialect: Any) -> _Compiled:
        compiled = statement.compile(dialect=dialect)
        return cls(str(compiled), dict(compiled.params))

    def params(self, **values: Any) -> dict[str, Any]:
        return self.defaults | values


@functools.cache
def _small_file_statements(dialect: Any) -> tuple[_Compiled, _Compiled, _Compiled]:
    """PostgreSQL's statements for the files of at most one chunk (most files), compiled
    once per dialect: publish a new file with its chunk, publish a new empty file, read
    a file's row with its first chunk."""
    new_file = (
        pg_insert(_files)
        .values({c.name: bindparam(c.name) for c in _files.c})
        .on_conflict_do_nothing(index_elements=[_files.c.path])
        .returning(_files.c.path)
    )
    with_chunk = new_file.add_cte(
        insert(_chunks)
        .values(
            blob_id=bindparam("blob_id"),
            seq=0,
            data=bindparam("data"),
            written_at=bindparam("mtime"),
        )
        .cte("chunk")
    )
    return (
        _Compiled.of(with_chunk, dialect),
        _Compiled.of(new_file, dialect),
        _Compiled.of(_first_row_query(bindparam("path")), dialect),
    )


def _first_row_query(path: Any) -> Any:
    """The file row at ``path`` (``_files``' columns) and its first chunk's data."""
    return (
        select(_files, _chunks.c.data)
        .outerjoin(_chunks, (_chunks.c.blob_id == _files.c.blob_id) & (_chunks.c.seq == 0))
        .where(_files.c.path == path)
    )


def _check_complete(key: str, size: int, expected_size: int | None) -> None:
    if expected_size is not None and size != expected_size:
        raise IncompleteUpload(
            f"upload of {key} ended after {size} of {expected_size} bytes "
            "(client gone?); nothing was stored, upload it again"
        )


def _unavailable(exc: OperationalError) -> DatabaseUnavailable:
    cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return DatabaseUnavailable(
        "the artifact store's database did not answer"
        + (f": {cause[0]}" if cause else "")
        + "; retry when it is back"
    )


class _ChunkWriters:
    """Threads, each with a connection of its own, inserting one upload's chunks as the
    reader hands them over (``put``); the reader waits when ``count`` chunks are already
    waiting, so memory stays ``2 * count + 1`` chunks whatever the file size. Each thread
    commits every ``per_transaction`` chunks and at the end; the first error of any of
    them stops the upload (raised by ``put`` or at the end of the ``with`` block)."""

    def __init__(self, store: ArtifactStore, blob_id: str, count: int, per_transaction: int):
        self._store = store
        self._blob_id = blob_id
        self._per_transaction = per_transaction
        self._queue: queue.Queue[tuple[int, bytes] | None] = queue.Queue(maxsize=count)
        self._errors: list[BaseException] = []
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._run, name=f"artifact-upload-{i}", daemon=True)
            for i in range(count)
        ]

    def __enter__(self) -> _ChunkWriters:
        for thread in self._threads:
            thread.start()
        return self

    def put(self, seq: int, data: bytes) -> None:
        if self._errors:
            raise self._errors[0]
        # Never blocks for good: a writer that failed still takes what comes (and drops it).
        self._queue.put((seq, data))

    def __exit__(self, exc_type: object, *_exc: object) -> None:
        # The reader failed (a client gone, a short body): the writers drop what is left.
        self._stopping = exc_type is not None
        for _ in self._threads:
            self._queue.put(None)  # each thread takes exactly one and ends
        for thread in self._threads:
            thread.join()
        if exc_type is None and self._errors:
            raise self._errors[0]

    def _insert(self, conn: Connection, seq: int, data: bytes) -> None:
        conn.execute(
            insert(_chunks).values(blob_id=self._blob_id, seq=seq, data=data, written_at=utcnow())
        )

    def _first(self, seq: int, data: bytes) -> Connection:
        """A connection whose transaction holds its first chunk (uncommitted: safe to try
        again on another connection if the pooled one was stale)."""

        def connected() -> Connection:
            conn = self._store.engine.connect()
            try:
                self._insert(conn, seq, data)
            except BaseException:
                conn.close()
                raise
            return conn

        return self._store._once_more_if_stale(connected)

    def _run(self) -> None:
        conn: Connection | None = None
        written = 0
        ended = False  # this thread took its None
        try:
            while (item := self._queue.get()) is not None:
                if self._errors or self._stopping:
                    continue  # another writer failed, or the reader did
                if conn is None:
                    conn = self._first(*item)
                else:
                    self._insert(conn, *item)
                written += 1
                if written % self._per_transaction == 0:
                    conn.commit()
            ended = True
            if conn is not None and not (self._errors or self._stopping):
                conn.commit()
        except BaseException as exc:
            self._errors.append(exc)
            # Take what the reader still hands over, so it never waits on a full queue.
            while not ended:
                ended = self._queue.get() is None
        finally:
            # Its rollback fails on a connection the database dropped: nothing left to
            # lose there (what this thread wrote was committed, or the upload failed).
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()


class ArtifactStore:
    """Every query on ``artifact_files`` and ``artifact_chunks``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # psycopg (3) sends and receives bytea in binary when asked: measured 1 MiB
        # chunks read 2.2x and written 1.3x faster than in its default text (hex) form.
        self._psycopg = engine.dialect.driver == "psycopg"
        if self._psycopg and not event.contains(engine, "connect", _bytes_in_binary):
            event.listen(engine, "connect", _bytes_in_binary)

    def _reader(self) -> Connection:
        return self.engine.connect().execution_options(**{SQLITE_READ_ONLY: True})

    def _on_driver(self, statement: _Compiled, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of ``statement`` run straight on psycopg (PostgreSQL), on a pooled
        connection, as a transaction of its own, bytea in binary both ways. For the files
        of one chunk, where SQLAlchemy's work per statement (building it, the compiled
        cache, execution options, result mapping) took longer than the round trip itself:
        measured in process on a 10 KB file, a write 0.58-1.35 ms through SQLAlchemy and
        0.25-0.29 ms this way, a read 0.46-1.0 ms and 0.13-0.21 ms. A connection the
        database dropped is invalidated and raised as SQLAlchemy's own statements are."""
        import psycopg

        pooled = self.engine.raw_connection()
        try:
            pg = cast(Any, pooled.driver_connection)
            pg.autocommit = True
            try:
                with pg.cursor(binary=True) as cursor:
                    return cast(
                        "tuple[Any, ...] | None",
                        cursor.execute(statement.sql, params).fetchone(),
                    )
            except psycopg.OperationalError as exc:
                raise _driver_error(self.engine, pooled, statement.sql, exc) from exc
            finally:
                if pooled.dbapi_connection is not None:  # not invalidated
                    try:
                        pg.autocommit = False  # as the pool's other users expect it
                    except psycopg.Error as exc:
                        pooled.invalidate(exc)
        finally:
            pooled.close()

    @staticmethod
    def _once_more_if_stale(work: Callable[[], T]) -> T:
        """``work`` again, once, if its first statement found a pooled connection the
        database had dropped (a restart, an idle timeout): the server's store checks out
        connections without a ping (``default_store``), so a stale one is found this way
        and SQLAlchemy renews the pool. Only for work that changed nothing before
        failing."""
        try:
            return work()
        except OperationalError as exc:
            if not exc.connection_invalidated:
                raise
        return work()

    # --- writing -----------------------------------------------------------
    def write(self, path: str, stream: BinaryIO, expected_size: int | None = None) -> ArtifactFile:
        """Store ``stream`` as the file ``path`` (replacing any file there) and publish it;
        a stream that ends before ``expected_size`` bytes publishes nothing."""
        key = clean_path(path)
        if not key:
            raise InvalidPayload("an artifact needs a file name")
        first = _read_full(stream, CHUNK_SIZE)
        if len(first) < CHUNK_SIZE:
            return self._write_whole(key, first, expected_size)
        blob_id = uuid.uuid4().hex
        try:
            size, chunks, sha256 = self.write_blob(blob_id, stream, first)
            _check_complete(key, size, expected_size)
            record = ArtifactFile(key, size, sha256, utcnow(), blob_id, chunks)
            self._publish(record)
            return record
        except BaseException:
            self.drop_blob(blob_id)
            raise

    def write_blob(
        self, blob_id: str, stream: BinaryIO, first: bytes = b""
    ) -> tuple[int, int, str]:
        """``first`` then the rest of ``stream``, inserted and committed as the chunks
        0, 1, ... of ``blob_id`` (no file names them yet: see ``write``); returns the
        bytes, chunks and sha256 written. On error some chunks may be stored: the caller
        drops the blob (``drop_blob``) or leaves it to ``sweep_orphans``."""
        digest = hashlib.sha256()
        size = seq = 0
        postgres = self.engine.dialect.name == "postgresql"
        writers = _ChunkWriters(
            self,
            blob_id,
            PG_WRITERS if postgres else 1,
            PG_CHUNKS_PER_TRANSACTION if postgres else 1,
        )
        with writers:
            data = first or _read_full(stream, CHUNK_SIZE)
            while data:
                # This thread reads (and hashes) the client's chunks; the writers' threads
                # insert them, so reading the next overlaps the inserts.
                digest.update(data)
                writers.put(seq, data)
                size += len(data)
                seq += 1
                data = _read_full(stream, CHUNK_SIZE)
        return size, seq, digest.hexdigest()

    def _write_whole(self, key: str, data: bytes, expected_size: int | None) -> ArtifactFile:
        """A file of less than one chunk, already read whole: its chunk and its file row
        go in one transaction (one commit per small file, not two)."""
        _check_complete(key, len(data), expected_size)
        record = ArtifactFile(
            key,
            len(data),
            hashlib.sha256(data).hexdigest(),
            utcnow(),
            uuid.uuid4().hex,
            1 if data else 0,
        )

        if self.engine.dialect.name == "postgresql":
            # Each try under a blob of its own: one that failed may have been stored.
            return self._once_more_if_stale(
                lambda: self._write_new_or_replace(replace(record, blob_id=uuid.uuid4().hex), data)
            )

        def publish(conn: Connection) -> None:
            if data:
                conn.execute(
                    insert(_chunks).values(
                        blob_id=record.blob_id, seq=0, data=data, written_at=record.mtime
                    )
                )
            self._replace(conn, record)

        self._publishing(publish)
        return record

    def _write_new_or_replace(self, record: ArtifactFile, data: bytes) -> ArtifactFile:
        """PostgreSQL: the chunk and the file row in one statement, one round trip, when
        no file is at the path yet (the common case); a file there already is replaced
        by ``_publish`` (the chunk is stored by then)."""
        with_chunk, empty, _first = _small_file_statements(self.engine.dialect)
        fields = {c.name: getattr(record, c.name) for c in _files.c}
        try:
            if data:
                published = self._on_driver(with_chunk, with_chunk.params(**fields, data=data))
            else:
                published = self._on_driver(empty, empty.params(**fields))
            if published is None:
                self._publish(record)
        except BaseException:
            self.drop_blob(record.blob_id)
            raise
        return record

    def _publish(
        self, record: ArtifactFile, prepare: Callable[[Connection], None] | None = None
    ) -> None:
        """Publish ``record`` once its chunks are all there (``prepare`` runs first, in the
        same transaction: it may put them there)."""

        def publish(conn: Connection) -> None:
            if prepare is not None:
                prepare(conn)
            written = conn.execute(
                select(func.count()).where(_chunks.c.blob_id == record.blob_id)
            ).scalar_one()
            if written != record.chunks:
                raise ArtifactCorrupt(
                    f"upload of {record.path} lost chunks ({written} of "
                    f"{record.chunks} left, swept as abandoned?); upload it again"
                )
            self._replace(conn, record)

        self._publishing(publish)

    def _publishing(self, publish: Callable[[Connection], None]) -> None:
        """Run ``publish`` in a transaction, again if it lost a race on a new path."""
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                with self.engine.begin() as conn:
                    publish(conn)
                return
            except IntegrityError:
                # Another upload published this new path between our DELETE and INSERT;
                # the last one to publish wins, as on a file system.
                if attempt == PUBLISH_ATTEMPTS:
                    raise

    @staticmethod
    def _replace(conn: Connection, record: ArtifactFile) -> None:
        """Publish ``record`` at its path, dropping the file it replaces (in ``conn``'s
        transaction)."""
        replaced = delete(_files).where(_files.c.path == record.path)
        old = conn.execute(replaced.returning(_files.c.blob_id)).scalar_one_or_none()
        if old is not None:
            conn.execute(delete(_chunks).where(_chunks.c.blob_id == old))
        conn.execute(
            insert(_files).values(
                path=record.path,
                blob_id=record.blob_id,
                size=record.size,
                sha256=record.sha256,
                chunks=record.chunks,
                mtime=record.mtime,
            )
        )

    def drop_blob(self, blob_id: str) -> None:
        """Best effort: the chunks of a failed upload (the sweep gets them otherwise)."""
        # The upload's own error is the one to report, not a failure to clean up after it.
        with contextlib.suppress(Exception), self.engine.begin() as conn:
            conn.execute(delete(_chunks).where(_chunks.c.blob_id == blob_id))

    # --- reading -----------------------------------------------------------
    def stat(self, path: str) -> ArtifactFile | None:
        return self._once_more_if_stale(lambda: self._stat(path))

    def _stat(self, path: str) -> ArtifactFile | None:
        key = clean_path(path)
        with self._reader() as conn:
            row = conn.execute(select(_files).where(_files.c.path == key)).mappings().first()
        return None if row is None else ArtifactFile(**row)

    def open(self, path: str) -> tuple[ArtifactFile, Chunks] | None:
        """The file at ``path`` and its bytes, or None if no file is there.

        One query answers the file's row and its first chunk (a file under CHUNK_SIZE,
        most of them, costs that one round trip); the rest follow READ_AHEAD chunks per
        query on the same connection, outside any long transaction (a slow client must
        not hold a snapshot open: on PostgreSQL it would hold back vacuum, on SQLite the
        WAL checkpoint). No snapshot is needed: a blob's chunks never change, so a
        reader sees each one as written or, the file replaced or deleted meanwhile,
        finds it gone (ArtifactChanged). The bytes are checked against the stored size
        and sha256 before the iterator ends. A database that stops answering midway is
        DatabaseUnavailable (read again from the start once it is back)."""
        key = clean_path(path)
        row = self._once_more_if_stale(lambda: self._first_row(key))
        if row is None:
            return None
        *fields, data = row
        record = ArtifactFile(**{c.name: v for c, v in zip(_files.c, fields, strict=True)})
        # The rest of a larger file comes on a connection held for the download.
        conn = self._once_more_if_stale(self._checked_reader) if record.chunks > 1 else None
        return record, Chunks(conn, self._stream(conn, record, data))

    def _first_row(self, key: str) -> tuple[Any, ...] | None:
        """The file row at ``key`` (``_files``' columns) and its first chunk, or None."""
        if self._psycopg:
            first = _small_file_statements(self.engine.dialect)[2]
            return self._on_driver(first, first.params(path=key))
        with self._reader() as conn:
            row = conn.execute(_first_row_query(key)).first()
        return None if row is None else tuple(row)

    def _single_statements(self) -> Connection:
        """A reader's connection, each statement its own transaction on PostgreSQL (no
        BEGIN and COMMIT round trips); SQLite, in process, keeps its read transactions."""
        conn = self._reader()
        if self.engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn

    def _checked_reader(self) -> Connection:
        """``_single_statements`` whose connection answered (a stale pooled one raises
        here, where trying again is safe, not in the middle of a download)."""
        conn = self._single_statements()
        try:
            conn.exec_driver_sql("SELECT 1")
        except BaseException:
            conn.close()
            raise
        return conn

    def _stream(
        self, conn: Connection | None, record: ArtifactFile, first: bytes | None
    ) -> Iterator[bytes]:
        digest = hashlib.sha256()
        size = seq = 0  # bytes and chunks handed out

        # The batches after the first chunk come from ``readers`` connections at once
        # (each used by one thread at a time: its next batch is asked for once its last
        # one arrived), in order, while the batch before goes to the client.
        readers = READERS if self.engine.dialect.name == "postgresql" else 1
        connections = [] if conn is None else [conn]
        fetchers = ThreadPoolExecutor(readers, thread_name_prefix="artifact-download")
        coming: collections.deque[tuple[Connection, Future[list[bytes]]]] = collections.deque()
        asked = 0 if first is None else 1  # chunks asked for so far

        def ask(on: Connection) -> None:
            nonlocal asked
            if asked < record.chunks:
                coming.append((on, fetchers.submit(self._chunk_batch, on, record.blob_id, asked)))
                asked += READ_AHEAD

        try:
            if conn is not None:  # more than the first chunk to come
                ask(conn)
                if readers > 1 and asked < record.chunks:
                    connections.append(self._once_more_if_stale(self._checked_reader))
                    ask(connections[1])
            pending = [] if first is None else [first]
            while True:
                for data in pending:
                    digest.update(data)
                    size += len(data)
                    seq += 1
                    yield data
                if not coming:
                    break
                on, batch = coming.popleft()
                pending = batch.result()
                if len(pending) < READ_AHEAD and seq + len(pending) < record.chunks:
                    asked = record.chunks  # a gap: the file went meanwhile (checked below)
                ask(on)
        except OperationalError as exc:
            raise _unavailable(exc) from None
        finally:
            fetchers.shutdown(wait=True, cancel_futures=True)
            for each in connections:
                each.close()
        if seq != record.chunks:
            raise ArtifactChanged(
                f"artifact {record.path} was replaced or deleted while it was read; read it again"
            )
        if size != record.size or digest.hexdigest() != record.sha256:
            raise ArtifactCorrupt(
                f"artifact {record.path}: stored bytes do not match its checksum "
                f"({size} bytes, expected {record.size})"
            )

    def read(self, path: str) -> Iterator[bytes]:
        """The bytes of the file at ``path`` (NotFound if none), as ``open`` streams them."""
        opened = self.open(path)
        if opened is None:
            raise NotFound(f"no artifact at {clean_path(path)!r}")
        with opened[1] as chunks:
            yield from chunks

    def checksum(self, path: str) -> str:
        """sha256 of the bytes read back from the database (checked on the way)."""
        digest = hashlib.sha256()
        for data in self.read(path):
            digest.update(data)
        return digest.hexdigest()

    def list_folder(self, path: str) -> list[Entry]:
        """The files and sub-folders directly in folder ``path`` ('' is the root)."""
        return self._once_more_if_stale(lambda: self._list_folder(path))

    def _list_folder(self, path: str) -> list[Entry]:
        prefix = clean_path(path)
        start = len(prefix) + 1 if prefix else 0
        entries: dict[str, Entry] = {}
        with self._reader() as conn:
            rows = conn.execute(
                select(_files.c.path, _files.c.size).where(_under(prefix)).order_by(_files.c.path)
            )
            for key, size in rows:
                name, sep, _ = key[start:].partition("/")
                if sep:
                    entries.setdefault(name, Entry(name, True, None))
                else:
                    entries[name] = Entry(name, False, size)
        return list(entries.values())

    def walk(self, path: str = "") -> list[ArtifactFile]:
        """Every file at or under ``path``."""
        return self._once_more_if_stale(lambda: self._walk(path))

    def _walk(self, path: str) -> list[ArtifactFile]:
        key = clean_path(path)
        with self._reader() as conn:
            rows = conn.execute(
                select(_files).where(_at_or_under(key)).order_by(_files.c.path)
            ).mappings()
            return [ArtifactFile(**row) for row in rows]

    # --- deleting ----------------------------------------------------------
    def delete(self, path: str) -> int:
        """Delete the file ``path`` or everything under folder ``path``; the count deleted."""
        key = clean_path(path)
        with self.engine.begin() as conn:
            blobs = list(
                conn.execute(delete(_files).where(_at_or_under(key)).returning(_files.c.blob_id))
            )
            for (blob_id,) in blobs:
                conn.execute(delete(_chunks).where(_chunks.c.blob_id == blob_id))
        self.sweep_orphans()
        return len(blobs)

    def sweep_orphans(self, older_than: dt.timedelta = ORPHAN_AGE) -> int:
        """Remove chunks of uploads that died (no file row, untouched for ``older_than``)."""
        cutoff = utcnow() - older_than
        published = select(_files.c.blob_id)
        with self.engine.begin() as conn:
            stale = (
                select(_chunks.c.blob_id)
                .where(_chunks.c.written_at < cutoff, _chunks.c.blob_id.not_in(published))
                .distinct()
            )
            blobs = [b for (b,) in conn.execute(stale)]
            for blob_id in blobs:
                # Only if nothing of it was written since the cutoff (still uploading).
                recent = conn.execute(
                    select(func.max(_chunks.c.written_at)).where(_chunks.c.blob_id == blob_id)
                ).scalar_one()
                if recent is not None and recent >= cutoff:
                    continue
                conn.execute(delete(_chunks).where(_chunks.c.blob_id == blob_id))
            return len(blobs)

    # --- multipart uploads (shared.multipart names the parts' blobs) ----------
    def write_part(self, blob_id: str, stream: BinaryIO, expected_size: int | None) -> str:
        """One part of a multipart upload, stored as the blob ``blob_id`` (replacing the
        part sent there before); its sha256, the ETag the client sends back. A body that
        ends before ``expected_size`` stores nothing."""
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(_chunks).where(_chunks.c.blob_id == blob_id))
            try:
                size, _count, sha256 = self.write_blob(blob_id, stream)
                _check_complete(f"part {blob_id}", size, expected_size)
            except BaseException:
                self.drop_blob(blob_id)
                raise
        except OperationalError as exc:
            raise _unavailable(exc) from None
        return sha256

    def publish_parts(self, path: str, parts: list[UploadedPart], leftovers: str) -> ArtifactFile:
        """Publish ``parts``, in their order, as the one file ``path`` (replacing any file
        there, as ``write`` does); then drop the blobs starting with ``leftovers`` (parts
        of this upload the client did not list).

        Each part is read back once, in order, to check its sha256 against the ETag the
        client holds and to hash the whole file (the only way to get its sha256: parts
        were hashed separately, by different requests). Then one transaction renumbers
        the parts' chunks into the file's blob (on PostgreSQL an UPDATE of ``blob_id`` and
        ``seq`` keeps the TOASTed bytes where they are) and publishes the file row. A
        missing part or a wrong ETag is InvalidPayload, with nothing published."""
        key = clean_path(path)
        digest = hashlib.sha256()
        size = 0
        counts: list[int] = []
        for part in parts:
            part_digest = hashlib.sha256()
            count = 0
            for data in self._blob_chunks(part.blob_id):
                part_digest.update(data)
                digest.update(data)
                size += len(data)
                count += 1
            if count == 0:
                raise InvalidPayload(
                    f"part {part.number} of the upload of {key} was never stored (or was "
                    "empty): upload it, or start again",
                    field="parts",
                )
            if part_digest.hexdigest() != part.etag:
                raise InvalidPayload(
                    f"part {part.number} of the upload of {key} does not match its ETag "
                    f"{part.etag[:64]!r} (stored: {part_digest.hexdigest()}); send it again",
                    field="parts",
                )
            counts.append(count)
        record = ArtifactFile(
            key, size, digest.hexdigest(), utcnow(), uuid.uuid4().hex, sum(counts)
        )

        def move_parts(conn: Connection) -> None:
            offset = 0
            for part, count in zip(parts, counts, strict=True):
                moved = conn.execute(
                    update(_chunks)
                    .where(_chunks.c.blob_id == part.blob_id)
                    .values(blob_id=record.blob_id, seq=_chunks.c.seq + offset)
                ).rowcount
                if moved != count:
                    raise ArtifactChanged(
                        f"part {part.number} of the upload of {key} changed while the upload "
                        "was completed; complete it again"
                    )
                offset += count
            conn.execute(
                delete(_chunks).where(_chunks.c.blob_id.startswith(leftovers, autoescape=True))
            )

        self._publish(record, prepare=move_parts)
        return record

    def drop_blobs(self, prefix: str) -> int:
        """Delete the chunks of every blob whose id starts with ``prefix`` (an aborted
        upload's parts); the number of chunks deleted."""
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    delete(_chunks).where(_chunks.c.blob_id.startswith(prefix, autoescape=True))
                ).rowcount
            )

    def _blob_chunks(self, blob_id: str) -> Iterator[bytes]:
        """The chunks of ``blob_id`` in order, READ_AHEAD per query; a gap (a part whose
        upload died between two chunks) ends them early, so the part's hash fails."""
        with self._single_statements() as conn:
            start = 0
            while True:
                batch = self._chunk_batch(conn, blob_id, start)
                yield from batch
                start += len(batch)
                if len(batch) < READ_AHEAD:
                    return

    def _chunk_batch(self, conn: Connection, blob_id: str, start: int) -> list[bytes]:
        """Chunks ``start`` .. ``start + READ_AHEAD - 1`` of ``blob_id`` in one query, up to
        the first one missing (a gap: the blob went meanwhile, or never was whole). No
        read transaction is left open while the caller uses them."""
        query = (
            select(_chunks.c.seq, _chunks.c.data)
            .where(
                _chunks.c.blob_id == blob_id,
                _chunks.c.seq >= start,
                _chunks.c.seq < start + READ_AHEAD,
            )
            .order_by(_chunks.c.seq)
        )
        if self._psycopg:
            rows = _binary_rows(conn, query)
        else:
            rows = [tuple(row) for row in conn.execute(query)]
        conn.commit()
        batch: list[bytes] = []
        for seq, data in rows:
            if seq != start + len(batch):
                break
            batch.append(data)
        return batch


# --- copying another store in ---------------------------------------------
@dataclass
class CopyReport:
    copied: int = 0
    skipped: int = 0
    bytes: int = 0


def _sha256_of(local_file: str) -> str:
    digest = hashlib.sha256()
    with open(local_file, "rb") as fh:
        while data := fh.read(CHUNK_SIZE):
            digest.update(data)
    return digest.hexdigest()


def _source_files(source: ArtifactRepository, path: str | None = None) -> Iterator[str]:
    for info in source.list_artifacts(path):
        if info.is_dir:
            yield from _source_files(source, info.path)
        else:
            yield info.path


def copy_from(
    source: ArtifactRepository,
    store: ArtifactStore,
    prefix: str = "",
    on_file: Callable[[str, str], None] | None = None,
) -> CopyReport:
    """Copy every file of ``source`` into ``store`` (under ``prefix``), one file at a time
    through a temporary folder, and check each: the sha256 of the source file, of the
    bytes written, and of the bytes read back from the database must agree.

    A file already stored with the same checksum is skipped, so an interrupted copy can
    simply be run again. ``on_file(path, "copied" | "skipped")`` reports progress.
    """
    report = CopyReport()
    for rel in _source_files(source):
        key = "/".join(p for p in (clean_path(prefix), clean_path(rel)) if p)
        with tempfile.TemporaryDirectory() as tmp:
            local = source.download_artifacts(rel, tmp)
            expected = _sha256_of(local)
            existing = store.stat(key)
            if existing is not None and existing.sha256 == expected:
                report.skipped += 1
                if on_file:
                    on_file(key, "skipped")
                continue
            with open(local, "rb") as fh:
                written = store.write(key, fh)
        if written.sha256 != expected or store.checksum(key) != expected:
            raise ArtifactCorrupt(
                f"{key}: the database copy does not match the source's sha256 {expected}"
            )
        report.copied += 1
        report.bytes += written.size
        if on_file:
            on_file(key, "copied")
    return report


# --- the MLflow plugin -----------------------------------------------------
def _mlflow_error(exc: MLManagerError) -> MlflowException:
    if isinstance(exc, NotFound):
        code = RESOURCE_DOES_NOT_EXIST
    elif isinstance(exc, DatabaseUnavailable):
        code = TEMPORARILY_UNAVAILABLE
    elif isinstance(exc, InvalidPayload | IncompleteUpload):
        code = INVALID_PARAMETER_VALUE
    else:
        return MlflowException(exc.message)
    return MlflowException(exc.message, error_code=code)


class Translated:
    """Our errors become MlflowExceptions (the server maps those to HTTP statuses), a
    database that stopped answering a 503 the client may retry."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, _t: object, exc: BaseException | None, _tb: object) -> None:
        if isinstance(exc, OperationalError):
            raise _mlflow_error(_unavailable(exc)) from exc
        if isinstance(exc, MLManagerError):
            raise _mlflow_error(exc) from exc


def default_store() -> ArtifactStore:
    """The store on our configured database (the server's; the command line's), on an
    engine of its own that checks out connections without a ping: that round trip cost
    as much as the whole query of a small file's read (profiled through the server), so
    the store finds a dropped connection by its first statement and retries it once
    (``ArtifactStore._once_more_if_stale``)."""
    from shared.db import make_engine
    from shared.settings import get_settings

    settings = get_settings()
    url = settings.database_url
    if url not in _store_engines:
        # Room for every request thread of a server process (mlmanager.server's 8) to
        # move a large file on PG_WRITERS / READERS connections at once.
        pool: dict[str, Any] = (
            {} if url.startswith("sqlite") else {"max_overflow": 8 * max(PG_WRITERS, READERS)}
        )
        _store_engines[url] = make_engine(settings, pre_ping=False, **pool)
    return ArtifactStore(_store_engines[url])


# default_store's engines, one pool per database URL and process (as shared.db.get_engine).
_store_engines: dict[str, Engine] = {}


class DatabaseArtifactRepository(ArtifactRepository, StreamUploadMixin, MultipartUploadMixin):
    """MLflow artifact repository for ``mlmanager-db:/<root>`` URIs on our database; its
    multipart upload is MLflow's proxied one (``shared.multipart``)."""

    def __init__(
        self,
        artifact_uri: str,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
        store: ArtifactStore | None = None,
    ) -> None:
        super().__init__(artifact_uri, tracking_uri, registry_uri)
        parsed = urlparse(artifact_uri)
        if parsed.scheme != SCHEME or parsed.netloc:
            raise MlflowException(
                f"not a database artifact URI: {artifact_uri!r} (expected {SCHEME}:/<path>)",
                error_code=INVALID_PARAMETER_VALUE,
            )
        with Translated():
            self.root = clean_path(parsed.path.lstrip("/"))
        self._store = store
        self._signer: UploadSigner | None = None

    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            self._store = default_store()
        return self._store

    def key(self, *parts: str | None) -> str:
        """The stored key of a path relative to this repository's root."""
        with Translated():
            rel = clean_path("/".join(p for p in parts if p))
        return "/".join(p for p in (self.root, rel) if p)

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        key = self.key(artifact_path, os.path.basename(local_file))
        with Translated(), open(local_file, "rb") as fh:
            self.store.write(key, fh)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        for folder, _dirs, names in os.walk(local_dir):
            rel = os.path.relpath(folder, local_dir).replace(os.sep, "/")
            dest = "/".join(p for p in (artifact_path, "" if rel == "." else rel) if p)
            for name in names:
                self.log_artifact(os.path.join(folder, name), dest or None)

    def log_artifact_from_stream(
        self,
        stream: BinaryIO,
        artifact_file_name: str,
        artifact_path: str | None = None,
        expected_size: int | None = None,
    ) -> None:
        """Store ``stream``; one that ends before ``expected_size`` bytes stores nothing.

        Inside the server's upload route the stream is the request body: gunicorn's
        reader ends quietly when the client disconnects, so a short body is only noticed
        against the Content-Length (taken from the request when MLflow's own view calls
        this with ``request.stream``; ``mlflow_server.artifact_route`` passes it)."""
        key = self.key(artifact_path, posixpath.basename(artifact_file_name))
        from flask import has_request_context, request

        if expected_size is None and has_request_context() and request.stream is stream:
            expected_size = request.content_length
        with Translated():
            self.store.write(key, stream, expected_size)

    async def log_artifact_from_async_stream(
        self,
        chunks: AsyncIterable[bytes],
        artifact_file_name: str,
        artifact_path: str | None = None,
    ) -> None:
        # Spooled to disk beyond one chunk, then written like any stream.
        with tempfile.SpooledTemporaryFile(max_size=CHUNK_SIZE) as spool:
            async for chunk in chunks:
                spool.write(chunk)
            spool.seek(0)
            self.log_artifact_from_stream(spool, artifact_file_name, artifact_path)  # type: ignore[arg-type]

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        rel = clean_path(path)
        with Translated():
            entries = self.store.list_folder(self.key(rel))
        return [
            FileInfo(posixpath.join(rel, e.name) if rel else e.name, e.is_dir, e.size)
            for e in entries
        ]

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        with Translated(), open(local_path, "wb") as out:
            for data in self.store.read(self.key(remote_file_path)):
                out.write(data)

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        with Translated():
            self.store.delete(self.key(artifact_path))

    # --- MLflow's proxied multipart upload (shared.multipart) ------------------
    @property
    def signer(self) -> UploadSigner:
        if self._signer is None:
            from shared.settings import get_settings

            self._signer = UploadSigner.of(get_settings())
        return self._signer

    def _upload_key(self, local_file: str, artifact_path: str | None) -> str:
        # ``local_file`` is the client's path: only its name is used, as log_artifact does.
        return self.key(artifact_path, posixpath.basename(local_file))

    def create_multipart_upload(
        self, local_file: str, num_parts: int = 1, artifact_path: str | None = None
    ) -> CreateMultipartUploadResponse:
        """An upload id and one signed URL per part, on this server as the client
        reached it (the request's host URL: behind a proxy, gunicorn applies
        X-Forwarded-Proto from the addresses it trusts, its forwarded_allow_ips)."""
        from flask import has_request_context, request

        with Translated():
            check_part_count(num_parts)
            key = self._upload_key(local_file, artifact_path)
            if not has_request_context():
                raise InvalidPayload("a multipart upload goes through the server's routes")
            upload_id = self.signer.new_upload(key)
            grants = self.signer.part_grants(upload_id, key, num_parts)
        return CreateMultipartUploadResponse(
            upload_id=upload_id,
            credentials=[
                MultipartUploadCredential(
                    url=self.signer.part_url(request.host_url, grant),
                    part_number=grant.part_number,
                    headers={},
                )
                for grant in grants
            ],
        )

    def complete_multipart_upload(
        self,
        local_file: str,
        upload_id: str,
        parts: list[MultipartUploadPart],
        artifact_path: str | None = None,
    ) -> None:
        with Translated():
            key = self._upload_key(local_file, artifact_path)
            self.signer.check_upload(upload_id, key)
            numbers = [part.part_number for part in parts]
            if not numbers or numbers != sorted(set(numbers)) or numbers[0] < 1:
                raise InvalidPayload(
                    f"complete lists parts {numbers[:20]}: list each stored part once, "
                    "numbered from 1 in increasing order",
                    field="parts",
                )
            uploaded = [
                UploadedPart(
                    part.part_number,
                    part_blob(upload_id, part.part_number),
                    (part.etag or "").strip('"'),
                )
                for part in parts
            ]
            self.store.publish_parts(key, uploaded, leftovers=upload_blobs_prefix(upload_id))

    def abort_multipart_upload(
        self, local_file: str, upload_id: str, artifact_path: str | None = None
    ) -> None:
        with Translated():
            self.signer.check_upload(upload_id, self._upload_key(local_file, artifact_path))
            self.store.drop_blobs(upload_blobs_prefix(upload_id))
