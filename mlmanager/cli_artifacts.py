"""`mlmanager artifacts ...`: the artifact store in our database (shared.artifacts)."""

from __future__ import annotations

import os

import click

from shared.errors import InvalidPayload
from shared.settings import get_settings


@click.group("artifacts")
def artifacts_group() -> None:
    """MLflow artifacts stored in ML Manager's database."""


@artifacts_group.command("migrate")
@click.option(
    "--from",
    "source_uri",
    required=True,
    help="The artifact store to copy: a folder, file:///path, s3://bucket/prefix, ... "
    "(what MLFLOW_ARTIFACTS_DESTINATION named before).",
)
@click.option(
    "--prefix", default="", help="Store the files under this folder of the database store."
)
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary.")
def migrate(source_uri: str, prefix: str, quiet: bool) -> None:
    """Copy an artifact store into the database, checking every file's sha256.

    Run it with the server's database settings (DB_URL or DB_HOST & co.). Relative
    paths are kept, so runs logged with mlflow-artifacts: URIs find their files once
    the server uses the database. Files already copied are skipped: run it again after
    an interruption. The source is left as it was.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.utils.file_utils import local_file_uri_to_path

    from shared.artifacts import copy_from, default_store
    from shared.db import describe_url

    settings = get_settings()
    local = local_file_uri_to_path(source_uri) if source_uri.startswith("file:") else source_uri
    if "://" not in source_uri and not os.path.isdir(local):
        raise InvalidPayload(f"--from {source_uri}: no such folder", field="from")
    try:
        source = get_artifact_repository(source_uri)
    except MlflowException as exc:
        raise InvalidPayload(f"--from {source_uri}: {exc.message}", field="from") from None

    def show(path: str, what: str) -> None:
        if not quiet:
            click.echo(f"{what:<8} {path}")

    report = copy_from(source, default_store(), prefix, show)
    click.echo(
        f"copied {report.copied} files ({report.bytes} bytes), skipped {report.skipped} "
        f"already present, into {describe_url(settings.database_url)}; every sha256 checked"
    )
