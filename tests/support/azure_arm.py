"""A local TLS stand-in for Azure Resource Manager and Azure AD, enough for azure-ai-ml to
deploy a model to a managed online endpoint; and the pieces around it (a certificate
authority made here, Azurite for the blob upload, a CONNECT proxy for the storage host).

The product reaches it only through its supported configuration: ``AZURE_CLOUD_METADATA_URL``
points at ``/metadata/endpoints`` here (Resource Manager's cloud metadata document), which
names this server as Resource Manager and as the login endpoint, and
``localhost:<azurite port>`` as the storage suffix. The SDK then uploads to
``https://devstoreaccount1.blob.localhost:<port>``: glibc does not resolve ``*.localhost``,
so the worker runs with ``HTTPS_PROXY`` set to :class:`ConnectProxy`, which tunnels to
Azurite (the way a corporate proxy would reach the real storage host). TLS is checked
against the CA made by :func:`make_certificates` (``REQUESTS_CA_BUNDLE``).

What it answers: the token endpoint (client credentials; the secret is checked, and the
workspace's routes want the token it hands out), the workspace, its default datastore
and its SAS, model and environment versions (PUT, GET, archive by PUT), online
endpoints and deployments with long-running operations (``Azure-AsyncOperation``
polled until ``Succeeded``/``Failed``). Every request is
recorded (:attr:`ArmStandIn.calls`); a request it does not know is answered 404 and
recorded with ``unknown`` set, which is how its routes were found.

Provisioning takes ``PROVISIONING_SECONDS``. A deployment on an endpoint whose name starts
with ``FAILING_PREFIX`` ends ``Failed`` with ``FAILURE``, as Azure reports a container
that never becomes ready; one on an endpoint starting with ``SLOW_PREFIX`` stays
``Creating``.

What it cannot show: Azure pulling the image and starting the container, quotas and VM
sizes, role checks (RBAC) of the service principal, real timings, and the other fields
Azure adds to its answers.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import select
import socket
import ssl
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PROVISIONING_SECONDS = 0.3
FAILING_PREFIX = "fail"
SLOW_PREFIX = "slow"
FAILURE = (
    "ResourceNotReady: User container has crashed or terminated: liveness probe failed: "
    "HTTP probe failed with statuscode: 502."
)
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public: https://github.com/Azure/Azurite).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
CONTAINER = "azureml-blobstore"
TOKEN = "stand-in-access-token"
_PROVIDER = "/providers/Microsoft.MachineLearningServices/workspaces/"
_PROBE = {
    "failureThreshold": 30,
    "successThreshold": 1,
    "timeout": "PT2S",
    "period": "PT10S",
    "initialDelay": "PT10S",
}


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def make_certificates(folder: Path, hosts: list[str]) -> Certificates:
    """A CA and a server certificate it signs for ``hosts`` (names and IP addresses)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def build(subject: str, issuer: x509.Name | None, key: Any, signer: Any, ca: bool) -> Any:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            alt: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    alt.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("mlmanager test CA", None, ca_key, ca_key, True)
    cert = build(hosts[0], ca.subject, key, ca_key, False)
    pem = serialization.Encoding.PEM
    out = Certificates(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    out.ca.write_bytes(ca.public_bytes(pem))
    out.cert.write_bytes(cert.public_bytes(pem))
    out.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return out


@dataclass
class Call:
    method: str
    path: str  # without the query
    body: Any
    status: int = 200
    unknown: bool = False

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Resource:
    kind: str  # "endpoint" | "deployment"
    body: dict[str, Any]
    state: str
    ready_at: float
    final: str = "Succeeded"
    error: str | None = None
    endpoint: str | None = None  # a deployment's endpoint


@dataclass
class Operation:
    resource: Resource
    deleting: bool = False


@dataclass
class ArmState:
    endpoints: dict[str, Resource] = field(default_factory=dict)
    deployments: dict[tuple[str, str], Resource] = field(default_factory=dict)
    models: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    environments: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)


