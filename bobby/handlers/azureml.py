"""DEPLOY_AZURE and UNDEPLOY_AZURE: a model served by an Azure ML managed online endpoint.

A deploy registers the model in the workspace (the SDK uploads it to the workspace's
default datastore): mlrunner's bundle as a custom model served by ML Manager's serving
image (``AZURE_SERVING_IMAGE``, registered as a custom environment with the image's
routes), or the MLflow model itself for Azure's no-code MLflow deployment. It creates
the endpoint if there is none, then a deployment named after the job, waits for each to
be provisioned (a progress line at each change), and routes all traffic to the new
deployment; a replaced deployment is deleted afterwards, its model and environment
archived. Whatever the job created is removed if a later step fails or the job stops
(``shared.cloud.Undo``), and the record says FAILED with Azure's reason.

Idempotence (bobby/handlers/base.py): one job per endpoint at a time (a PostgreSQL
advisory lock held for the job); models, environments and deployments carry the job id
in their version or name, and the endpoint a job creates is tagged with it, so a rerun
finds its own; a rerun that finds its job's DEPLOYED record ends at once.

Azure ML's SDK v2 has no delete for model versions or environments: undeploy and undo
archive them (hidden from the workspace's lists; the uploaded files stay in its storage).
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from bobby.handlers import register
from bobby.handlers.base import Step
from bobby.handlers.cloud import CloudDeploy, CloudHandler
from bobby.handlers.database import resolve_model_uri
from shared.azureml import (
    DELETED,
    FAILED,
    MODEL_FOLDER,
    SUCCEEDED,
    AzureML,
    Workspace,
    deployment_name,
    environment_name,
    error_message,
    instance_type_for,
    serving_image,
)
from shared.cloud import package_model, wait_for
from shared.deployments import AzureDeploymentSpec, Deployment, DeploymentStore
from shared.errors import ConfigError, DeploymentConflict, NotFound
from shared.handlers import SPECS, DeployAzurePayload, UndeployAzurePayload
from shared.model_source import ModelSource

TARGET = "azure"
JOB_TAG = "mlmanager-job"  # on the endpoint a job creates: a rerun recognises it


class _AzureHandler(CloudHandler):
    payload: Any  # DeployAzurePayload | UndeployAzurePayload

    def lock_key(self) -> str:
        return f"azure:{self.payload.endpoint_name}"

    def wait(
        self,
        what: str,
        read: Callable[[], Any | None],
        poller: Any = None,
        done: frozenset[str] = SUCCEEDED,
    ) -> str:
        """Wait until ``read()`` (an endpoint or deployment; None once deleted) is in a
        state of ``done``; a failure carries the reason of ``poller``'s operation."""

        def state() -> str:
            live = read()
            return DELETED if live is None else str(live.provisioning_state)

        def reason() -> str:
            if poller is None:
                return "Azure ML gave no reason"
            try:
                poller.result(timeout=60)  # the operation's error, once its poll sees it
            except Exception as exc:  # the SDK raises its HttpResponseError subclasses
                return error_message(exc)
            return "Azure ML gave no reason"

        settings = self.ctx.settings
        return wait_for(
            what,
            state,
            done=done,
            failed=FAILED - done,
            reason=reason,
            timeout=settings.azure_timeout_seconds,
            poll=settings.azure_poll_seconds,
            check=self.ctx.check,
        )

    def delete_deployment(self, client: AzureML, endpoint: str, name: str) -> None:
        poller = client.delete_deployment(endpoint, name)
        if poller is not None:
            self.wait(
                f"deleting deployment {name}",
                lambda: client.deployment(endpoint, name),
                poller,
                frozenset({DELETED}),
            )

    def delete_endpoint(self, client: AzureML, endpoint: str) -> None:
        poller = client.delete_endpoint(endpoint)
        if poller is not None:
            self.wait(
                f"deleting endpoint {endpoint}",
                lambda: client.endpoint(endpoint),
                poller,
                frozenset({DELETED}),
            )


