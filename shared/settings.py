"""One typed settings object, read from the environment once.

ML Manager's configuration is read here only: child processes get their
environment from :meth:`Settings.child_env`. Three places still touch
``os.environ``, for code that is not ours: ``bobby.worker`` exports the MLflow
client's server and credentials (MLflow reads them from the environment), and
``shared.scoring.postgres`` and ``shared.scoring.jvm`` set thread limits for
onnxruntime and read ``MLRUNNER_*``, because they also run inside PostgreSQL's
PL/Python, where no Settings object exists.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from shared.errors import ConfigError

Component = Literal["server", "worker", "cli"]

# Values that mean "somebody forgot to set this" (compared case-insensitively).
_PLACEHOLDERS = {
    "",
    "admin",
    "changeme",
    "change-me",
    "change_me",
    "password",
    "secret",
    "placeholder",
    "xxx",
    "todo",
    "your-password",
    "your_password",
    "mlmanager",
}


def is_placeholder(value: str) -> bool:
    v = value.strip().lower()
    return v in _PLACEHOLDERS or (v.startswith("<") and v.endswith(">"))


class Settings(BaseSettings):
    """ML Manager's configuration. Field names are the environment variable names."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # --- database (names of the original .env) ---
    db_url: SecretStr | None = Field(
        None, description="One-line SQLAlchemy URL of our database; overrides DB_HOST & co."
    )
    db_host: str | None = Field(None, description="PostgreSQL host (unset: embedded SQLite)")
    db_port: int = Field(5432, description="PostgreSQL port")
    db_user: str = Field("mlmanager", description="Database user ML Manager connects as")
    db_password: SecretStr | None = Field(None, description="Password of DB_USER")
    db_name: str = Field("mlmanager", description="Database name")
    db_schema: str = Field(
        "mlmanager", description="PostgreSQL schema holding ML Manager's own tables"
    )
    environment: Literal["default", "aws", "azure", "gcp"] = Field(
        "default", description="Which cloud this runs in; decides the cloud deploy handler"
    )

    # --- embedded mode and processes ---
    mlmanager_home: Path = Field(
        Path(".mlmanager"), description="Data folder of the embedded mode (SQLite, artifacts)"
    )
    mlmanager_host: str = Field("127.0.0.1", description="Address the server listens on")
    mlmanager_port: int = Field(5001, description="Port of the MLflow server with ML Manager")
    mlmanager_allowed_hosts: str | None = Field(
        None,
        description="Host headers the server accepts (MLflow's --allowed-hosts; default: "
        "localhost and private IPs)",
    )
    mlmanager_admin_user: str = Field("admin", description="Admin user created at first start")
    mlmanager_admin_password: SecretStr | None = Field(
        None,
        description="Admin password; embedded mode generates one in MLMANAGER_HOME if unset",
    )
    mlmanager_secret_key: SecretStr | None = Field(
        None, description="Flask secret key (CSRF); embedded mode generates one if unset"
    )
    mlflow_url: str | None = Field(
        None, description="URL the worker uses to reach the MLflow server"
    )
    mlflow_backend_store_uri: SecretStr | None = Field(
        None,
        description="MLflow tracking/registry store (default: MLMANAGER_HOME/mlflow.db "
        "embedded, else the same database as ours)",
    )
    mlflow_artifacts_destination: str | None = Field(
        None,
        description="Where the server stores artifacts (default: our database, "
        "mlmanager-db:/; a folder, file:// or s3:// URI names another store)",
    )
    artifact_upload_url_ttl: int = Field(
        3600,
        ge=1,
        description="Seconds a part URL of MLflow's multipart upload stays valid",
    )
    gunicorn_workers: int = Field(2, ge=1, description="gunicorn worker processes of the server")
    worker_threads: int = Field(4, ge=1, description="Jobs one Bobby worker runs at once")
    worker_host: str = Field("127.0.0.1", description="Address of the worker's HTTP endpoint")
    worker_port: int = Field(5002, description="Port of the worker's /health, /metrics, /job")
    namespace: str = Field("mlmanager", description="Kubernetes namespace for deployments")

    # --- the job ledger and the worker's loop ---
    job_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="A claimed job is another worker's after this long without heartbeat",
    )
    job_max_attempts: int = Field(3, ge=1, description="Default attempts of a retryable job")
    job_retry_backoff_seconds: float = Field(
        5.0, ge=0, description="First retry delay; doubles per attempt, with jitter"
    )
    worker_poll_seconds: float = Field(
        0.1, gt=0, description="How often the worker polls for jobs on SQLite"
    )
    worker_sweep_seconds: float = Field(
        5.0, gt=0, description="How often the worker returns jobs with expired leases"
    )
    reconcile_interval_seconds: float = Field(
        0.0,
        ge=0,
        description="How often a worker submits a RECONCILE of every deployment (0: never)",
    )
    async_scoring_batch_size: int = Field(
        5000, ge=1, le=1_000_000, description="Rows an async scorer claims and scores at once"
    )
    async_scoring_sweep_seconds: float = Field(
        10.0, gt=0, description="How often async scorers look for rows no NOTIFY announced"
    )
    h2o_url: str = Field(
        "",
        description="H2O cluster that exports h2o-flavor models to MOJO at deploy time "
        "(empty: the worker starts a local one on first use)",
    )
    h2o_max_mem_size: str = Field(
        "1G", description="Heap of the local H2O cluster the worker starts (e.g. 1G, 2048M)"
    )
    scheduler_poll_seconds: float = Field(
        1.0,
        gt=0,
        description="How often a worker tries to become the retraining leader, and the "
        "leader re-reads the schedules",
    )
    retrain_env_manager: Literal["local", "virtualenv", "uv", "conda"] = Field(
        "local",
        description="mlflow run --env-manager of retraining projects (local: the worker's "
        "own Python environment)",
    )
    worker_shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="On SIGTERM, how long running jobs may finish before release"
    )
    disabled_handler_pending: Literal["wait", "fail"] = Field(
        "wait", description="What pending jobs of a handler do when it is disabled"
    )
    handler_modules: str = Field(
        "", description="Comma-separated Python modules with extra job handlers to load"
    )
    handler_spec_modules: str = Field(
        "",
        description="Comma-separated Python modules with the payload specs of those handlers "
        "(what the server imports; they must not import bobby)",
    )

    startup_timeout_seconds: float = Field(
        60.0,
        ge=0,
        description="How long start-up retries a database that does not answer (e.g. one "
        "restarting) before giving up with one line naming the cause",
    )
    mlmanager_mlflow_telemetry: bool = Field(
        False,
        description="Let MLflow send its usage telemetry (off by default: its background "
        "thread breaks jobs on hosts without internet)",
    )

    auth_backend: Literal["mlflow", "database"] = Field(
        "mlflow",
        description="How passwords are checked: MLflow's user store, or a login to the "
        "(PostgreSQL) database as that user",
    )
    deploy_allowed_schemas: str = Field(
        "",
        description="Comma-separated schemas ordinary users may deploy into and read "
        "reference tables from (empty: every schema but the protected ones); admins: any",
    )

    # --- WATCH_ELASTICSEARCH: following a pod's log lines in Elasticsearch ---
    elasticsearch_url: str | None = Field(
        None, description="Elasticsearch that holds the pods' log lines (unset: the watcher fails)"
    )
    elasticsearch_username: str | None = Field(None, description="User for Elasticsearch")
    elasticsearch_password: SecretStr | None = Field(
        None, description="Password of ELASTICSEARCH_USERNAME"
    )
    elasticsearch_api_key: SecretStr | None = Field(
        None, description="API key for Elasticsearch (instead of user and password)"
    )
    elasticsearch_ca_certs: Path | None = Field(
        None, description="CA bundle that signed Elasticsearch's certificate (https)"
    )
    elasticsearch_index: str = Field(
        "logs-*,filebeat-*", description="Indices (patterns, comma-separated) holding the lines"
    )
    elasticsearch_watch_timeout_seconds: float = Field(
        600.0, gt=0, description="A watch fails after this long without a new line"
    )
    elasticsearch_watch_poll_seconds: float = Field(
        1.0, gt=0, description="How often a watch looks for new lines"
    )
    elasticsearch_watch_settle_seconds: float = Field(
        2.0,
        ge=0,
        description="How long a new line waits before it is copied, so that lines the "
        "shippers deliver out of order are copied in order",
    )
    elasticsearch_watch_lookback_seconds: float = Field(
        60.0,
        ge=0,
        description="How far before the last copied line a watch still looks for late lines",
    )

    # --- DEPLOY_KUBERNETES (shared/kube): the namespace is NAMESPACE ---
    kubeconfig: Path | None = Field(
        None,
        description="kubeconfig of the cluster the worker deploys to (unset: in-cluster "
        "config, else ~/.kube/config)",
    )
    # The names infrastructure/serving.Dockerfile and pyfunc.Dockerfile say to build, at the
    # release's version (the chart's appVersion, as its mlmanager/mlmanager image).
    kubernetes_serving_image: str = Field(
        "mlmanager/serving:0.1.0",
        description="Image of the pods serving ONNX/MOJO models (mlrunner serve)",
    )
    kubernetes_pyfunc_image: str = Field(
        "mlmanager/pyfunc:0.1.0",
        description="Image of the pods serving the other models (mlflow models serve)",
    )
    kubernetes_model_url: str | None = Field(
        None,
        description="URL of this server as the pods reach it, to fetch their model "
        "(default MLFLOW_URL)",
    )
    kubernetes_ingress_host: str | None = Field(
        None,
        description="DNS suffix of the Ingress hosts: a deployment NAME answers at "
        "NAME.<this> (needed for expose_external)",
    )
    kubernetes_rollout_timeout_seconds: float = Field(
        300.0, gt=0, description="A rollout that is not available after this long fails"
    )

    # --- RETRAIN of a schedule with environment: kubernetes (shared/kube/jobs.py) ---
    retrain_kubernetes_image: str = Field(
        "mlmanager/mlmanager:0.1.0",
        description="Image of the retraining Jobs' pods: it needs mlflow and the projects' "
        "libraries (the worker's image has them)",
    )
    retrain_kubernetes_namespace: str | None = Field(
        None, description="Namespace of the retraining Jobs (default NAMESPACE)"
    )
    retrain_kubernetes_service_account: str | None = Field(
        None, description="Service account of the retraining pods (default: the namespace's)"
    )
    retrain_kubernetes_cpu_request: str | None = Field(
        None, description="CPU request of a retraining pod (e.g. 500m; unset: none)"
    )
    retrain_kubernetes_memory_request: str | None = Field(
        None, description="Memory request of a retraining pod (e.g. 1Gi; unset: none)"
    )
    retrain_kubernetes_cpu_limit: str | None = Field(
        None, description="CPU limit of a retraining pod (unset: none)"
    )
    retrain_kubernetes_memory_limit: str | None = Field(
        None, description="Memory limit of a retraining pod (unset: none)"
    )
    retrain_kubernetes_deadline_seconds: int = Field(
        3600, gt=0, description="activeDeadlineSeconds of a retraining Job: it fails after this"
    )
    retrain_kubernetes_poll_seconds: float = Field(
        2.0, gt=0, description="How often the worker reads a retraining Job's status"
    )

    # --- clients (`mlmanager jobs|deploy`, the MLflow deployments plugin) ---
    mlflow_tracking_uri: str | None = Field(
        None, description="Server the command line talks to (default: this machine's server)"
    )
    mlflow_tracking_username: str | None = Field(None, description="User of the command line")
    mlflow_tracking_password: SecretStr | None = Field(
        None, description="Password of MLFLOW_TRACKING_USERNAME"
    )
    kubernetes_predict_url: str | None = Field(
        None,
        description="Where the deployments plugin's predict sends a Kubernetes deployment's "
        "requests, instead of its Service's in-cluster URL: a template of {name}, "
        "{namespace}, {port} (e.g. a `kubectl port-forward` address)",
    )

    # --- logging ---
    log_format: Literal["human", "json"] = Field("human", description="Log line format")
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level logged"
    )

    # --- cloud credentials (only for cloud deploys) ---
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    sagemaker_role: str | None = None
    aws_endpoint_url: str | None = Field(
        None, description="One endpoint for every AWS API (a local stand-in); unset: AWS's own"
    )
    sagemaker_bucket: str | None = Field(
        None,
        description="S3 bucket of the model archives, created if missing (default "
        "mlmanager-sagemaker-<region>-<account>)",
    )
    sagemaker_images_file: Path = Field(
        Path(__file__).resolve().parents[1] / "infrastructure" / "config.json",
        description="The serving images' regions and URIs (infrastructure/config.json)",
    )
    sagemaker_timeout_seconds: float = Field(
        1800.0, gt=0, description="How long a SageMaker deploy waits for InService"
    )
    sagemaker_poll_seconds: float = Field(
        15.0, gt=0, description="How often a SageMaker deploy reads the endpoint's status"
    )
    azure_username: SecretStr | None = Field(
        None, description="Client (application) id of the service principal Azure ML deploys as"
    )
    azure_password: SecretStr | None = Field(
        None, description="Client secret of the service principal AZURE_USERNAME"
    )
    azure_tenant_id: str | None = Field(None, description="Azure AD tenant of the principal")
    azure_subscription_id: str | None = Field(
        None, description="Subscription of the Azure ML workspaces"
    )
    azure_resource_group: str | None = Field(
        None, description="Resource group of the workspace when a deploy names none"
    )
    azure_workspace: str | None = Field(
        None, description="Azure ML workspace when a deploy names none"
    )
    azure_cloud_metadata_url: str | None = Field(
        None,
        description="Resource Manager's cloud metadata (…/metadata/endpoints): a sovereign "
        "cloud or a local stand-in; unset: Azure's public cloud",
    )
    azure_serving_image: str | None = Field(
        None,
        description="ML Manager's serving image in a registry the workspace pulls from "
        "({version}: ML Manager's); unset: only MLflow no-code deployments",
    )
    azure_timeout_seconds: float = Field(
        1800.0, gt=0, description="How long an Azure ML deploy waits for provisioning"
    )
    azure_poll_seconds: float = Field(
        15.0, gt=0, description="How often an Azure ML deploy reads the provisioning state"
    )

    # ------------------------------------------------------------------
    @property
    def embedded(self) -> bool:
        """True when no database is configured: SQLite under MLMANAGER_HOME."""
        return self.db_url is None and self.db_host is None

    @property
    def home(self) -> Path:
        return self.mlmanager_home.expanduser().absolute()

    @property
    def database_url(self) -> str:
        """SQLAlchemy URL of ML Manager's own database (secret: contains the password)."""
        if self.db_url is not None:
            return self.db_url.get_secret_value()
        if self.db_host is not None:
            password = self.db_password.get_secret_value() if self.db_password else ""
            auth = quote(self.db_user, safe="")
            if password:
                auth += ":" + quote(password, safe="")
            return f"postgresql+psycopg://{auth}@{self.db_host}:{self.db_port}/{self.db_name}"
        return f"sqlite:///{self.home / 'mlmanager.db'}"

    @property
    def backend_store_uri(self) -> str:
        if self.mlflow_backend_store_uri is not None:
            return self.mlflow_backend_store_uri.get_secret_value()
        if self.embedded:
            return f"sqlite:///{self.home / 'mlflow.db'}"
        ours = make_url(self.database_url)
        if ours.get_backend_name() == "sqlite" and ours.database:
            # SQLite has no schemas: MLflow's tables (it has a `jobs` too) get a file of
            # their own beside ours.
            path = Path(ours.database)
            name = "mlflow.db" if path.name != "mlflow.db" else "mlflow-tracking.db"
            return f"sqlite:///{path.with_name(name)}"
        return self.database_url

    @property
    def artifacts_destination(self) -> str:
        """The server's artifact store: our database unless MLFLOW_ARTIFACTS_DESTINATION
        names another (``shared.artifacts.DATABASE_DESTINATION``, spelled out here so the
        settings import no MLflow)."""
        return self.mlflow_artifacts_destination or "mlmanager-db:/"

    @property
    def server_url(self) -> str:
        return self.mlflow_url or f"http://{self.mlmanager_host}:{self.mlmanager_port}"

    def secret_values(self) -> list[str]:
        """Every configured secret, for log masking."""
        values: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
        url = make_url(self.database_url)
        if url.password:
            values.append(str(url.password))
        return values

    def require_secure(self, component: Component) -> None:
        """Refuse missing or placeholder secrets outside the embedded mode."""
        if self.embedded:
            return
        needed: list[tuple[str, SecretStr | None]] = []
        if self.db_url is not None:
            pw = make_url(self.db_url.get_secret_value()).password
            if make_url(self.db_url.get_secret_value()).get_backend_name() != "sqlite":
                needed.append(("DB_URL (its password)", SecretStr(str(pw or ""))))
        else:
            needed.append(("DB_PASSWORD", self.db_password))
        if component == "server":
            needed.append(("MLMANAGER_SECRET_KEY", self.mlmanager_secret_key))
            needed.append(("MLMANAGER_ADMIN_PASSWORD", self.mlmanager_admin_password))
        for name, secret in needed:
            if secret is None or is_placeholder(secret.get_secret_value()):
                raise ConfigError(
                    f"{name} is missing or a placeholder; set a real secret "
                    "(only the embedded mode, with no DB_URL/DB_HOST, runs without one)"
                )


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        name = "_".join(str(p) for p in err["loc"]).upper() or "settings"
        given = err.get("input")
        shown = f" (got {given!r})" if isinstance(given, str | int) else ""
        parts.append(f"{name}: {err['msg']}{shown}")
    return "invalid configuration: " + "; ".join(parts)


