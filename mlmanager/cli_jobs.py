"""`mlmanager jobs ...` and `mlmanager deploy ...`: the command line of the REST API.

The deploy options are generated from the handlers' payload models, so the same
model validates the flags, the REST body and the stored payload.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from typing import Any

import click
from pydantic import BaseModel, ValidationError

from mlmanager.client import MLManagerClient
from shared.errors import InvalidPayload
from shared.handlers import SPECS, describe_validation_error
from shared.settings import get_settings

# `mlmanager deploy <target>` -> handler
DEPLOY_TARGETS = {
    "database": "DEPLOY_DATABASE",
    "kubernetes": "DEPLOY_KUBERNETES",
    "sagemaker": "DEPLOY_AWS",
    "azure": "DEPLOY_AZURE",
}


def client() -> MLManagerClient:
    return MLManagerClient.from_settings(get_settings())


def follow(api: MLManagerClient, job_id: int, *, quiet: bool = False) -> dict[str, Any]:
    """Print a job's log as it comes (steps highlighted); return the finished job."""
    for kind, data in api.follow(job_id):
        if kind == "end":
            return data
        if quiet:
            continue
        message = data["message"]
        if message.startswith("Step "):
            click.secho(f"==> {message}", bold=True)
        else:
            click.echo(f"{data['time'][11:23]} {data['level']:<7} {message}")
    return api.job(job_id)


def _finish(job: dict[str, Any]) -> None:
    colour = {"SUCCESS": "green", "FAILURE": "red", "CANCELLED": "yellow"}.get(job["status"])
    click.secho(f"job {job['id']}: {job['status']}", fg=colour, bold=True, err=True)
    if job.get("error"):
        click.echo(job["error"], err=True)
    sys.exit(0 if job["status"] == "SUCCESS" else 1)


@click.group("jobs")
def jobs_group() -> None:
    """Jobs on an ML Manager server (MLFLOW_TRACKING_URI, _USERNAME, _PASSWORD)."""


@jobs_group.command("list")
@click.option(
    "--status", type=click.Choice(["PENDING", "RUNNING", "SUCCESS", "FAILURE", "CANCELLED"])
)
@click.option("--handler")
@click.option("--user")
@click.option("--limit", type=int, default=20, show_default=True)
def jobs_list(status: str | None, handler: str | None, user: str | None, limit: int) -> None:
    """Newest jobs first."""
    rows = client().jobs(status=status, handler=handler, user=user, limit=limit)
    click.echo(f"{'ID':>6}  {'STATUS':<9}  {'HANDLER':<20}  {'USER':<12}  CREATED")
    for j in rows:
        click.echo(
            f"{j['id']:>6}  {j['status']:<9}  {j['handler_name']:<20}  {j['user']:<12}  "
            f"{j['created_at']}"
        )


@jobs_group.command("logs")
@click.argument("job_id", type=int)
@click.option("--follow", "-f", "follow_", is_flag=True, help="Stream until the job ends")
def jobs_logs(job_id: int, follow_: bool) -> None:
    """Print a job's log; with --follow, exit 0 on SUCCESS and 1 otherwise."""
    api = client()
    if follow_:
        _finish(follow(api, job_id))
    after = 0
    while True:
        page = api.logs(job_id, after)
        for ln in page["lines"]:
            click.echo(f"{ln['time'][11:23]} {ln['level']:<7} {ln['message']}")
        if not page["lines"]:
            break
        after = page["next_after"]


@jobs_group.command("cancel")
@click.argument("job_id", type=int)
def jobs_cancel(job_id: int) -> None:
    """Cancel a job (a running one stops at its next step)."""
    job = client().cancel(job_id)
    state = "cancel requested" if job["status"] == "RUNNING" else job["status"]
    click.echo(f"job {job_id}: {state}")


# --- deploy ---------------------------------------------------------------------------------
def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _option_for(name: str, annotation: Any, description: str | None) -> click.Option:
    flag = "--" + name.replace("_", "-")
    base = _unwrap_optional(annotation)
    origin = typing.get_origin(base)
    if base is bool:
        return click.Option([f"{flag}/--no-{flag[2:]}", name], default=None, help=description)
    if origin is list:
        return click.Option([flag, name], multiple=True, help=(description or "") + " (repeat)")
    if origin is dict:
        return click.Option([flag, name], help=(description or "") + " (JSON object)")
    if origin is typing.Literal:
        choices = [str(a) for a in typing.get_args(base)]
        return click.Option([flag, name], type=click.Choice(choices), help=description)
    if base in (int, float):
        return click.Option([flag, name], type=base, help=description)
    return click.Option([flag, name], help=description)


def payload_from_flags(model: type[BaseModel], flags: dict[str, Any]) -> dict[str, Any]:
    """Flags given on the command line -> a payload validated by the handler's model."""
    payload: dict[str, Any] = {}
    for name, value in flags.items():
        if value is None or value == ():
            continue
        annotation = str(model.model_fields[name].annotation)
        if "dict" in annotation and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise InvalidPayload(
                    f"--{name.replace('_', '-')} must be a JSON object", field=name
                ) from None
        payload[name] = list(value) if isinstance(value, tuple) else value
    try:
        model.model_validate(payload)
    except ValidationError as exc:
        field, message = describe_validation_error(exc, "flags")
        flag = field.replace("_", "-")
        raise InvalidPayload(f"invalid value for --{flag}: {message}", field=field) from None
    return payload


def _deploy_command(target: str, handler: str) -> click.Command:
    model = SPECS[handler].payload_model

    def run(**flags: Any) -> None:
        no_follow = flags.pop("no_follow")
        payload = payload_from_flags(model, flags)
        api = client()
        job = api.submit(handler, payload)
        click.echo(f"submitted {handler} job {job['id']}", err=True)
        if not no_follow:
            _finish(follow(api, job["id"]))

    params: list[click.Parameter] = [
        _option_for(name, field.annotation, field.description)
        for name, field in model.model_fields.items()
    ]
    params.append(
        click.Option(["--no-follow", "no_follow"], is_flag=True, help="Submit and return at once")
    )
    return click.Command(
        target,
        params=params,
        callback=run,
        help=f"Submit a {handler} job and follow it to its end.",
    )


deploy_group = click.Group(
    "deploy",
    help="Deploy a model (options are the fields of the handler's payload).",
    commands={t: _deploy_command(t, h) for t, h in DEPLOY_TARGETS.items()},
)
