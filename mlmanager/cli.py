"""The `mlmanager` command: one entry point for every part of ML Manager."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from shared.errors import MLManagerError
from shared.logging import configure_logging
from shared.settings import Settings, configure_telemetry, get_settings

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"mlmanager: error: {message}", err=True)
    sys.exit(code)


def clean_errors(func: F) -> F:
    """Turn ML Manager's errors into one line on stderr and a non-zero exit."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MLManagerError as exc:
            _fail(exc.message)
        except KeyboardInterrupt:
            _fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


def _settings(component: str) -> Settings:
    settings = get_settings()
    configure_logging(settings, component)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ML Manager: deploy MLflow models to databases, Kubernetes and clouds."""
    configure_telemetry()  # before any command imports mlflow


@main.command()
@clean_errors
def up() -> None:
    """Run the server and one worker on the embedded default (or the configured database)."""
    from mlmanager.supervisor import run_up

    sys.exit(run_up(_settings("up")))


@main.command()
@clean_errors
def server() -> None:
    """Run the MLflow server with the ML Manager app plugin (gunicorn)."""
    from mlmanager.server import exec_server

    exec_server(_settings("server"))


@main.command()
@clean_errors
def worker() -> None:
    """Run one Bobby worker."""
    from bobby.worker import run_worker

    run_worker(_settings("worker"))


@main.group()
def db() -> None:
    """Migrations of ML Manager's own tables."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@clean_errors
def db_upgrade(revision: str) -> None:
    """Upgrade the database schema."""
    from shared.db import describe_url, get_engine
    from shared.home import prepare_home
    from shared.migrations import upgrade

    settings = _settings("cli")
    if settings.embedded:
        prepare_home(settings)
    current = upgrade(get_engine(settings), revision)
    click.echo(f"{describe_url(settings.database_url)} is at revision {current}")


@db.command("sql")
@clean_errors
def db_sql() -> None:
    """Render each release's SQL into releases/sql/ (one script per revision and dialect)."""
    from shared.migrations import render_release_sql

    for path in render_release_sql():
        click.echo(str(path))


@db.command("install-scoring")
@click.option("--print-sql", is_flag=True, help="Print the SQL instead of running it.")
@clean_errors
def db_install_scoring(print_sql: bool) -> None:
    """Install the PL/Python scoring functions (PostgreSQL; run once as a superuser)."""
    from shared.db import get_engine, schema_of
    from shared.errors import ConfigError
    from shared.scoring.postgres import ensure_scoring_installed, install_statements

    settings = _settings("cli")
    engine = get_engine(settings)
    schema = schema_of(engine) or settings.db_schema
    if print_sql:
        click.echo(";\n\n".join(install_statements(schema)) + ";")
        return
    if engine.dialect.name != "postgresql":
        raise ConfigError("install-scoring is for PostgreSQL; SQLite needs no installation")
    with engine.begin() as conn:
        done = ensure_scoring_installed(conn, schema)
    state = "installed" if done else "already up to date"
    click.echo(f"scoring functions in schema {schema}: {state}")


@db.command("current")
@clean_errors
def db_current() -> None:
    """Show the schema revision of the database and the one this code needs."""
    from shared.db import get_engine
    from shared.migrations import current_revision, head_revision

    current = current_revision(get_engine(_settings("cli")))
    click.echo(f"database: {current or 'empty'}\ncode:     {head_revision()}")


@main.command()
@click.argument("model_uri")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--threads", type=click.IntRange(1, 1024), help="mlrunner's request threads.")
@clean_errors
def serve(model_uri: str, host: str, port: int, threads: int | None) -> None:
    """Serve one logged model over HTTP (MLflow's scoring protocol), with mlrunner when the
    model has an ONNX or MOJO representation, else with `mlflow models serve`."""
    from mlmanager.serve import run

    _settings("cli")
    sys.exit(run(model_uri, host, port, threads))


@main.group()
def mlrunner() -> None:
    """The JVM scorer of H2O models (this OS user's gateway; sessions start it on demand)."""


@mlrunner.command("start")
@clean_errors
def mlrunner_start() -> None:
    """Start the gateway now (or find the one running) and show it."""
    from shared.scoring import jvm

    jvm.gateway().pid()
    _show_gateway(jvm.running())


@mlrunner.command("status")
@clean_errors
def mlrunner_status() -> None:
    """Show the running gateway (exit code 1 when none answers)."""
    from shared.scoring import jvm

    _show_gateway(jvm.running())


@mlrunner.command("stop")
@clean_errors
def mlrunner_stop() -> None:
    """Stop the gateway (the next H2O scoring starts a new one)."""
    from shared.scoring import jvm

    pid = jvm.stop()
    click.echo("no gateway recorded" if pid is None else f"stopped gateway pid {pid}")


def _show_gateway(found: dict[str, object] | None) -> None:
    from shared.scoring import jvm

    if found is None:
        _fail(f"no mlrunner gateway answers (state in {jvm.state_dir()})")
        return
    click.echo(json.dumps(found, indent=2, sort_keys=True))


def _register_client_commands() -> None:
    from mlmanager.cli_artifacts import artifacts_group
    from mlmanager.cli_deployments import deployments_group
    from mlmanager.cli_jobs import deploy_group, jobs_group
    from mlmanager.cli_schedules import schedules_group

    for group in (jobs_group, deploy_group, deployments_group, artifacts_group, schedules_group):
        for command in group.commands.values():
            if command.callback is not None:
                command.callback = clean_errors(command.callback)
        main.add_command(group)


_register_client_commands()

if __name__ == "__main__":
    main()
