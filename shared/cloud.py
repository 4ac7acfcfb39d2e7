"""What every cloud target (SageMaker, Azure ML) shares, written once.

- :func:`package_model`: the model archive a serving container unpacks (``model.tar.gz``):
  the mlrunner bundle when mlrunner can serve the model (``shared.serving``), else the
  MLflow model directory for MLflow's pyfunc image. ``SERVING_CONTRACT`` names the files.
- :func:`wait_for`: poll a provisioning state until it is final, with a progress line in
  the job's log at every change and at least every ``PROGRESS_EVERY_SECONDS``.
- :class:`Undo`: what a deploy created, undone in reverse order when a later step fails,
  so a failed deploy leaves nothing behind that the job created.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from loguru import logger

from shared.errors import InvalidPayload, MLManagerError
from shared.model_source import ModelSource

# The files of the archive the serving container reads (infrastructure/sagemaker/serve):
# the bundle mlrunner serves, and its SHA-256 that mlrunner checks before serving it.
BUNDLE_FILE = "model.bundle"
BUNDLE_SHA256_FILE = "model.bundle.sha256"
ARCHIVE_NAME = "model.tar.gz"
# A long provisioning (SageMaker: minutes) shows it is alive in the job log this often.
PROGRESS_EVERY_SECONDS = 30.0

Runtime = Literal["mlrunner", "mlflow"]


class DeploymentFailed(MLManagerError):
    """The cloud reported the deployment failed (its reason in the message), or it did
    not finish in time. Not retried: the same deploy would fail again."""

    http_status = 422
    error_code = "DEPLOYMENT_FAILED"


@dataclass(frozen=True)
class ModelPackage:
    """The archive a serving container unpacks, and which runtime serves it."""

    runtime: Runtime
    reason: str  # why this runtime
    archive: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.archive).hexdigest()


def package_model(source: ModelSource) -> ModelPackage:
    """The model of ``source`` as a ``model.tar.gz``: mlrunner's bundle (with its SHA-256)
    when mlrunner can serve it, else the MLflow model's directory (MLflow's pyfunc image)."""
    from shared.serving import bundle, servable_representation

    representation, reason = servable_representation(source)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        if representation is not None:
            data = bundle(representation)
            _add(archive, BUNDLE_FILE, data)
            _add(archive, BUNDLE_SHA256_FILE, hashlib.sha256(data).hexdigest().encode())
            runtime: Runtime = "mlrunner"
        else:
            if not source.path.is_dir():
                raise InvalidPayload(f"{source.uri} cannot be served: {reason}")
            for path in sorted(source.path.rglob("*")):
                if path.is_file():
                    _add(archive, path.relative_to(source.path).as_posix(), path.read_bytes())
            runtime = "mlflow"
    return ModelPackage(runtime, reason, buffer.getvalue())


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def wait_for(
    what: str,
    read: Callable[[], str],
    *,
    done: frozenset[str],
    failed: frozenset[str],
    reason: Callable[[], str],
    timeout: float,
    poll: float,
    check: Callable[[], None] = lambda: None,
) -> str:
    """Poll ``read()`` (a state name) until it is in ``done`` (returned) or ``failed``
    (:class:`DeploymentFailed` with ``reason()``), logging every change of state.

    ``check`` runs between polls (the job's cancellation check). Past ``timeout`` seconds
    the wait fails with the last state seen.
    """
    started = time.monotonic()
    last_state, last_line = "", started
    while True:
        state = read()
        now = time.monotonic()
        if state != last_state or now - last_line >= PROGRESS_EVERY_SECONDS:
            logger.info("{}: {} ({:.0f}s)", what, state, now - started)
            last_state, last_line = state, now
        if state in done:
            return state
        if state in failed:
            raise DeploymentFailed(f"{what} is {state}: {reason()}")
        if now - started > timeout:
            raise DeploymentFailed(
                f"{what} still {state} after {timeout:.0f}s: gave up waiting (the cloud may "
                "still finish it; the job removed what it created)"
            )
        check()
        time.sleep(poll)


@dataclass
class Undo:
    """What a deploy created so far, undone newest first if a later step fails.

    Each action is named (its log line) and may fail on its own without hiding the
    error that made the deploy fail: a failed undo is logged as an error and the rest go on.
    """

    actions: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def push(self, description: str, action: Callable[[], None]) -> None:
        self.actions.append((description, action))

    def run(self) -> None:
        while self.actions:
            description, action = self.actions.pop()
            try:
                action()
                logger.info("removed {}", description)
            except Exception as exc:  # keep undoing the rest; the deploy's error is raised
                logger.error("could not remove {}: {}", description, exc)

    def forget(self) -> None:
        """The deploy succeeded: keep everything it created."""
        self.actions.clear()
