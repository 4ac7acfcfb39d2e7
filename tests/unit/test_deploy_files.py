"""docker-compose.yaml and the Dockerfile start commands that exist (no Docker engine here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from mlmanager.cli import main
from shared.scoring import jvm

ROOT = Path(__file__).resolve().parents[2]


def _command_exists(argv: list[str]) -> bool:
    group = main
    for word in argv:
        commands = getattr(group, "commands", None)
        if commands is None:
            return True
        if word not in commands:
            return False
        group = commands[word]
    return True


def test_compose_services_run_real_mlmanager_commands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "mlflow", "bobby"} <= set(services)
    for name in ("migrate", "mlflow", "bobby"):
        assert _command_exists(services[name]["command"]), name
    assert not _command_exists(["no-such-command"])


def test_env_example_sets_every_required_secret_to_a_placeholder() -> None:
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in ("DB_PASSWORD", "MLMANAGER_ADMIN_PASSWORD", "MLMANAGER_SECRET_KEY"):
        assert env[name] == "change-me"  # refused by require_secure until replaced


def test_dockerfile_copies_every_python_package() -> None:
    dockerfile = (ROOT / "infrastructure" / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in {p.split(".")[0] for p in packages["packages"]}:
        assert f"COPY {package} ./{package}" in dockerfile


def test_the_database_image_can_score_inside_postgresql() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    build = compose["services"]["postgres"]["build"]
    dockerfile = (ROOT / build["dockerfile"]).read_text()
    assert "postgresql-plpython3-15" in dockerfile
    makefile = (ROOT / "Makefile").read_text()
    wanted = re.search(r"^PLPYTHON_PACKAGES := (.+)$", makefile, re.MULTILINE)
    assert wanted is not None
    for package in wanted.group(1).split():  # what `make plpython-deps` installs
        assert f" {package} " in dockerfile
    command = str(compose["services"]["postgres"]["command"])
    assert "mlmanager.plpython_path=/opt/mlmanager/plpython" in command
    # H2O models: a JRE, and the jar where the setting says.
    assert "openjdk-17-jre-headless" in dockerfile
    assert "/opt/mlmanager/mlrunner/mlrunner.jar" in dockerfile
    assert "mlmanager.mlrunner_jar=/opt/mlmanager/mlrunner/mlrunner.jar" in command


def test_the_worker_image_can_deploy_h2o_models() -> None:
    dockerfile = (ROOT / "infrastructure" / "Dockerfile").read_text()
    assert '".[h2o]"' in dockerfile
    assert "openjdk-17-jre-headless" in dockerfile
    assert "COPY --from=mlrunner /build/target/mlrunner.jar " + jvm.DEFAULT_JAR in dockerfile


def test_allowed_hosts_reach_the_mlflow_server_command(tmp_path: Path) -> None:
    from mlmanager.server import server_command
    from shared.settings import load_settings

    cmd, _ = server_command(load_settings(mlmanager_home=tmp_path))
    assert "--allowed-hosts" not in cmd
    settings = load_settings(mlmanager_home=tmp_path, mlmanager_allowed_hosts="mlflow,localhost")
    cmd, env = server_command(settings)
    assert cmd[cmd.index("--allowed-hosts") + 1] == "mlflow,localhost"
    assert (
        "MLFLOW_AUTH_ADMIN_PASSWORD" in env and env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    )
