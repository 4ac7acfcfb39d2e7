"""ML Manager's REST API: a Flask blueprint behind MLflow's authentication.

Errors are JSON ``{"error_code", "message", "field"?}``; every status code comes
from the exception classes of ``shared.errors`` (mapped here, in one place).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import requests
from flask import Blueprint, Response, jsonify, request, stream_with_context
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ValidationError

from mlflow_server.auth import current_user, is_admin
from mlflow_server.permissions import authorize_job
from mlflow_server.schemas import (
    API_PREFIX,
    MAX_ID,
    MAX_LINE,
    MAX_PAGE,
    CompatInitiateOut,
    CompatLogsIn,
    CompatLogsOut,
    DayCount,
    DeploymentList,
    DeploymentOut,
    HandlerList,
    HandlerOut,
    JobList,
    JobOut,
    JobsPerDay,
    LogLineOut,
    LogsOut,
    SubmitJob,
    VersionOut,
    WorkerList,
    WorkerOut,
    iso,
    openapi_document,
)
from shared.db import get_engine
from shared.deployments import DatabaseDeploymentSpec, Deployment, DeploymentStore, redeploy_job
from shared.errors import (
    DeploymentConflict,
    InvalidPayload,
    MLManagerError,
    NotAuthorized,
    NotFound,
)
from shared.handlers import ALWAYS_ENABLED, SPECS, describe_validation_error
from shared.ledger import JOB_SORTS, Handler, Job, JobFilter, Ledger
from shared.models import DEPLOYMENT_STATUSES
from shared.settings import get_settings

blueprint = Blueprint("mlmanager", __name__)
STREAM_POLL_SECONDS = 0.25
STREAM_KEEPALIVE_SECONDS = 15.0


@functools.cache
def ledger() -> Ledger:
    settings = get_settings()
    return Ledger(
        get_engine(settings),
        default_max_attempts=settings.job_max_attempts,
        retry_backoff_seconds=settings.job_retry_backoff_seconds,
    )


@functools.cache
def deployment_store() -> DeploymentStore:
    return DeploymentStore(get_engine(get_settings()))


def seed_handlers() -> None:
    """Offer every handler of this release that fits ENVIRONMENT (workers claim theirs)."""
    env = get_settings().environment
    ledger().seed_handlers(
        {
            name: spec.description
            for name, spec in SPECS.items()
            if spec.environments is None or env in spec.environments
        }
    )


# --- errors -----------------------------------------------------------------------
def _error(status: int, code: str, message: str, field: str | None = None) -> Response:
    body: dict[str, Any] = {"error_code": code, "message": message}
    if field is not None:
        body["field"] = field
    response = jsonify(body)
    response.status_code = status
    return response


def error_response(exc: MLManagerError) -> Response:
    """The answer to an MLManagerError anywhere in the app (``app.py`` registers it).

    Besides our routes, this covers MLflow's: a request body refused before its handler
    ran (``bodies``). There it answers in MLflow's own format, which has no ``field``
    (the message names it).
    """
    field = exc.field if blueprint.name in request.blueprints else None  # nested ones too
    return _error(exc.http_status, exc.error_code, exc.message, field)


@blueprint.errorhandler(ValidationError)
def _validation_error(exc: ValidationError) -> Response:
    field, message = describe_validation_error(exc, "body")
    return _error(400, "INVALID_PARAMETER_VALUE", message, field)


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidPayload("the body must be a JSON object", field="body")
    return body


def _out(model: BaseModel, status: int = 200) -> Response:
    response = Response(model.model_dump_json(), mimetype="application/json")
    response.status_code = status
    return response


# --- query parameters ------------------------------------------------------------
def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidPayload(f"{name} must be an integer", field=name) from None
    if not low <= value <= high:
        raise InvalidPayload(f"{name} must be between {low} and {high}", field=name)
    return value


def _str_arg(name: str, max_length: int = 255) -> str | None:
    value = request.args.get(name)
    if value is not None and (len(value) > max_length or "\x00" in value):
        raise InvalidPayload(f"{name} must be at most {max_length} characters, no NUL", field=name)
    return value


def _time_arg(name: str) -> dt.datetime | None:
    raw = _str_arg(name, 64)
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidPayload(f"{name} must be an ISO-8601 time", field=name) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _page() -> tuple[int, int]:
    return _int_arg("limit", 50, 1, MAX_PAGE), _int_arg("offset", 0, 0, 1_000_000)


# --- jobs ---------------------------------------------------------------------------
Owned = TypeVar("Owned", Job, Deployment)


def _visible(kind: str, item_id: int, fetch: Callable[[int], Owned]) -> Owned:
    """The job or deployment if this user may see it; another user's is a 404, not a 403."""
    if not 1 <= item_id <= MAX_ID:
        raise NotFound(f"no {kind} {item_id}")
    item = fetch(item_id)
    if item.user != current_user() and not is_admin():
        raise NotFound(f"no {kind} {item_id}")
    return item


