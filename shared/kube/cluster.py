"""Talking to the cluster: server-side apply, read, delete, and the rollout watch.

One client (the official ``kubernetes`` package) from ``KUBECONFIG``, the in-cluster
service account, or ``~/.kube/config``. Every API error becomes one of ours: a refused
permission names the verb and resource (the API server's own message), an object the
API server rejects is the user's to fix (4xx), an unreachable or failing API server is
``TargetUnavailable`` (the job is retried).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shared.errors import InvalidPayload, NotAuthorized, TargetUnavailable
from shared.kube.spec import FIELD_MANAGER, selector
from shared.settings import Settings

Manifest = dict[str, Any]

# kind -> (API path prefix, plural) of every kind this target creates or reads.
KINDS: dict[str, tuple[str, str]] = {
    "Secret": ("/api/v1", "secrets"),
    "Service": ("/api/v1", "services"),
    "Pod": ("/api/v1", "pods"),
    "Event": ("/api/v1", "events"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Job": ("/apis/batch/v1", "jobs"),
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses"),
}
# Container states and pod conditions a rollout does not recover from by waiting.
FATAL_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
FATAL_EVENTS = frozenset({"FailedScheduling", "FailedCreate", "Failed", "BackOff"})


class RolloutFailed(InvalidPayload):
    """The pods did not become available: the reason Kubernetes gave."""

    http_status = 422


@dataclass(frozen=True)
class Rollout:
    desired: int
    updated: int
    ready: int
    available: int
    total: int
    generation_seen: bool

    @property
    def complete(self) -> bool:
        return (
            self.generation_seen
            and self.updated >= self.desired
            and self.available >= self.desired
            and self.total == self.updated
        )

    def line(self) -> str:
        return (
            f"{self.updated}/{self.desired} updated, {self.ready} ready, "
            f"{self.available} available, {self.total - self.updated} old"
        )


def rollout_of(obj: Manifest) -> Rollout:
    status = obj.get("status") or {}
    meta = obj.get("metadata") or {}
    return Rollout(
        desired=int((obj.get("spec") or {}).get("replicas", 1)),
        updated=int(status.get("updatedReplicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        total=int(status.get("replicas") or 0),
        generation_seen=int(status.get("observedGeneration") or 0)
        >= int(meta.get("generation") or 0),
    )


def _api_error(exc: Exception, verb: str, what: str) -> Exception:
    from kubernetes.client.exceptions import ApiException

    if not isinstance(exc, ApiException):
        return TargetUnavailable(f"cannot reach the Kubernetes API server to {verb} {what}: {exc}")
    message = exc.reason or ""
    with contextlib.suppress(ValueError, AttributeError):
        message = json.loads(exc.body or "{}").get("message") or message
    if exc.status in (401, 403):
        return NotAuthorized(f"the worker may not {verb} {what} on Kubernetes: {message}")
    if exc.status is not None and 400 <= exc.status < 500:
        return InvalidPayload(f"Kubernetes refused to {verb} {what}: {message}")
    return TargetUnavailable(f"the Kubernetes API server failed to {verb} {what}: {message}")


class Cluster:
    """The cluster of ``KUBECONFIG`` (or in-cluster), in one namespace."""

    def __init__(self, settings: Settings, namespace: str | None = None) -> None:
        from kubernetes import client, config

        self.namespace = namespace or settings.namespace
        try:
            if settings.kubeconfig is not None:
                self.api = config.new_client_from_config(config_file=str(settings.kubeconfig))
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                self.api = client.ApiClient(configuration)
            else:
                self.api = config.new_client_from_config()
        except config.ConfigException as exc:
            raise TargetUnavailable(
                f"no Kubernetes cluster configured (KUBECONFIG, in-cluster): {exc}"
            ) from exc
        self.apps = client.AppsV1Api(self.api)
        self.core = client.CoreV1Api(self.api)

    def close(self) -> None:
        self.api.close()

    def _path(self, kind: str, name: str | None = None) -> str:
        prefix, plural = KINDS[kind]
        path = f"{prefix}/namespaces/{self.namespace}/{plural}"
        return path if name is None else f"{path}/{name}"

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Manifest:
        """One API call; its JSON answer. Raises ``ApiException`` for a non-2xx answer."""
        from kubernetes.client.exceptions import ApiException

        request = self.api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request, _request_timeout=30)
        response.read()
        text = (response.data or b"").decode()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return dict(json.loads(text or "{}"))

    def _call(
        self,
        method: str,
        kind: str,
        name: str | None,
        verb: str,
        *,
        missing_ok: bool = False,
        **kw: Any,
    ) -> Manifest | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._request(method, self._path(kind, name), **kw)
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            raise _api_error(exc, verb, self._what(kind, name)) from exc
        except Exception as exc:
            raise _api_error(exc, verb, self._what(kind, name)) from exc

    @staticmethod
    def _what(kind: str, name: str | None) -> str:
        _, plural = KINDS[kind]
        return plural if name is None else f"{plural} {name!r}"

    def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply (field manager ``mlmanager``, taking over conflicting fields)."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        applied = self._call(
            "PATCH",
            kind,
            name,
            "patch",
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=manifest,
            content_type="application/apply-patch+yaml",
        )
        assert applied is not None
        return applied

    def get(self, kind: str, name: str) -> Manifest | None:
        return self._call("GET", kind, name, "get", missing_ok=True)

    def list(
        self, kind: str, label_selector: dict[str, str] | None = None, field_selector: str = ""
    ) -> list[Manifest]:
        query = []
        if label_selector:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in label_selector.items())))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        found = self._call("GET", kind, None, "list", query=query)
        return list((found or {}).get("items") or [])

    def delete(self, kind: str, name: str) -> bool:
        """Delete with foreground propagation; False when it was not there."""
        body = {"propagationPolicy": "Foreground"}
        return self._call("DELETE", kind, name, "delete", missing_ok=True, body=body) is not None

    def wait_gone(self, kind: str, name: str, timeout: float, check: Callable[[], None]) -> None:
        deadline = time.monotonic() + timeout
        while self.get(kind, name) is not None:
            if time.monotonic() > deadline:
                raise TargetUnavailable(
                    f"{self._what(kind, name)} still exists after {timeout:.0f} s"
                )
            check()
            time.sleep(0.25)

    @contextmanager
    def _watching(self) -> Iterator[Any]:
        from kubernetes import watch

        w = watch.Watch()
        try:
            yield w
        finally:
            w.stop()

    def wait_rollout(
        self,
        name: str,
        timeout: float,
        progress: Callable[[str], None],
        check: Callable[[], None],
        since: float,
    ) -> Rollout:
        """Watch the Deployment until its rollout completes; fail fast with the reason
        of an event or container state that waiting will not fix."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            obj = self.get("Deployment", name)
            if obj is None:
                raise RolloutFailed(f"deployment {name!r} disappeared during its rollout")
            state = rollout_of(obj)
            if state.line() != last:
                last = state.line()
                progress(f"rollout of {name}: {last}")
            if state.complete:
                return state
            self._fail_fast(name, obj, since)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RolloutFailed(
                    f"deployment {name!r} was not available after {timeout:.0f} s ({last})"
                )
            check()
            version = obj["metadata"].get("resourceVersion")
            with self._watching() as w:
                try:
                    for _ in w.stream(
                        self.apps.list_namespaced_deployment,
                        self.namespace,
                        field_selector=f"metadata.name={name}",
                        resource_version=version,
                        timeout_seconds=max(1, min(2, int(remaining))),
                    ):
                        break  # a change: read the state again (events included)
                except Exception as exc:
                    raise _api_error(exc, "watch", self._what("Deployment", name)) from exc

    def _fail_fast(self, name: str, obj: Manifest, since: float) -> None:
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if condition.get("reason") == "ProgressDeadlineExceeded":
                raise RolloutFailed(f"deployment {name!r}: {condition.get('message')}")
            if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
                raise RolloutFailed(
                    f"deployment {name!r}: {condition.get('reason')}: {condition.get('message')}"
                )
        pods = self.list("Pod", selector(name))
        for pod in pods:
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (status.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in FATAL_WAITING:
                    raise RolloutFailed(
                        f"pod {pod['metadata']['name']}: {waiting['reason']}: "
                        f"{waiting.get('message', '')}".rstrip(": ")
                    )
        owned = {p["metadata"]["name"] for p in pods} | {
            rs["metadata"]["name"] for rs in self.list("ReplicaSet", selector(name))
        }
        for event in self.list("Event", field_selector="type=Warning"):
            involved = event.get("involvedObject") or {}
            message = event.get("message") or ""
            if (
                event.get("reason") in FATAL_EVENTS
                and involved.get("name") in owned
                and _event_time(event) >= since
                # A namespace's service account appears moments after the namespace.
                and "serviceaccount" not in message.lower()
            ):
                raise RolloutFailed(
                    f"{involved.get('kind', '').lower()} {involved.get('name')}: "
                    f"{event.get('reason')}: {event.get('message', '').strip()}"
                )


def _event_time(event: Manifest) -> float:
    import datetime as dt

    stamp = (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event["metadata"].get("creationTimestamp")
    )
    if not stamp:
        return 0.0
    return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
