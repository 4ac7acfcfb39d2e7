"""moto's server (S3, SageMaker, STS) extended with what SageMaker does and moto does not.

Run as a process of its own (``python -m tests.support.moto_server PORT CALL_LOG``); the
product reaches it only through boto3 with ``AWS_ENDPOINT_URL``. The extension, here and
not in the product:

- ``UpdateEndpoint`` (moto 5.2 has none): the endpoint is ``Updating`` for a few reads,
  then serves the new configuration (``InService``).
- Endpoints are not ``InService`` at once: ``Creating`` for ``TRANSITION_READS`` reads
  of DescribeEndpoint, then ``InService``.
- An endpoint whose name starts with ``FAILING_PREFIX`` ends ``Failed`` with a
  ``FailureReason``, as SageMaker reports a container that never answers ``/ping``; an
  update of an endpoint whose name ends with ``ROLLBACK_SUFFIX`` is rolled back: the
  endpoint is ``InService`` again on its old configuration, with a ``FailureReason``.
- An endpoint whose name starts with ``SLOW_PREFIX`` stays ``Creating``.
- Every API call is appended to CALL_LOG as ``service:Action`` (S3: ``s3:METHOD /path``),
  so a test can assert what a deploy calls, in order.

What it cannot show: that SageMaker pulls the image and starts the container (the
tests run the container's process themselves), real timings, IAM checks of the role,
and SageMaker's validation of instance types and quotas.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRANSITION_READS = 2
FAILING_PREFIX = "fail"
SLOW_PREFIX = "slow"
ROLLBACK_SUFFIX = "-rollback"
FAILURE_REASON = (
    "The primary container for production variant {variant} did not pass the ping "
    "health check. Please check CloudWatch logs for this endpoint."
)


def _extend() -> None:
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import FakeEndpoint, SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    # --- status that changes over reads -------------------------------------------------
    original_init = FakeEndpoint.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.endpoint_status = "Creating"
        self.reads = 0
        self.pending_config: tuple[str, list[dict[str, Any]]] | None = None

    FakeEndpoint.__init__ = init  # type: ignore[method-assign]

    def advance(endpoint: Any) -> None:
        endpoint.reads += 1
        if endpoint.reads < TRANSITION_READS or endpoint.endpoint_name.startswith(SLOW_PREFIX):
            return
        variant = endpoint.production_variants[0]["VariantName"]
        if endpoint.endpoint_status == "Creating":
            if endpoint.endpoint_name.startswith(FAILING_PREFIX):
                endpoint.endpoint_status = "Failed"
                endpoint.failure_reason = FAILURE_REASON.format(variant=variant)
            else:
                endpoint.endpoint_status = "InService"
        elif endpoint.endpoint_status == "Updating" and endpoint.pending_config is not None:
            name, variants = endpoint.pending_config
            endpoint.pending_config = None
            endpoint.endpoint_status = "InService"
            if endpoint.endpoint_name.endswith(ROLLBACK_SUFFIX):  # the old configuration stays
                endpoint.failure_reason = FAILURE_REASON.format(variant=variants[0]["VariantName"])
            else:
                endpoint.endpoint_config_name = name
                endpoint.production_variants = endpoint._process_production_variants(variants)
                endpoint.failure_reason = None

    original_describe = SageMakerModelBackend.describe_endpoint

    def describe(self: Any, endpoint_name: str) -> Any:
        if endpoint_name in self.endpoints:
            advance(self.endpoints[endpoint_name])
        return original_describe(self, endpoint_name)

    SageMakerModelBackend.describe_endpoint = describe  # type: ignore[method-assign]

    # --- UpdateEndpoint -------------------------------------------------------------
    def update_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str) -> str:
        endpoint = self.endpoints.get(endpoint_name)
        if endpoint is None:
            raise ValidationError(message=f"Could not find endpoint '{endpoint_name}'.")
        if endpoint.endpoint_status != "InService":
            raise ValidationError(message=f"Cannot update in-progress endpoint '{endpoint.arn}'.")
        config = self.describe_endpoint_config(endpoint_config_name)
        endpoint.endpoint_status = "Updating"
        endpoint.reads = 0
        endpoint.pending_config = (endpoint_config_name, config["ProductionVariants"])
        return str(endpoint.arn)

    SageMakerModelBackend.update_endpoint = update_endpoint  # type: ignore[attr-defined]

    def update_endpoint_action(self: Any) -> Any:
        from moto.core.responses import ActionResult

        arn = self.sagemaker_backend.update_endpoint(
            endpoint_name=self._get_param("EndpointName"),
            endpoint_config_name=self._get_param("EndpointConfigName"),
        )
        return ActionResult({"EndpointArn": arn})

    SageMakerResponse.update_endpoint = update_endpoint_action  # type: ignore[attr-defined]


class _Recorder:
    """WSGI middleware: one line per API call, before moto answers it."""

    def __init__(self, app: Any, call_log: Path) -> None:
        self.app, self.call_log = app, call_log

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        import io
        from urllib.parse import parse_qs

        credential = environ.get("HTTP_AUTHORIZATION", "").partition("Credential=")[2]
        service = credential.split("/")[3] if credential.count("/") >= 4 else "?"
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            action = target.rpartition(".")[2]
        elif service == "s3":
            action = f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}"
        else:  # the query protocol (STS): Action in the form body
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            action = parse_qs(body.decode()).get("Action", ["?"])[0]
        with self.call_log.open("a") as out:
            out.write(f"{service}:{action}\n")
        return self.app(environ, start_response)


@dataclass
class Moto:
    """The running stand-in: its URL, the calls it answered (``calls``), boto3 clients."""

    url: str
    calls_file: Path
    proc: subprocess.Popen[bytes]
    region: str
    access_key: str
    secret_key: str

    def calls(self) -> list[str]:
        return self.calls_file.read_text().splitlines() if self.calls_file.exists() else []

    def reset_calls(self) -> None:
        self.calls_file.write_text("")

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )


@contextlib.contextmanager
def running_moto(root: Path, region: str, access_key: str, secret_key: str) -> Iterator[Moto]:
    """This module's server as a process on a free port (log and call log under ``root``),
    answering; stopped afterwards."""
    from tests.support.pg import free_port
    from tests.support.processes import ROOT, terminate, wait_http_ok

    port = free_port()
    with (root / "moto.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.moto_server", str(port), str(root / "calls")],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{url}/moto-api/", proc, root / "moto.log", timeout=60)
        yield Moto(url, root / "calls", proc, region, access_key, secret_key)
    finally:
        terminate(proc, timeout=30)


def main() -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    port, call_log = int(sys.argv[1]), Path(sys.argv[2])
    _extend()
    app = _Recorder(DomainDispatcherApplication(create_backend_app), call_log)
    run_simple("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
