"""The images' Dockerfiles, docker-compose.yaml and .env.example, checked without a container
engine: what the images copy exists and reaches the build context, the bases are pinned,
the runtime stages run non-root without build tools, the entry commands are ones that
exist (tests/integration/test_images.py runs the serving image's), the Compose file is
valid against the Compose specification's schema and every service's command and
environment resolve from .env.example into valid settings.

Not checked here (no container engine): that the images build, that the containers start,
that volumes are writable by the images' users.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mlmanager.cli import main
from shared.errors import ConfigError
from shared.scoring import jvm
from shared.settings import Settings, load_settings
from tests.support.dockerfiles import (
    Stage,
    copies,
    dockerignore_excludes,
    interpolate,
    parse_dockerfile,
    read_env_file,
)

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infrastructure"
IMAGES = [
    "Dockerfile",
    "serving.Dockerfile",
    "pyfunc.Dockerfile",
    "postgres.Dockerfile",
    "jupyter.Dockerfile",
]
COMPOSE_SCHEMA = ROOT / "tests" / "support" / "schemas" / "compose-spec.json"
# Tools that build software; none may be in an image's last (runtime) stage.
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|make|build-essential|maven|mvn|python3-pip|pip install|-dev)\b"
)
SETTINGS = {name.upper() for name in Settings.model_fields}
SERVER_PORT = Settings.model_fields["mlmanager_port"].default
WORKER_PORT = Settings.model_fields["worker_port"].default
# A base image at a full release (python:3.11.14, maven:3.9.11, eclipse-temurin:17.0.16_8;
# PostgreSQL's releases have two parts: postgres:15.14) or a digest; never `latest` or a
# major-only tag such as python:3.11.
PINNED = re.compile(r":\d+\.\d+\.\d+|@sha256:|^postgres:\d+\.\d+-")


def _command_exists(argv: list[str]) -> bool:
    group = main
    for word in argv:
        if word.startswith("-"):
            return True
        commands = getattr(group, "commands", None)
        if commands is None:
            return True
        if word not in commands:
            return False
        group = commands[word]
    return True


def _runtime(name: str) -> Stage:
    return parse_dockerfile(INFRA / name)[-1]


# --- Dockerfiles ---


@pytest.mark.parametrize("name", IMAGES)
def test_every_file_an_image_copies_exists_in_the_build_context(name: str) -> None:
    stages = parse_dockerfile(INFRA / name)
    seen: list[str] = []
    for stage in stages:
        for copy in copies(stage):
            if copy.from_stage is not None:
                assert copy.from_stage in seen, f"{name}: COPY --from={copy.from_stage} before it"
                continue
            for source in copy.sources:
                assert (ROOT / source).exists(), f"{name}: COPY {source}: no such file"
                assert not dockerignore_excludes(ROOT, source), f"{name}: {source} is ignored"
        if stage.name:
            seen.append(stage.name)


@pytest.mark.parametrize("name", IMAGES)
def test_images_are_multi_stage_pinned_and_run_non_root_without_build_tools(name: str) -> None:
    stages = parse_dockerfile(INFRA / name)
    assert len(stages) >= 2, f"{name}: one stage"
    for stage in stages:
        assert PINNED.search(stage.base), f"{name}: {stage.base} is not pinned"
    runtime = stages[-1]
    users = runtime.all("USER")
    assert users and users[-1].split(":")[0] not in ("0", "root"), f"{name}: runs as root"
    for command in runtime.all("RUN"):
        assert not BUILD_TOOLS.search(command), (
            f"{name}: build tool in the runtime stage: {command}"
        )


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    for path in (".env", ".git", ".venv", ".mlmanager", "tests", "mlrunner/target"):
        assert dockerignore_excludes(ROOT, path), path
    for path in ("shared", "mlrunner/src", "requirements.lock"):
        assert not dockerignore_excludes(ROOT, path), path


def test_the_python_images_copy_and_install_every_package() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for name in ("Dockerfile", "pyfunc.Dockerfile", "jupyter.Dockerfile"):
        copied = {
            s for stage in parse_dockerfile(INFRA / name) for c in copies(stage) for s in c.sources
        }
        for package in {p.split(".")[0] for p in packages["packages"]}:
            assert package in copied, (name, package)
        assert {"pyproject.toml", "requirements.lock"} <= copied, name


def test_the_server_image_runs_the_mlmanager_commands() -> None:
    runtime = _runtime("Dockerfile")
    assert runtime.last("ENTRYPOINT") == ["mlmanager"]
    for argv in (runtime.last("CMD"), ["server"], ["worker"], ["db", "upgrade"]):
        assert argv is not None and _command_exists(argv), argv
    assert not _command_exists(["no-such-command"])
    # The worker deploys H2O models: the h2o extra, a JRE and the jar where jvm looks.
    python = parse_dockerfile(INFRA / "Dockerfile")[1]
    extras = python.all("ARG")[0].split("=", 1)[1].split(",")
    # H2O models; DEPLOY_KUBERNETES (the kubernetes client); DEPLOY_AWS (boto3).
    assert {"h2o", "k8s", "aws"} <= set(extras), extras
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(extras) <= set(optional["optional-dependencies"]), extras
    assert any("openjdk-17-jre-headless" in run for run in runtime.all("RUN"))
    assert any(c.destination == jvm.DEFAULT_JAR for c in copies(runtime))


def test_the_serving_image_defaults_are_the_names_the_dockerfiles_build() -> None:
    """KUBERNETES_SERVING_IMAGE / _PYFUNC_IMAGE: the `docker build -t` name each Dockerfile
    gives, at the release's version (pyproject's, the chart's appVersion)."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((INFRA / "helm/mlmanager/Chart.yaml").read_text())
    assert chart["appVersion"] == version
    defaults = Settings.model_fields
    for setting, dockerfile in (
        ("kubernetes_serving_image", "serving.Dockerfile"),
        ("kubernetes_pyfunc_image", "pyfunc.Dockerfile"),
    ):
        image = defaults[setting].default
        assert image.endswith(f":{version}"), image
        assert (
            f"docker build -t {image} -f infrastructure/{dockerfile} ."
            in (INFRA / dockerfile).read_text()
        ), (setting, image)


