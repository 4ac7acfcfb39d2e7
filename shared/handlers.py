"""What the server and the worker both know about each kind of job.

A :class:`HandlerSpec` names a handler, its payload model (the same pydantic
model validates the REST body, the CLI flags and the stored payload), its retry
policy and who may submit it. The steps that do the work live in ``bobby``.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Literal, Self

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.db import check_identifier
from shared.errors import ConfigError
from shared.settings import Settings


class Payload(BaseModel):
    """Base of every job payload: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        # PostgreSQL text and JSONB cannot hold NUL characters.
        if _has_nul(value):
            raise ValueError("must not contain NUL characters")
        return value


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def describe_validation_error(exc: ValidationError, what: str) -> tuple[str, str]:
    """(first field in error, one message naming every field in error)."""
    errors = exc.errors(include_url=False)
    field = ".".join(str(p) for p in errors[0]["loc"]) or what
    message = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg']}" for e in errors)
    return field, message


@dataclass(frozen=True)
class HandlerSpec:
    name: str
    description: str
    payload_model: type[Payload]
    # A handler may be retried (after an error or a crash) only if it is idempotent:
    # a second run must finish what a first, interrupted run half did.
    idempotent: bool = False
    max_attempts: int | None = None  # None: JOB_MAX_ATTEMPTS for idempotent handlers
    admin_only: bool = False
    # Only offered when ENVIRONMENT is one of these (None: always).
    environments: frozenset[str] | None = None

    def attempts(self, default: int) -> int:
        if not self.idempotent:
            return 1
        return self.max_attempts or default


SPECS: dict[str, HandlerSpec] = {}


def register_spec(spec: HandlerSpec) -> HandlerSpec:
    if spec.name in SPECS and SPECS[spec.name] != spec:
        raise ValueError(f"two different handler specs named {spec.name}")
    SPECS[spec.name] = spec
    return spec


def import_modules(names: str, setting: str) -> None:
    """Import the comma-separated modules of a setting; one that fails is a ConfigError."""
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{setting}: cannot import {name!r} ({exc})") from None


def load_specs(settings: Settings) -> dict[str, HandlerSpec]:
    """The server's view of the handlers: built-in specs plus HANDLER_SPEC_MODULES.

    Spec modules import ``shared`` only, so the server never loads the worker (``bobby``,
    pandas, onnxruntime). Without HANDLER_SPEC_MODULES, the modules of HANDLER_MODULES are
    imported as before (they register their specs too), at the cost of loading the worker's
    code into every server process.
    """
    if settings.handler_spec_modules:
        import_modules(settings.handler_spec_modules, "HANDLER_SPEC_MODULES")
    elif settings.handler_modules:
        logger.warning(
            "HANDLER_SPEC_MODULES is not set: the server imports HANDLER_MODULES ({}) for their "
            "payload specs, which loads the worker's code; name the modules holding only the "
            "specs in HANDLER_SPEC_MODULES",
            settings.handler_modules,
        )
        import_modules(settings.handler_modules, "HANDLER_MODULES")
    return SPECS


class ServicePayload(Payload):
    service: str = Field(description="Name of the handler to switch on or off")


ENABLE_SERVICE = register_spec(
    HandlerSpec(
        "ENABLE_SERVICE",
        "Enable a kind of job (administrators only)",
        ServicePayload,
        idempotent=True,
        admin_only=True,
    )
)
DISABLE_SERVICE = register_spec(
    HandlerSpec(
        "DISABLE_SERVICE",
        "Disable a kind of job (administrators only)",
        ServicePayload,
        idempotent=True,
        admin_only=True,
    )
)
# Switching handlers on and off must itself never be switched off.
ALWAYS_ENABLED = frozenset({ENABLE_SERVICE.name, DISABLE_SERVICE.name})


