"""Azure ML (``DEPLOY_AZURE`` / ``UNDEPLOY_AZURE``): the narrow client the handlers call
(``azure-ai-ml``, SDK v2, as a service principal), the names a deploy gives what it
creates, the instance type of a deployment, and the target's observe/reconcile.

The credential is ``AZURE_USERNAME`` (client id) / ``AZURE_PASSWORD`` (client secret) in
``AZURE_TENANT_ID``; the cloud is Azure's public one, or the one described by
``AZURE_CLOUD_METADATA_URL`` (Resource Manager's ``/metadata/endpoints`` document: a
sovereign cloud, or the tests' local stand-in), passed to ``MLClient`` as its
``cloud``/``cloud_metadata``. TLS is checked with requests' CA bundle
(``REQUESTS_CA_BUNDLE``).

The original deployed to Azure Container Instances, sized by ``cpu_cores`` and
``allocated_ram`` (GB). Managed online endpoints run on VM sizes instead: a deployment
gets the smallest size of ``INSTANCE_TYPES`` (fewest cores, then least memory) with at
least the cores and the memory asked for. Sizes are those Azure lists for managed online
endpoints; Azure reserves part of each VM for itself, so the model gets somewhat less
than the size's total.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

from shared.cloud import DeploymentFailed
from shared.deployments import AzureDeploymentSpec, Deployment
from shared.errors import ConfigError, InvalidPayload, TargetUnavailable
from shared.settings import Settings
from shared.targets import LiveState, Target

T = TypeVar("T")
# provisioning_state of endpoints and deployments a deploy waits through or ends on.
SUCCEEDED = frozenset({"Succeeded"})
FAILED = frozenset({"Failed", "Canceled"})
DELETED = "Deleted"  # our name for "GET answers 404"
# The serving image's routes and port (infrastructure/sagemaker/serve: mlrunner serve).
SERVING_PORT = 8080
MODEL_FOLDER = "model"  # the registered model's folder under AZUREML_MODEL_DIR

# (VM size, vCPUs, memory GiB), smallest first.
INSTANCE_TYPES: tuple[tuple[str, int, float], ...] = (
    ("Standard_DS1_v2", 1, 3.5),
    ("Standard_F2s_v2", 2, 4.0),
    ("Standard_DS2_v2", 2, 7.0),
    ("Standard_E2s_v3", 2, 16.0),
    ("Standard_F4s_v2", 4, 8.0),
    ("Standard_DS3_v2", 4, 14.0),
    ("Standard_E4s_v3", 4, 32.0),
    ("Standard_F8s_v2", 8, 16.0),
    ("Standard_DS4_v2", 8, 28.0),
    ("Standard_E8s_v3", 8, 64.0),
    ("Standard_F16s_v2", 16, 32.0),
    ("Standard_DS5_v2", 16, 56.0),
    ("Standard_E16s_v3", 16, 128.0),
    ("Standard_F32s_v2", 32, 64.0),
    ("Standard_E32s_v3", 32, 256.0),
    ("Standard_F48s_v2", 48, 96.0),
    ("Standard_F64s_v2", 64, 128.0),
    ("Standard_E64s_v3", 64, 432.0),
    ("Standard_F72s_v2", 72, 144.0),
)


def instance_type_for(cpu_cores: float, allocated_ram: float) -> str:
    """The smallest VM size with at least ``cpu_cores`` vCPUs and ``allocated_ram`` GiB."""
    for name, cores, memory in INSTANCE_TYPES:
        if cores >= cpu_cores and memory >= allocated_ram:
            return name
    largest = max(c for _, c, _ in INSTANCE_TYPES), max(m for _, _, m in INSTANCE_TYPES)
    raise InvalidPayload(
        f"no managed online endpoint VM size has {cpu_cores:g} cores and {allocated_ram:g} GiB "
        f"(at most {largest[0]} cores, {largest[1]:g} GiB)",
        field="cpu_cores" if cpu_cores > largest[0] else "allocated_ram",
    )


def deployment_name(job_id: int) -> str:
    """The online deployment job ``job_id`` creates (3-32 characters, a letter first)."""
    return f"mlm-j{job_id}"


def environment_name(endpoint: str) -> str:
    return f"mlmanager-{endpoint}"


@dataclass(frozen=True)
class Workspace:
    subscription_id: str
    resource_group: str
    workspace: str

    @classmethod
    def of(cls, settings: Settings, resource_group: str | None, workspace: str | None) -> Workspace:
        """The workspace a payload names, completed from the settings; a clear error for
        what is missing."""
        group = resource_group or settings.azure_resource_group
        name = workspace or settings.azure_workspace
        if not settings.azure_subscription_id:
            raise ConfigError("AZURE_SUBSCRIPTION_ID is not set: Azure ML deploys need it")
        if not group:
            raise InvalidPayload(
                "no resource group: give resource_group or set AZURE_RESOURCE_GROUP",
                field="resource_group",
            )
        if not name:
            raise InvalidPayload(
                "no workspace: give workspace or set AZURE_WORKSPACE", field="workspace"
            )
        return cls(settings.azure_subscription_id, group, name)


def serving_image(settings: Settings) -> str | None:
    """ML Manager's serving image (AZURE_SERVING_IMAGE with ``{version}`` filled in)."""
    image = settings.azure_serving_image
    return None if image is None else image.format(version=version("mlmanager"))


