"""The REST API's bodies (pydantic) and the OpenAPI document generated from them."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from shared.deployments import Deployment, DeploymentSpec, DeploymentStats
from shared.handlers import SPECS
from shared.ledger import JOB_SORTS, Handler, Job, LogLine
from shared.models import DEPLOYMENT_STATUSES, JOB_STATUSES
from shared.multipart import MAX_PARTS, PART_PATH, UPLOAD_ID_LENGTH
from shared.schedules import Schedule

API_PREFIX = "/api/2.0/mlmanager"
UI_PREFIX = "/mlmanager"  # the pages (mlflow_server.ui)
MAX_ID = 2**63 - 1
MAX_LINE = 2**31 - 1  # log line numbers are INTEGER
MAX_PAGE = 500


def iso(ts: dt.datetime | None) -> str | None:
    """ISO-8601 in UTC with milliseconds: 2026-11-27T10:00:00.123Z."""
    if ts is None:
        return None
    return ts.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    error_code: str
    message: str
    field: str | None = None


class SubmitJob(Body):
    handler_name: str = Field(description="One of the handlers of GET /handlers")
    payload: dict[str, Any] = Field(default_factory=dict, description="The handler's fields")


class JobOut(BaseModel):
    id: int
    handler_name: str
    status: Literal[JOB_STATUSES]  # type: ignore[valid-type]
    user: str
    payload: dict[str, Any]
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempt: int
    max_attempts: int
    error: str | None
    worker_id: str | None
    cancel_requested: bool

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            id=job.id,
            handler_name=job.handler_name,
            status=job.status,
            user=job.user,
            payload=job.payload,
            created_at=iso(job.created_at) or "",
            started_at=iso(job.started_at),
            finished_at=iso(job.finished_at),
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            error=job.error,
            worker_id=job.worker_id,
            cancel_requested=job.cancel_requested,
        )


class JobList(BaseModel):
    jobs: list[JobOut]
    next_offset: int | None = Field(description="Offset of the next page (null: last page)")
    counts: dict[str, int] | None = Field(
        None,
        description="With ?counts=true: jobs per status matching every filter but `status`",
    )


class DayCount(BaseModel):
    day: str = Field(description="UTC day, YYYY-MM-DD")
    status: Literal[JOB_STATUSES]  # type: ignore[valid-type]
    jobs: int


class JobsPerDay(BaseModel):
    days: list[DayCount] = Field(description="Only the (day, status) pairs that have jobs")


class LogLineOut(BaseModel):
    line: int
    time: str
    level: str
    message: str

    @classmethod
    def of(cls, ln: LogLine) -> LogLineOut:
        return cls(line=ln.line, time=iso(ln.logged_at) or "", level=ln.level, message=ln.message)


class LogsOut(BaseModel):
    job_id: int
    status: Literal[JOB_STATUSES]  # type: ignore[valid-type]
    lines: list[LogLineOut]
    next_after: int = Field(description="Pass as ?after= to read the lines that follow")


class DeploymentOut(BaseModel):
    id: int
    target: str = Field(
        description="Where the model is deployed: database, kubernetes, sagemaker or azure; "
        "it says which model `spec` follows"
    )
    name: str
    status: Literal[DEPLOYMENT_STATUSES]  # type: ignore[valid-type]
    model_uri: str | None
    run_id: str | None
    spec: DeploymentSpec | None = Field(
        description="The desired state the deploy recorded, typed per target "
        "(null for a target without a spec model yet)"
    )
    stats: DeploymentStats = Field(description="What the worker measured while it ran")
    drift: list[str] | None = Field(
        None,
        description="How the live target differs from `spec` (e.g. a trigger dropped by "
        "hand); null when it matches, or when the deployment is not DEPLOYED",
    )
    details: dict[str, Any] = Field(
        description="Deprecated: `spec` and `stats` in one untyped object, for older clients"
    )
    job_id: int | None
    user: str
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, d: Deployment) -> DeploymentOut:
        return cls(
            id=d.id,
            target=d.target,
            name=d.name,
            status=d.status,
            model_uri=d.model_uri,
            run_id=d.run_id,
            spec=d.spec,
            stats=d.stats,
            details=d.details,
            job_id=d.job_id,
            user=d.user,
            created_at=iso(d.created_at) or "",
            updated_at=iso(d.updated_at) or "",
        )


class DeploymentList(BaseModel):
    deployments: list[DeploymentOut]
    next_offset: int | None


class ScheduleOut(BaseModel):
    id: int
    name: str
    model_name: str
    cron_exp: str
    timezone: str
    environment: str
    spec: dict[str, Any] = Field(description="The SCHEDULE_RETRAIN payload it was created with")
    paused: bool
    next_fire_at: str | None = Field(description="Next firing (null while paused)")
    last_fired_at: str | None
    last_job_id: int | None
    last_job_status: str | None = Field(description="Status of the last RETRAIN job")
    last_outcome: str | None = Field(description="What the last retrain decided")
    user: str
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, s: Schedule, last_job: Job | None) -> ScheduleOut:
        return cls(
            id=s.id,
            name=s.name,
            model_name=s.model_name,
            cron_exp=s.cron_exp,
            timezone=s.timezone,
            environment=str(s.spec.get("environment", "default")),
            spec=s.spec,
            paused=s.paused,
            next_fire_at=None if s.paused else iso(s.next_fire_at),
            last_fired_at=iso(s.last_fired_at),
            last_job_id=s.last_job_id,
            last_job_status=last_job.status if last_job else None,
            last_outcome=s.last_outcome,
            user=s.user,
            created_at=iso(s.created_at) or "",
            updated_at=iso(s.updated_at) or "",
        )


class ScheduleList(BaseModel):
    schedules: list[ScheduleOut]
    next_offset: int | None


class HandlerOut(BaseModel):
    name: str
    enabled: bool
    description: str
    admin_only: bool
    workers: int = Field(description="Live workers that run this handler (0: its jobs wait)")
    updated_at: str
    updated_by: str | None

    @classmethod
    def of(cls, h: Handler, workers: int) -> HandlerOut:
        spec = SPECS.get(h.name)
        return cls(
            name=h.name,
            enabled=h.enabled,
            description=h.description,
            admin_only=bool(spec and spec.admin_only),
            workers=workers,
            updated_at=iso(h.updated_at) or "",
            updated_by=h.updated_by,
        )


class HandlerList(BaseModel):
    handlers: list[HandlerOut]


class WorkerOut(BaseModel):
    id: str
    handlers: list[str]
    last_seen_at: str = Field(description="Its last heartbeat")


class WorkerList(BaseModel):
    workers: list[WorkerOut] = Field(description="Workers seen within three leases")
    queue: dict[str, int] = Field(description="Jobs per status in the whole ledger")


class CompatInitiateOut(BaseModel):
    job_id: int
    status: str


class CompatLogsIn(Body):
    task_id: int = Field(ge=1, le=MAX_ID)


class CompatLogsOut(BaseModel):
    task_id: int
    status: str
    logs: list[str]


class VersionOut(BaseModel):
    mlmanager: str
    mlflow: str
    schema_revision: str | None = Field(
        description="Alembic revision of ML Manager's tables in the database (null: none)"
    )


# --- OpenAPI ---------------------------------------------------------------------
_MODELS: list[type[BaseModel]] = [
    ErrorOut,
    SubmitJob,
    JobOut,
    JobList,
    JobsPerDay,
    LogsOut,
    DeploymentOut,
    DeploymentList,
    HandlerOut,
    HandlerList,
    WorkerList,
    CompatInitiateOut,
    CompatLogsIn,
    CompatLogsOut,
    VersionOut,
    *(spec.payload_model for spec in SPECS.values()),
]


def _ref(model: type[BaseModel] | str) -> dict[str, str]:
    name = model if isinstance(model, str) else model.__name__
    return {"$ref": f"#/components/schemas/{name}"}


def _json(model: type[BaseModel] | str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": _ref(model)}}}


_ERRORS = {
    "400": "Invalid request (the field is named)",
    "401": "No or wrong credentials",
    "403": "Not allowed for this user",
    "404": "No such resource (or not yours)",
    "409": "Conflicts with the current state",
}


def _op(
    summary: str,
    ok: tuple[str, type[BaseModel] | str],
    *,
    errors: tuple[str, ...] = ("401",),
    body: type[BaseModel] | None = None,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    code, model = ok
    responses: dict[str, Any] = {code: {"description": "OK", **_json(model)}}
    for err in errors:
        responses[err] = {"description": _ERRORS[err], **_json(ErrorOut)}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": True, **_json(body)}
    if params:
        op["parameters"] = params
    return op


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema}


_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
_PAGE = [
    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
    _param("offset", "query", {"type": "integer", "minimum": 0, "maximum": 1_000_000}),
]


def _part_operation() -> dict[str, Any]:
    """The part route (mlflow_server.part_route): MLflow's client PUTs one part of a
    multipart upload to the URL ``create`` answered, without credentials; the URL's
    signature is the credential, so the operation has no security of the document's."""
    errors = {
        "400": "The body ended before its Content-Length (nothing was stored)",
        "403": "No signature, or one not for exactly this upload, part, file and expiry, "
        "or an expired URL (nothing was stored)",
        "404": "The server's artifact store is not the database (it takes no parts)",
        "503": "The database did not answer: send the part again",
    }
    hex_string = {"type": "string", "pattern": "^[0-9a-f]+$"}
    return {
        "summary": "One part of MLflow's multipart upload into the database artifact store",
        "security": [],
        "parameters": [
            _param("upload_id", "path", {**hex_string, "maxLength": UPLOAD_ID_LENGTH}),
            _param("part_number", "path", {"type": "integer", "minimum": 1, "maximum": MAX_PARTS}),
            _param("key", "query", {"type": "string"}, required=True),
            _param("expires", "query", {"type": "integer", "minimum": 0}, required=True),
            _param("signature", "query", {**hex_string, "maxLength": 64}, required=True),
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
        "responses": {
            "200": {
                "description": "The part is stored (a part sent again replaces the first)",
                "headers": {
                    "ETag": {
                        "description": "The part's SHA-256 (hex), for `complete`",
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    }
                },
            },
            **{code: {"description": text, **_json(ErrorOut)} for code, text in errors.items()},
        },
    }


def _model_operation() -> dict[str, Any]:
    """The model route (mlflow_server.model_route): a serving pod reads its bundle with its
    deployment's token, so the operation overrides the document's basic security."""
    bundle = {
        "description": "The bundle (a zip) of the deployment's model representation",
        "headers": {
            "X-Model-SHA256": {
                "description": "The bundle's SHA-256 (hex), for `mlrunner serve --sha256`",
                "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            }
        },
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    }
    errors = {
        "400": "The deployment's model has no representation mlrunner serves",
        "401": "No token, or not this deployment's (wrong, revoked, or undeployed)",
        "404": "The deployment has no stored model representation",
    }
    return {
        "summary": "A deployment's model bundle, as `mlrunner serve --model URL` fetches it",
        "security": [{"deploymentToken": []}],
        "parameters": [_param("deployment_id", "path", _ID)],
        "responses": {
            "200": bundle,
            **{code: {"description": text, **_json(ErrorOut)} for code, text in errors.items()},
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of ML Manager's REST API."""
    _, schemas = models_json_schema(
        [(m, "serialization") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    job_id = _param("job_id", "path", _ID)
    p = API_PREFIX
    paths = {
        f"{p}/jobs": {
            "post": _op(
                "Submit a job",
                ("201", JobOut),
                errors=("400", "401", "403", "404", "409"),
                body=SubmitJob,
            ),
            "get": _op(
                "List jobs, newest first (users see their own, admins all)",
                ("200", JobList),
                errors=("400", "401", "403"),
                params=[
                    _param("status", "query", {"type": "string", "enum": list(JOB_STATUSES)}),
                    _param("handler", "query", {"type": "string", "maxLength": 64}),
                    _param("user", "query", {"type": "string", "maxLength": 255}),
                    _param("since", "query", {"type": "string", "format": "date-time"}),
                    _param("until", "query", {"type": "string", "format": "date-time"}),
                    _param("q", "query", {"type": "string", "maxLength": 255}),
                    _param("sort", "query", {"type": "string", "enum": list(JOB_SORTS)}),
                    _param("order", "query", {"type": "string", "enum": ["asc", "desc"]}),
                    _param("counts", "query", {"type": "string", "enum": ["false", "true"]}),
                    *_PAGE,
                ],
            ),
        },
        f"{p}/jobs/daily": {
            "get": _op(
                "Jobs created per UTC day and status (same filters as the list)",
                ("200", JobsPerDay),
                errors=("400", "401", "403"),
                params=[
                    _param("days", "query", {"type": "integer", "minimum": 1, "maximum": 366}),
                    _param("status", "query", {"type": "string", "enum": list(JOB_STATUSES)}),
                    _param("handler", "query", {"type": "string", "maxLength": 64}),
                    _param("user", "query", {"type": "string", "maxLength": 255}),
                    _param("since", "query", {"type": "string", "format": "date-time"}),
                    _param("until", "query", {"type": "string", "format": "date-time"}),
                    _param("q", "query", {"type": "string", "maxLength": 255}),
                ],
            )
        },
        f"{p}/jobs/{{job_id}}": {
            "get": _op("Get a job", ("200", JobOut), errors=("401", "404"), params=[job_id])
        },
        f"{p}/jobs/{{job_id}}/logs": {
            "get": _op(
                "Read a job's log lines after line `after`",
                ("200", LogsOut),
                errors=("400", "401", "404"),
                params=[
                    job_id,
                    _param(
                        "after", "query", {"type": "integer", "minimum": 0, "maximum": MAX_LINE}
                    ),
                    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 5000}),
                ],
            )
        },
        f"{p}/jobs/{{job_id}}/logs/stream": {
            "get": {
                "summary": "Follow a job's log as Server-Sent Events until the job ends",
                "parameters": [
                    job_id,
                    _param(
                        "after", "query", {"type": "integer", "minimum": 0, "maximum": MAX_LINE}
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "events `log` (data: a LogLineOut) then `end` (a JobOut)",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "401": {"description": _ERRORS["401"], **_json(ErrorOut)},
                    "404": {"description": _ERRORS["404"], **_json(ErrorOut)},
                },
            }
        },
        f"{p}/jobs/{{job_id}}/cancel": {
            "post": _op(
                "Cancel a job (PENDING: at once; RUNNING: at its next step)",
                ("200", JobOut),
                errors=("401", "404", "409"),
                params=[job_id],
            )
        },
        f"{p}/deployments": {
            "get": _op(
                "List deployments (users see their own, admins all)",
                ("200", DeploymentList),
                errors=("400", "401"),
                params=[
                    _param("target", "query", {"type": "string", "maxLength": 32}),
                    _param(
                        "status", "query", {"type": "string", "enum": list(DEPLOYMENT_STATUSES)}
                    ),
                    *_PAGE,
                ],
            )
        },
        f"{p}/deployments/{{deployment_id}}": {
            "get": _op(
                "Get a deployment",
                ("200", DeploymentOut),
                errors=("401", "404"),
                params=[_param("deployment_id", "path", _ID)],
            ),
            "delete": _op(
                "Undeploy: submits the matching undeploy job",
                ("202", JobOut),
                errors=("401", "403", "404", "409"),
                params=[_param("deployment_id", "path", _ID)],
            ),
        },
        f"{p}/deployments/{{deployment_id}}/rollback": {
            "post": _op(
                "Roll back: submits the deploy of the model this deployment replaced "
                "(with replace)",
                ("202", JobOut),
                errors=("400", "401", "403", "404", "409"),
                params=[_param("deployment_id", "path", _ID)],
            )
        },
        f"{p}/deployments/{{deployment_id}}/model": {"get": _model_operation()},
        f"{PART_PATH}/{{upload_id}}/{{part_number}}": {"put": _part_operation()},
        f"{p}/handlers": {"get": _op("List handlers", ("200", HandlerList))},
        f"{p}/handlers/{{name}}/enable": {
            "post": _op(
                "Enable a handler (admins)",
                ("200", HandlerOut),
                errors=("401", "403", "404"),
                params=[_param("name", "path", {"type": "string", "pattern": "^[A-Z_]{1,64}$"})],
            )
        },
        f"{p}/handlers/{{name}}/disable": {
            "post": _op(
                "Disable a handler (admins)",
                ("200", HandlerOut),
                errors=("400", "401", "403", "404"),
                params=[_param("name", "path", {"type": "string", "pattern": "^[A-Z_]{1,64}$"})],
            )
        },
        f"{p}/workers": {
            "get": _op(
                "Live workers and the ledger's jobs per status (admins)",
                ("200", WorkerList),
                errors=("401", "403"),
            )
        },
        f"{p}/version": {
            "get": _op(
                "The running ML Manager and MLflow, and the schema revision of the database",
                ("200", VersionOut),
            )
        },
        "/api/rest/initiate": {
            "post": {
                **_op(
                    "Original API: submit a job; body is handler_name plus the payload fields",
                    ("200", CompatInitiateOut),
                    errors=("400", "401", "403", "404", "409"),
                ),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["handler_name"],
                                "properties": {"handler_name": {"type": "string"}},
                                "additionalProperties": True,
                            }
                        }
                    },
                },
            }
        },
        "/api/rest/logs": {
            "post": _op(
                "Original API: a job's status and log lines",
                ("200", CompatLogsOut),
                errors=("400", "401", "404"),
                body=CompatLogsIn,
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "ML Manager", "version": "1"},
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "deploymentToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A deployment's read-only model token (not a user's password)",
                },
            },
        },
        "security": [{"basic": []}],
        "paths": paths,
        # Which payload schema each handler takes (the Deploy page builds its form from it).
        "x-handler-payloads": {
            name: _ref(spec.payload_model)["$ref"] for name, spec in sorted(SPECS.items())
        },
    }
