"""DEPLOY_AWS and UNDEPLOY_AWS: a model served by a SageMaker endpoint.

A deploy packages the model (``shared.cloud.package_model``: mlrunner's bundle, or the
MLflow model for MLflow's pyfunc image), uploads ``model.tar.gz`` to S3, creates a
SageMaker model and an endpoint configuration named after the job, then creates the
endpoint or, for an existing one (``replace`` / ``add``), updates it to the new
configuration (blue/green: SageMaker switches traffic once the new variant is ready;
``add`` keeps the old variants beside the new one with their weights). It waits for
``InService`` with a progress line at each change. Whatever the job created is
removed if a later step fails or the job is cancelled (``shared.cloud.Undo``), and the
deployment is recorded FAILED with SageMaker's ``FailureReason``. After a replace the
old configuration, models and archives are deleted.

Idempotence (bobby/handlers/base.py): one job per endpoint at a time (a PostgreSQL
advisory lock held for the job), every create is create-if-missing under a name that
holds the job id, and a rerun that finds its job's DEPLOYED record ends at once.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from bobby.handlers import register
from bobby.handlers.base import Step
from bobby.handlers.cloud import CloudDeploy, CloudHandler
from bobby.handlers.database import resolve_model_uri
from shared.cloud import (
    ARCHIVE_NAME,
    DeploymentFailed,
    ModelPackage,
    package_model,
    wait_for,
)
from shared.deployments import (
    Deployment,
    DeploymentStore,
    SageMakerDeploymentSpec,
    SageMakerVariant,
)
from shared.errors import ConfigError, NotFound
from shared.handlers import SPECS, DeployAwsPayload, UndeployAwsPayload
from shared.model_source import ModelSource
from shared.sagemaker import (
    FAILED,
    IN_SERVICE,
    SageMaker,
    ServingImages,
    archive_key,
    check_mode,
    invocations_url,
    resource_name,
)

TARGET = "sagemaker"


def _s3_parts(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


class _SageMakerHandler(CloudHandler):
    payload: Any  # DeployAwsPayload | UndeployAwsPayload

    def lock_key(self) -> str:
        return f"sagemaker:{self.payload.sagemaker_region}:{self.payload.app_name}"

    def _client(self) -> SageMaker:
        return SageMaker(self.ctx.settings, self.payload.sagemaker_region)

    def _wait(self, client: SageMaker, name: str, what: str, done: frozenset[str]) -> str:
        def status() -> str:
            live = client.endpoint(name)
            return "Deleted" if live is None else str(live["EndpointStatus"])

        def reason() -> str:
            live = client.endpoint(name) or {}
            return str(live.get("FailureReason") or "SageMaker gave no FailureReason")

        return wait_for(
            what,
            status,
            done=done,
            failed=FAILED - done,
            reason=reason,
            timeout=self.ctx.settings.sagemaker_timeout_seconds,
            poll=self.ctx.settings.sagemaker_poll_seconds,
            check=self.ctx.check,
        )


@register
class DeployAws(_SageMakerHandler, CloudDeploy):
    spec = SPECS["DEPLOY_AWS"]
    target = TARGET
    payload: DeployAwsPayload

    def steps(self) -> list[Step]:
        self.source: ModelSource | None = None
        self.planned: SageMakerDeploymentSpec | None = None
        self.finished = False
        return self.guarded_steps(
            [
                ("reading and packaging the model", self.package),
                ("uploading the model archive to S3", self.upload),
                ("creating the SageMaker model and endpoint configuration", self.configure),
                ("creating or updating the endpoint, waiting for InService", self.serve),
            ]
        )

    # --- steps ----------------------------------------------------------------------
    def package(self) -> None:
        p, settings = self.payload, self.ctx.settings
        if not settings.sagemaker_role:
            raise ConfigError(
                "SAGEMAKER_ROLE is not set: the worker needs the role SageMaker runs as"
            )
        self.lock()
        with self.ctx.ledger.engine.connect() as conn:
            mine = DeploymentStore.of_job(conn, TARGET, p.app_name, self.ctx.job.id)
            self.previous = DeploymentStore.active(conn, TARGET, p.app_name)
        if mine is not None and mine.status == "DEPLOYED":
            logger.info(
                "an earlier attempt of this job already deployed endpoint {} (deployment {}): "
                "nothing left to do",
                p.app_name,
                mine.id,
            )
            self.finished = True
            return
        images = ServingImages.of(settings, p.sagemaker_region)
        self.client = client = self._client()
        self.live = client.endpoint(p.app_name)
        config = resource_name(p.app_name, self.ctx.job.id, "config")
        check_mode(p.deployment_mode, self.live, p.app_name, config)
        self.model_uri = resolve_model_uri(p.run_id, p.model_uri)
        self.source = source = ModelSource.open(self.model_uri)
        self.package_: ModelPackage = package_model(source)
        account = client.account()
        image = images.image(account, self.package_.runtime)
        self.bucket = (
            settings.sagemaker_bucket or f"mlmanager-sagemaker-{p.sagemaker_region}-{account}"
        )
        job = self.ctx.job.id
        model = resource_name(p.app_name, job, "model")
        new = SageMakerVariant(
            name=model,
            model=model,
            weight=1.0,
            model_data=f"s3://{self.bucket}/{archive_key(p.app_name, job)}",
        )
        kept: list[SageMakerVariant] = []
        if p.deployment_mode == "add" and self.previous_spec is not None:
            kept = list(self.previous_spec.variants)
        elif p.deployment_mode == "add" and self.live is not None:
            logger.warning(
                "endpoint {} was not deployed by ML Manager: add replaces it", p.app_name
            )
        self.planned = SageMakerDeploymentSpec(
            endpoint_name=p.app_name,
            region=p.sagemaker_region,
            url=invocations_url(p.sagemaker_region, p.app_name),
            endpoint_config=config,
            variants=[*kept, new],
            image=image,
            runtime=self.package_.runtime,
            instance_type=p.instance_type,
            instance_count=p.instance_count,
        )
        logger.info(
            "{} served by {} ({}): image {}; archive {} bytes",
            self.model_uri,
            self.package_.runtime,
            self.package_.reason,
            image,
            len(self.package_.archive),
        )
        logger.info("plan:\n{}", self._render(self.planned))

    def upload(self) -> None:
        if self.finished:
            return
        assert self.planned is not None
        new = self.planned.variants[-1]
        bucket, key = _s3_parts(new.model_data)
        if self.client.ensure_bucket(bucket):
            logger.info("created bucket {}", bucket)
        self.undo.push(new.model_data, lambda: self.client.delete_object(bucket, key))
        self.client.upload(bucket, key, self.package_.archive)
        logger.info("uploaded {} ({})", new.model_data, ARCHIVE_NAME)

    def configure(self) -> None:
        if self.finished:
            return
        spec, client, role = self.planned, self.client, self.ctx.settings.sagemaker_role
        assert spec is not None and role is not None
        new = spec.variants[-1]
        self.undo.push(f"model {new.model}", lambda: client.delete_model(new.model))
        client.create_model(new.model, spec.image, new.model_data, role)
        logger.info("created model {}", new.model)
        config = spec.endpoint_config
        self.undo.push(
            f"endpoint configuration {config}", lambda: client.delete_endpoint_config(config)
        )
        client.create_endpoint_config(
            config, spec.variants, spec.instance_type, spec.instance_count
        )
        logger.info(
            "created endpoint configuration {} (variants {})",
            config,
            ", ".join(f"{v.name} weight {v.weight:g}" for v in spec.variants),
        )

    def serve(self) -> None:
        if self.finished:
            return
        spec, client = self.planned, self.client
        assert spec is not None
        name = spec.endpoint_name
        live = client.endpoint(name)
        if live is None or (
            self.previous is None and live.get("EndpointConfigName") == spec.endpoint_config
        ):
            # A new endpoint (or the one an earlier attempt of this job created) is ours
            # to delete if the deploy fails.
            self.undo.push(f"endpoint {name}", lambda: client.delete_endpoint(name))
        if live is None:
            client.create_endpoint(name, spec.endpoint_config)
            logger.info("creating endpoint {}", name)
        elif live.get("EndpointConfigName") != spec.endpoint_config:
            # On failure SageMaker rolls the endpoint back to its old configuration.
            client.update_endpoint(name, spec.endpoint_config)
            logger.info("updating endpoint {} to {}", name, spec.endpoint_config)
        self._wait(client, name, f"endpoint {name}", IN_SERVICE)
        live = client.endpoint(name) or {}
        if live.get("EndpointConfigName") != spec.endpoint_config:
            reason = live.get("FailureReason") or "the update was rolled back"
            raise DeploymentFailed(
                f"endpoint {name} kept {live.get('EndpointConfigName')}: {reason}"
            )
        self.undo.forget()
        self._record("DEPLOYED", spec)
        self._retire_replaced(spec)
        logger.info("endpoint {} is InService: {}", name, spec.url)

    # --- the record, what a replace leaves behind ----------------------------------------
    @property
    def previous_spec(self) -> SageMakerDeploymentSpec | None:
        spec = self.previous.spec if self.previous is not None else None
        return spec if isinstance(spec, SageMakerDeploymentSpec) else None

    def _record(self, status: str, spec: SageMakerDeploymentSpec) -> Deployment:
        return self.record(status, spec.endpoint_name, spec)

    def _retire_replaced(self, spec: SageMakerDeploymentSpec) -> None:
        """Delete the configuration (and, for replace, models and archives) the endpoint
        no longer uses."""
        old = self.previous_spec
        if old is None:
            return
        kept = {v.model for v in spec.variants}
        self.client.delete_endpoint_config(old.endpoint_config)
        logger.info("deleted the previous endpoint configuration {}", old.endpoint_config)
        for variant in old.variants:
            if variant.model not in kept:
                self.client.delete_model(variant.model)
                self.client.delete_object(*_s3_parts(variant.model_data))
                logger.info("deleted the replaced model {} and its archive", variant.model)

    @staticmethod
    def _render(spec: SageMakerDeploymentSpec) -> str:
        lines = [
            f"  endpoint {spec.endpoint_name} in {spec.region}: {spec.url}",
            f"  endpoint configuration {spec.endpoint_config}: "
            f"{spec.instance_count} x {spec.instance_type}",
        ]
        lines += [
            f"  variant {v.name} (weight {v.weight:g}): {v.model_data}" for v in spec.variants
        ]
        return "\n".join(lines)

    def record_failed(self, reason: str) -> None:
        if self.planned is not None:
            self._record("FAILED", self.planned.model_copy(update={"failure_reason": reason}))


@register
class UndeployAws(_SageMakerHandler):
    spec = SPECS["UNDEPLOY_AWS"]
    payload: UndeployAwsPayload

    def steps(self) -> list[Step]:
        return [("deleting the endpoint and what the deploys created", self.undeploy)]

    def undeploy(self) -> None:
        p = self.payload
        self.lock()
        with self.ctx.ledger.engine.connect() as conn:
            deployment = DeploymentStore.active(conn, TARGET, p.app_name)
            if deployment is None:
                if DeploymentStore.retired_by(conn, TARGET, p.app_name, self.ctx.job.id):
                    logger.info(
                        "an earlier attempt of this job removed {}: nothing left to do", p.app_name
                    )
                    return
                raise NotFound(f"no SageMaker deployment named {p.app_name}")
        spec = deployment.spec
        assert isinstance(spec, SageMakerDeploymentSpec)
        if spec.region != p.sagemaker_region:
            raise NotFound(f"{p.app_name} is deployed in {spec.region}, not {p.sagemaker_region}")
        client = self._client()
        client.delete_endpoint(spec.endpoint_name)
        self._wait(
            client, spec.endpoint_name, f"endpoint {spec.endpoint_name}", frozenset({"Deleted"})
        )
        client.delete_endpoint_config(spec.endpoint_config)
        logger.info(
            "deleted endpoint {} and configuration {}", spec.endpoint_name, spec.endpoint_config
        )
        for variant in spec.variants:
            client.delete_model(variant.model)
            logger.info("deleted model {}", variant.model)
            if p.delete_artifacts:
                client.delete_object(*_s3_parts(variant.model_data))
                logger.info("deleted {}", variant.model_data)
        with self.ctx.ledger.engine.begin() as conn:
            DeploymentStore.retire(conn, deployment, self.ctx.job.id)