@dataclass
class AzureML:
    """The Azure ML calls of one workspace, and nothing else."""

    settings: Settings
    workspace: Workspace

    @cached_property
    def ml(self) -> Any:
        try:
            from azure.ai.ml import MLClient
            from azure.identity import ClientSecretCredential
        except ImportError:
            raise ConfigError(
                "Azure ML deploys need azure-ai-ml: install mlmanager[azure]"
            ) from None
        s = self.settings
        if not (s.azure_username and s.azure_password and s.azure_tenant_id):
            raise ConfigError(
                "AZURE_USERNAME, AZURE_PASSWORD and AZURE_TENANT_ID must be set: the service "
                "principal Azure ML deploys as"
            )
        cloud: dict[str, Any] = {}
        authority: dict[str, Any] = {}
        if s.azure_cloud_metadata_url:
            name, metadata = _cloud(s.azure_cloud_metadata_url)
            cloud = {"cloud": name, "cloud_metadata": metadata}
            # Another cloud's login host is not among those Azure AD's discovery knows.
            authority = {
                "authority": metadata["active_directory"],
                "disable_instance_discovery": True,
            }
        credential = ClientSecretCredential(
            s.azure_tenant_id,
            s.azure_username.get_secret_value(),
            s.azure_password.get_secret_value(),
            **authority,
        )
        w = self.workspace
        return MLClient(
            credential,
            subscription_id=w.subscription_id,
            resource_group_name=w.resource_group,
            workspace_name=w.workspace,
            show_progress=False,
            enable_telemetry=False,
            **cloud,
        )

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(...)`` with Azure's errors turned into ours (what a user must fix: 4xx, not
        retried; an outage: TargetUnavailable, retried)."""
        from azure.ai.ml.exceptions import MlException
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
        )

        try:
            return fn(*args, **kwargs)
        except MlException as exc:  # the SDK's own checks, before any call
            raise InvalidPayload(f"Azure ML cannot {what}: {error_message(exc)}") from None
        except ClientAuthenticationError as exc:
            raise ConfigError(
                f"Azure refused the credentials to {what}: {error_message(exc)}"
            ) from None
        except HttpResponseError as exc:
            code = exc.status_code or 0
            if 400 <= code < 500 and code not in (408, 429):
                raise InvalidPayload(f"Azure ML refused to {what}: {error_message(exc)}") from None
            raise TargetUnavailable(f"could not {what}: {error_message(exc)}") from None
        except ServiceRequestError as exc:
            raise TargetUnavailable(f"could not {what}: {exc}") from None

    def _missing(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``fn(...)``, or None when what it reads or deletes does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        def attempt() -> T | None:
            try:
                return fn(*args, **kwargs)
            except ResourceNotFoundError:
                return None

        return self.call(what, attempt)

    # --- models, environments ---------------------------------------------------------
    def register_model(self, name: str, version: str, path: Path, mlflow: bool) -> None:
        """Upload ``path`` to the workspace's default datastore and register it as model
        ``name`` version ``version`` (create-if-missing: a rerun finds its own)."""
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Model

        ops = self.ml.models
        if self._missing(f"read model {name}:{version}", ops.get, name, version=version):
            return
        model = Model(
            name=name,
            version=version,
            path=str(path),
            type=AssetTypes.MLFLOW_MODEL if mlflow else AssetTypes.CUSTOM_MODEL,
            description="registered by ML Manager",
        )
        self.call(f"register model {name}:{version}", ops.create_or_update, model)

    def archive_model(self, name: str, version: str) -> None:
        ops = self.ml.models
        self._missing(f"archive model {name}:{version}", ops.archive, name, version=version)

    def create_environment(self, name: str, version: str, image: str) -> None:
        """The serving image as a custom environment, with its routes and port."""
        from azure.ai.ml.entities import Environment

        ops = self.ml.environments
        if self._missing(f"read environment {name}:{version}", ops.get, name, version=version):
            return
        route = {"port": SERVING_PORT, "path": "/ping"}
        environment = Environment(
            name=name,
            version=version,
            image=image,
            inference_config={
                "liveness_route": route,
                "readiness_route": route,
                "scoring_route": {"port": SERVING_PORT, "path": "/invocations"},
            },
            description="ML Manager's serving image",
        )
        self.call(f"create environment {name}:{version}", ops.create_or_update, environment)

    def archive_environment(self, name: str, version: str) -> None:
        ops = self.ml.environments
        self._missing(f"archive environment {name}:{version}", ops.archive, name, version=version)

    # --- endpoints, deployments -------------------------------------------------------
    def endpoint(self, name: str) -> Any | None:
        """The online endpoint, or None when there is none."""
        return self._missing(f"read endpoint {name}", self.ml.online_endpoints.get, name)

    def begin_endpoint(self, name: str, tags: dict[str, str] | None = None) -> Any:
        """Create the endpoint (key authentication, no traffic yet); the poller."""
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        endpoint = ManagedOnlineEndpoint(
            name=name, auth_mode="key", tags=tags, description="served by ML Manager"
        )
        ops = self.ml.online_endpoints
        return self.call(f"create endpoint {name}", ops.begin_create_or_update, endpoint)

    def begin_traffic(self, name: str, traffic: dict[str, int]) -> Any:
        """Route the endpoint's traffic (deployment -> percent); the poller."""
        ops = self.ml.online_endpoints
        endpoint = self.call(f"read endpoint {name}", ops.get, name)
        endpoint.traffic = traffic
        return self.call(f"route the traffic of {name}", ops.begin_create_or_update, endpoint)

    def delete_endpoint(self, name: str) -> Any | None:
        """Start deleting the endpoint (and its deployments); None when it is gone."""
        return self._missing(f"delete endpoint {name}", self.ml.online_endpoints.begin_delete, name)

    def deployment(self, endpoint: str, name: str) -> Any | None:
        ops = self.ml.online_deployments
        return self._missing(f"read deployment {endpoint}/{name}", ops.get, name, endpoint)

    def begin_deployment(self, spec: AzureDeploymentSpec) -> Any:
        """Create the online deployment of ``spec``; the poller."""
        from azure.ai.ml.entities import ManagedOnlineDeployment

        environment: dict[str, Any] = {}
        if spec.environment is not None:
            environment = {
                "environment": f"azureml:{spec.environment}",
                "environment_variables": {"SAGEMAKER_BIND_TO_PORT": str(SERVING_PORT)},
            }
        deployment = ManagedOnlineDeployment(
            name=spec.deployment,
            endpoint_name=spec.endpoint_name,
            model=f"azureml:{spec.model_name}:{spec.model_version}",
            instance_type=spec.instance_type,
            instance_count=spec.instance_count,
            **environment,
        )
        ops = self.ml.online_deployments
        what = f"create deployment {spec.endpoint_name}/{spec.deployment}"
        return self.call(what, ops.begin_create_or_update, deployment, skip_script_validation=True)

    def delete_deployment(self, endpoint: str, name: str) -> Any | None:
        ops = self.ml.online_deployments
        return self._missing(
            f"delete deployment {endpoint}/{name}", ops.begin_delete, name, endpoint
        )