def _identifier(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        return check_identifier(value, what)
    except Exception as exc:
        raise ValueError(str(exc)) from None


class ModelRef(Payload):
    """Which model: an MLflow run (the original ``run_id``) or a model URI."""

    run_id: str | None = Field(None, pattern=r"^[0-9a-zA-Z_-]{1,64}$", description="MLflow run id")
    model_uri: str | None = Field(
        None,
        pattern=r"^(runs:/[0-9a-zA-Z_-]+/.+|models:/[^/@]+(/[^/]+|@[^/]+)?)$",
        description="runs:/<run>/<path>, models:/<name>/<version>, models:/<name>@<alias> "
        "or models:/<model id>; for DEPLOY_DATABASE also runs:/<run>/<path>.zip, an H2O MOJO "
        "logged as an artifact",
    )

    @model_validator(mode="after")
    def _one_model(self) -> Self:
        if (self.run_id is None) == (self.model_uri is None):
            raise ValueError("give exactly one of run_id and model_uri")
        return self


class DeployDatabasePayload(ModelRef):
    db_schema: str = Field(description="Schema of the table")
    db_table: str = Field(description="Table whose inserted rows get scored")
    create_model_table: bool = Field(False, description="Create the table (else: alter it)")
    df_schema: dict[str, str] | None = Field(
        None, description="Column -> SQL type of the training frame (for a new table)"
    )
    primary_key: dict[str, str] | None = Field(
        None, description="Primary key column(s) -> SQL type (new table)"
    )
    reference_schema: str | None = Field(None, description="Schema of a reference table")
    reference_table: str | None = Field(None, description="Take feature columns from this table")
    model_cols: list[str] | None = Field(None, description="Columns that feed the model")
    classes: list[str] | None = Field(
        None, description="Ignored (kept for old clients): labels are read from the model"
    )
    library_specific: dict[str, str | float | int | bool] = Field(
        default_factory=dict, description="e.g. {'method': 'predict_proba'}"
    )
    replace: bool = Field(False, description="Replace a model already on the table")
    max_batch_size: int = Field(10000, ge=1, le=1_000_000, description="Rows scored per call")
    score_existing: bool = Field(False, description="Fill predictions for rows already there")
    dry_run: bool = Field(False, description="Only print the SQL of the deployment plan")
    trigger_mode: Literal["statement", "row"] = Field("statement", description="Trigger kind")
    mode: Literal["auto", "sync", "async"] = Field(
        "auto",
        description="sync: scored in the INSERT (PL/Python); async: scored by the worker "
        "soon after (no PL/Python needed); auto: sync where PL/Python is available",
    )

    @field_validator("db_schema", "db_table", "reference_schema", "reference_table")
    @classmethod
    def _names(cls, value: str | None, info: object) -> str | None:
        return _identifier(value, getattr(info, "field_name", "name"))

    @field_validator("model_cols")
    @classmethod
    def _columns(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [str(_identifier(c, "model_cols")) for c in value]

    @field_validator("df_schema", "primary_key")
    @classmethod
    def _typed_columns(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        for column, sql_type in value.items():
            _identifier(column, "column")
            if not _SQL_TYPE.fullmatch(sql_type):
                raise ValueError(f"unsupported SQL type {sql_type!r} for column {column}")
        return value


_SQL_TYPE = re.compile(
    r"(?i)(SMALLINT|INT|INTEGER|BIGINT|REAL|FLOAT|DOUBLE( PRECISION)?|NUMERIC(\(\d+(,\d+)?\))?"
    r"|DECIMAL(\(\d+(,\d+)?\))?|BOOLEAN|TEXT|VARCHAR(\(\d+\))?|CHAR(\(\d+\))?|DATE"
    r"|TIMESTAMP|TIMESTAMPTZ)"
)


class UndeployDatabasePayload(ModelRef):
    db_schema: str
    db_table: str
    drop_columns: bool = Field(False, description="Also drop the prediction columns")

    @field_validator("db_schema", "db_table")
    @classmethod
    def _names(cls, value: str, info: object) -> str | None:
        return _identifier(value, getattr(info, "field_name", "name"))


class DeployKubernetesPayload(ModelRef):
    service_port: int = Field(80, ge=1, le=65535)
    base_replicas: int = Field(1, ge=1, le=100)
    autoscaling_enabled: bool = False
    max_replicas: int = Field(2, ge=1, le=100)
    target_cpu_utilization: int = Field(50, ge=1, le=100)
    disable_nginx: bool = False
    gunicorn_workers: int = Field(1, ge=1, le=64)
    resource_requests_enabled: bool = False
    resource_limits_enabled: bool = False
    cpu_request: float = Field(0.5, gt=0)
    cpu_limit: float = Field(1, gt=0)
    memory_request: str = Field("512Mi", pattern=r"^\d+(Ki|Mi|Gi)$")
    memory_limit: str = Field("2048Mi", pattern=r"^\d+(Ki|Mi|Gi)$")
    expose_external: bool = False
    name: str | None = Field(
        None,
        pattern=r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$",
        description="Name of the Kubernetes objects (default: the registered model's name, "
        "else mlm-<run id>)",
    )
    replace: bool = Field(False, description="Replace the model deployed under that name")
    dry_run: bool = Field(False, description="Only print the manifests")


class UndeployKubernetesPayload(ModelRef):
    name: str | None = Field(
        None,
        pattern=r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$",
        description="The deployment's name (default: the one serving the run or model)",
    )


class DeployAwsPayload(ModelRef):
    app_name: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    deployment_mode: Literal["create", "add", "replace"] = "replace"
    sagemaker_region: str = Field("us-east-2", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    instance_type: str = Field("ml.m5.xlarge", pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
    instance_count: int = Field(1, ge=1, le=100)
    pipeline: Literal["model"] = "model"


class UndeployAwsPayload(ModelRef):
    app_name: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    sagemaker_region: str = Field("us-east-2", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    delete_artifacts: bool = Field(
        True, description="Also delete the model archives the deploys uploaded to S3"
    )


_AZURE_ENDPOINT = r"^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$"


class AzureWorkspaceRef(ModelRef):
    endpoint_name: str = Field(
        pattern=_AZURE_ENDPOINT, description="Managed online endpoint (unique in the region)"
    )
    workspace: str | None = Field(
        None, min_length=1, max_length=64, description="Azure ML workspace (AZURE_WORKSPACE)"
    )
    resource_group: str | None = Field(
        None,
        min_length=1,
        max_length=90,
        description="Resource group of the workspace (AZURE_RESOURCE_GROUP)",
    )


class DeployAzurePayload(AzureWorkspaceRef):
    model_name: str = Field(
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,254}$",
        description="Name the model is registered under in the workspace",
    )
    region: str = Field("East US", description="The workspace's region (shown in the record)")
    cpu_cores: float = Field(0.1, gt=0, description="Cores: choose the VM size (README)")
    allocated_ram: float = Field(0.5, gt=0, description="GB of memory: choose the VM size")
    replace: bool = Field(
        False, description="Replace the model the endpoint serves (new deployment, then traffic)"
    )


class UndeployAzurePayload(AzureWorkspaceRef):
    pass


class ScheduleRetrainPayload(Payload):
    """A retraining schedule (``shared.schedules``): the original fields ``name``,
    ``cron_exp``, ``environment`` (and ``run_id``), plus what to retrain and how to judge it."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", description="Name of the schedule"
    )
    cron_exp: str = Field(
        description="Cron expression: 5 fields (minute hour day month day_of_week), or 6 with "
        "seconds first; day_of_week counts from Monday=0 (APScheduler), names (mon-fri) are safest"
    )
    timezone: str = Field("UTC", description="IANA time zone the cron expression is read in")
    environment: Literal["default", "kubernetes"] = Field(
        "default", description="default: the project runs as a worker subprocess"
    )
    model_name: str = Field(
        min_length=1, max_length=255, description="Registered model whose champion is challenged"
    )
    run_id: str | None = Field(
        None,
        pattern=r"^[0-9a-zA-Z_-]{1,64}$",
        description="Run whose logged MLflow Project is retrained (default: the champion's run)",
    )
    project_uri: str | None = Field(
        None,
        max_length=1024,
        description="Git URI of the MLflow Project, instead of the one logged with the run",
    )
    entry_point: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,128}$",
        description="Entry point (default: retrain if the MLproject has it, else main)",
    )
    parameters: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Parameters of the entry point (-P name=value)"
    )
    metric: str = Field(
        pattern=r"^[A-Za-z0-9_.\-/ ]{1,250}$",
        description="Metric the challenger and the champion logged, compared to choose",
    )
    greater_is_better: bool = Field(True, description="Direction of the metric")
    margin: float = Field(
        0.0, ge=0, description="How much better the challenger must be to be promoted"
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("parameters")
    @classmethod
    def _parameter_names(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}", name):
                raise ValueError(f"bad parameter name {name!r}")
        return value

    @field_validator("cron_exp")
    @classmethod
    def _cron(cls, value: str) -> str:
        from shared.schedules import cron_trigger

        cron_trigger(value, "UTC")  # the syntax (the zone changes no field); ValueError says why
        return value


class RetrainPayload(Payload):
    """One firing of a schedule (submitted by the leader worker, or by "run now")."""

    schedule_id: int = Field(ge=1, description="The schedule to fire")
    fire_time: str | None = Field(
        None, description="The scheduled time of this firing (ISO-8601 UTC); absent: run now"
    )


class WatchElasticsearchPayload(Payload):
    """Follow the log lines of a Kubernetes Job's pods in Elasticsearch (the original fields)."""

    context_name: str = Field(
        min_length=1, max_length=255, description="What is watched (e.g. a retrain schedule)"
    )
    entity_id: str = Field(
        min_length=1, max_length=255, description="Its id (e.g. the job that started the pod)"
    )
    job_name: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Kubernetes Job (or pod) whose pods' lines are followed: pods named "
        "<job_name> or <job_name>-<suffix> as Kubernetes names a Job's pods",
    )
    completion_msgs: list[str] = Field(
        min_length=1, description="A line containing one of these texts ends the job: SUCCESS"
    )
    failure_msgs: list[str] = Field(
        default_factory=list, description="A line containing one of these ends it: FAILURE"
    )
    timeout_seconds: float | None = Field(
        None,
        gt=0,
        le=7 * 24 * 3600,
        description="Fail after this long without a new line (default "
        "ELASTICSEARCH_WATCH_TIMEOUT_SECONDS)",
    )

    @field_validator("completion_msgs", "failure_msgs")
    @classmethod
    def _texts(cls, value: list[str]) -> list[str]:
        if any(not text for text in value):
            raise ValueError("an empty text would match every line")
        return value


# Every deploy and undeploy target is retried (JOB_MAX_ATTEMPTS, JOB_RETRY_BACKOFF_SECONDS):
# a worker lost or a connection dropped mid-deploy must not fail the deploy for good. So
# each target's handler must follow the idempotence rule of bobby/handlers/base.py (one
# transaction or converging steps, a lock per deployed object, a rerun that recognises its
# own finished work); tests/unit/test_handler_specs.py holds every target to it.
for _spec in (
    HandlerSpec(
        "DEPLOY_DATABASE",
        "Score every inserted row of a table",
        DeployDatabasePayload,
        idempotent=True,
    ),
    HandlerSpec(
        "UNDEPLOY_DATABASE", "Remove a model from a table", UndeployDatabasePayload, idempotent=True
    ),
    HandlerSpec(
        "DEPLOY_KUBERNETES", "Serve a model on Kubernetes", DeployKubernetesPayload, idempotent=True
    ),
    HandlerSpec(
        "UNDEPLOY_KUBERNETES",
        "Remove a Kubernetes deployment",
        UndeployKubernetesPayload,
        idempotent=True,
    ),
    HandlerSpec(
        "DEPLOY_AWS",
        "Deploy to SageMaker",
        DeployAwsPayload,
        idempotent=True,
        environments=frozenset({"aws"}),
    ),
    HandlerSpec(
        "UNDEPLOY_AWS",
        "Remove a SageMaker endpoint",
        UndeployAwsPayload,
        idempotent=True,
        environments=frozenset({"aws"}),
    ),
    HandlerSpec(
        "DEPLOY_AZURE",
        "Deploy to Azure ML",
        DeployAzurePayload,
        idempotent=True,
        environments=frozenset({"azure"}),
    ),
    HandlerSpec(
        "UNDEPLOY_AZURE",
        "Remove an Azure ML endpoint",
        UndeployAzurePayload,
        idempotent=True,
        environments=frozenset({"azure"}),
    ),
    # Creates (or, rerun, finds) the schedule: converging, so retried like a deploy.
    HandlerSpec(
        "SCHEDULE_RETRAIN",
        "Create a retraining schedule",
        ScheduleRetrainPayload,
        idempotent=True,
    ),
    # One retraining: runs the project once (a crashed run is not repeated: the next
    # firing retrains).
    HandlerSpec("RETRAIN", "Retrain a model now (a schedule's firing)", RetrainPayload),
    # Retried after a crash: a new attempt resumes after the lines already in the job's log.
    HandlerSpec(
        "WATCH_ELASTICSEARCH",
        "Follow a pod's logs in Elasticsearch",
        WatchElasticsearchPayload,
        idempotent=True,
    ),
):
    register_spec(_spec)


class ReconcilePayload(Payload):
    deployment_id: int | None = Field(
        None,
        ge=1,
        description="The DEPLOYED deployment to re-apply; absent: every deployment of the "
        "submitting user (of every user, for an administrator)",
    )


# Owner-or-admin (checked at submit and again by the worker). Idempotent: it observes the
# target and re-applies only what differs from the record, under the deploy's table lock.
RECONCILE = register_spec(
    HandlerSpec(
        "RECONCILE",
        "Re-apply the recorded state of deployments (repair drift)",
        ReconcilePayload,
        idempotent=True,
    )
)