class ArmStandIn:
    """Resource Manager + Azure AD for one workspace, on ``https://127.0.0.1:<port>``."""

    def __init__(
        self,
        certificates: Certificates,
        *,
        tenant: str,
        client_id: str,
        client_secret: str,
        subscription: str,
        resource_group: str,
        workspace: str,
        storage_port: int,
    ) -> None:
        self.tenant, self.client_id, self.client_secret = tenant, client_id, client_secret
        self.workspace_path = (
            f"/subscriptions/{subscription}/resourceGroups/{resource_group}{_PROVIDER}{workspace}"
        )
        self.workspace = workspace
        self.storage_port = storage_port
        self.state = ArmState()
        self.calls: list[Call] = []
        self.lock = threading.RLock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificates.cert, certificates.key)
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body, headers = stand_in.answer(
                    self.command, self.path, raw, self.headers.get("Authorization", "")
                )
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-ms-request-id", str(uuid.uuid4()))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ArmStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/metadata/endpoints"

    # --- what the test reads ----------------------------------------------------------
    def call_log(self, since: int = 0) -> list[str]:
        """``METHOD path`` of the calls from index ``since``, the token and polls left out,
        the workspace's prefix cut."""
        with self.lock:
            calls = self.calls[since:]
        return [
            f"{c.method} {c.path.replace(self.workspace_path, '')}"
            for c in calls
            if "/mlAsyncOperations/" not in c.path and "/oauth2/" not in c.path
        ]

    def unknown(self) -> list[str]:
        with self.lock:
            return [str(c) for c in self.calls if c.unknown]

    # --- the REST API -----------------------------------------------------------------
    def answer(
        self, method: str, target: str, raw: bytes, authorization: str = ""
    ) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(target)
        path = parts.path.rstrip("/")
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        call = Call(method, path, body)
        with self.lock:
            self.calls.append(call)
            if path.startswith(self.workspace_path) and authorization != f"Bearer {TOKEN}":
                status, answer, headers = (
                    401,
                    {"error": {"code": "InvalidAuthenticationToken", "message": "no token"}},
                    {},
                )
            else:
                status, answer, headers = self._route(method, path, parse_qs(parts.query), body)
            _add_system_data(answer, self.client_id)
            call.status = status
            if (
                status == 404
                and answer is not None
                and answer.get("error", {}).get("code") == "NoRoute"
            ):
                call.unknown = True
        return status, answer, headers

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        if path == "/metadata/endpoints":
            return 200, self._metadata(), {}
        if path.startswith(f"/{self.tenant}"):
            return self._login(method, path, body)
        if path.startswith(self.workspace_path):
            rest = path[len(self.workspace_path) :]
            return self._workspace(method, rest, query, body)
        return 404, {"error": {"code": "NoRoute", "message": f"{method} {path}"}}, {}

    def _metadata(self) -> dict[str, Any]:
        return {
            "name": "MLManagerStandIn",
            "portal": "https://portal.standin.example/",
            "resourceManager": f"{self.url}/",
            "authentication": {
                "loginEndpoint": f"{self.url}/",
                "audiences": [f"{self.url}/"],
                "tenant": "common",
                "identityProvider": "AAD",
            },
            "suffixes": {"storage": f"localhost:{self.storage_port}"},
        }

    def _login(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        base = f"{self.url}/{self.tenant}"
        if path.endswith("/.well-known/openid-configuration"):
            return (
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "issuer": f"{base}/v2.0",
                    "tenant_region_scope": "NA",
                },
                {},
            )
        if path.endswith("/oauth2/v2.0/token") and method == "POST":
            body = body or {}
            if body.get("client_id") != self.client_id or (
                body.get("client_secret") != self.client_secret
            ):
                return (
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "AADSTS7000215: Invalid client secret provided.",
                    },
                    {},
                )
            return (
                200,
                {"token_type": "Bearer", "expires_in": 3599, "access_token": TOKEN},
                {},
            )
        return 404, {"error": {"code": "NoRoute", "message": path}}, {}

    def _workspace(
        self, method: str, rest: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        ws = self.workspace_path
        if rest == "" and method == "GET":
            return 200, self._workspace_body(), {}
        if rest == "/datastores" and method == "GET":
            return 200, {"value": [self._datastore()]}, {}
        if rest == "/datastores/workspaceblobstore" and method == "GET":
            return 200, self._datastore(), {}
        if rest == "/datastores/workspaceblobstore/listSecrets" and method == "POST":
            return 200, {"secretsType": "Sas", "sasToken": self._sas()}, {}
        match = re.fullmatch(r"/(models|environments)/([^/]+)/versions/([^/]+)", rest)
        if match:
            kind, name, version = match.groups()
            store = self.state.models if kind == "models" else self.state.environments
            key = (name, version)
            if method == "GET":
                if key not in store:
                    return _not_found(f"{kind[:-1]} {name}:{version}")
                return 200, store[key], {}
            if method == "PUT":
                created = key not in store
                defaults: dict[str, Any] = {"flavors": {}} if kind == "models" else {}
                store[key] = {
                    "id": f"{ws}{rest}",
                    "name": version,
                    "type": f"Microsoft.MachineLearningServices/workspaces/{kind}/versions",
                    "properties": defaults
                    | body.get("properties", {})
                    | {"provisioningState": "Succeeded"},
                }
                return 201 if created else 200, store[key], {}
        match = re.fullmatch(r"/(models|environments)/([^/]+)/versions", rest)
        if match and method == "GET":
            kind, name = match.groups()
            store = self.state.models if kind == "models" else self.state.environments
            return 200, {"value": [v for (n, _), v in store.items() if n == name]}, {}
        match = re.fullmatch(r"/(models|environments)/([^/]+)", rest)
        if match and method in ("GET", "PUT"):
            kind, name = match.groups()
            container = {
                "id": f"{ws}{rest}",
                "name": name,
                "properties": (body or {}).get("properties", {}),
            }
            return 200, container, {}
        match = re.fullmatch(r"/onlineEndpoints/([^/]+)", rest)
        if match:
            return self._endpoint(method, match.group(1), body)
        match = re.fullmatch(r"/onlineEndpoints/([^/]+)/deployments", rest)
        if match and method == "GET":
            found = [r for (e, _), r in self.state.deployments.items() if e == match.group(1)]
            for resource in found:
                self._advance(resource)
            return 200, {"value": [r.body for r in found if r.state != "Deleted"]}, {}
        match = re.fullmatch(r"/onlineEndpoints/([^/]+)/deployments/([^/]+)", rest)
        if match:
            return self._deployment(method, *match.groups(), body)
        match = re.fullmatch(r"/onlineEndpoints/([^/]+)/listKeys", rest)
        if match and method == "POST":
            return 200, {"primaryKey": "stand-in-key-1", "secondaryKey": "stand-in-key-2"}, {}
        match = re.fullmatch(r"/mlAsyncOperations/([^/]+)", rest)
        if match and method == "GET":
            return self._operation(match.group(1))
        return 404, {"error": {"code": "NoRoute", "message": f"{method} {rest}"}}, {}

    def _workspace_body(self) -> dict[str, Any]:
        return {
            "id": self.workspace_path,
            "name": self.workspace,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": "eastus",
            "kind": "Default",
            "properties": {
                "friendlyName": self.workspace,
                "workspaceId": "00000000-0000-0000-0000-00000000a11e",
                "discoveryUrl": f"{self.url}/discovery",
                "storageAccount": f"/subscriptions/x/resourceGroups/y/providers/"
                f"Microsoft.Storage/storageAccounts/{AZURITE_ACCOUNT}",
                "provisioningState": "Succeeded",
            },
        }

    def _datastore(self) -> dict[str, Any]:
        return {
            "id": f"{self.workspace_path}/datastores/workspaceblobstore",
            "name": "workspaceblobstore",
            "type": "Microsoft.MachineLearningServices/workspaces/datastores",
            "properties": {
                "datastoreType": "AzureBlob",
                "accountName": AZURITE_ACCOUNT,
                "containerName": CONTAINER,
                "endpoint": f"localhost:{self.storage_port}",
                "protocol": "https",
                "isDefault": True,
                "credentials": {"credentialsType": "AccountKey"},
            },
        }

    def _sas(self) -> str:
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        return generate_container_sas(
            AZURITE_ACCOUNT,
            CONTAINER,
            account_key=AZURITE_KEY,
            permission=ContainerSasPermissions(read=True, write=True, list=True, create=True),
            expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
        )

    # --- long-running resources -------------------------------------------------------
    def _advance(self, resource: Resource) -> None:
        if resource.state in ("Succeeded", "Failed") or time.monotonic() < resource.ready_at:
            return
        endpoint = resource.endpoint or resource.body["name"]
        if resource.state == "Deleting":
            if resource.kind == "endpoint":
                self.state.endpoints.pop(endpoint, None)
                for key in [k for k in self.state.deployments if k[0] == endpoint]:
                    del self.state.deployments[key]
            else:
                self.state.deployments.pop((endpoint, resource.body["name"]), None)
            resource.state = "Deleted"
            return
        if resource.kind == "deployment" and endpoint.startswith(SLOW_PREFIX):
            return
        if resource.kind == "deployment" and endpoint.startswith(FAILING_PREFIX):
            resource.state, resource.error = "Failed", FAILURE
        else:
            resource.state = resource.final
        resource.body["properties"]["provisioningState"] = resource.state

    def _start(self, resource: Resource, state: str) -> dict[str, str]:
        resource.state = state
        resource.body["properties"]["provisioningState"] = state
        resource.ready_at = time.monotonic() + PROVISIONING_SECONDS
        operation = str(uuid.uuid4())
        self.state.operations[operation] = Operation(resource, deleting=state == "Deleting")
        url = f"{self.url}{self.workspace_path}/mlAsyncOperations/{operation}"
        return {"Azure-AsyncOperation": url, "Location": url, "Retry-After": "1"}

    def _operation(self, operation_id: str) -> tuple[int, Any, dict[str, str]]:
        operation = self.state.operations.get(operation_id)
        if operation is None:
            return _not_found(f"operation {operation_id}")
        resource = operation.resource
        self._advance(resource)
        if resource.state in ("Succeeded", "Deleted"):
            return 200, {"status": "Succeeded"}, {}
        if resource.state == "Failed":
            code, _, message = (resource.error or "Failed: ").partition(": ")
            return 200, {"status": "Failed", "error": {"code": code, "message": message}}, {}
        return 200, {"status": "InProgress"}, {"Retry-After": "1"}

    def _endpoint(self, method: str, name: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        resource = self.state.endpoints.get(name)
        if resource is not None:
            self._advance(resource)
            resource = self.state.endpoints.get(name)
        if method == "GET":
            return (200, resource.body, {}) if resource else _not_found(f"endpoint {name}")
        if method == "PUT":
            properties = dict(body.get("properties", {}))
            if resource is None:
                resource = Resource("endpoint", {}, "Creating", 0.0)
                self.state.endpoints[name] = resource
                status, state = 201, "Creating"
            else:
                status, state = 200, "Updating"
            properties |= {
                "scoringUri": f"https://{name}.eastus.inference.ml.azure.com/score",
                "traffic": properties.get("traffic") or {},
            }
            resource.body = {
                "id": f"{self.workspace_path}/onlineEndpoints/{name}",
                "name": name,
                "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints",
                "location": body.get("location", "eastus"),
                "kind": "Managed",
                "tags": body.get("tags") or {},
                "identity": {"type": "SystemAssigned"},
                "properties": properties,
            }
            headers = self._start(resource, state)
            return status, resource.body, headers
        if method == "DELETE":
            if resource is None:
                return 204, None, {}
            return 202, None, self._start(resource, "Deleting")
        return 404, {"error": {"code": "NoRoute", "message": f"{method} {name}"}}, {}

    def _deployment(
        self, method: str, endpoint: str, name: str, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        key = (endpoint, name)
        resource = self.state.deployments.get(key)
        if resource is not None:
            self._advance(resource)
            resource = self.state.deployments.get(key)
        if method == "GET":
            return (200, resource.body, {}) if resource else _not_found(f"deployment {name}")
        if method == "PUT":
            if endpoint not in self.state.endpoints:
                return _not_found(f"endpoint {endpoint}")
            created = resource is None
            resource = Resource("deployment", {}, "Creating", 0.0, endpoint=endpoint)
            self.state.deployments[key] = resource
            resource.body = {
                "id": f"{self.workspace_path}/onlineEndpoints/{endpoint}/deployments/{name}",
                "name": name,
                "type": "Microsoft.MachineLearningServices/workspaces/onlineEndpoints/deployments",
                "location": body.get("location", "eastus"),
                "kind": "Managed",
                "sku": body.get("sku") or {"name": "Default", "capacity": 1},
                "tags": body.get("tags") or {},
                # The defaults Azure fills in (the SDK reads them back).
                "properties": {
                    "scaleSettings": {"scaleType": "Default"},
                    "requestSettings": {
                        "requestTimeout": "PT5S",
                        "maxConcurrentRequestsPerInstance": 1,
                    },
                    "livenessProbe": _PROBE,
                    "readinessProbe": _PROBE,
                    **body.get("properties", {}),
                },
            }
            headers = self._start(resource, "Creating" if created else "Updating")
            return 201 if created else 200, resource.body, headers
        if method == "DELETE":
            if resource is None:
                return 204, None, {}
            return 202, None, self._start(resource, "Deleting")
        return 404, {"error": {"code": "NoRoute", "message": f"{method} {name}"}}, {}


def _add_system_data(answer: Any, client_id: str) -> None:
    """Resource Manager's ``systemData`` on every resource answered (the SDK reads it)."""
    resources = answer.get("value", [answer]) if isinstance(answer, dict) else []
    now = dt.datetime.now(dt.UTC).isoformat()
    for resource in resources:
        if isinstance(resource, dict) and "id" in resource:
            resource.setdefault(
                "systemData",
                {
                    "createdBy": client_id,
                    "createdByType": "Application",
                    "createdAt": now,
                    "lastModifiedBy": client_id,
                    "lastModifiedByType": "Application",
                    "lastModifiedAt": now,
                },
            )


def _not_found(what: str) -> tuple[int, Any, dict[str, str]]:
    return 404, {"error": {"code": "ResourceNotFound", "message": f"{what} not found"}}, {}


# --- the storage host: a CONNECT proxy to Azurite ------------------------------------------
class ConnectProxy:
    """An HTTP CONNECT proxy that tunnels ``*.localhost:<port>`` to ``127.0.0.1:<port>``
    (and refuses anything else); records the hosts it tunnelled to."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        with client:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = client.recv(4096)
                if not chunk:
                    return
                request += chunk
            line = request.split(b"\r\n", 1)[0].decode()
            method, target, _ = line.split(" ", 2)
            host, _, port = target.rpartition(":")
            if method != "CONNECT" or not (host == "localhost" or host.endswith(".localhost")):
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            self.hosts.append(target)
            with socket.create_connection(("127.0.0.1", int(port))) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                sockets = [client, upstream]
                while True:
                    readable, _, _ = select.select(sockets, [], [], 60)
                    if not readable:
                        return
                    for s in readable:
                        data = s.recv(65536)
                        if not data:
                            return
                        (upstream if s is client else client).sendall(data)

    def stop(self) -> None:
        self.running = False
        self.sock.close()


def start_azurite(
    azurite: str, folder: Path, port: int, certificates: Certificates
) -> subprocess.Popen[bytes]:
    """Azurite's blob service over HTTPS on ``port``, its data in ``folder``."""
    with (folder / "azurite.log").open("ab") as log:
        return subprocess.Popen(
            [
                azurite,
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--location",
                str(folder),
                "--cert",
                str(certificates.cert),
                "--key",
                str(certificates.key),
                "--skipApiVersionCheck",
                "--silent",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if Node has not exited after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