def error_message(exc: Any) -> str:
    """Azure's reason for an error (its code and message, without the SDK's boilerplate)."""
    error = getattr(exc, "error", None)
    if error is not None and getattr(error, "message", None):
        return f"{error.code}: {error.message}" if error.code else str(error.message)
    return str(getattr(exc, "message", None) or exc).splitlines()[0]


_CLOUDS: dict[str, tuple[str, dict[str, str]]] = {}


def _cloud(metadata_url: str) -> tuple[str, dict[str, str]]:
    """(name, MLClient's cloud_metadata) of the cloud Resource Manager's metadata document
    describes, read once per process."""
    if metadata_url not in _CLOUDS:
        import requests

        try:
            response = requests.get(metadata_url, timeout=30)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise TargetUnavailable(f"could not read AZURE_CLOUD_METADATA_URL: {exc}") from None
        clouds = document if isinstance(document, list) else [document]
        try:
            cloud = clouds[0]
            _CLOUDS[metadata_url] = (
                f"mlmanager-{re.sub(r'[^A-Za-z0-9]', '-', cloud['name'])}",
                {
                    "azure_portal": cloud["portal"],
                    "resource_manager": cloud["resourceManager"],
                    "active_directory": cloud["authentication"]["loginEndpoint"],
                    "aml_resource_id": cloud.get("amlResourceId", cloud["resourceManager"]),
                    "storage_endpoint": cloud["suffixes"]["storage"],
                    "registry_discovery_endpoint": cloud.get(
                        "registryDiscoveryEndpoint", cloud["resourceManager"]
                    ),
                },
            )
        except (KeyError, IndexError, TypeError) as exc:
            raise ConfigError(
                f"AZURE_CLOUD_METADATA_URL {metadata_url} is not Resource Manager's metadata "
                f"document (missing {exc})"
            ) from None
    return _CLOUDS[metadata_url]


