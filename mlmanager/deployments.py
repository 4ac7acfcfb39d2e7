"""The MLflow deployments plugin ``mlmanager``.

    mlflow deployments create -t mlmanager --name iris -m models:/iris/1 \\
        -C target=database -C db_schema=ml -C db_table=iris

submits the matching ML Manager job, blocks until it ends and raises with the
job's last log lines if it failed. ``-C handler=NAME`` submits any handler
directly (e.g. one of HANDLER_MODULES). The server and login come from
MLFLOW_TRACKING_URI / MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
"""

from __future__ import annotations

import json
from typing import Any

from mlflow.deployments import BaseDeploymentClient
from mlflow.exceptions import MlflowException

from mlmanager.cli_jobs import DEPLOY_TARGETS
from mlmanager.client import MLManagerClient
from shared.errors import MLManagerError
from shared.handlers import SPECS
from shared.settings import load_settings

LAST_LINES_ON_FAILURE = 15


def _config_value(value: Any) -> Any:
    """-C values arrive as text; JSON objects and lists are decoded, the rest pydantic coerces."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class MLManagerDeploymentClient(BaseDeploymentClient):
    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        # Read now, not from the process's cached settings: a notebook that called
        # mlflow.set_tracking_uri (it sets MLFLOW_TRACKING_URI) after the first read gets
        # the server it names.
        self.settings = load_settings()
        self.api = MLManagerClient.from_settings(self.settings)

    # --- helpers ---------------------------------------------------------------------
    def _run(self, handler: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            job = self.api.submit(handler, payload)
            for kind, data in self.api.follow(job["id"]):
                if kind == "end":
                    job = data
        except MLManagerError as exc:
            raise MlflowException(exc.message) from None
        if job["status"] != "SUCCESS":
            lines = self.api.logs(job["id"])["lines"]
            tail = "\n".join(ln["message"] for ln in lines[-LAST_LINES_ON_FAILURE:])
            raise MlflowException(
                f"ML Manager job {job['id']} ({handler}) ended {job['status']}: "
                f"{job.get('error') or ''}\n{tail}"
            )
        return job

    def _payload(
        self,
        model_uri: str | None,
        config: dict[str, Any] | None,
        name: str | None = None,
        *,
        replace: bool = False,
    ) -> tuple[str, dict]:
        options = {k: _config_value(v) for k, v in (config or {}).items()}
        handler = options.pop("handler", None) or DEPLOY_TARGETS.get(
            str(options.pop("target", "database"))
        )
        if handler is None:
            raise MlflowException(
                f"unknown target; -C target= one of {', '.join(DEPLOY_TARGETS)} "
                "(or -C handler=<HANDLER_NAME>)"
            )
        # Handlers this client does not know (custom ones) are validated by the server.
        spec = SPECS.get(str(handler))
        fields = spec.payload_model.model_fields if spec is not None else {}
        if model_uri and "model_uri" in fields:
            options.setdefault("model_uri", model_uri)
        if replace:  # SageMaker's mode; the other targets' flag
            if "deployment_mode" in fields:
                options["deployment_mode"] = "replace"
            else:
                options["replace"] = True
        if name and "name" in fields:
            options.setdefault("name", name)  # the Kubernetes objects' name
        if name and "endpoint_name" in fields:  # Azure ML: the endpoint, the model's name
            options.setdefault("endpoint_name", name)
            options.setdefault("model_name", name)
        return handler, options

    def _find(self, name: str) -> dict[str, Any]:
        for deployment in self.api.deployments(limit=500):
            if deployment["name"] == name and deployment["status"] != "DELETED":
                return deployment
        raise MlflowException(f"no ML Manager deployment named {name!r}")

    # --- the deployments API -----------------------------------------------------------
    def create_deployment(
        self,
        name: str,
        model_uri: str,
        flavor: str | None = None,
        config: dict[str, Any] | None = None,
        endpoint: str | None = None,
    ) -> dict[str, Any]:
        handler, payload = self._payload(model_uri, config, name)
        job = self._run(handler, payload)
        return {"name": name, "flavor": flavor, "job_id": job["id"], "status": job["status"]}

    def update_deployment(
        self,
        name: str,
        model_uri: str | None = None,
        flavor: str | None = None,
        config: dict[str, Any] | None = None,
        endpoint: str | None = None,
    ) -> dict[str, Any]:
        handler, payload = self._payload(model_uri, config, name, replace=True)
        job = self._run(handler, payload)
        return {"name": name, "flavor": flavor, "job_id": job["id"], "status": job["status"]}

    def delete_deployment(
        self, name: str, config: dict[str, Any] | None = None, endpoint: str | None = None
    ) -> None:
        job = self.api.delete_deployment(self._find(name)["id"])
        for kind, data in self.api.follow(job["id"]):
            if kind == "end" and data["status"] != "SUCCESS":
                raise MlflowException(f"undeploy job {job['id']} ended {data['status']}")

    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        return self.api.deployments(limit=500)

    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        return self._find(name)

    def predict(
        self,
        deployment_name: str | None = None,
        inputs: Any = None,
        endpoint: str | None = None,
    ) -> Any:
        """POST ``inputs`` to a Kubernetes deployment's ``/invocations`` (:func:`predict_url`)."""
        import pandas as pd
        import requests
        from mlflow.deployments import PredictionsResponse

        deployment = self._find(str(deployment_name))
        spec = deployment.get("spec") or {}
        if deployment["target"] != "kubernetes":
            raise MlflowException(
                f"{deployment_name} is a {deployment['target']} deployment: only Kubernetes "
                "deployments answer over HTTP (database deployments score on INSERT)"
            )
        url = predict_url(spec, self.settings.kubernetes_predict_url)
        if isinstance(inputs, pd.DataFrame):
            body: Any = {"dataframe_split": inputs.to_dict(orient="split", index=False)}
        else:
            body = inputs
        answer = requests.post(f"{url}/invocations", json=body, timeout=60)
        if answer.status_code != 200:
            raise MlflowException(f"{url}/invocations answered {answer.status_code}: {answer.text}")
        return PredictionsResponse.from_json(answer.text)


def predict_url(spec: dict[str, Any], template: str | None) -> str:
    """Where a Kubernetes deployment answers: ``KUBERNETES_PREDICT_URL`` filled in when
    set (a port-forward from outside the cluster), else its Ingress host when exposed, else
    its Service's in-cluster URL."""
    from shared.kube.spec import KubernetesDeploymentSpec, service_url

    kube = KubernetesDeploymentSpec.model_validate(spec)
    if template:
        filled = template.format(name=kube.name, namespace=kube.namespace, port=kube.service_port)
        return filled.rstrip("/")
    if kube.ingress_host:
        return f"http://{kube.ingress_host}"
    return service_url(kube)


def run_local(name: str, model_uri: str, flavor: str | None = None, config: Any = None) -> None:
    raise MlflowException("the mlmanager target deploys through a server; run_local is not offered")


def target_help() -> str:
    return (
        "ML Manager: deploy through an ML Manager server (MLFLOW_TRACKING_URI, "
        "MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD).\n"
        "  -C target=database|kubernetes|sagemaker|azure  (default database)\n"
        "  -C handler=NAME  submit any handler directly\n"
        "  other -C key=value pairs are the handler's payload fields (JSON for objects)."
    )
