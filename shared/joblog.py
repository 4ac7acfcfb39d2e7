"""Job logs: a loguru sink that writes each job's lines to ``job_logs``.

Code running a job logs through loguru with ``job_id`` bound (the runner uses
``logger.contextualize(job_id=...)``); the sink numbers the lines per job, masks
secrets and writes them in small batches (every ``FLUSH_SECONDS`` or
``FLUSH_LINES``), and the runner flushes a job's lines before it records the
job's final status, so a finished job's log is complete.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from loguru import logger
from sqlalchemy.exc import DBAPIError, IntegrityError

from shared.ledger import Ledger, LogLine
from shared.logging import masker

if TYPE_CHECKING:
    from loguru import Message

FLUSH_SECONDS = 0.2
FLUSH_LINES = 50


class JobLogSink:
    """Buffers job log lines and writes them through the ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._lock = threading.Lock()
        # Held while lines are being written: a run's final lines (``take``) must not
        # overtake earlier lines of the same job still on their way to the database.
        self._io_lock = threading.Lock()
        self._next_line: dict[int, int] = {}
        self._pending: dict[int, list[LogLine]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flush_loop, name="job-logs", daemon=True)
        self._handler_id: int | None = None

    def install(self) -> None:
        self._handler_id = logger.add(
            self.write,
            level="DEBUG",
            filter=lambda record: "job_id" in record["extra"],
            format="{message}",
            enqueue=False,
            catch=True,
        )
        self._thread.start()

    def uninstall(self) -> None:
        self._stop.set()
        if self._handler_id is not None:
            logger.remove(self._handler_id)
        self._thread.join(timeout=5)
        self.flush()

    def open(self, job_id: int, last_line: int | None = None) -> None:
        """Start numbering a job's lines after those already written (earlier attempts)."""
        first = self.ledger.next_log_line(job_id) if last_line is None else last_line + 1
        with self._lock:
            self._next_line[job_id] = first

    def write(self, message: Message) -> None:
        record: Any = message.record
        job_id = int(record["extra"]["job_id"])
        text = record["message"]
        if record["exception"] is not None:
            text = str(message).rstrip("\n")
        with self._lock:
            line = self._next_line.get(job_id, 1)
            self._next_line[job_id] = line + 1
            self._pending[job_id].append(
                LogLine(line, record["time"], record["level"].name, masker()(text))
            )
            full = len(self._pending[job_id]) >= FLUSH_LINES
        if full:
            self.flush(job_id)

    def flush(self, job_id: int | None = None) -> None:
        """Write buffered lines (of one job, or all). Lines stay buffered if the DB is down."""
        with self._io_lock:
            self._flush(job_id)

    def _flush(self, job_id: int | None) -> None:
        with self._lock:
            ids = [job_id] if job_id is not None else list(self._pending)
            batches = {i: self._pending.pop(i, []) for i in ids}
        for jid, lines in batches.items():
            if not lines:
                continue
            try:
                self.ledger.append_logs(jid, lines)
            except IntegrityError:
                # Another holder of this job wrote lines meanwhile (our lease had
                # expired): renumber after theirs and try once more.
                first = self.ledger.next_log_line(jid)
                renumbered = [
                    LogLine(first + k, ln.logged_at, ln.level, ln.message)
                    for k, ln in enumerate(lines)
                ]
                self.ledger.append_logs(jid, renumbered)
                with self._lock:
                    self._next_line[jid] = first + len(lines)
            except DBAPIError:
                with self._lock:
                    self._pending[jid][:0] = lines

    def take(self, job_id: int) -> list[LogLine]:
        """A finished run's unwritten lines, for the ledger to write with its final status."""
        with self._io_lock, self._lock:
            self._next_line.pop(job_id, None)
            return self._pending.pop(job_id, [])

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            try:
                self.flush()
            except Exception as exc:  # keep flushing later lines whatever happened
                logger.warning("could not write job log lines: {}", exc)
