"""Retraining schedules: the ``/schedules`` routes (a blueprint of their own).

A schedule is created from the SCHEDULE_RETRAIN payload (``shared.handlers``), the same
model the job of that name validates. Owner-or-admin, as deployments: another user's
schedule is a 404. The leader worker fires schedules (``bobby.scheduler``); "run now"
submits one RETRAIN job at once.
"""

from __future__ import annotations

import functools

from flask import Blueprint
from flask.typing import ResponseReturnValue
from pydantic import ValidationError

from mlflow_server.api import _json_body, _out, _page, ledger, submit
from mlflow_server.auth import current_user, is_admin
from mlflow_server.permissions import check_schedule_payload
from mlflow_server.schemas import API_PREFIX, MAX_ID, JobOut, ScheduleList, ScheduleOut
from shared.db import get_engine
from shared.errors import InvalidPayload, NotFound
from shared.handlers import SPECS, ScheduleRetrainPayload, describe_validation_error
from shared.schedules import Schedule, ScheduleStore
from shared.settings import get_settings

# Nested in the API blueprint (``app.py``): its error handlers and JSON errors apply here.
blueprint = Blueprint("schedules", __name__)
PREFIX = f"{API_PREFIX}/schedules"


@functools.cache
def store() -> ScheduleStore:
    return ScheduleStore(get_engine(get_settings()))


def _visible(schedule_id: int) -> Schedule:
    """The schedule if this user may see it; another user's is a 404, not a 403."""
    if not 1 <= schedule_id <= MAX_ID:
        raise NotFound(f"no schedule {schedule_id}")
    schedule = store().get(schedule_id)
    if schedule.user != current_user() and not is_admin():
        raise NotFound(f"no schedule {schedule_id}")
    return schedule


def _schedule_out(schedule: Schedule) -> ScheduleOut:
    last = None
    if schedule.last_job_id is not None:
        try:
            last = ledger().get(schedule.last_job_id)
        except NotFound:
            last = None
    return ScheduleOut.of(schedule, last)


@blueprint.post(PREFIX)
def create_schedule() -> ResponseReturnValue:
    try:
        payload = ScheduleRetrainPayload.model_validate(_json_body())
    except ValidationError as exc:
        field, details = describe_validation_error(exc, "body")
        raise InvalidPayload(f"invalid schedule: {details}", field=field) from None
    check_schedule_payload(payload)
    schedule = store().create(
        payload.name,
        payload.model_name,
        payload.cron_exp,
        payload.timezone,
        payload.model_dump(mode="json", exclude_unset=True),
        current_user(),
    )
    return _out(_schedule_out(schedule), 201)


@blueprint.get(PREFIX)
def list_schedules() -> ResponseReturnValue:
    limit, offset = _page()
    found = store().list(None if is_admin() else current_user(), limit + 1, offset)
    next_offset = offset + limit if len(found) > limit else None
    return _out(
        ScheduleList(schedules=[_schedule_out(s) for s in found[:limit]], next_offset=next_offset)
    )


@blueprint.get(f"{PREFIX}/<int:schedule_id>")
def get_schedule(schedule_id: int) -> ResponseReturnValue:
    return _out(_schedule_out(_visible(schedule_id)))


@blueprint.post(f"{PREFIX}/<int:schedule_id>/pause")
def pause_schedule(schedule_id: int) -> ResponseReturnValue:
    _visible(schedule_id)
    return _out(_schedule_out(store().set_paused(schedule_id, True)))


@blueprint.post(f"{PREFIX}/<int:schedule_id>/resume")
def resume_schedule(schedule_id: int) -> ResponseReturnValue:
    _visible(schedule_id)
    return _out(_schedule_out(store().set_paused(schedule_id, False)))


@blueprint.delete(f"{PREFIX}/<int:schedule_id>")
def delete_schedule(schedule_id: int) -> ResponseReturnValue:
    """Delete the schedule (its past jobs stay); answers the schedule as it was."""
    out = _schedule_out(_visible(schedule_id))
    store().delete(schedule_id)
    return _out(out)


@blueprint.post(f"{PREFIX}/<int:schedule_id>/run")
def run_schedule_now(schedule_id: int) -> ResponseReturnValue:
    """One retraining now, beside the schedule's own firings."""
    _visible(schedule_id)
    return _out(JobOut.of(submit(SPECS["RETRAIN"].name, {"schedule_id": schedule_id})), 202)