def _visible_job(job_id: int) -> Job:
    return _visible("job", job_id, ledger().get)


def submit(handler_name: str, payload: dict[str, Any]) -> Job:
    """Validate a payload against its handler and enqueue it for the current user."""
    spec = SPECS.get(handler_name)
    if spec is None:
        raise InvalidPayload(
            f"unknown handler {handler_name!r}; one of {', '.join(sorted(SPECS))}",
            field="handler_name",
        )
    if spec.admin_only and not is_admin():
        raise NotAuthorized(f"only administrators may submit {handler_name}")
    try:
        valid = spec.payload_model.model_validate(payload)
    except ValidationError as exc:
        field, details = describe_validation_error(exc, "payload")
        raise InvalidPayload(f"invalid {handler_name} payload: {details}", field=field) from None
    env = get_settings().environment
    if spec.environments is not None and env not in spec.environments:
        raise InvalidPayload(
            f"{handler_name} is offered only when ENVIRONMENT is "
            f"{' or '.join(sorted(spec.environments))} (here: {env})",
            field="handler_name",
        )
    # Where it may act and which model it may read; the payload then names the checked model.
    valid = authorize_job(ledger().engine, valid)
    job = ledger().enqueue(
        handler_name,
        valid.model_dump(mode="json", exclude_unset=True),
        current_user(),
        max_attempts=spec.attempts(get_settings().job_max_attempts),
    )
    _poke_worker()
    return job


def _poke_worker() -> None:
    """On SQLite (no NOTIFY) tell the local worker at once instead of awaiting its poll."""
    if ledger().is_postgres:
        return
    settings = get_settings()
    host = "127.0.0.1" if settings.worker_host in ("0.0.0.0", "::") else settings.worker_host
    url = f"http://{host}:{settings.worker_port}/job"

    def poke() -> None:
        with contextlib.suppress(requests.RequestException):  # its poll finds the job anyway
            requests.post(url, timeout=0.5)

    threading.Thread(target=poke, daemon=True).start()


@blueprint.post(f"{API_PREFIX}/jobs")
def submit_job() -> ResponseReturnValue:
    body = SubmitJob.model_validate(_json_body())
    return _out(JobOut.of(submit(body.handler_name, body.payload)), 201)


def _job_filter() -> JobFilter:
    """The jobs a list, count or chart covers, from the query (users: their own only)."""
    user = _str_arg("user")
    if not is_admin():
        if user not in (None, current_user()):
            raise NotAuthorized("only administrators may list other users' jobs", field="user")
        user = current_user()  # users see their own jobs only
    return JobFilter(
        status=_str_arg("status", 16) or None,
        handler_name=_str_arg("handler", 64) or None,
        user=user or None,
        since=_time_arg("since"),
        until=_time_arg("until"),
        text=_str_arg("q", 255) or None,
    )


def _choice_arg(name: str, choices: tuple[str, ...], default: str) -> str:
    value = request.args.get(name) or default
    if value not in choices:
        raise InvalidPayload(f"{name} must be one of {', '.join(choices)}", field=name)
    return value


