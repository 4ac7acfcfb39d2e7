"""`mlmanager schedules ...`: retraining schedules as the REST API shows them.

`create`'s options are generated from the SCHEDULE_RETRAIN payload model, the same
model that validates the REST body.
"""

from __future__ import annotations

import json
from typing import Any

import click

from mlmanager.cli_jobs import _finish, _option_for, client, follow, payload_from_flags
from shared.handlers import ScheduleRetrainPayload

COLUMNS = ("id", "name", "model_name", "cron_exp", "timezone", "paused", "next_fire_at")


@click.group("schedules")
def schedules_group() -> None:
    """Retraining schedules (champion/challenger, redeploy of the winner)."""


def _show(schedule: dict[str, Any]) -> None:
    click.echo(json.dumps(schedule, indent=2, sort_keys=True))


def _create(**flags: Any) -> None:
    payload = payload_from_flags(ScheduleRetrainPayload, flags)
    _show(client().create_schedule(payload))


schedules_group.add_command(
    click.Command(
        "create",
        params=[
            _option_for(name, field.annotation, field.description)
            for name, field in ScheduleRetrainPayload.model_fields.items()
        ],
        callback=_create,
        help="Create a schedule (options: the SCHEDULE_RETRAIN payload's fields).",
    )
)


@schedules_group.command("list")
def schedules_list() -> None:
    """Your schedules (every schedule, for an administrator)."""
    rows = client().schedules()
    click.echo("\t".join((*COLUMNS, "last_job", "last_outcome")))
    for s in rows:
        last = f"{s['last_job_id']} {s['last_job_status']}" if s["last_job_id"] else "-"
        cells = [str(s[c]) for c in COLUMNS] + [last, s["last_outcome"] or "-"]
        click.echo("\t".join(cells))


@schedules_group.command("get")
@click.argument("schedule_id", type=click.IntRange(min=1))
def schedules_get(schedule_id: int) -> None:
    """One schedule: next and last firing, last job and outcome."""
    _show(client().schedule(schedule_id))


@schedules_group.command("pause")
@click.argument("schedule_id", type=click.IntRange(min=1))
def schedules_pause(schedule_id: int) -> None:
    """Stop firing SCHEDULE_ID until it is resumed."""
    _show(client().schedule(schedule_id, "pause"))


@schedules_group.command("resume")
@click.argument("schedule_id", type=click.IntRange(min=1))
def schedules_resume(schedule_id: int) -> None:
    """Fire SCHEDULE_ID again, from its next tick after now."""
    _show(client().schedule(schedule_id, "resume"))


@schedules_group.command("delete")
@click.argument("schedule_id", type=click.IntRange(min=1))
def schedules_delete(schedule_id: int) -> None:
    """Delete SCHEDULE_ID (its past jobs and model versions stay)."""
    deleted = client().delete_schedule(schedule_id)
    click.echo(f"deleted schedule {deleted['id']} ({deleted['name']})")


@schedules_group.command("run")
@click.argument("schedule_id", type=click.IntRange(min=1))
@click.option("--no-follow", "no_follow", is_flag=True, help="Submit and return at once")
def schedules_run(schedule_id: int, no_follow: bool) -> None:
    """Retrain SCHEDULE_ID now and follow the RETRAIN job."""
    api = client()
    job = api.schedule(schedule_id, "run")
    click.echo(f"submitted RETRAIN job {job['id']}", err=True)
    if not no_follow:
        _finish(follow(api, job["id"]))
