"""`mlmanager deployments ...`: deployments as the REST API shows them."""

from __future__ import annotations

import json

import click

from mlmanager.cli_jobs import _finish, client, follow
from shared.handlers import RECONCILE


@click.group("deployments")
def deployments_group() -> None:
    """Deployments and their repair."""


@deployments_group.command("list")
@click.option("--target", type=click.Choice(["database", "kubernetes", "sagemaker", "azure"]))
@click.option("--status", type=click.Choice(["PENDING", "DEPLOYED", "FAILED", "DELETED"]))
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
def deployments_list(target: str | None, status: str | None, limit: int) -> None:
    """Newest deployments first (yours, or all for an administrator)."""
    rows = client().deployments(target=target, status=status, limit=limit)
    click.echo(f"{'ID':>6}  {'TARGET':<10}  {'STATUS':<8}  {'NAME':<24}  {'USER':<12}  MODEL")
    for d in rows:
        click.echo(
            f"{d['id']:>6}  {d['target']:<10}  {d['status']:<8}  {d['name']:<24}  "
            f"{d['user']:<12}  {d['model_uri']}"
        )


@deployments_group.command("get")
@click.argument("deployment_id", type=click.IntRange(min=1))
def deployments_get(deployment_id: int) -> None:
    """DEPLOYMENT_ID as JSON, with its drift and what the target shows live (for
    Kubernetes: the URL and the replicas ready/desired)."""
    click.echo(json.dumps(client().deployment(deployment_id), indent=2, sort_keys=True))


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