# --- observe / reconcile -----------------------------------------------------------------
@dataclass(frozen=True)
class AzureLiveState(LiveState):
    endpoint: str | None = None  # the endpoint's provisioning state; None: no endpoint
    deployment: str | None = None  # the recorded deployment's; None: none
    traffic: dict[str, int] | None = None


def _spec_of(deployment: Deployment) -> AzureDeploymentSpec:
    if not isinstance(deployment.spec, AzureDeploymentSpec):
        raise InvalidPayload(f"deployment {deployment.id} has no Azure ML spec")
    return deployment.spec


def client_of(settings: Settings, spec: AzureDeploymentSpec) -> AzureML:
    workspace = Workspace(spec.subscription_id, spec.resource_group, spec.workspace)
    return AzureML(settings, workspace)


class AzureTarget(Target):
    """A managed online endpoint serving a model (``AzureDeploymentSpec``)."""

    name = "azure"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def observe(self, deployment: Deployment) -> AzureLiveState:
        spec = _spec_of(deployment)
        client = client_of(self.settings, spec)
        endpoint = client.endpoint(spec.endpoint_name)
        if endpoint is None:
            return AzureLiveState(drift=(f"endpoint {spec.endpoint_name} missing",))
        live = client.deployment(spec.endpoint_name, spec.deployment)
        traffic = dict(endpoint.traffic or {})
        drift = []
        if endpoint.provisioning_state not in SUCCEEDED:
            drift.append(f"endpoint {spec.endpoint_name} is {endpoint.provisioning_state}")
        if live is None:
            drift.append(f"deployment {spec.deployment} missing")
        elif live.provisioning_state not in SUCCEEDED:
            drift.append(f"deployment {spec.deployment} is {live.provisioning_state}")
        share = traffic.get(spec.deployment, 0)
        if share != 100:
            drift.append(f"deployment {spec.deployment} takes {share}% of the traffic, not 100%")
        return AzureLiveState(
            drift=tuple(drift),
            endpoint=endpoint.provisioning_state,
            deployment=None if live is None else live.provisioning_state,
            traffic=traffic,
        )

    def reconcile(self, deployment: Deployment) -> list[str]:
        """Re-create a deleted endpoint or deployment, and route all traffic back to the
        recorded deployment (the model and environment a deploy registered are kept until
        undeploy). Starts the work; a later reconcile sees it finished."""
        spec = _spec_of(deployment)
        live = self.observe(deployment)
        busy = {"Creating", "Updating", "Deleting"}
        if live.in_sync or live.endpoint in busy or live.deployment in busy:
            return []
        client = client_of(self.settings, spec)
        if live.endpoint is None:
            client.begin_endpoint(spec.endpoint_name)  # its deployment: the next reconcile
            return [f"create endpoint {spec.endpoint_name}"]
        if live.deployment is None:
            client.begin_deployment(spec)
            return [f"create deployment {spec.deployment}"]
        if (live.traffic or {}).get(spec.deployment, 0) != 100:
            client.begin_traffic(spec.endpoint_name, {spec.deployment: 100})
            return [f"route all traffic of {spec.endpoint_name} to {spec.deployment}"]
        raise DeploymentFailed(
            f"endpoint {spec.endpoint_name} or deployment {spec.deployment} is "
            f"{live.endpoint}/{live.deployment}: reconcile cannot repair that; undeploy and "
            "deploy again"
        )
