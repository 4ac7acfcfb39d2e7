"""A small client of ML Manager's REST API (the command line and the deployments plugin).

Like the MLflow client it reads the server from MLFLOW_TRACKING_URI and the login
from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests

from shared.errors import (
    DeploymentConflict,
    InvalidPayload,
    MLManagerError,
    NotAuthenticated,
    NotAuthorized,
    NotFound,
    TargetUnavailable,
)
from shared.settings import Settings

API = "/api/2.0/mlmanager"
_ERRORS: dict[int, type[MLManagerError]] = {
    400: InvalidPayload,
    401: NotAuthenticated,
    403: NotAuthorized,
    404: NotFound,
    409: DeploymentConflict,
}
FINISHED = ("SUCCESS", "FAILURE", "CANCELLED")


class MLManagerClient:
    def __init__(self, base_url: str, username: str | None, password: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        if username is not None:
            self.session.auth = (username, password or "")

    @classmethod
    def from_settings(cls, settings: Settings) -> MLManagerClient:
        password = settings.mlflow_tracking_password
        return cls(
            settings.mlflow_tracking_uri or settings.server_url,
            settings.mlflow_tracking_username,
            password.get_secret_value() if password else None,
        )

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        url = f"{self.base_url}{path}"
        try:
            r = self.session.request(method, url, timeout=kw.pop("timeout", 60), **kw)
        except requests.RequestException as exc:
            raise TargetUnavailable(f"cannot reach ML Manager at {self.base_url}: {exc}") from None
        if r.status_code >= 400:
            try:
                body = r.json()
                message, field = body.get("message", r.text), body.get("field")
            except ValueError:
                message, field = r.text.strip()[:500], None
            error = _ERRORS.get(r.status_code, TargetUnavailable)
            raise error(f"{message} (HTTP {r.status_code})", field=field)
        return r.json()

    def submit(self, handler_name: str, payload: dict[str, Any]) -> dict[str, Any]:
        body = {"handler_name": handler_name, "payload": payload}
        return dict(self._call("POST", f"{API}/jobs", json=body))

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"{API}/jobs/{job_id}"))

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        return list(self._call("GET", f"{API}/jobs", params=params)["jobs"])

    def logs(self, job_id: int, after: int = 0) -> dict[str, Any]:
        return dict(self._call("GET", f"{API}/jobs/{job_id}/logs", params={"after": after}))

    def cancel(self, job_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/jobs/{job_id}/cancel"))

    def deployments(self, **filters: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in filters.items() if v is not None}
        return list(self._call("GET", f"{API}/deployments", params=params)["deployments"])

    def deployment(self, deployment_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"{API}/deployments/{deployment_id}"))

    def delete_deployment(self, deployment_id: int) -> dict[str, Any]:
        return dict(self._call("DELETE", f"{API}/deployments/{deployment_id}"))

    def create_schedule(self, payload: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/schedules", json=payload))

    def schedules(self) -> list[dict[str, Any]]:
        return list(self._call("GET", f"{API}/schedules", params={"limit": 500})["schedules"])

    def schedule(self, schedule_id: int, action: str | None = None) -> dict[str, Any]:
        """GET the schedule, or POST one of its actions (pause, resume, run)."""
        if action is None:
            return dict(self._call("GET", f"{API}/schedules/{schedule_id}"))
        return dict(self._call("POST", f"{API}/schedules/{schedule_id}/{action}"))

    def delete_schedule(self, schedule_id: int) -> dict[str, Any]:
        return dict(self._call("DELETE", f"{API}/schedules/{schedule_id}"))

    def rollback_deployment(self, deployment_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/deployments/{deployment_id}/rollback"))

    def follow(self, job_id: int, after: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``("log", line)`` events, then one ``("end", job)``, from the SSE stream."""
        url = f"{self.base_url}{API}/jobs/{job_id}/logs/stream"
        try:
            with self.session.get(url, params={"after": after}, stream=True, timeout=None) as r:
                if r.status_code >= 400:
                    self._call("GET", f"{API}/jobs/{job_id}")  # raises the matching error
                event: dict[str, str] = {}
                # Decoded here: iter_lines(decode_unicode=True) yields bytes when the response
                # names no charset, and Server-Sent Events are always UTF-8.
                for line in r.iter_lines():
                    raw = line.decode("utf-8")
                    if raw:
                        if not raw.startswith(":"):
                            key, _, value = raw.partition(": ")
                            event[key] = value
                        continue
                    if "data" in event:
                        yield event.get("event", "log"), json.loads(event["data"])
                        if event.get("event") == "end":
                            return
                    event = {}
        except requests.RequestException as exc:
            raise TargetUnavailable(f"lost the log stream of job {job_id}: {exc}") from None
