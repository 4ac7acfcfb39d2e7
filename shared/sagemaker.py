"""SageMaker: the narrow client the ``DEPLOY_AWS`` / ``UNDEPLOY_AWS`` handlers call, the
serving image of a region, the names a deploy gives what it creates, and the target's
observe/reconcile.

Every call goes through boto3 with its *standard* retry mode (throttling and transient
errors retried with backoff); the credentials are ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` from the settings (unset: boto3's own chain, e.g. an instance
role) and ``AWS_ENDPOINT_URL`` points every service at a stand-in (the tests' moto).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import version
from typing import Any, TypeVar

from shared.cloud import DeploymentFailed
from shared.deployments import Deployment, SageMakerDeploymentSpec, SageMakerVariant
from shared.errors import ConfigError, DeploymentConflict, InvalidPayload, TargetUnavailable
from shared.settings import Settings
from shared.targets import LiveState, Target

T = TypeVar("T")
# Endpoint states (DescribeEndpoint's EndpointStatus) a deploy waits through or ends on.
IN_SERVICE = frozenset({"InService"})
FAILED = frozenset({"Failed", "OutOfService"})
# Errors that mean the request is wrong (not an outage): a user must fix something.
_USER_ERRORS = {"ValidationException", "AccessDeniedException", "UnrecognizedClientException"}
_MISSING = ("Could not find", "does not exist", "NoSuchKey", "NotFound", "404")
SERVING_ENV_RUNTIME = "MLMANAGER_RUNTIME"


def resource_name(app_name: str, job_id: int, what: str) -> str:
    """The name of the model or endpoint configuration job ``job_id`` creates for
    ``app_name`` (unique per job: a rerun finds its own; at most 63 characters)."""
    suffix = f"-{what}-j{job_id}"
    return app_name[: 63 - len(suffix)] + suffix


def archive_key(app_name: str, job_id: int) -> str:
    return f"mlmanager/{app_name}/j{job_id}/model.tar.gz"


def invocations_url(region: str, endpoint: str) -> str:
    return f"https://runtime.sagemaker.{region}.amazonaws.com/endpoints/{endpoint}/invocations"


@dataclass(frozen=True)
class ServingImages:
    """The serving images of one region (SAGEMAKER_IMAGES_FILE, infrastructure/config.json)."""

    region: str
    templates: dict[str, str]

    @classmethod
    def of(cls, settings: Settings, region: str) -> ServingImages:
        """The region's images; a region missing from the file is a clear error naming it."""
        path = settings.sagemaker_images_file
        try:
            config = json.loads(path.read_text())["sagemaker"]
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"SAGEMAKER_IMAGES_FILE {path}: no sagemaker section ({exc})"
            ) from None
        if region not in config.get("regions", []):
            raise InvalidPayload(
                f"region {region} has no serving image: it is not among the regions of {path} "
                "(push the images there and add it)",
                field="sagemaker_region",
            )
        return cls(region, {k: config[k] for k in ("serving_image", "pyfunc_image")})

    def image(self, account: str, runtime: str) -> str:
        """ML Manager's serving image (mlrunner), or MLflow's pyfunc image for the rest."""
        template = self.templates["serving_image" if runtime == "mlrunner" else "pyfunc_image"]
        return template.format(
            account=account,
            region=self.region,
            version=version("mlmanager"),
            mlflow_version=version("mlflow"),
        )


