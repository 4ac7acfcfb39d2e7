"""The job ledger: the only code that reads or changes job state.

Every query on ``jobs``, ``job_logs`` and ``handlers`` lives in this module and
is run by :class:`Ledger`. The guarantees:

* ``enqueue`` inserts the job and (PostgreSQL) ``NOTIFY``s in one transaction.
* ``claim`` takes PENDING jobs atomically: ``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL; on SQLite a single guarded ``UPDATE ... RETURNING`` (SQLite has one
  writer at a time, so the statement itself is the lock).
* A claimed job carries a lease; ``heartbeat`` renews it. ``sweep`` gives jobs
  whose lease expired (their worker died) back to PENDING with attempt + 1, or
  marks them FAILURE once their attempts are spent.
* Every change a worker makes to a job it runs is guarded by
  ``worker_id = me AND status = 'RUNNING'``: a worker that lost its lease cannot
  overwrite what the next holder does.

Times that leases are compared with come from the database clock on PostgreSQL
(workers on several hosts need one clock); SQLite runs on one host, where
Python's clock is that clock.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Engine,
    Float,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, RowMapping

from shared.db import SQLITE_READ_ONLY
from shared.errors import HandlerDisabled, InvalidPayload, NotFound
from shared.models import (
    FINISHED_STATUSES,
    JOB_STATUSES,
    HandlerRow,
    JobLogRow,
    JobRow,
    UTCDateTime,
    WorkerRow,
    utcnow,
)

NOTIFY_CHANNEL = "mlmanager_jobs"
MAX_ERROR_CHARS = 4000
MAX_BACKOFF_SECONDS = 3600.0

jobs: Table = JobRow.__table__  # type: ignore[assignment]
workers: Table = WorkerRow.__table__  # type: ignore[assignment]
job_logs: Table = JobLogRow.__table__  # type: ignore[assignment]
handlers: Table = HandlerRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Job:
    id: int
    handler_name: str
    status: str
    user: str
    payload: dict[str, Any]
    created_at: dt.datetime
    run_after: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    attempt: int
    max_attempts: int
    worker_id: str | None
    lease_expires_at: dt.datetime | None
    cancel_requested: bool
    error: str | None
    unique_key: str | None
    # Number of the job's last log line; loaded by ``claim`` only (None elsewhere).
    last_log_line: int | None = None

    @classmethod
    def from_row(cls, row: RowMapping) -> Job:
        data = dict(row)
        data["user"] = data.pop("username")
        return cls(**data)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


@dataclass(frozen=True)
class LogLine:
    line: int
    logged_at: dt.datetime
    level: str
    message: str


@dataclass(frozen=True)
class Handler:
    name: str
    enabled: bool
    description: str
    updated_at: dt.datetime
    updated_by: str | None


@dataclass(frozen=True)
class Heartbeat:
    """What a heartbeat learned: jobs still held, and which of them should stop."""

    held: frozenset[int]
    cancel_requested: frozenset[int]


# Columns the jobs list may be sorted by (the API's ``sort`` parameter).
JOB_SORTS = ("id", "created_at", "started_at", "finished_at", "status", "handler_name", "username")


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a list, a count or a chart covers (``None``: any)."""

    status: str | None = None
    handler_name: str | None = None
    user: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    text: str | None = None  # case-insensitive substring of the payload

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in JOB_STATUSES:
            raise InvalidPayload(
                f"unknown status {self.status!r}; one of {', '.join(JOB_STATUSES)}",
                field="status",
            )


