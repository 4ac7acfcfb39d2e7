"""What the cloud targets' handlers (SageMaker, Azure ML) share: one job per endpoint at a
time, and a deploy that removes what it created when a step fails or the job stops.

A deploy handler lists its steps through :meth:`CloudDeploy.guarded_steps`; each step
pushes onto ``self.undo`` what it is about to create (``shared.cloud.Undo``), and the
last step calls ``self.undo.forget()`` once the deployment is recorded. ``close`` then
undoes whatever is left (newest first) and records the deployment FAILED with the
error's message (:meth:`CloudDeploy.record_failed`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from loguru import logger
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from bobby.handlers.base import Handler, JobStopped, Step
from shared.cloud import Undo
from shared.deployments import Deployment, DeploymentSpec, DeploymentStore
from shared.errors import MLManagerError
from shared.model_source import ModelSource


class CloudHandler(Handler):
    """A handler holding a lock on its endpoint for the whole job."""

    @abstractmethod
    def lock_key(self) -> str:
        """What the job changes, e.g. ``sagemaker:<region>:<endpoint>``."""

    def lock(self) -> None:
        """One job per endpoint at a time, for the whole job (PostgreSQL; SQLite runs one
        worker). Released by :meth:`unlock`."""
        self._held: Connection | None = None
        engine = self.ctx.ledger.engine
        if engine.dialect.name == "postgresql":
            self._held = engine.connect()
            self._held.execute(
                text("SELECT pg_advisory_lock(hashtext(:k))"),
                {"k": f"mlmanager.deploy:{self.lock_key()}"},
            )
            self._held.commit()

    def unlock(self) -> None:
        if getattr(self, "_held", None) is not None:
            assert self._held is not None
            self._held.close()  # a session lock ends with its connection
            self._held = None

    def close(self) -> None:
        self.unlock()


class CloudDeploy(CloudHandler):
    """A deploy whose steps undo what they created if a later one fails."""

    target: ClassVar[str]  # the deployments' target
    undo: Undo
    failure: str | None
    model_uri: str
    source: ModelSource | None

    def record(self, status: str, name: str, spec: DeploymentSpec) -> Deployment:
        """Record deployment ``name`` (DEPLOYED: the one it replaces becomes DELETED, in
        the same transaction)."""
        store = DeploymentStore(self.ctx.ledger.engine)
        with self.ctx.ledger.engine.begin() as conn:
            if status == "DEPLOYED":
                store.set_status(conn, self.target, name, "DELETED", only="DEPLOYED")
            return store.record(
                conn=conn,
                target=self.target,
                name=name,
                user=self.ctx.job.user,
                status=status,
                model_uri=self.model_uri,
                run_id=self.source.run_id if self.source else getattr(self.payload, "run_id", None),
                spec=spec,
                job_id=self.ctx.job.id,
            )

    def guarded_steps(self, steps: list[tuple[str, Callable[[], None]]]) -> list[Step]:
        """``steps`` that remember the error that stopped the deploy (for the record)."""
        self.undo = Undo()
        self.failure = None
        return [(title, self._guarded(step)) for title, step in steps]

    def _guarded(self, step: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                step()
            except (Exception, JobStopped) as exc:
                self.failure = exc.message if isinstance(exc, MLManagerError) else str(exc)
                raise

        return run

    @abstractmethod
    def record_failed(self, reason: str) -> Any:
        """Record the deployment FAILED with ``reason`` (nothing when nothing was planned)."""

    def release(self) -> None:
        """Free what the job holds besides the lock: the model source."""
        if getattr(self, "source", None) is not None:
            assert self.source is not None
            self.source.close()

    def close(self) -> None:
        try:
            # A lost lease: another worker may be running the job; its work stays.
            undo = getattr(self, "undo", None)
            if undo is not None and undo.actions and not self.ctx.control.lost.is_set():
                logger.warning("the deploy did not finish: removing what this job created")
                undo.run()
                try:
                    self.record_failed(self.failure or "stopped")
                except DBAPIError as exc:  # the step's error is the one to report
                    logger.error("could not record the failed deployment: {}", exc.orig)
        finally:
            self.release()
            self.unlock()
