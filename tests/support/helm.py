"""The Helm chart as Kubernetes would see it: rendered by a real ``helm`` (``make helm``
builds it from the Go module proxy), and the containers' commands and environments resolved
the way the kubelet resolves them (``envFrom`` and ``valueFrom`` through the rendered
ConfigMaps and Secrets)."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.engines import IN_CI
from tests.support.processes import ROOT

CHART = ROOT / "infrastructure" / "helm" / "mlmanager"
EXAMPLES = ROOT / "infrastructure" / "helm" / "examples"
HELM = Path(os.environ.get("HELM", "/opt/mlmanager/helm/bin/helm"))
RELEASE = "mlm"
NAMESPACE = "models"

Manifest = dict[str, Any]


def helm_binary() -> Path:
    """The helm that `make helm` built (skipped locally when missing, a failure in CI)."""
    if not HELM.is_file():
        message = f"no helm at {HELM} (run `make helm`, or set HELM)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return HELM


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
    # No user configuration, cache or plugins: the same answer on every machine.
    env.update(HELM_CONFIG_HOME="/nonexistent", HELM_CACHE_HOME="/nonexistent")
    return subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, env=env, check=False
    )


def value_args(
    values_files: Iterable[Path] = (), sets: dict[str, object] | None = None
) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["-f", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set-json" if not isinstance(value, str) else "--set-string", f"{key}={value}"]
    return args


def template(
    values_files: Iterable[Path] = (),
    sets: dict[str, object] | None = None,
    kube_version: str = "1.37.0",
    hooks: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart (with its hooks unless told otherwise)."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", kube_version]
    if not hooks:
        args.append("--no-hooks")
    return run_helm(*args, *value_args(values_files, sets))


def render(
    values_files: Iterable[Path] = (),
    sets: dict[str, object] | None = None,
    kube_version: str = "1.37.0",
) -> list[Manifest]:
    """The rendered manifests (hooks included), failing the test with helm's message."""
    result = template(values_files, sets, kube_version)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def notes(values_files: Iterable[Path] = ()) -> str:
    """NOTES.txt as ``helm install`` prints it (a client-side dry run: no cluster)."""
    args = ["install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client"]
    result = run_helm(*args, *value_args(values_files))
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\nNOTES:\n", 1)[1]


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    for doc in manifests:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in {[m['metadata']['name'] for m in manifests]}")


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def pod_specs(manifests: list[Manifest]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{doc['kind']}/{doc['metadata']['name']}", pod_spec(doc))
        for doc in manifests
        if doc["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


def _data(manifests: list[Manifest], kind: str, name: str) -> dict[str, str]:
    doc = find(manifests, kind, name)
    if kind == "Secret":
        return {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
    return {k: str(v) for k, v in (doc.get("data") or {}).items()}


@dataclass(frozen=True)
class Container:
    """What the kubelet would run: argv and the resolved environment."""

    argv: list[str]
    env: dict[str, str]
    # Names of variables whose values come from a Secret (not from the pod spec).
    from_secret: frozenset[str]
    # Secrets the chart does not create (existingSecret): their keys are the operator's.
    external_secrets: frozenset[str] = frozenset()


def container(manifests: list[Manifest], kind: str, name: str, container_name: str) -> Container:
    """The container's command + args and its environment: ``envFrom`` sources in order,
    then ``env`` entries (literal or ``valueFrom``), later ones winning, as in Kubernetes."""
    spec = pod_spec(find(manifests, kind, name))
    (found,) = [c for c in spec["containers"] if c["name"] == container_name]
    env: dict[str, str] = {}
    secret_names: set[str] = set()
    rendered = {doc["metadata"]["name"] for doc in manifests if doc["kind"] == "Secret"}
    external: set[str] = set()
    for source in found.get("envFrom", []):
        if "configMapRef" in source:
            data = _data(manifests, "ConfigMap", source["configMapRef"]["name"])
            for key in data:
                secret_names.discard(key)
        elif source["secretRef"]["name"] not in rendered:
            external.add(source["secretRef"]["name"])
            continue
        else:
            data = _data(manifests, "Secret", source["secretRef"]["name"])
            secret_names.update(data)
        env.update(data)
    for entry in found.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            secret_names.discard(entry["name"])
            continue
        ref = entry["valueFrom"]
        if "secretKeyRef" in ref and ref["secretKeyRef"]["name"] not in rendered:
            external.add(ref["secretKeyRef"]["name"])
        elif "secretKeyRef" in ref:
            key = ref["secretKeyRef"]
            env[entry["name"]] = _data(manifests, "Secret", key["name"])[key["key"]]
            secret_names.add(entry["name"])
        else:
            key = ref["configMapKeyRef"]
            env[entry["name"]] = _data(manifests, "ConfigMap", key["name"])[key["key"]]
    argv = [*found.get("command", []), *found.get("args", [])]
    return Container(argv, env, frozenset(secret_names), frozenset(external))


def example(name: str) -> Path:
    return EXAMPLES / f"{name}.yaml"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