def backoff_seconds(base: float, attempt: int, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (1-based): base * 2^(attempt-1), +-25% jitter."""
    if base <= 0:
        return 0.0
    delay = min(base * 2 ** max(0, attempt - 1), MAX_BACKOFF_SECONDS)
    return delay * (rng or random).uniform(0.75, 1.25)


def _truncate(error: str) -> str:
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 3] + "..."


class Ledger:
    """Runs every query of the job ledger on one engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        default_max_attempts: int = 3,
        retry_backoff_seconds: float = 5.0,
    ) -> None:
        self.engine = engine
        self.is_postgres = engine.dialect.name == "postgresql"
        self.default_max_attempts = default_max_attempts
        self.retry_backoff_seconds = retry_backoff_seconds

    # --- connections ------------------------------------------------------
    def _statement(self) -> Any:
        """A connection for one self-contained statement that writes.

        On PostgreSQL it runs in autocommit: one statement is atomic by itself, and
        BEGIN and COMMIT would each cost a round trip. SQLite keeps its (local) BEGIN.
        """
        if self.is_postgres:
            return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self.engine.begin()

    def _read(self) -> Any:
        """A connection for reading (SQLite: a deferred transaction, no write lock)."""
        if self.is_postgres:
            return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self.engine.connect().execution_options(**{SQLITE_READ_ONLY: True})

    # --- clock ----------------------------------------------------------
    def _now(self) -> Any:
        """The current time: the database clock on PostgreSQL, Python's on SQLite."""
        if self.is_postgres:
            return func.clock_timestamp().cast(UTCDateTime)
        return utcnow()

    def _now_plus(self, seconds: float) -> Any:
        if self.is_postgres:
            return (func.clock_timestamp() + dt.timedelta(seconds=seconds)).cast(UTCDateTime)
        return utcnow() + dt.timedelta(seconds=seconds)

    # The hot statements (claim, heartbeat, finish) are built once with bound
    # parameters for the clock: building SQLAlchemy statements per call costs more
    # Python time than the database spends running them.
    def _now_param(self) -> Any:
        if self.is_postgres:
            return func.clock_timestamp().cast(UTCDateTime)
        return bindparam("now", type_=UTCDateTime())

    def _lease_param(self) -> Any:
        if self.is_postgres:
            secs = bindparam("lease_seconds", type_=Float())
            return (func.clock_timestamp() + func.make_interval(0, 0, 0, 0, 0, 0, secs)).cast(
                UTCDateTime
            )
        return bindparam("lease_until", type_=UTCDateTime())

    def _clock(self, lease_seconds: float = 0.0) -> dict[str, Any]:
        """Values of the clock parameters of the cached statements."""
        if self.is_postgres:
            return {"lease_seconds": lease_seconds}
        now = utcnow()
        return {"now": now, "lease_until": now + dt.timedelta(seconds=lease_seconds)}

    @functools.cache  # noqa: B019 - one Ledger per engine, lives as long as the process
    def _claim_statement(self, only_some_handlers: bool) -> Any:
        now = self._now_param()
        runnable = [jobs.c.status == "PENDING", jobs.c.run_after <= now, handlers.c.enabled]
        if only_some_handlers:
            runnable.append(jobs.c.handler_name.in_(bindparam("handlers", expanding=True)))
        # The candidates are picked (and locked) once, in a materialized CTE: as an
        # IN (subquery) PostgreSQL may re-run the LIMITed subquery and take more.
        picked = (
            select(jobs.c.id)
            .join(handlers, handlers.c.name == jobs.c.handler_name)
            .where(*runnable)
            .order_by(jobs.c.run_after, jobs.c.id)
            .limit(bindparam("limit", type_=Integer()))
            .with_for_update(skip_locked=True, of=jobs)
            .cte("picked")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        return (
            update(jobs)
            .where(jobs.c.id == picked.c.id, jobs.c.status == "PENDING")
            .values(
                status="RUNNING",
                worker_id=bindparam("claimer", type_=String()),
                started_at=now,
                finished_at=None,
                lease_expires_at=self._lease_param(),
            )
            .returning(*jobs.c, self._last_log_line())
        )

    @functools.cached_property
    def _heartbeat_statement(self) -> Any:
        return (
            update(jobs)
            .where(
                jobs.c.id.in_(bindparam("ids", expanding=True)),
                jobs.c.worker_id == bindparam("holder", type_=String()),
                jobs.c.status == "RUNNING",
            )
            .values(lease_expires_at=self._lease_param())
            .returning(jobs.c.id, jobs.c.cancel_requested)
        )

    @functools.cache  # noqa: B019 - one Ledger per engine, lives as long as the process
    def _end_statement(self, status: str, with_logs: bool) -> Any:
        """Mark a held job finished (SUCCESS/CANCELLED), with its last log lines."""
        change = (
            update(jobs)
            .where(
                jobs.c.id == bindparam("job", type_=BigInteger()),
                jobs.c.worker_id == bindparam("holder", type_=String()),
                jobs.c.status == "RUNNING",
            )
            .values(status=status, finished_at=self._now_param(), lease_expires_at=None)
        )
        if not with_logs:
            return change
        # One statement (one round trip): the lines are inserted only if the UPDATE
        # matched, i.e. while this worker still holds the job. The lines travel as
        # four arrays, so the text is the same whatever their number.
        done = change.returning(jobs.c.id).cte("done")
        lines = (
            func.unnest(
                bindparam("log_line", type_=ARRAY(Integer())),
                bindparam("log_time", type_=ARRAY(DateTime(timezone=True))),
                bindparam("log_level", type_=ARRAY(Text())),
                bindparam("log_message", type_=ARRAY(Text())),
            )
            .table_valued("line", "logged_at", "level", "message")
            .render_derived("lines")
        )
        # JOIN ... ON true, not a comma: the same rows, and SQLAlchemy's FROM linter
        # does not warn about a cartesian product (it is one on purpose: one job row).
        return insert(job_logs).from_select(
            ["job_id", "line", "logged_at", "level", "message"],
            select(done.c.id, lines.c.line, lines.c.logged_at, lines.c.level, lines.c.message)
            .select_from(done)
            .join(lines, true()),
        )

    def _end(self, job_id: int, holder: str, status: str, logs: Sequence[LogLine]) -> bool:
        params: dict[str, Any] = {"job": job_id, "holder": holder, **self._clock()}
        with_logs = bool(logs) and self.is_postgres
        if with_logs:
            params.update(
                log_line=[ln.line for ln in logs],
                log_time=[ln.logged_at for ln in logs],
                log_level=[ln.level for ln in logs],
                log_message=[ln.message for ln in logs],
            )
        with self._statement() as conn:
            result = conn.execute(self._end_statement(status, with_logs), params)
            if result.rowcount and logs and not with_logs:
                self._insert_logs(conn, job_id, logs)
        return bool(result.rowcount)

    # --- handlers ---------------------------------------------------------
    def seed_handlers(self, described: dict[str, str]) -> None:
        """Insert the handlers this code knows (existing rows keep their enabled flag)."""
        if not described:
            return
        rows = [{"name": n, "description": d, "updated_at": utcnow()} for n, d in described.items()]
        stmt = (pg_insert if self.is_postgres else sqlite_insert)(handlers).values(rows)
        with self.engine.begin() as conn:
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))

    def handlers(self) -> list[Handler]:
        with self._read() as conn:
            rows = conn.execute(select(handlers).order_by(handlers.c.name)).mappings()
            return [Handler(**r) for r in rows]

    def set_handler_enabled(
        self, name: str, enabled: bool, user: str, *, fail_pending: bool = False
    ) -> int:
        """Enable or disable a handler; returns how many pending jobs were failed."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(handlers)
                .where(handlers.c.name == name)
                .values(enabled=enabled, updated_at=utcnow(), updated_by=user)
            )
            if result.rowcount == 0:
                raise NotFound(f"no handler named {name!r}", field="service")
            if enabled or not fail_pending:
                return 0
            failed = conn.execute(
                update(jobs)
                .where(jobs.c.handler_name == name, jobs.c.status == "PENDING")
                .values(
                    status="FAILURE",
                    finished_at=self._now(),
                    error=f"handler {name} was disabled by {user} before the job ran",
                )
            )
            return int(failed.rowcount)

    # --- workers ----------------------------------------------------------
    def register_worker(self, worker_id: str, handler_names: Collection[str]) -> None:
        """Announce a worker and the handlers it runs (replaces an older entry)."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(delete(workers).where(workers.c.id == worker_id))
            conn.execute(
                insert(workers).values(
                    id=worker_id,
                    handlers=sorted(handler_names),
                    started_at=now,
                    last_seen_at=now,
                )
            )

    def worker_seen(self, worker_id: str) -> None:
        with self._statement() as conn:
            conn.execute(
                update(workers).where(workers.c.id == worker_id).values(last_seen_at=utcnow())
            )

    def unregister_worker(self, worker_id: str) -> None:
        with self._statement() as conn:
            conn.execute(delete(workers).where(workers.c.id == worker_id))

    def live_workers(self, within_seconds: float) -> list[tuple[str, list[str], dt.datetime]]:
        """(id, handlers, last seen) of the workers seen in the last ``within_seconds``."""
        since = utcnow() - dt.timedelta(seconds=within_seconds)
        query = (
            select(workers.c.id, workers.c.handlers, workers.c.last_seen_at)
            .where(workers.c.last_seen_at >= since)
            .order_by(workers.c.id)
        )
        with self._read() as conn:
            return [(r.id, list(r.handlers), r.last_seen_at) for r in conn.execute(query)]

    # --- submitting -------------------------------------------------------
    def enqueue(
        self,
        handler_name: str,
        payload: dict[str, Any],
        user: str,
        *,
        max_attempts: int | None = None,
        unique_key: str | None = None,
        run_after: dt.datetime | None = None,
    ) -> Job:
        """Insert a PENDING job and wake the workers, in one transaction.

        With ``unique_key``, a second enqueue of the same key returns the existing
        job instead of creating another.
        """
        with self.engine.begin() as conn:
            handler = conn.execute(
                select(handlers.c.enabled).where(handlers.c.name == handler_name)
            ).first()
            if handler is None:
                raise InvalidPayload(f"unknown handler {handler_name!r}", field="handler_name")
            if not handler.enabled:
                raise HandlerDisabled(
                    f"handler {handler_name} is disabled; an administrator can enable it "
                    "with ENABLE_SERVICE",
                    field="handler_name",
                )
            values = {
                "handler_name": handler_name,
                "status": "PENDING",
                "username": user,
                "payload": payload,
                "created_at": self._now(),
                "run_after": run_after or self._now(),
                "attempt": 1,
                "max_attempts": max_attempts or self.default_max_attempts,
                "unique_key": unique_key,
            }
            stmt = (pg_insert if self.is_postgres else sqlite_insert)(jobs).values(values)
            if unique_key is not None:
                stmt = stmt.on_conflict_do_nothing(index_elements=["unique_key"])
            row = conn.execute(stmt.returning(*jobs.c)).mappings().first()
            if row is None:  # the unique key exists already
                row = (
                    conn.execute(select(jobs).where(jobs.c.unique_key == unique_key))
                    .mappings()
                    .one()
                )
                return Job.from_row(row)
            if self.is_postgres:
                conn.execute(select(func.pg_notify(NOTIFY_CHANNEL, str(row["id"]))))
            return Job.from_row(row)

    # --- the worker's side ------------------------------------------------
    def claim(
        self,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        handler_names: Collection[str] | None = None,
    ) -> list[Job]:
        """Atomically take up to ``limit`` runnable PENDING jobs and mark them RUNNING.

        ``handler_names``: only jobs this worker can run (a worker of an older release
        leaves the jobs of newer handlers to the workers that have them).
        """
        if limit <= 0:
            return []
        params: dict[str, Any] = {"claimer": worker_id, "limit": limit}
        params.update(self._clock(lease_seconds))
        if handler_names is not None:
            params["handlers"] = list(handler_names)
        statement = self._claim_statement(handler_names is not None)
        with self._statement() as conn:
            rows = conn.execute(statement, params).mappings().all()
        return sorted((Job.from_row(r) for r in rows), key=lambda j: j.id)

    @staticmethod
    def _last_log_line() -> Any:
        # Written out: SQLAlchemy renders RETURNING columns unqualified on SQLite, which
        # would make the correlation ``job_id = id`` compare job_logs with itself.
        return literal_column(
            "(SELECT coalesce(max(l.line), 0) FROM job_logs AS l WHERE l.job_id = jobs.id)"
        ).label("last_log_line")

    def seconds_until_next(self) -> float | None:
        """How long until the next delayed PENDING job becomes runnable (None: none is)."""
        now = self._now() if self.is_postgres else literal(utcnow(), UTCDateTime())
        query = select(func.min(jobs.c.run_after), now).where(
            jobs.c.status == "PENDING", jobs.c.run_after > now
        )
        with self._read() as conn:
            nxt, db_now = conn.execute(query).one()
        return None if nxt is None else max(0.0, (nxt - db_now).total_seconds())

    def has_runnable(self) -> bool:
        """Whether some PENDING job may be claimed now (a cheap read)."""
        now = self._now() if self.is_postgres else literal(utcnow(), UTCDateTime())
        query = (
            select(jobs.c.id).where(jobs.c.status == "PENDING", jobs.c.run_after <= now).limit(1)
        )
        with self._read() as conn:
            return conn.execute(query).first() is not None

    def heartbeat(self, worker_id: str, job_ids: Iterable[int], lease_seconds: float) -> Heartbeat:
        """Renew the leases of the jobs this worker runs; report lost ones and cancel flags."""
        ids = list(job_ids)
        if not ids:
            return Heartbeat(frozenset(), frozenset())
        params = {"ids": ids, "holder": worker_id, **self._clock(lease_seconds)}
        with self._statement() as conn:
            rows = conn.execute(self._heartbeat_statement, params).all()
        return Heartbeat(
            held=frozenset(r.id for r in rows),
            cancel_requested=frozenset(r.id for r in rows if r.cancel_requested),
        )

    @staticmethod
    def _held_by(worker_id: str) -> ColumnElement[bool]:
        return and_(jobs.c.worker_id == worker_id, jobs.c.status == "RUNNING")

    def _finish(
        self,
        conn: Connection,
        job_id: int,
        holder: str,
        logs: Sequence[LogLine] = (),
        **values: Any,
    ) -> bool:
        """Change a job only while ``holder`` still holds it, with its last log lines."""
        change = (
            update(jobs)
            .where(jobs.c.id == job_id, self._held_by(holder))
            .values(lease_expires_at=None, **values)
        )
        result = conn.execute(change)
        if result.rowcount and logs:
            self._insert_logs(conn, job_id, logs)
        return bool(result.rowcount)

    def succeed(self, job_id: int, worker_id: str, logs: Sequence[LogLine] = ()) -> bool:
        """Mark a job this worker holds SUCCESS; False if it no longer holds it."""
        return self._end(job_id, worker_id, "SUCCESS", logs)

    def cancelled(self, job_id: int, worker_id: str, logs: Sequence[LogLine] = ()) -> bool:
        """A running job stopped at a cancel check."""
        return self._end(job_id, worker_id, "CANCELLED", logs)

    def fail(
        self,
        job_id: int,
        worker_id: str,
        error: str,
        *,
        retry: bool,
        logs: Sequence[LogLine] = (),
    ) -> str | None:
        """Record a failed attempt: PENDING again (with backoff) if ``retry`` and attempts
        remain, else FAILURE. Returns the new status, or None if the job was not held."""
        with self.engine.begin() as conn:
            row = conn.execute(
                select(jobs.c.attempt, jobs.c.max_attempts).where(
                    jobs.c.id == job_id, self._held_by(worker_id)
                )
            ).first()
            if row is None:
                return None
            if retry and row.attempt < row.max_attempts:
                delay = backoff_seconds(self.retry_backoff_seconds, row.attempt)
                ok = self._finish(
                    conn,
                    job_id,
                    worker_id,
                    logs,
                    status="PENDING",
                    attempt=row.attempt + 1,
                    run_after=self._now_plus(delay),
                    worker_id=None,
                    error=_truncate(error),
                )
                return "PENDING" if ok else None
            ok = self._finish(
                conn,
                job_id,
                worker_id,
                logs,
                status="FAILURE",
                finished_at=self._now(),
                error=_truncate(error),
            )
            return "FAILURE" if ok else None

    def release(self, worker_id: str, job_ids: Iterable[int]) -> int:
        """Give jobs back to PENDING untouched (graceful shutdown): same attempt, no delay."""
        ids = list(job_ids)
        if not ids:
            return 0
        with self._statement() as conn:
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id.in_(ids), self._held_by(worker_id))
                .values(
                    status="PENDING",
                    worker_id=None,
                    lease_expires_at=None,
                    run_after=self._now(),
                )
            )
            return int(result.rowcount)

    def sweep(self) -> list[Job]:
        """Return RUNNING jobs whose lease expired to PENDING (attempt + 1), or FAILURE
        when their attempts are spent. Safe to run from every worker at once."""
        expired = (
            select(jobs)
            .where(jobs.c.status == "RUNNING", jobs.c.lease_expires_at < self._now())
            .with_for_update(skip_locked=True)
        )
        changed: list[Job] = []
        with self.engine.begin() as conn:
            for row in conn.execute(expired).mappings().all():
                error = (
                    f"the lease of worker {row['worker_id']} expired during attempt "
                    f"{row['attempt']} (worker killed or cut off from the database)"
                )
                if row["attempt"] < row["max_attempts"]:
                    delay = backoff_seconds(self.retry_backoff_seconds, row["attempt"])
                    values: dict[str, Any] = {
                        "status": "PENDING",
                        "attempt": row["attempt"] + 1,
                        "run_after": self._now_plus(delay),
                        "worker_id": None,
                    }
                else:
                    values = {"status": "FAILURE", "finished_at": self._now()}
                updated = (
                    conn.execute(
                        update(jobs)
                        .where(jobs.c.id == row["id"], jobs.c.status == "RUNNING")
                        .values(lease_expires_at=None, error=error, **values)
                        .returning(*jobs.c)
                    )
                    .mappings()
                    .first()
                )
                if updated is not None:
                    changed.append(Job.from_row(updated))
        return changed

    # --- users' side --------------------------------------------------------
    def cancel(self, job_id: int) -> Job:
        """PENDING -> CANCELLED at once; RUNNING -> cancel flag for the runner."""
        with self.engine.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == "PENDING")
                .values(status="CANCELLED", finished_at=self._now(), error="cancelled")
            )
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == "RUNNING")
                .values(cancel_requested=True)
            )
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return Job.from_row(row)

    def get(self, job_id: int) -> Job:
        with self._read() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return Job.from_row(row)

    def _filtered(self, query: Any, where: JobFilter, *, with_status: bool = True) -> Any:
        """``query`` narrowed by every filter of ``where``; all values are bound parameters."""
        if with_status and where.status is not None:
            query = query.where(jobs.c.status == where.status)
        if where.handler_name is not None:
            query = query.where(jobs.c.handler_name == where.handler_name)
        if where.user is not None:
            query = query.where(jobs.c.username == where.user)
        if where.since is not None:
            query = query.where(jobs.c.created_at >= where.since)
        if where.until is not None:
            query = query.where(jobs.c.created_at < where.until)
        if where.text:
            # The payload as text holds its model URI, run, table, endpoint...: one
            # case-insensitive substring search covers every handler's fields.
            escaped = where.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(
                func.lower(jobs.c.payload.cast(Text)).like(f"%{escaped.lower()}%", escape="\\")
            )
        return query

    def list_jobs(
        self,
        where: JobFilter | None = None,
        *,
        sort: str = "id",
        descending: bool = True,
        limit: int = 50,
        offset: int = 0,
        **filters: Any,
    ) -> list[Job]:
        """Jobs matching ``where`` (or the :class:`JobFilter` fields given as keywords),
        sorted by ``sort`` (one of :data:`JOB_SORTS`), then by id."""
        where = where or JobFilter(**filters)
        if sort not in JOB_SORTS:
            raise InvalidPayload(f"sort must be one of {', '.join(JOB_SORTS)}", field="sort")
        column = jobs.c[sort]
        order = [column.desc() if descending else column.asc()]
        if sort != "id":  # a stable order across pages
            order.append(jobs.c.id.desc() if descending else jobs.c.id.asc())
        query = self._filtered(select(jobs), where).order_by(*order).limit(limit).offset(offset)
        with self._read() as conn:
            return [Job.from_row(r) for r in conn.execute(query).mappings()]

    def count_by_status(self, where: JobFilter | None = None) -> dict[str, int]:
        """Jobs per status among those matching ``where`` (its own status filter aside)."""
        query = select(jobs.c.status, func.count()).group_by(jobs.c.status)
        if where is not None:
            query = self._filtered(query, where, with_status=False)
        with self._read() as conn:
            rows = conn.execute(query).all()
        counts = dict.fromkeys(JOB_STATUSES, 0)
        counts.update({r[0]: int(r[1]) for r in rows})
        return counts

    def jobs_per_day(self, where: JobFilter) -> list[tuple[str, str, int]]:
        """(UTC day as YYYY-MM-DD, status, jobs created that day) for jobs matching ``where``."""
        if self.is_postgres:
            day = func.to_char(func.timezone("UTC", jobs.c.created_at), "YYYY-MM-DD")
        else:
            day = func.substr(jobs.c.created_at.cast(String), 1, 10)
        query = self._filtered(
            select(day.label("day"), jobs.c.status, func.count()), where
        ).group_by(day, jobs.c.status)
        with self._read() as conn:
            return sorted((str(r[0]), str(r[1]), int(r[2])) for r in conn.execute(query).all())

    # --- logs ---------------------------------------------------------------
    def next_log_line(self, job_id: int) -> int:
        with self._read() as conn:
            last = conn.execute(
                select(func.max(job_logs.c.line)).where(job_logs.c.job_id == job_id)
            ).scalar()
        return int(last or 0) + 1

    def append_logs(self, job_id: int, lines: Sequence[LogLine]) -> None:
        if not lines:
            return
        with self.engine.begin() as conn:
            self._insert_logs(conn, job_id, lines)

    @staticmethod
    def _insert_logs(conn: Connection, job_id: int, lines: Sequence[LogLine]) -> None:
        # One multi-row INSERT statement (not executemany: one round trip).
        conn.execute(
            insert(job_logs).values(
                [
                    {
                        "job_id": job_id,
                        "line": ln.line,
                        "logged_at": ln.logged_at,
                        "level": ln.level,
                        "message": ln.message,
                    }
                    for ln in lines
                ]
            )
        )

    def read_logs(self, job_id: int, after_line: int = 0, limit: int = 1000) -> list[LogLine]:
        """Log lines numbered above ``after_line``, in order (for incremental reads)."""
        query = (
            select(job_logs.c.line, job_logs.c.logged_at, job_logs.c.level, job_logs.c.message)
            .where(job_logs.c.job_id == job_id, job_logs.c.line > after_line)
            .order_by(job_logs.c.line)
            .limit(limit)
        )
        with self._read() as conn:
            return [LogLine(**r) for r in conn.execute(query).mappings()]