@dataclass
class SageMaker:
    """The SageMaker, S3 and STS calls of one region, and nothing else."""

    settings: Settings
    region: str

    def _client(self, service: str) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ConfigError("SageMaker deploys need boto3: install mlmanager[aws]") from None

        s = self.settings
        session = boto3.session.Session(
            aws_access_key_id=s.aws_access_key_id.get_secret_value()
            if s.aws_access_key_id
            else None,
            aws_secret_access_key=s.aws_secret_access_key.get_secret_value()
            if s.aws_secret_access_key
            else None,
            region_name=self.region,
        )
        config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10)
        return session.client(service, endpoint_url=s.aws_endpoint_url, config=config)

    @cached_property
    def sagemaker(self) -> Any:
        return self._client("sagemaker")

    @cached_property
    def s3(self) -> Any:
        return self._client("s3")

    def call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        """``fn(**kwargs)`` with AWS's errors turned into ours (what a user must fix: 4xx,
        not retried; an outage: TargetUnavailable, retried)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", str(exc))
            if code in _USER_ERRORS:
                raise InvalidPayload(f"SageMaker refused to {what}: {code}: {message}") from None
            raise TargetUnavailable(f"could not {what}: {code}: {message}") from None
        except BotoCoreError as exc:
            raise TargetUnavailable(f"could not {what}: {exc}") from None

    def _missing(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T | None:
        """``fn(**kwargs)``, or None when what it reads or deletes does not exist."""
        from botocore.exceptions import ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            text = f"{error.get('Code', '')} {error.get('Message', '')}"
            if any(m in text for m in _MISSING):
                return None
            return self.call(what, fn, **kwargs)  # the same error, mapped

    # --- account, S3 ---------------------------------------------------------------
    def account(self) -> str:
        sts = self._client("sts")
        return str(self.call("read the AWS account", sts.get_caller_identity)["Account"])

    def ensure_bucket(self, bucket: str) -> bool:
        """Create ``bucket`` if missing; True if this call created it."""
        if self._missing("read the bucket", self.s3.head_bucket, Bucket=bucket) is not None:
            return False
        options: dict[str, Any] = {"Bucket": bucket}
        if self.region != "us-east-1":  # S3 refuses the default region as a constraint
            options["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        self.call(f"create bucket {bucket}", self.s3.create_bucket, **options)
        return True

    def upload(self, bucket: str, key: str, data: bytes) -> None:
        self.call(
            f"upload s3://{bucket}/{key}", self.s3.put_object, Bucket=bucket, Key=key, Body=data
        )

    def delete_object(self, bucket: str, key: str) -> None:
        self._missing(f"delete s3://{bucket}/{key}", self.s3.delete_object, Bucket=bucket, Key=key)

    # --- models, endpoint configurations, endpoints ------------------------------------
    def create_model(self, name: str, image: str, model_data: str, role: str) -> None:
        if self._missing("read the model", self.sagemaker.describe_model, ModelName=name):
            return  # an earlier attempt of this job created it
        self.call(
            f"create model {name}",
            self.sagemaker.create_model,
            ModelName=name,
            ExecutionRoleArn=role,
            PrimaryContainer={"Image": image, "ModelDataUrl": model_data},
        )

    def delete_model(self, name: str) -> None:
        self._missing(f"delete model {name}", self.sagemaker.delete_model, ModelName=name)

    def create_endpoint_config(
        self, name: str, variants: list[SageMakerVariant], instance_type: str, count: int
    ) -> None:
        read = self.sagemaker.describe_endpoint_config
        if self._missing("read the endpoint configuration", read, EndpointConfigName=name):
            return
        self.call(
            f"create endpoint configuration {name}",
            self.sagemaker.create_endpoint_config,
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": v.name,
                    "ModelName": v.model,
                    "InitialInstanceCount": count,
                    "InstanceType": instance_type,
                    "InitialVariantWeight": v.weight,
                }
                for v in variants
            ],
        )

    def delete_endpoint_config(self, name: str) -> None:
        self._missing(
            f"delete endpoint configuration {name}",
            self.sagemaker.delete_endpoint_config,
            EndpointConfigName=name,
        )

    def endpoint(self, name: str) -> dict[str, Any] | None:
        """DescribeEndpoint, or None when there is no such endpoint."""
        read = self.sagemaker.describe_endpoint
        return self._missing(f"read endpoint {name}", read, EndpointName=name)

    def create_endpoint(self, name: str, config: str) -> None:
        self.call(
            f"create endpoint {name}",
            self.sagemaker.create_endpoint,
            EndpointName=name,
            EndpointConfigName=config,
        )

    def update_endpoint(self, name: str, config: str) -> None:
        self.call(
            f"update endpoint {name}",
            self.sagemaker.update_endpoint,
            EndpointName=name,
            EndpointConfigName=config,
        )

    def delete_endpoint(self, name: str) -> None:
        self._missing(f"delete endpoint {name}", self.sagemaker.delete_endpoint, EndpointName=name)


def check_mode(mode: str, live: dict[str, Any] | None, name: str, config: str) -> None:
    """``create`` needs a new endpoint name (or the one an earlier attempt of the same
    job created with ``config``); ``replace`` and ``add`` take either."""
    if mode == "create" and live is not None and live.get("EndpointConfigName") != config:
        raise DeploymentConflict(
            f"endpoint {name} already exists: deploy with deployment_mode replace or add"
        )


@dataclass(frozen=True)
class SageMakerLiveState(LiveState):
    status: str | None = None  # None: no such endpoint
    endpoint_config: str | None = None


def _spec_of(deployment: Deployment) -> SageMakerDeploymentSpec:
    if not isinstance(deployment.spec, SageMakerDeploymentSpec):
        raise InvalidPayload(f"deployment {deployment.id} has no SageMaker spec")
    return deployment.spec


class SageMakerTarget(Target):
    """An endpoint serving a model (``SageMakerDeploymentSpec``)."""

    name = "sagemaker"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def observe(self, deployment: Deployment) -> SageMakerLiveState:
        spec = _spec_of(deployment)
        live = SageMaker(self.settings, spec.region).endpoint(spec.endpoint_name)
        if live is None:
            return SageMakerLiveState(drift=(f"endpoint {spec.endpoint_name} missing",))
        status, config = live.get("EndpointStatus"), live.get("EndpointConfigName")
        drift = []
        if status not in IN_SERVICE:
            drift.append(f"endpoint {spec.endpoint_name} is {status}")
        if config != spec.endpoint_config:
            drift.append(f"endpoint uses configuration {config}, not {spec.endpoint_config}")
        return SageMakerLiveState(drift=tuple(drift), status=status, endpoint_config=config)

    def reconcile(self, deployment: Deployment) -> list[str]:
        """Re-create a deleted endpoint, or point it back at the recorded configuration
        (the models and configuration a deploy created are kept until undeploy)."""
        spec = _spec_of(deployment)
        live = self.observe(deployment)
        if live.in_sync or live.status in {"Creating", "Updating"}:
            return []
        client = SageMaker(self.settings, spec.region)
        if live.status is None:
            client.create_endpoint(spec.endpoint_name, spec.endpoint_config)
            return [f"create endpoint {spec.endpoint_name} ({spec.endpoint_config})"]
        if live.endpoint_config != spec.endpoint_config:
            client.update_endpoint(spec.endpoint_name, spec.endpoint_config)
            return [f"update endpoint {spec.endpoint_name} to {spec.endpoint_config}"]
        raise DeploymentFailed(
            f"endpoint {spec.endpoint_name} is {live.status} on its recorded configuration: "
            "reconcile cannot repair that; undeploy and deploy again"
        )