def test_the_pyfunc_image_runs_mlmanager_serve() -> None:
    entry = _runtime("pyfunc.Dockerfile").last("ENTRYPOINT")
    assert entry == ["mlmanager", "serve"] and _command_exists(entry[1:])


def test_the_database_image_can_score_inside_postgresql() -> None:
    stages = parse_dockerfile(INFRA / "postgres.Dockerfile")
    runtime = stages[-1]
    assert any("postgresql-plpython3-15" in run for run in runtime.all("RUN"))
    assert any("openjdk-17-jre-headless" in run for run in runtime.all("RUN"))
    makefile = (ROOT / "Makefile").read_text()
    wanted = re.search(r"^PLPYTHON_PACKAGES := (.+)$", makefile, re.MULTILINE)
    assert wanted is not None
    (plpython,) = [s for s in stages if s.name == "plpython"]
    (install,) = plpython.all("RUN")
    for package in wanted.group(1).split():  # what `make plpython-deps` installs
        assert f" {package} " in f" {install} "
    assert any(
        c.from_stage == "plpython" and c.destination == "/opt/mlmanager/plpython"
        for c in copies(runtime)
    )
    assert any(c.destination == jvm.DEFAULT_JAR for c in copies(runtime))
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    assert compose["services"]["postgres"]["command"] == runtime.last("CMD")
    command = " ".join(runtime.last("CMD") or [])
    assert "mlmanager.plpython_path=/opt/mlmanager/plpython" in command
    assert f"mlmanager.mlrunner_jar={jvm.DEFAULT_JAR}" in command


# --- docker-compose.yaml and .env.example ---


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    return loaded


def _resolved() -> dict[str, Any]:
    resolved: dict[str, Any] = interpolate(_compose(), read_env_file(ROOT / ".env.example"))
    return resolved


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for document in (_compose(), _resolved()):
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(document)
        ]
        assert not errors, errors
    broken = _compose()
    broken["services"]["bobby"]["depends_on"]["migrate"]["condition"] = "service_finished"
    assert list(validator.iter_errors(broken))


def test_compose_needs_the_secrets_of_env_example() -> None:
    variables = read_env_file(ROOT / ".env.example")
    del variables["DB_PASSWORD"]
    with pytest.raises(ValueError, match="DB_PASSWORD"):
        interpolate(_compose(), variables)


