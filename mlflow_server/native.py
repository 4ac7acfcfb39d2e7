"""MLflow's native FastAPI routes, served by our gunicorn gthread workers beside Flask.

``mlflow server`` builds its FastAPI app (OTLP ``POST /v1/traces``, jobs, gateway,
assistant, MCP servers, server-info) only under uvicorn; under gunicorn it serves the
Flask app alone and those routes answer 404. We keep gunicorn's threaded workers (a
Server-Sent Events client holds a thread, and a dropped client is noticed on write)
and put :class:`Dispatcher` in front: a request that only the FastAPI app can route
goes to it through a2wsgi (an event loop thread per worker); everything else reaches
Flask exactly as before, after one prefix test.

Authentication of native routes, outermost first: :class:`RequireUser` authenticates
with the very function the Flask guard uses (401), and refuses non-admins on a native
route MLflow has no validator for (a route added by a future MLflow stays closed until
someone checks it); then MLflow's own FastAPI permission middleware runs its
validators (403 where its basic-auth would refuse).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anyio
from a2wsgi import ASGIMiddleware
from flask import Flask, Response
from starlette.routing import Match, Mount
from werkzeug.exceptions import HTTPException


def native_routes(app: Any) -> list[Any]:
    """The routes FastAPI serves itself (included routers flattened; not the Flask mount)."""

    def walk(routes: Iterable[Any]) -> Iterable[Any]:
        for route in routes:
            if hasattr(route, "effective_candidates"):
                yield from walk(route.effective_candidates())
            elif not isinstance(route, Mount):
                yield route

    return list(walk(app.routes))


class RequireUser:
    """ASGI layer: every protected native route needs a user, as every Flask route does."""

    def __init__(self, app: Any, flask_app: Flask) -> None:
        self.app = app
        self.flask_app = flask_app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from mlflow.server import auth as mlflow_auth

        if scope["type"] == "http" and not mlflow_auth.is_unprotected_route(scope["path"]):
            # The authentication function may connect to the database: off the loop.
            refusal = await anyio.to_thread.run_sync(self._refusal, scope)
            if refusal is not None:
                await mlflow_auth._flask_response_to_starlette(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Any) -> Response | None:
        from mlflow.server import auth as mlflow_auth

        from mlflow_server.auth import authenticate

        headers = {k.decode("latin1"): v.decode("latin1") for k, v in scope["headers"]}
        with self.flask_app.test_request_context(
            path=scope["path"],
            method=scope["method"],
            headers=headers,
            query_string=scope.get("query_string", b""),
        ):
            result = authenticate(ours=False)
            if isinstance(result, Response):
                return result
            unchecked = mlflow_auth._find_fastapi_validator(scope["path"], scope["method"]) is None
            if unchecked and not mlflow_auth.store.get_user(result.username).is_admin:
                return mlflow_auth.make_forbidden_response()
        return None


class Dispatcher:
    """WSGI app: Flask for what Flask routes, MLflow's FastAPI app for the rest it routes."""

    def __init__(self, flask_app: Flask) -> None:
        from mlflow.server.auth import add_fastapi_permission_middleware
        from mlflow.server.fastapi_app import create_fastapi_app

        self.flask_app = flask_app
        self.fastapi_app = create_fastapi_app(flask_app)
        add_fastapi_permission_middleware(self.fastapi_app)
        self.routes = native_routes(self.fastapi_app)
        # Literal heads of the native paths: most requests (tracking) fail this one test.
        self.prefixes = tuple({r.path.split("{", 1)[0] for r in self.routes})
        self.native = ASGIMiddleware(RequireUser(self.fastapi_app, flask_app))

    def serves(self, method: str, path: str) -> str | None:
        """Who answers ``method path``: "flask", "fastapi", or None (no route)."""
        adapter = self.flask_app.url_map.bind("localhost")
        try:
            adapter.match(path, method)
            return "flask"
        except HTTPException:
            pass
        scope = {"type": "http", "path": path, "method": method, "root_path": "", "headers": []}
        if any(route.matches(scope)[0] == Match.FULL for route in self.routes):
            return "fastapi"
        return None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path.startswith(self.prefixes) and self.serves(environ["REQUEST_METHOD"], path) == (
            "fastapi"
        ):
            return self.native(environ, start_response)  # type: ignore[arg-type]
        return self.flask_app(environ, start_response)
