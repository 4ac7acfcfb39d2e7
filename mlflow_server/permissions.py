"""What a user may submit, beyond "may this user submit this handler at all".

- Database jobs: where they may act (``shared.deploy_rules``: protected tables,
  allowed schemas, owner or admin). The worker checks the same rules again after
  it locked the table.
- Jobs that deploy a model: the user must be allowed to READ it under MLflow's own
  permission rules (the worker reads models as an admin, so this is the only check).
  The model is resolved here, once, with the user's rights: ``run_id`` becomes the
  model the run logged, an alias or ``latest`` becomes a version number, and the
  stored payload carries that ``model_uri``, so the worker deploys exactly what was
  checked. Undeploy payloads only name what to remove: their rule is owner or admin.

The checks reuse MLflow's basic-auth functions (``mlflow.server.auth``, pinned
MLflow 3.17) for get-run, get-logged-model and get-model-version, so a grant or
a denial means here what it means to MLflow's own routes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine

from mlflow_server.auth import current_user, is_admin
from shared.deploy_rules import DATABASE_TARGET, check_database_job, tables_of
from shared.deployments import DeploymentStore
from shared.errors import InvalidPayload, NotAuthorized, NotFound
from shared.handlers import (
    ModelRef,
    Payload,
    ReconcilePayload,
    RetrainPayload,
    ScheduleRetrainPayload,
    UndeployDatabasePayload,
    UndeployKubernetesPayload,
)
from shared.settings import get_settings

# Payloads whose model reference only identifies the deployment to remove.
REMOVES_A_DEPLOYMENT = (UndeployDatabasePayload, UndeployKubernetesPayload)
T = TypeVar("T")


def authorize_job(engine: Engine, payload: Payload) -> Payload:
    """Check a validated payload for the current user; the payload to store."""
    refs = tables_of(payload)
    if refs:
        with engine.connect() as conn:
            active = DeploymentStore.active(conn, DATABASE_TARGET, refs[0].name)
        check_database_job(
            engine.dialect.name, payload, active, current_user(), get_settings(), is_admin
        )
    if isinstance(payload, ReconcilePayload) and payload.deployment_id is not None:
        _require_own_deployment(engine, payload.deployment_id)
    if isinstance(payload, ScheduleRetrainPayload):
        check_schedule_payload(payload)
    if isinstance(payload, RetrainPayload):
        _require_own_schedule(engine, payload.schedule_id)
    if isinstance(payload, ModelRef) and not isinstance(payload, REMOVES_A_DEPLOYMENT):
        uri = readable_model_uri(payload.run_id, payload.model_uri)
        payload = payload.model_copy(update={"run_id": None, "model_uri": uri})
    return payload


def _require_own_deployment(engine: Engine, deployment_id: int) -> None:
    """Owner-or-admin: another user's deployment is a 404, as when reading it."""
    deployment = DeploymentStore(engine).get(deployment_id)
    if deployment.user != current_user() and not is_admin():
        raise NotFound(f"no deployment {deployment_id}")


def check_schedule_payload(payload: ScheduleRetrainPayload) -> None:
    """A schedule retrains a model its user may read (and the run, when named)."""
    _require_registered_model(payload.model_name, "model_name")
    if payload.run_id is not None:
        _require_run(payload.run_id, "run_id")


def _require_own_schedule(engine: Engine, schedule_id: int) -> None:
    """Owner-or-admin: another user's schedule is a 404, as when reading it."""
    from shared.schedules import ScheduleStore

    schedule = ScheduleStore(engine).get(schedule_id)
    if schedule.user != current_user() and not is_admin():
        raise NotFound(f"no schedule {schedule_id}", field="schedule_id")


def readable_model_uri(run_id: str | None, model_uri: str | None) -> str:
    """The model URI a payload names, checked readable by the current user.

    NotFound (404) if the run or model does not exist, NotAuthorized (403) naming
    it if MLflow would not let this user read it.
    """
    if run_id is not None:
        _require_run(run_id, "run_id")
        return _model_of_run(run_id)
    assert model_uri is not None  # ModelRef validated exactly one of the two
    if model_uri.startswith("runs:/"):
        _require_run(model_uri.removeprefix("runs:/").split("/", 1)[0], "model_uri")
        return model_uri
    ref = model_uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        _require_registered_model(name)
        registry = _registry()
        version = _fetch(
            lambda: registry.get_model_version_by_alias(name, alias),
            f"model {name} has no alias {alias}",
            # MLflow answers a missing alias as a bad parameter.
            missing_codes=("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"),
        )
        return f"models:/{name}/{version.version}"
    if "/" in ref:
        name, version_ref = ref.split("/", 1)
        _require_registered_model(name)
        return f"models:/{name}/{_version_number(name, version_ref)}"
    _require_logged_model(ref)
    return model_uri


