"""The worker's scorer for ``mode: async`` database deployments (``shared.scoring.asyncmode``).

One thread per worker (PostgreSQL only): LISTEN on the scoring channel; a
notification names a table that has new rows; after a short window that
gathers the notifications of concurrent inserts, the table's unscored rows are
claimed (``FOR UPDATE SKIP LOCKED``), scored and written back batch by batch
until none is left. Every table is also swept at start-up, after a lost
connection, and every ``ASYNC_SCORING_SWEEP_SECONDS``, so rows inserted while
no worker listened are scored too.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import psycopg
from loguru import logger
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from bobby.metrics import Metrics
from shared.deployments import DeploymentStore, ScoringLag
from shared.models import utcnow
from shared.scoring.asyncmode import AsyncTable, async_tables, score_batch
from shared.scoring.contract import NOTIFY_CHANNEL
from shared.scoring.runtime import scorer_for
from shared.scoring.scorer import Scorer
from shared.scoring.store import load_representation
from shared.settings import Settings

GATHER_SECONDS = 0.005
_RECENT_LAGS = 2000


class AsyncScoring:
    def __init__(
        self, engine: Engine, settings: Settings, metrics: Metrics, stopping: threading.Event
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.stopping = stopping
        self.tables: dict[int, AsyncTable] = {}
        self._scorers: dict[int, Scorer] = {}
        self._skip: dict[int, set[tuple[Any, ...]]] = {}
        self._lags: dict[int, deque[float]] = {}
        self._stats_written: dict[int, float] = {}
        self._version: tuple[Any, ...] = ()

    def run(self) -> None:
        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        sweep = self.settings.async_scoring_sweep_seconds
        while not self.stopping.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.sweep()
                    next_sweep = time.monotonic() + sweep
                    while not self.stopping.is_set():
                        wait = max(0.05, min(1.0, next_sweep - time.monotonic()))
                        oids = {int(n.payload) for n in conn.notifies(timeout=wait, stop_after=1)}
                        if oids:
                            oids |= {int(n.payload) for n in conn.notifies(timeout=GATHER_SECONDS)}
                            self.score_tables(oids)
                        if time.monotonic() >= next_sweep:
                            self.sweep()
                            next_sweep = time.monotonic() + sweep
            except (psycopg.Error, SQLAlchemyError) as exc:
                logger.warning("async scoring paused: {}", exc)
                self.stopping.wait(1.0)
            except Exception:
                logger.exception("async scoring failed; starting over in 5 s")
                self.stopping.wait(5.0)

    def sweep(self) -> None:
        """Score every unscored row of every async deployment."""
        self.score_tables(None)

    def _refresh(self) -> None:
        """Reload the async deployments if any database deployment changed (one cheap query).

        A replace keeps the table (and its oid) but changes the model; an
        undeploy must stop the scoring at once.
        """
        with self.engine.connect() as conn:
            version = tuple(
                conn.execute(
                    text(
                        "SELECT count(*), max(id), max(updated_at) FROM deployments "
                        "WHERE target = 'database'"
                    )
                ).one()
            )
            if version != self._version:
                self.tables = async_tables(conn)
                self._version = version

    def score_tables(self, oids: Iterable[int] | None) -> None:
        """Score the unscored rows of these tables (``None``: of every async table)."""
        self._refresh()
        for oid in list(self.tables if oids is None else oids):
            table = self.tables.get(oid)
            if table is not None:
                self._drain(table)

    def _scorer(self, table: AsyncTable) -> Scorer:
        scorer = self._scorers.get(table.representation_id)
        if scorer is None:
            with self.engine.connect() as conn:
                rep = load_representation(conn, table.representation_id)
            scorer = self._scorers[table.representation_id] = scorer_for(rep)
        return scorer

    def _drain(self, table: AsyncTable) -> None:
        """Score batches until the table has no unscored row this worker can take."""
        batch = self.settings.async_scoring_batch_size
        skip = self._skip.setdefault(table.deployment_id, set())
        scorer = self._scorer(table)
        while not self.stopping.is_set():
            with self.engine.begin() as conn:
                result = score_batch(conn, table, scorer, batch, sorted(skip))
            now = utcnow()  # committed: the predictions are visible from here
            lags = [max(0.0, (now - at).total_seconds()) for at in result.inserted_at]
            self.metrics.observe_scoring(result.scored, lags, len(result.failed))
            self._lags.setdefault(table.deployment_id, deque(maxlen=_RECENT_LAGS)).extend(lags)
            for key, error in result.failed:
                skip.add(key)
                logger.error(
                    "{}.{}: row {} cannot be scored and stays NULL: {}",
                    table.schema,
                    table.table,
                    key,
                    error,
                )
            if result.failed:
                self._record_errors(table, len(result.failed), result.failed[-1][1])
            if result.scored + len(result.failed) < batch:
                break
        self._record_lag(table)

    def _record_errors(self, table: AsyncTable, count: int, last: str) -> None:
        DeploymentStore(self.engine).add_scoring_errors(table.deployment_id, count, last)

    def _record_lag(self, table: AsyncTable) -> None:
        """This worker's recent insert-to-scored lag, at most once a second per deployment."""
        lags = sorted(self._lags.get(table.deployment_id, ()))
        now = time.monotonic()
        if not lags or now - self._stats_written.get(table.deployment_id, 0.0) < 1.0:
            return
        self._stats_written[table.deployment_id] = now
        lag = ScoringLag(
            rows=len(lags),
            p50_ms=round(lags[len(lags) // 2] * 1000, 1),
            p99_ms=round(lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000, 1),
        )
        DeploymentStore(self.engine).set_scoring_lag(table.deployment_id, lag)
