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
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from bobby.handlers import register
from bobby.handlers.base import Handler, JobStopped, Step
from bobby.handlers.database import resolve_model_uri
from shared.cloud import (
    ARCHIVE_NAME,
    DeploymentFailed,
    ModelPackage,
    Undo,
    package_model,
    wait_for,
)
from shared.deployments import (
    Deployment,
    DeploymentStore,
    SageMakerDeploymentSpec,
    SageMakerVariant,
)
from shared.errors import ConfigError, MLManagerError, NotFound
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


class _SageMakerHandler(Handler):
    payload: Any  # DeployAwsPayload | UndeployAwsPayload

    def _lock(self) -> None:
        """One job per endpoint at a time, for the whole job (PostgreSQL; SQLite runs one
        worker). Released by ``close``."""
        self._held: Connection | None = None
        engine = self.ctx.ledger.engine
        if engine.dialect.name == "postgresql":
            self._held = engine.connect()
            key = f"mlmanager.deploy:sagemaker:{self.payload.sagemaker_region}:"
            self._held.execute(
                text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": key + self.payload.app_name}
            )
            self._held.commit()

    def _unlock(self) -> None:
        if getattr(self, "_held", None) is not None:
            assert self._held is not None
            self._held.close()  # a session lock ends with its connection
            self._held = None

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
class DeployAws(_SageMakerHandler):
    spec = SPECS["DEPLOY_AWS"]
    payload: DeployAwsPayload

    def steps(self) -> list[Step]:
        self.source: ModelSource | None = None
        self.undo = Undo()
        self.failure: str | None = None
        self.planned: SageMakerDeploymentSpec | None = None
        self.finished = False
        return [
            (title, self._guarded(step))
            for title, step in (
                ("reading and packaging the model", self.package),
                ("uploading the model archive to S3", self.upload),
                ("creating the SageMaker model and endpoint configuration", self.configure),
                ("creating or updating the endpoint, waiting for InService", self.serve),
            )
        ]

    def _guarded(self, step: Any) -> Any:
        def run() -> None:
            try:
                step()
            except (Exception, JobStopped) as exc:
                self.failure = exc.message if isinstance(exc, MLManagerError) else str(exc)
                raise

        return run

    # --- steps ----------------------------------------------------------------------
    def package(self) -> None:
        p, settings = self.payload, self.ctx.settings
        if not settings.sagemaker_role:
            raise ConfigError(
                "SAGEMAKER_ROLE is not set: the worker needs the role SageMaker runs as"
            )
        self._lock()
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
        store = DeploymentStore(self.ctx.ledger.engine)
        with self.ctx.ledger.engine.begin() as conn:
            if status == "DEPLOYED":
                store.set_status(conn, TARGET, spec.endpoint_name, "DELETED", only="DEPLOYED")
            return store.record(
                conn=conn,
                target=TARGET,
                name=spec.endpoint_name,
                user=self.ctx.job.user,
                status=status,
                model_uri=self.model_uri,
                run_id=self.source.run_id if self.source else self.payload.run_id,
                spec=spec,
                job_id=self.ctx.job.id,
            )

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

    def close(self) -> None:
        try:
            # A lost lease: another worker may be running the job; its work stays.
            if self.undo.actions and not self.ctx.control.lost.is_set():
                logger.warning("the deploy did not finish: removing what this job created")
                self.undo.run()
                if self.planned is not None:
                    reason = self.failure or "stopped"
                    failed = self.planned.model_copy(update={"failure_reason": reason})
                    try:
                        self._record("FAILED", failed)
                    except DBAPIError as exc:  # the step's error is the one to report
                        logger.error("could not record the failed deployment: {}", exc.orig)
        finally:
            if self.source is not None:
                self.source.close()
            self._unlock()


@register
class UndeployAws(_SageMakerHandler):
    spec = SPECS["UNDEPLOY_AWS"]
    payload: UndeployAwsPayload

    def steps(self) -> list[Step]:
        return [("deleting the endpoint and what the deploys created", self.undeploy)]

    def undeploy(self) -> None:
        p = self.payload
        self._lock()
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

    def close(self) -> None:
        self._unlock()