@register
class DeployAzure(_AzureHandler, CloudDeploy):
    spec = SPECS["DEPLOY_AZURE"]
    target = TARGET
    payload: DeployAzurePayload

    def steps(self) -> list[Step]:
        self.source: ModelSource | None = None
        self.planned: AzureDeploymentSpec | None = None
        self.finished = False
        return self.guarded_steps(
            [
                ("reading and packaging the model", self.package),
                ("registering the model in the workspace", self.register),
                ("creating the endpoint", self.endpoint),
                ("creating the deployment, waiting for it to be provisioned", self.deploy),
                ("routing the traffic to the new deployment", self.route),
            ]
        )

    # --- steps ----------------------------------------------------------------------
    def package(self) -> None:
        p, settings, job = self.payload, self.ctx.settings, self.ctx.job.id
        workspace = Workspace.of(settings, p.resource_group, p.workspace)
        instance_type = instance_type_for(p.cpu_cores, p.allocated_ram)
        self.lock()
        with self.ctx.ledger.engine.connect() as conn:
            mine = DeploymentStore.of_job(conn, TARGET, p.endpoint_name, job)
            self.previous = DeploymentStore.active(conn, TARGET, p.endpoint_name)
        if mine is not None and mine.status == "DEPLOYED":
            logger.info(
                "an earlier attempt of this job already deployed endpoint {} (deployment {}): "
                "nothing left to do",
                p.endpoint_name,
                mine.id,
            )
            self.finished = True
            return
        self.client = client = AzureML(settings, workspace)
        live = client.endpoint(p.endpoint_name)
        self.create_endpoint = live is None or (live.tags or {}).get(JOB_TAG) == str(job)
        if not self.create_endpoint and not p.replace:
            owner = "serves a model ML Manager deployed" if self.previous else "exists"
            raise DeploymentConflict(
                f"endpoint {p.endpoint_name} {owner}: deploy with replace to route its traffic "
                "to the new model"
            )
        self.model_uri = resolve_model_uri(p.run_id, p.model_uri)
        self.source = source = ModelSource.open(self.model_uri)
        image = serving_image(settings)
        package = package_model(source)
        runtime = package.runtime if image is not None else "mlflow"
        self.folder = Path(tempfile.mkdtemp(prefix="mlmanager-azure-"))
        if runtime == "mlrunner":
            with tarfile.open(fileobj=io.BytesIO(package.archive), mode="r:gz") as archive:
                archive.extractall(self.folder / MODEL_FOLDER, filter="data")
            self.model_path = self.folder / MODEL_FOLDER
        elif source.path.is_dir() and (source.path / "MLmodel").is_file():
            self.model_path = source.path
        else:
            raise ConfigError(
                f"{self.model_uri} is served by ML Manager's serving image ({package.reason}) "
                "and AZURE_SERVING_IMAGE is not set"
            )
        previous = self.previous_spec
        endpoint_url = live.scoring_uri if live is not None else None
        self.planned = AzureDeploymentSpec(
            endpoint_name=p.endpoint_name,
            subscription_id=workspace.subscription_id,
            resource_group=workspace.resource_group,
            workspace=workspace.workspace,
            region=p.region,
            url=endpoint_url or "",
            deployment=deployment_name(job),
            model_name=p.model_name,
            model_version=f"j{job}",
            environment=f"{environment_name(p.endpoint_name)}:j{job}"
            if runtime == "mlrunner"
            else None,
            image=image if runtime == "mlrunner" else None,
            runtime=runtime,
            instance_type=instance_type,
            created_endpoint=previous.created_endpoint if previous else self.create_endpoint,
        )
        logger.info(
            "{} served by {} ({}); {} cores, {} GB -> {}",
            self.model_uri,
            "ML Manager's serving image" if runtime == "mlrunner" else "Azure's MLflow server",
            package.reason if runtime == "mlrunner" else "an MLflow model",
            p.cpu_cores,
            p.allocated_ram,
            instance_type,
        )
        logger.info("plan:\n{}", self._render(self.planned))

    def register(self) -> None:
        if self.finished:
            return
        spec, client = self.planned, self.client
        assert spec is not None
        name, version = spec.model_name, spec.model_version
        self.undo.push(f"model {name}:{version}", lambda: client.archive_model(name, version))
        client.register_model(name, version, self.model_path, mlflow=spec.runtime == "mlflow")
        logger.info("registered model {}:{}", name, version)
        if spec.environment is not None and spec.image is not None:
            env, env_version = spec.environment.split(":")
            self.undo.push(
                f"environment {spec.environment}",
                lambda: client.archive_environment(env, env_version),
            )
            client.create_environment(env, env_version, spec.image)
            logger.info("created environment {} (image {})", spec.environment, spec.image)

    def endpoint(self) -> None:
        if self.finished:
            return
        spec, client = self.planned, self.client
        assert spec is not None
        name = spec.endpoint_name
        if not self.create_endpoint:
            logger.info("endpoint {} exists: the new deployment joins it", name)
            return
        self.undo.push(f"endpoint {name}", lambda: self.delete_endpoint(client, name))
        live = client.endpoint(name)
        poller = None
        if live is None:
            poller = client.begin_endpoint(name, {JOB_TAG: str(self.ctx.job.id)})
            logger.info("creating endpoint {}", name)
        self.wait(f"endpoint {name}", lambda: client.endpoint(name), poller)

    def deploy(self) -> None:
        if self.finished:
            return
        spec, client = self.planned, self.client
        assert spec is not None
        endpoint, name = spec.endpoint_name, spec.deployment
        self.undo.push(f"deployment {name}", lambda: self.delete_deployment(client, endpoint, name))
        poller = client.begin_deployment(spec)
        logger.info(
            "creating deployment {} ({} x {})", name, spec.instance_count, spec.instance_type
        )
        self.wait(f"deployment {name}", lambda: client.deployment(endpoint, name), poller)

    def route(self) -> None:
        if self.finished:
            return
        spec, client = self.planned, self.client
        assert spec is not None
        name = spec.endpoint_name
        poller = client.begin_traffic(name, {spec.deployment: 100})
        self.wait(f"endpoint {name} (traffic)", lambda: client.endpoint(name), poller)
        live = client.endpoint(name)
        traffic = dict(live.traffic or {}) if live is not None else {}
        if live is None or traffic.get(spec.deployment) != 100:
            raise ConfigError(f"endpoint {name} did not take the traffic routing: {traffic}")
        spec = spec.model_copy(update={"url": live.scoring_uri or spec.url})
        self.undo.forget()
        self.record("DEPLOYED", name, spec)
        self._retire_replaced(spec)
        logger.info("endpoint {} serves deployment {}: {}", name, spec.deployment, spec.url)

    # --- what a replace leaves behind, the record -------------------------------------
    @property
    def previous_spec(self) -> AzureDeploymentSpec | None:
        spec = self.previous.spec if self.previous is not None else None
        return spec if isinstance(spec, AzureDeploymentSpec) else None

    def _retire_replaced(self, spec: AzureDeploymentSpec) -> None:
        old = self.previous_spec
        if old is None or old.deployment == spec.deployment:
            return
        self.delete_deployment(self.client, old.endpoint_name, old.deployment)
        logger.info("deleted the replaced deployment {}", old.deployment)
        _archive(self.client, old)

    def record_failed(self, reason: str) -> None:
        if self.planned is not None:
            failed = self.planned.model_copy(update={"failure_reason": reason})
            self.record("FAILED", failed.endpoint_name, failed)

    def release(self) -> None:
        super().release()
        folder = getattr(self, "folder", None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _render(spec: AzureDeploymentSpec) -> str:
        return "\n".join(
            [
                f"  workspace {spec.workspace} (resource group {spec.resource_group})",
                f"  model {spec.model_name}:{spec.model_version} ({spec.runtime})",
                *([f"  environment {spec.environment}: {spec.image}"] if spec.environment else []),
                f"  endpoint {spec.endpoint_name}"
                + (" (created)" if spec.created_endpoint else " (exists)"),
                f"  deployment {spec.deployment}: {spec.instance_count} x {spec.instance_type}, "
                "100% of the traffic",
            ]
        )


def _archive(client: AzureML, spec: AzureDeploymentSpec) -> None:
    client.archive_model(spec.model_name, spec.model_version)
    logger.info("archived model {}:{}", spec.model_name, spec.model_version)
    if spec.environment is not None:
        name, version = spec.environment.split(":")
        client.archive_environment(name, version)
        logger.info("archived environment {}", spec.environment)


@register
class UndeployAzure(_AzureHandler):
    spec = SPECS["UNDEPLOY_AZURE"]
    payload: UndeployAzurePayload

    def steps(self) -> list[Step]:
        return [("deleting the endpoint or deployment, archiving the model", self.undeploy)]

    def undeploy(self) -> None:
        p = self.payload
        self.lock()
        with self.ctx.ledger.engine.connect() as conn:
            deployment: Deployment | None = DeploymentStore.active(conn, TARGET, p.endpoint_name)
            if deployment is None:
                if DeploymentStore.retired_by(conn, TARGET, p.endpoint_name, self.ctx.job.id):
                    logger.info(
                        "an earlier attempt of this job removed {}: nothing left to do",
                        p.endpoint_name,
                    )
                    return
                raise NotFound(f"no Azure ML deployment named {p.endpoint_name}")
        spec = deployment.spec
        assert isinstance(spec, AzureDeploymentSpec)
        workspace = Workspace(spec.subscription_id, spec.resource_group, spec.workspace)
        client = AzureML(self.ctx.settings, workspace)
        if spec.created_endpoint:
            self.delete_endpoint(client, spec.endpoint_name)
            logger.info("deleted endpoint {} and its deployments", spec.endpoint_name)
        else:
            self.delete_deployment(client, spec.endpoint_name, spec.deployment)
            logger.info(
                "deleted deployment {} (endpoint {} was not created by ML Manager: kept)",
                spec.deployment,
                spec.endpoint_name,
            )
        _archive(client, spec)
        with self.ctx.ledger.engine.begin() as conn:
            DeploymentStore.retire(conn, deployment, self.ctx.job.id)
