"""A retraining project run as a Kubernetes Job (a schedule's ``environment: kubernetes``).

One RETRAIN job is one Job ``retrain-<job id>`` and one Secret of the same name: the
Secret holds what the project logs to MLflow with (the tracking URI, the schedule's
owner, the RETRAIN job's token), the pod reads them with ``secretKeyRef``, so no
credential appears in the Job's spec. The Job runs once (``backoffLimit: 0``,
``restartPolicy: Never``) and ends by ``activeDeadlineSeconds`` at the latest. Its pod
downloads the project (an artifact folder of the project's run) with the owner's token
and runs it with ``mlflow run`` into the run the worker created, as the local path does.

Rendering is pure (:func:`job_manifests`); :class:`ProjectJobs` is the cluster side:
create, read the outcome, read the pods' logs, remove the Secret.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import TargetUnavailable
from shared.kube.cluster import Cluster, Manifest, _api_error
from shared.kube.spec import FIELD_MANAGER
from shared.settings import TELEMETRY_SWITCH, Settings

JOB_LABEL = "mlmanager.io/retrain-job"
CONTAINER = "project"
# The pod's MLflow login, from the Secret (key = variable name).
SECRET_KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
# Where the pod downloads the project to.
PROJECT_DIR = "/tmp/mlmanager-project"


def job_name(retrain_job_id: int) -> str:
    return f"retrain-{retrain_job_id}"


@dataclass(frozen=True)
class ProjectRun:
    """What the pod runs: ``mlflow run`` of a project into a run the worker created."""

    entry_point: str
    env_manager: str
    experiment_id: str
    run_id: str
    parameters: Mapping[str, object]
    project_uri: str | None = None  # a git URI, else the artifact folder below
    project_run: str | None = None
    project_folder: str = ""

    def script(self) -> str:
        """The container's shell script (every value quoted)."""
        q = shlex.quote
        lines = ["set -e"]
        if self.project_uri:
            project = q(self.project_uri)
        else:
            assert self.project_run is not None
            download = f"mlflow artifacts download -r {q(self.project_run)} -d {PROJECT_DIR}"
            if self.project_folder:
                download += f" -a {q(self.project_folder)}"
            lines.append(f"{download} > /dev/null")
            project = PROJECT_DIR + (f"/{q(self.project_folder)}" if self.project_folder else "")
        run = (
            f"exec mlflow run {project} -e {q(self.entry_point)} "
            f"--env-manager {q(self.env_manager)} --experiment-id {q(self.experiment_id)} "
            f"--run-id {q(self.run_id)}"
        )
        for key, value in self.parameters.items():
            run += f" -P {q(f'{key}={value}')}"
        lines.append(run)
        return "\n".join(lines)


def job_manifests(
    name: str,
    namespace: str,
    run: ProjectRun,
    login: Mapping[str, str],
    settings: Settings,
    labels: Mapping[str, str],
) -> tuple[Manifest, Manifest]:
    """(Secret, Job) of one retraining; ``login`` holds the SECRET_KEYS."""
    labels = {**labels, "app.kubernetes.io/managed-by": FIELD_MANAGER}
    secret: Manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "stringData": {key: login[key] for key in SECRET_KEYS},
    }
    resources: dict[str, dict[str, str]] = {}
    s = settings
    for kind, cpu, memory in (
        ("requests", s.retrain_kubernetes_cpu_request, s.retrain_kubernetes_memory_request),
        ("limits", s.retrain_kubernetes_cpu_limit, s.retrain_kubernetes_memory_limit),
    ):
        wanted = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
        if wanted:
            resources[kind] = wanted
    env: list[dict[str, Any]] = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
        for key in SECRET_KEYS
    ]
    env += [
        {"name": TELEMETRY_SWITCH, "value": "true"},
        {"name": "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "value": "false"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": CONTAINER,
                "image": settings.retrain_kubernetes_image,
                "command": ["sh", "-c"],
                "args": [run.script()],
                "env": env,
                "resources": resources,
            }
        ],
    }
    if settings.retrain_kubernetes_service_account:
        pod_spec["serviceAccountName"] = settings.retrain_kubernetes_service_account
    job: Manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": settings.retrain_kubernetes_deadline_seconds,
            "ttlSecondsAfterFinished": 24 * 3600,  # kept a day for `kubectl describe`
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    return secret, job


@dataclass(frozen=True)
class JobState:
    """A Job's outcome so far: ``done`` with ``succeeded``, and Kubernetes' reason."""

    done: bool
    succeeded: bool
    reason: str = ""

    @property
    def line(self) -> str:
        if not self.done:
            return "running"
        return "succeeded" if self.succeeded else f"failed: {self.reason}"


def job_state(job: Manifest) -> JobState:
    conditions = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or [] if c}
    failed = conditions.get("Failed") or conditions.get("FailureTarget")
    if failed and failed.get("status") == "True":
        reason = f"{failed.get('reason', '')}: {failed.get('message', '')}".strip(": ")
        return JobState(True, False, reason or "failed")
    complete = conditions.get("Complete") or conditions.get("SuccessCriteriaMet")
    if complete and complete.get("status") == "True":
        return JobState(True, True)
    return JobState(False, False)


class ProjectJobs:
    """The retraining Jobs of one namespace."""

    def __init__(self, settings: Settings) -> None:
        self.namespace = settings.retrain_kubernetes_namespace or settings.namespace
        self.cluster = Cluster(settings, namespace=self.namespace)

    def close(self) -> None:
        self.cluster.close()

    def start(self, secret: Manifest, job: Manifest) -> None:
        """Apply the Secret, then the Job (server-side apply: a second start is a no-op)."""
        self.cluster.apply(secret)
        self.cluster.apply(job)

    def state(self, name: str) -> JobState:
        job = self.cluster.get("Job", name)
        if job is None:
            raise TargetUnavailable(f"the retraining Job {name!r} disappeared")
        return job_state(job)

    def pods(self, name: str) -> list[str]:
        return sorted(
            p["metadata"]["name"]
            for p in self.cluster.list("Pod", {"batch.kubernetes.io/job-name": name})
        )

    def pod_log(self, pod: str) -> list[str]:
        """The pod's log as the API server's kubelet proxy reads it."""
        try:
            text = self.cluster.core.read_namespaced_pod_log(
                pod, self.namespace, container=CONTAINER, _request_timeout=30
            )
        except Exception as exc:
            raise _api_error(exc, "get", f"pods/log {pod!r}") from exc
        return str(text or "").splitlines()

    def remove_secret(self, name: str) -> None:
        self.cluster.delete("Secret", name)