def _service_env(service: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    if "env_file" in service:
        assert service["env_file"] == ".env"  # docs: copy .env.example to .env
        env.update(read_env_file(ROOT / ".env.example"))
    env.update({k: str(v) for k, v in (service.get("environment") or {}).items()})
    return env


@pytest.mark.parametrize("name", ["migrate", "mlflow", "bobby"])
def test_each_mlmanager_service_resolves_to_a_real_command_and_valid_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _resolved()["services"][name]
    assert service["build"]["dockerfile"] == "infrastructure/Dockerfile"
    assert _command_exists(service["command"]), service["command"]
    env = _service_env(service)
    unknown = {k for k in env if k not in SETTINGS}
    assert not unknown, f"{name}: not settings: {unknown}"
    for key in list(os.environ):
        if key.upper() in SETTINGS:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert not settings.embedded and settings.database_url.startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in settings.database_url
    component = {"mlflow": "server", "bobby": "worker"}.get(name, "cli")
    with pytest.raises(ConfigError, match="placeholder"):  # until .env has real secrets
        settings.require_secure(component)  # type: ignore[arg-type]
    for key in ("DB_PASSWORD", "MLMANAGER_ADMIN_PASSWORD", "MLMANAGER_SECRET_KEY"):
        monkeypatch.setenv(key, f"real-{key.lower()}-value")
    load_settings().require_secure(component)  # type: ignore[arg-type]
    if name == "bobby":
        assert settings.server_url == "http://mlflow:5001"


def test_compose_orders_start_up_and_scales_the_worker() -> None:
    services = _resolved()["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("mlflow", "bobby"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        assert "healthcheck" in services[name]
    assert services["bobby"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    # `--scale bobby=3`: no fixed container name, no host port.
    assert "container_name" not in services["bobby"] and "ports" not in services["bobby"]
    assert "healthcheck" in services["postgres"]
    # The health checks ask the ports the settings give the processes.
    assert f":{SERVER_PORT}/health" in " ".join(services["mlflow"]["healthcheck"]["test"])
    assert f":{WORKER_PORT}/health" in " ".join(services["bobby"]["healthcheck"]["test"])


def test_compose_profiles_add_a_preconfigured_notebook_and_elasticsearch() -> None:
    services = _resolved()["services"]
    assert services["jupyter"]["profiles"] == ["jupyter"]
    assert services["elasticsearch"]["profiles"] == ["elasticsearch"]
    env = services["jupyter"]["environment"]
    assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{SERVER_PORT}"
    assert (
        env["MLFLOW_TRACKING_USERNAME"]
        == read_env_file(ROOT / ".env.example")["MLMANAGER_ADMIN_USER"]
    )
    hosts = services["mlflow"]["environment"]["MLMANAGER_ALLOWED_HOSTS"].split(",")
    assert f"mlflow:{SERVER_PORT}" in hosts  # the notebook's and the worker's Host header
    for profiled in ("jupyter", "elasticsearch"):
        for other, service in services.items():
            if "profiles" not in service:
                assert profiled not in (service.get("depends_on") or {}), other
    entry = _runtime("jupyter.Dockerfile").last("ENTRYPOINT")
    assert entry == ["jupyter", "lab"]


def test_env_example_names_every_setting_and_nothing_else() -> None:
    named = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#? ?([A-Z][A-Z0-9_]*)=.*", line.strip())
        if match:
            named.add(match.group(1))
    assert named == SETTINGS, {"missing": SETTINGS - named, "unknown": named - SETTINGS}


def test_env_example_sets_every_required_secret_to_a_placeholder() -> None:
    env = read_env_file(ROOT / ".env.example")
    for name in ("DB_PASSWORD", "MLMANAGER_ADMIN_PASSWORD", "MLMANAGER_SECRET_KEY"):
        assert env[name] == "change-me"  # refused by require_secure until replaced


def test_allowed_hosts_reach_the_mlflow_server(tmp_path: Path) -> None:
    """Through MLFLOW_SERVER_ALLOWED_HOSTS: `mlflow server` refuses --allowed-hosts with
    --gunicorn-opts (the chart's test runs the server with the setting)."""
    from mlmanager.server import server_command

    cmd, env = server_command(load_settings(mlmanager_home=tmp_path))
    assert "MLFLOW_SERVER_ALLOWED_HOSTS" not in env
    settings = load_settings(mlmanager_home=tmp_path, mlmanager_allowed_hosts="mlflow,localhost")
    cmd, env = server_command(settings)
    assert "--allowed-hosts" not in cmd and "--gunicorn-opts" in cmd
    assert env["MLFLOW_SERVER_ALLOWED_HOSTS"] == "mlflow,localhost"
    assert (
        "MLFLOW_AUTH_ADMIN_PASSWORD" in env and env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    )