@blueprint.get(f"{API_PREFIX}/jobs")
def list_jobs() -> ResponseReturnValue:
    limit, offset = _page()
    where = _job_filter()
    sort = _choice_arg("sort", JOB_SORTS, "id")
    order = _choice_arg("order", ("asc", "desc"), "desc")
    with_counts = _choice_arg("counts", ("false", "true"), "false") == "true"
    jobs = ledger().list_jobs(
        where, sort=sort, descending=order == "desc", limit=limit + 1, offset=offset
    )
    next_offset = offset + limit if len(jobs) > limit else None
    return _out(
        JobList(
            jobs=[JobOut.of(j) for j in jobs[:limit]],
            next_offset=next_offset,
            counts=ledger().count_by_status(where) if with_counts else None,
        )
    )


@blueprint.get(f"{API_PREFIX}/jobs/daily")
def jobs_per_day() -> ResponseReturnValue:
    """Jobs created per UTC day and status over the last ``days`` days (the overview chart)."""
    days = _int_arg("days", 14, 1, 366)
    where = _job_filter()
    if where.since is None:
        today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        where = dataclasses.replace(where, since=today - dt.timedelta(days=days - 1))
    rows = ledger().jobs_per_day(where)
    return _out(JobsPerDay(days=[DayCount(day=d, status=s, jobs=n) for d, s, n in rows]))


@blueprint.get(f"{API_PREFIX}/jobs/<int:job_id>")
def get_job(job_id: int) -> ResponseReturnValue:
    return _out(JobOut.of(_visible_job(job_id)))


@blueprint.get(f"{API_PREFIX}/jobs/<int:job_id>/logs")
def job_logs(job_id: int) -> ResponseReturnValue:
    job = _visible_job(job_id)
    after = _int_arg("after", 0, 0, MAX_LINE)
    lines = ledger().read_logs(job_id, after, _int_arg("limit", 1000, 1, 5000))
    return _out(
        LogsOut(
            job_id=job.id,
            status=job.status,
            lines=[LogLineOut.of(ln) for ln in lines],
            next_after=lines[-1].line if lines else after,
        )
    )


