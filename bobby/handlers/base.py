"""The base of every job handler: a short list of named steps.

The runner (``bobby.runner``) does everything around the steps: status changes,
"Step 2/5: ..." log lines, timing, cancellation checks between steps, error
capture and retries. A handler only does the work.

**Idempotence rule.** A handler whose spec says ``idempotent=True`` may run
again after its worker crashed or after an error, possibly after the first run
did part of the work - or all of it, if the worker died between the last step
and recording SUCCESS. To be retried, a handler must guarantee:

1. *All or nothing, or converging steps.* Its change to the target is one
   transaction (the database target), or each step *finishes* the work rather
   than fail on what an earlier run left: create-if-missing instead of create,
   upsert instead of insert, delete-if-present instead of delete, and check
   the target's actual state before acting on it.
2. *One job per target object at a time.* It holds a lock on what it changes
   (the database target: an advisory lock per table, for the transaction), so a
   rerun never interleaves with a stale first run or with another job.
3. *A rerun recognises its own finished work.* It records the job id with the
   change, in the same transaction (``deployments.job_id`` for a deploy; the
   DELETED record's ``undeployed_by_job`` for an undeploy), and a rerun that
   finds it ends in SUCCESS with "nothing left to do" - never with "already
   deployed" or "nothing deployed". A replace whose first run did not commit
   simply runs again and ends with the new model.
4. *Errors say whether another attempt can help.* What the user must fix is an
   ``MLManagerError`` with a 4xx status (not retried); an outage (a dropped
   connection: ``DBAPIError``, ``TargetUnavailable``) is anything else and is
   retried. Never turn an outage into a 4xx (e.g. a failed catalog read into
   "not found").

Every deploy and undeploy target is retried and must follow this rule (see
``shared.handlers``). Handlers that cannot promise it keep ``idempotent=False``
and run at most once (a crash marks them FAILURE).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from loguru import logger

from shared.errors import TargetUnavailable
from shared.handlers import HandlerSpec, Payload
from shared.ledger import Job, Ledger
from shared.settings import Settings


class JobStopped(Exception):
    """Raised at a step boundary when the job must not go on."""


class JobCancelled(JobStopped):
    pass


class LeaseLost(JobStopped):
    pass


@dataclass
class JobControl:
    """Flags the worker's heartbeat sets for a running job."""

    cancel: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost("this worker lost the job's lease; another worker may run it")
        if self.cancel.is_set():
            raise JobCancelled("cancelled on request")


@dataclass
class JobContext:
    """What a handler's steps may use."""

    job: Job
    ledger: Ledger
    settings: Settings
    control: JobControl
    worker_id: str

    @property
    def log(self) -> Any:
        return logger

    def check(self) -> None:
        """Stop here if the job was cancelled (handlers may call it inside long steps)."""
        self.control.check()


Step = tuple[str, Callable[[], None]]


class Handler:
    """Subclass, set ``spec``, and return the steps from :meth:`steps`."""

    spec: ClassVar[HandlerSpec]

    def __init__(self, ctx: JobContext, payload: Payload) -> None:
        self.ctx = ctx
        self.payload = payload

    def steps(self) -> list[Step]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the steps acquired (a downloaded model, ...). The runner calls it
        once the steps end, however they end; the default has nothing to release."""

    def _submitter_is_admin(self) -> bool:
        """Whether the job's user is an admin now, asked of MLflow's user store.

        Read when a rule depends on it, not stored on the job: nothing a client sends
        can claim it, and an admin demoted since the submit loses the right. This
        worker's MLflow login (the admin's by default) must be an admin to read other
        users; if it cannot, the user counts as no admin (the job is refused).
        """
        import mlflow
        from mlflow.exceptions import MlflowException, RestException
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        user = self.ctx.job.user
        endpoint = "/api/2.0/mlflow/users/get"
        try:
            response = http_request(
                get_default_host_creds(mlflow.get_tracking_uri()),
                endpoint,
                "GET",
                params={"username": user},
            )
            found = verify_rest_response(response, endpoint).json()["user"]
        except RestException as exc:
            logger.warning("cannot tell whether {} is an admin: {}", user, exc.message)
            return False
        except MlflowException as exc:
            raise TargetUnavailable(
                f"cannot reach the MLflow server to tell whether {user} is an admin: {exc.message}"
            ) from exc
        return bool(found.get("is_admin"))