def _version_number(name: str, ref: str) -> str:
    registry = _registry()
    if ref.isdigit():
        _fetch(lambda: registry.get_model_version(name, ref), f"model {name} has no version {ref}")
        return ref
    # ``latest`` or a stage name, as MLflow's models:/ URIs allow.
    stages = None if ref.lower() == "latest" else [ref]
    versions = _fetch(lambda: registry.get_latest_versions(name, stages), f"no model {name}")
    if not versions:
        raise NotFound(f"model {name} has no version in {ref}", field="model_uri")
    return str(max(int(v.version) for v in versions))


def _tracking() -> Any:
    from mlflow.server.handlers import _get_tracking_store

    return _get_tracking_store()


def _registry() -> Any:
    from mlflow.server.handlers import _get_model_registry_store

    return _get_model_registry_store()


def _fetch(
    fetch: Callable[[], T],
    missing: str,
    field: str = "model_uri",
    missing_codes: tuple[str, ...] = ("RESOURCE_DOES_NOT_EXIST",),
) -> T:
    """MLflow's answer; its 'does not exist' as our NotFound, its bad input as ours."""
    from mlflow.exceptions import MlflowException

    try:
        return fetch()
    except MlflowException as exc:
        if exc.error_code in missing_codes:
            raise NotFound(missing, field=field) from None
        if exc.error_code == "INVALID_PARAMETER_VALUE":
            raise InvalidPayload(f"{missing}: {exc.message}", field=field) from None
        raise


def _denied(what: str, field: str) -> NotAuthorized:
    return NotAuthorized(
        f"{current_user()} may not read {what} (MLflow permissions): it cannot be deployed",
        field=field,
    )


def _require_run(run_id: str, field: str) -> None:
    from mlflow.server import auth as mlflow_auth

    tracking = _tracking()
    _fetch(lambda: tracking.get_run(run_id), f"no run {run_id}", field)
    if not is_admin() and not mlflow_auth._authorize_run_id(run_id, "read"):
        raise _denied(f"run {run_id}", field)


def _model_of_run(run_id: str) -> str:
    """The model run ``run_id`` logged (the original API names models by run)."""
    tracking = _tracking()
    run = tracking.get_run(run_id)
    models = tracking.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    if len(models) > 1:
        raise InvalidPayload(
            f"run {run_id} logged {len(models)} models: give model_uri "
            f"({', '.join(m.model_uri for m in models)})",
            field="run_id",
        )
    return str(models[0].model_uri) if models else f"runs:/{run_id}/model"


def _require_logged_model(model_id: str) -> None:
    from mlflow.server import auth as mlflow_auth

    tracking = _tracking()
    _fetch(lambda: tracking.get_logged_model(model_id), f"no logged model {model_id}")
    if not is_admin() and not mlflow_auth._authorize_logged_model_id(model_id, "read"):
        raise _denied(f"logged model {model_id}", "model_uri")


def _require_registered_model(name: str, field: str = "model_uri") -> None:
    """MLflow's rule for get-model-version: READ on the model, versions not denied."""
    from mlflow.server import auth as mlflow_auth
    from mlflow.server.auth.permissions import (
        RESOURCE_TYPE_REGISTERED_MODEL,
        RESOURCE_TYPE_REGISTERED_MODEL_VERSION,
    )
    from mlflow.server.auth.requirements import ACTION_NOT_DENIED, Requirement

    registry = _registry()
    model = _fetch(
        lambda: registry.get_registered_model(name), f"no registered model {name}", field
    )
    if model._is_prompt():
        raise InvalidPayload(f"{name} is a prompt, not a model", field=field)
    if is_admin():
        return
    allowed = mlflow_auth.authorize(
        current_user(),
        (RESOURCE_TYPE_REGISTERED_MODEL, name),
        [
            Requirement(RESOURCE_TYPE_REGISTERED_MODEL, name, "read"),
            Requirement(RESOURCE_TYPE_REGISTERED_MODEL_VERSION, "*", ACTION_NOT_DENIED),
        ],
    )
    if not allowed:
        raise _denied(f"registered model {name}", field)