@blueprint.get(f"{API_PREFIX}/jobs/<int:job_id>/logs/stream")
def stream_job_logs(job_id: int) -> ResponseReturnValue:
    """Server-Sent Events: one ``log`` event per line, then ``end`` with the job."""
    _visible_job(job_id)
    after = _int_arg("after", 0, 0, MAX_LINE)
    last_event = request.headers.get("Last-Event-ID", "")
    if last_event.isdigit():
        after = max(after, min(int(last_event), MAX_LINE))

    def events() -> Iterator[str]:
        seen = after
        quiet_since = time.monotonic()
        while True:
            lines = ledger().read_logs(job_id, seen, 1000)
            for ln in lines:
                seen = ln.line
                yield f"id: {ln.line}\nevent: log\ndata: {LogLineOut.of(ln).model_dump_json()}\n\n"
            if lines:
                quiet_since = time.monotonic()
                continue
            job = ledger().get(job_id)
            if job.finished:
                # The final lines are written with the final status: read once more.
                for ln in ledger().read_logs(job_id, seen, 5000):
                    seen = ln.line
                    data = LogLineOut.of(ln).model_dump_json()
                    yield f"id: {ln.line}\nevent: log\ndata: {data}\n\n"
                yield f"event: end\ndata: {JobOut.of(job).model_dump_json()}\n\n"
                return
            if time.monotonic() - quiet_since > STREAM_KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            time.sleep(STREAM_POLL_SECONDS)

    return Response(
        stream_with_context(events()),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@blueprint.post(f"{API_PREFIX}/jobs/<int:job_id>/cancel")
def cancel_job(job_id: int) -> ResponseReturnValue:
    job = _visible_job(job_id)
    if job.finished:
        raise DeploymentConflict(f"job {job_id} already ended ({job.status})")
    return _out(JobOut.of(ledger().cancel(job_id)))


# --- deployments ---------------------------------------------------------------------
def _visible_deployment(deployment_id: int) -> Deployment:
    return _visible("deployment", deployment_id, deployment_store().get)


@blueprint.get(f"{API_PREFIX}/deployments")
def list_deployments() -> ResponseReturnValue:
    limit, offset = _page()
    status = _str_arg("status", 16)
    if status is not None and status not in DEPLOYMENT_STATUSES:
        raise InvalidPayload(
            f"status must be one of {', '.join(DEPLOYMENT_STATUSES)}", field="status"
        )
    found = deployment_store().list(
        user=None if is_admin() else current_user(),
        target=_str_arg("target", 32),
        status=status,
        limit=limit + 1,
        offset=offset,
    )
    next_offset = offset + limit if len(found) > limit else None
    return _out(
        DeploymentList(
            deployments=[DeploymentOut.of(d) for d in found[:limit]], next_offset=next_offset
        )
    )


@blueprint.get(f"{API_PREFIX}/deployments/<int:deployment_id>")
def get_deployment(deployment_id: int) -> ResponseReturnValue:
    deployment = _visible_deployment(deployment_id)
    out = DeploymentOut.of(deployment)
    spec = deployment.spec
    live = deployment.status == "DEPLOYED"
    if live and deployment.target == "kubernetes":
        out.drift, found = _kubernetes_live(deployment)
        out.details = {**out.details, **found}
        return _out(out)
    out.drift = _drift(deployment)
    if live and isinstance(spec, DatabaseDeploymentSpec) and spec.mode == "async":
        out.details = {**out.details, "backlog": _async_backlog(deployment.id, spec)}
    return _out(out)


def _kubernetes_live(deployment: Deployment) -> tuple[list[str] | None, dict[str, Any]]:
    """(drift, URL and replicas ready/desired) of a Kubernetes deployment (read live)."""
    from shared.kube.target import KubernetesTarget, spec_of

    try:
        live = KubernetesTarget(get_settings()).observe(deployment)
    except MLManagerError as exc:
        return [f"cannot observe the target: {exc.message}"], {}
    return list(live.drift) or None, live.details(spec_of(deployment))


def _drift(deployment: Deployment) -> list[str] | None:
    """How the live target differs from the record (read live; see ``shared.targets``)."""
    from sqlalchemy.exc import DBAPIError

    from shared.targets import drift_of

    if deployment.target == "sagemaker" and deployment.status == "DEPLOYED":
        return _sagemaker_drift(deployment)
    try:
        return drift_of(ledger().engine, deployment)
    except DBAPIError as exc:
        return [f"cannot observe the target: {str(exc.orig).strip()}"]


def _sagemaker_drift(deployment: Deployment) -> list[str] | None:
    """The endpoint as SageMaker describes it now, against the record (a server without
    boto3 says so here: ConfigError)."""
    from shared.sagemaker import SageMakerTarget

    try:
        return list(SageMakerTarget(get_settings()).observe(deployment).drift) or None
    except MLManagerError as exc:
        return [f"cannot observe the target: {exc.message}"]


def _async_backlog(deployment_id: int, spec: DatabaseDeploymentSpec) -> dict[str, Any]:
    """Rows of an async deployment still waiting for a prediction (read live)."""
    from sqlalchemy.exc import DBAPIError

    from shared.scoring.asyncmode import AsyncTable, backlog

    try:
        with ledger().engine.connect() as conn:
            return backlog(conn, AsyncTable.from_spec(deployment_id, spec))
    except DBAPIError as exc:
        return {"error": str(exc.orig).strip()}


@blueprint.delete(f"{API_PREFIX}/deployments/<int:deployment_id>")
def delete_deployment(deployment_id: int) -> ResponseReturnValue:
    deployment = _visible_deployment(deployment_id)
    if deployment.status == "DELETED":
        raise DeploymentConflict(f"deployment {deployment_id} is already deleted")
    undeploy = deployment.undeploy_job()
    if undeploy is None:
        raise DeploymentConflict(
            f"deployments to {deployment.target} cannot be undeployed by ML Manager"
        )
    handler, payload = undeploy
    return _out(JobOut.of(submit(handler, payload)), 202)


@blueprint.post(f"{API_PREFIX}/deployments/<int:deployment_id>/rollback")
def rollback_deployment(deployment_id: int) -> ResponseReturnValue:
    """Deploy again the model this deployment replaced (a replace back), as a job."""
    deployment = _visible_deployment(deployment_id)
    if deployment.status != "DEPLOYED":
        raise DeploymentConflict(f"deployment {deployment_id} is {deployment.status}, not DEPLOYED")
    previous = deployment_store().previous(deployment)
    if previous is None:
        raise NotFound(
            f"deployment {deployment_id} replaced no earlier model: nothing to roll back to"
        )
    handler, payload = redeploy_job(previous)
    return _out(JobOut.of(submit(handler, payload)), 202)


# --- handlers -------------------------------------------------------------------------
def _handler_out(handlers: list[Handler]) -> list[HandlerOut]:
    # Live: seen within three leases (a worker reports every third of one).
    window = 3 * get_settings().job_lease_seconds
    counts = Counter(name for _, names, _ in ledger().live_workers(window) for name in names)
    return [HandlerOut.of(h, counts[h.name]) for h in handlers]


@blueprint.get(f"{API_PREFIX}/handlers")
def list_handlers() -> ResponseReturnValue:
    # What this ENVIRONMENT offers: a worker may implement SageMaker, but where ENVIRONMENT
    # is not aws its jobs are refused, so it is not listed (nor offered by the UI).
    env = get_settings().environment
    offered = [
        h
        for h in ledger().handlers()
        if (spec := SPECS.get(h.name)) is None
        or spec.environments is None
        or env in spec.environments
    ]
    return _out(HandlerList(handlers=_handler_out(offered)))


def _switch(name: str, enabled: bool) -> Response:
    if not is_admin():
        raise NotAuthorized("only administrators may enable or disable handlers")
    if not enabled and name in ALWAYS_ENABLED:
        raise InvalidPayload(f"{name} cannot be disabled", field="name")
    ledger().set_handler_enabled(
        name,
        enabled,
        current_user(),
        fail_pending=get_settings().disabled_handler_pending == "fail",
    )
    handler = next(h for h in ledger().handlers() if h.name == name)
    return _out(_handler_out([handler])[0])


@blueprint.post(f"{API_PREFIX}/handlers/<name>/enable")
def enable_handler(name: str) -> ResponseReturnValue:
    return _switch(name, True)


@blueprint.post(f"{API_PREFIX}/handlers/<name>/disable")
def disable_handler(name: str) -> ResponseReturnValue:
    return _switch(name, False)


@blueprint.get(f"{API_PREFIX}/workers")
def list_workers() -> ResponseReturnValue:
    """Live workers, their handlers and last heartbeat (admins)."""
    if not is_admin():
        raise NotAuthorized("only administrators may list workers")
    window = 3 * get_settings().job_lease_seconds
    return _out(
        WorkerList(
            workers=[
                WorkerOut(id=worker_id, handlers=names, last_seen_at=iso(seen) or "")
                for worker_id, names, seen in ledger().live_workers(window)
            ],
            queue=ledger().count_by_status(),
        )
    )


# --- misc -----------------------------------------------------------------------------
@blueprint.get(f"{API_PREFIX}/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(openapi_document())


@blueprint.get(f"{API_PREFIX}/version")
def version() -> ResponseReturnValue:
    """The running ML Manager and the schema revision of its database."""
    from importlib.metadata import version as dist_version

    from shared.migrations import current_revision

    return _out(
        VersionOut(
            mlmanager=dist_version("mlmanager"),
            mlflow=dist_version("mlflow"),
            schema_revision=current_revision(get_engine(get_settings())),
        )
    )


# --- the original API (kept for old clients) ----------------------------------------------
@blueprint.post("/api/rest/initiate")
def compat_initiate() -> ResponseReturnValue:
    """``{handler_name, <payload fields>...}`` -> ``{job_id, status}``."""
    body = _json_body()
    handler_name = body.pop("handler_name", None)
    if not isinstance(handler_name, str):
        raise InvalidPayload("handler_name is required", field="handler_name")
    job = submit(handler_name, body)
    return _out(CompatInitiateOut(job_id=job.id, status=job.status))


@blueprint.post("/api/rest/logs")
def compat_logs() -> ResponseReturnValue:
    """``{task_id}`` -> the job's status and all its log lines."""
    body = CompatLogsIn.model_validate(_json_body())
    job = _visible_job(body.task_id)
    lines: list[str] = []
    after = 0
    while page := ledger().read_logs(job.id, after, 5000):
        lines += [ln.message for ln in page]
        after = page[-1].line
    return _out(CompatLogsOut(task_id=job.id, status=job.status, logs=lines))
