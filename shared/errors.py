"""The one exception root of ML Manager.

Every error a user can act on is an ``MLManagerError`` subclass whose message says
what to do. The REST layer and the command line map them to status codes / exit
codes in one place each.
"""

from __future__ import annotations


class MLManagerError(Exception):
    """Base of every error ML Manager raises on purpose."""

    http_status = 500
    error_code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ConfigError(MLManagerError):
    """The configuration (environment) is missing a value or holds an unusable one."""

    error_code = "INVALID_CONFIGURATION"


class DatabaseUnavailable(MLManagerError):
    """The database cannot be reached with the configured URL."""

    http_status = 503
    error_code = "DATABASE_UNAVAILABLE"


class SchemaOutdated(MLManagerError):
    """Our tables are older (or newer) than this code expects."""

    http_status = 503
    error_code = "SCHEMA_OUTDATED"


class InvalidIdentifier(MLManagerError):
    """A schema, table or column name that may not reach SQL."""

    http_status = 400
    error_code = "INVALID_PARAMETER_VALUE"


class InvalidPayload(MLManagerError):
    """A request or job payload failed validation."""

    http_status = 400
    error_code = "INVALID_PARAMETER_VALUE"


class NotAuthenticated(MLManagerError):
    http_status = 401
    error_code = "UNAUTHENTICATED"


class NotAuthorized(MLManagerError):
    http_status = 403
    error_code = "PERMISSION_DENIED"


class NotFound(MLManagerError):
    http_status = 404
    error_code = "RESOURCE_DOES_NOT_EXIST"


class DeploymentConflict(MLManagerError):
    http_status = 409
    error_code = "RESOURCE_CONFLICT"


class HandlerDisabled(MLManagerError):
    http_status = 409
    error_code = "HANDLER_DISABLED"


class TargetUnavailable(MLManagerError):
    """An outside system (database, cluster, cloud) did not answer as needed."""

    http_status = 502
    error_code = "TARGET_UNAVAILABLE"


class ExtraNotInstalled(MLManagerError):
    """The job needs an optional extra (``pip install 'mlmanager[NAME]'``) that this
    process lacks (not retried: another attempt on the same worker fails the same way)."""

    http_status = 422
    error_code = "EXTRA_NOT_INSTALLED"


class ProjectFailed(MLManagerError):
    """A retraining project (the user's MLflow Project) failed or logged nothing usable."""

    http_status = 422
    error_code = "PROJECT_FAILED"


class WatchFailed(MLManagerError):
    """A watched workload reported failure, or went silent (not retried: it would again)."""

    http_status = 422
    error_code = "WATCH_FAILED"
