"""`mlmanager deployments ...`: deployments as the REST API shows them."""

from __future__ import annotations

import click

from mlmanager.cli_jobs import _finish, client, follow
from shared.handlers import RECONCILE


@click.group("deployments")
def deployments_group() -> None:
    """Deployments and their repair."""


@deployments_group.command("reconcile")
@click.argument("deployment_id", type=click.IntRange(min=1), required=False)
@click.option("--no-follow", "no_follow", is_flag=True, help="Submit and return at once")
def deployments_reconcile(deployment_id: int | None, no_follow: bool) -> None:
    """Re-apply the recorded state of DEPLOYMENT_ID (default: every deployment you may
    reconcile: yours, or all for an administrator) and follow the RECONCILE job."""
    payload = {} if deployment_id is None else {"deployment_id": deployment_id}
    api = client()
    job = api.submit(RECONCILE.name, payload)
    click.echo(f"submitted {RECONCILE.name} job {job['id']}", err=True)
    if not no_follow:
        _finish(follow(api, job["id"]))


@deployments_group.command("rollback")
@click.argument("deployment_id", type=click.IntRange(min=1))
@click.option("--no-follow", "no_follow", is_flag=True, help="Submit and return at once")
def deployments_rollback(deployment_id: int, no_follow: bool) -> None:
    """Deploy again the model DEPLOYMENT_ID replaced (a replace back) and follow the job."""
    api = client()
    job = api.rollback_deployment(deployment_id)
    click.echo(f"submitted {job['handler_name']} job {job['id']} (rollback)", err=True)
    if not no_follow:
        _finish(follow(api, job["id"]))