def load_settings(**overrides: object) -> Settings:
    """Read the environment into a Settings object; a bad value is one ConfigError."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return load_settings()


# MLflow's switch (mlflow.telemetry.utils.is_telemetry_disabled, MLflow 3.17). MLflow starts
# its telemetry client at `import mlflow`; its thread deletes an environment variable while
# `requests` reads the environment, so a job on a host without internet could fail with
# KeyError: '_MLFLOW_TELEMETRY_SESSION_ID'.
TELEMETRY_SWITCH = "MLFLOW_DISABLE_TELEMETRY"


def _telemetry_allowed() -> bool:
    try:
        return get_settings().mlmanager_mlflow_telemetry
    except ConfigError:
        return False  # the command reports the bad configuration; stay quiet meanwhile


def configure_telemetry() -> None:
    """Switch MLflow's telemetry off in this process unless MLMANAGER_MLFLOW_TELEMETRY opts
    in. Call it before anything imports mlflow (the `mlmanager` command does, first)."""
    if not _telemetry_allowed():
        os.environ[TELEMETRY_SWITCH] = "true"


def inherited_environment() -> dict[str, str]:
    """The environment a child process starts from (the one place that copies it): this
    process's, with MLflow's telemetry off unless the operator opted in."""
    env = dict(os.environ)
    if not _telemetry_allowed():
        env[TELEMETRY_SWITCH] = "true"
    return env
