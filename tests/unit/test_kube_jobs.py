"""The retraining Job as rendered (shared/kube/jobs.py), and how its status is read."""

from __future__ import annotations

import json
import shlex

from shared.kube.jobs import SECRET_KEYS, ProjectRun, job_manifests, job_state
from shared.settings import Settings

LOGIN = {
    "MLFLOW_TRACKING_URI": "http://mlmanager:5001",
    "MLFLOW_TRACKING_USERNAME": "alice",
    "MLFLOW_TRACKING_PASSWORD": "mlmjob_secret-token",
}


def _run(**kw: object) -> ProjectRun:
    fields: dict[str, object] = {
        "entry_point": "retrain",
        "env_manager": "local",
        "experiment_id": "3",
        "run_id": "abc123",
        "parameters": {"table": "apps.train; rm -rf /", "cutoff": "2026-12-01"},
        "project_run": "def456",
        "project_folder": "project",
    }
    fields.update(kw)
    return ProjectRun(**fields)  # type: ignore[arg-type]


def test_the_script_quotes_every_value_and_downloads_the_logged_project() -> None:
    lines = _run().script().splitlines()
    assert lines[0] == "set -e"
    assert shlex.split(lines[1]) == [
        "mlflow", "artifacts", "download", "-r", "def456", "-d", "/tmp/mlmanager-project",
        "-a", "project", ">", "/dev/null",
    ]  # fmt: skip
    run = shlex.split(lines[2])
    assert run[:3] == ["exec", "mlflow", "run"] and run[3] == "/tmp/mlmanager-project/project"
    assert "table=apps.train; rm -rf /" in run  # one argument, not a command
    assert run[run.index("--run-id") + 1] == "abc123"


def test_a_git_project_is_run_directly() -> None:
    script = _run(project_uri="https://git.example/churn.git#retrain", project_run=None).script()
    assert "artifacts download" not in script
    assert shlex.split(script.splitlines()[1])[3:6] == [
        "https://git.example/churn.git#retrain",
        "-e",
        "retrain",
    ]


def test_the_login_is_only_in_the_secret() -> None:
    settings = Settings(
        retrain_kubernetes_image="registry/mlm:1",
        retrain_kubernetes_service_account="retrainer",
        retrain_kubernetes_cpu_request="250m",
        retrain_kubernetes_memory_limit="1Gi",
        retrain_kubernetes_deadline_seconds=120,
    )
    secret, job = job_manifests("retrain-7", "ml", _run(), LOGIN, settings, {"a": "b"})
    assert secret["stringData"] == LOGIN
    assert LOGIN["MLFLOW_TRACKING_PASSWORD"] not in json.dumps(job)
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 120
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "retrainer"
    [container] = pod["containers"]
    assert container["image"] == "registry/mlm:1"
    assert container["resources"] == {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}}
    from_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
    }
    assert from_secret == {k: {"name": "retrain-7", "key": k} for k in SECRET_KEYS}
    assert {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"} in container["env"]


def test_the_job_state_follows_its_conditions() -> None:
    def job(*conditions: tuple[str, str, str]) -> dict[str, object]:
        return {
            "status": {
                "conditions": [
                    {"type": t, "status": s, "reason": r, "message": "m"} for t, s, r in conditions
                ]
            }
        }

    assert not job_state({"status": {"active": 1}}).done
    assert job_state(job(("Complete", "True", ""))).succeeded
    failed = job_state(job(("Failed", "True", "DeadlineExceeded")))
    assert failed.done and not failed.succeeded and failed.reason == "DeadlineExceeded: m"
    target = job_state(job(("FailureTarget", "True", "BackoffLimitExceeded")))
    assert target.done and not target.succeeded
    assert not job_state(job(("Failed", "False", ""))).done
