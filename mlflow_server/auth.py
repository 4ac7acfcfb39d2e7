"""Who is calling: MLflow's authentication for our routes, and database logins.

MLflow's auth app authenticates every request and then looks for a permission
validator of the route; our routes have none (they authorize per job and per
deployment themselves), so MLflow would refuse them to non-admins. ``guard``
wraps MLflow's check: on our routes it only authenticates, with the very same
authentication function; everywhere else MLflow's check runs unchanged.

With ``AUTH_BACKEND=database`` the authentication function is
:func:`authenticate_request_database`: a username/password is valid if a
connection to the database as that user succeeds (how the original logged users
in). A successful login creates or updates the matching MLflow user, so MLflow's
permissions still apply; the database password is never stored.

With either backend, a job token (``shared.job_tokens``) is accepted as the password of
its user while its job runs: how a retraining project logs its run as the schedule's
owner (``guard`` puts the token check in front of the configured function).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from flask import Flask, Response, g, jsonify, request
from sqlalchemy.engine import make_url

from mlflow_server.bodies import check_body
from mlflow_server.csrf import refuse_forgery
from mlflow_server.model_route import is_model_route
from mlflow_server.part_route import is_part_route
from mlflow_server.schemas import API_PREFIX, UI_PREFIX
from shared import job_tokens
from shared.db import get_engine
from shared.errors import NotAuthenticated
from shared.settings import get_settings

# The REST API and the pages (``mlflow_server.ui``): authenticated here, authorized by
# their own handlers.
OUR_PREFIXES = (API_PREFIX + "/", "/api/rest/", UI_PREFIX + "/")
DB_LOGIN_CACHE_SECONDS = 60.0


def guard(app: Flask) -> None:
    """Replace MLflow's before-request check by ours, in front of every protected route.

    In order: a request that may be forged by another site is refused (``csrf``);
    credentials that cannot be HTTP basic auth are refused (401, JSON) before
    any authentication function sees them; the user is authenticated; a JSON body is
    parsed strictly (``bodies.check_body``) before any permission check or handler
    reads it; then our routes go to their handler (they authorize per job and per
    deployment) and MLflow's routes to MLflow's unchanged check.
    """
    from mlflow.server import auth as mlflow_auth

    # Job tokens first, then the configured function. Wrapped here rather than configured
    # as MLflow's authorization_function: with its own basic-auth function configured,
    # MLflow's UI keeps its logout and change-password (it hides them for any other).
    configured = mlflow_auth.authenticate_request
    if not getattr(configured, "accepts_job_tokens", False):

        def authenticate_request() -> Any:
            return _job_token_login() or configured()

        authenticate_request.accepts_job_tokens = True  # type: ignore[attr-defined]
        mlflow_auth.authenticate_request = authenticate_request

    funcs = app.before_request_funcs.setdefault(None, [])
    position = funcs.index(mlflow_auth._before_request)
    mlflow_check = funcs[position]

    def check() -> Any:
        ours = request.path.startswith(OUR_PREFIXES)
        if is_part_route(request.path):
            # A part of MLflow's multipart upload: its signed URL is its credential
            # (part_route), its body the part's bytes (not JSON).
            refuse_forgery(request, False)
            return None
        refuse_forgery(request, ours)
        if mlflow_auth.is_unprotected_route(request.path):
            return mlflow_check()
        if is_model_route(request.path):
            return None  # a serving pod's token, checked by the route itself
        result = authenticate(ours)
        if isinstance(result, Response):
            return result
        check_body(request, ours)
        if not ours:
            # Authenticates again (MLflow caches the check), then authorizes.
            return mlflow_check()
        g.mlflow_authenticated_user = result.username
        return None

    funcs[position] = check


def authenticate(ours: bool) -> Any:
    """The caller's MLflow ``Authorization``, or the 401 response that refuses the request.

    Used by the Flask guard and by the native FastAPI routes (``native.RequireUser``).
    """
    from mlflow.server import auth as mlflow_auth

    problem = unusable_credentials()
    if problem is not None:
        return _unauthenticated(problem)
    result = mlflow_auth.authenticate_request()
    if isinstance(result, Response):
        # Ours answer JSON like every other answer of our API; MLflow's keep its reply.
        return _unauthenticated("log in with HTTP basic auth") if ours else result
    return result


def unusable_credentials() -> str | None:
    """Why the ``Authorization`` header cannot be HTTP basic credentials (None: it can).

    Werkzeug parses every scheme, and MLflow's basic-auth function then takes a Bearer
    token's missing user and password for strings (``None.encode()``: a 500 on every
    route); a header that is not base64 of UTF-8 ``user:password`` parses to nothing.
    """
    header = request.headers.get("Authorization")
    if header is None:
        return None
    auth = request.authorization
    if auth is None and header.partition(" ")[0].lower() == "basic":
        return "the Authorization header is not HTTP basic auth (base64 of UTF-8 user:password)"
    if auth is None or auth.type != "basic":
        return "only HTTP basic authentication (user and password) is accepted"
    if not auth.username or auth.password is None:
        return "the Authorization header holds no user name"
    if "\x00" in auth.username or "\x00" in auth.password:
        return "a user name or password cannot contain a NUL character"
    return None


def _unauthenticated(message: str) -> Response:
    response = jsonify({"error_code": "UNAUTHENTICATED", "message": message})
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Basic realm="mlflow"'
    return response


def current_user() -> str:
    user = getattr(g, "mlflow_authenticated_user", None)
    if not user:
        raise NotAuthenticated("log in with HTTP basic auth")
    return str(user)


def is_admin() -> bool:
    from mlflow.server.auth import store

    cached = getattr(g, "mlmanager_is_admin", None)
    if cached is None:
        cached = bool(store.get_user(current_user()).is_admin)
        g.mlmanager_is_admin = cached
    return cached


# --- AUTH_BACKEND=database ------------------------------------------------------
class DatabaseLogins:
    """Checks credentials by connecting to PostgreSQL; caches successes briefly.

    The cache keeps an HMAC of the password under a per-process random key, never
    the password itself.
    """

    def __init__(self, connect: Callable[[str, str], None], ttl: float) -> None:
        self._connect = connect
        self._ttl = ttl
        self._key = secrets.token_bytes(32)
        self._ok: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def _digest(self, username: str, password: str) -> bytes:
        return hmac.new(self._key, f"{username}\0{password}".encode(), hashlib.sha256).digest()

    def check(self, username: str, password: str) -> bool:
        digest = self._digest(username, password)
        now = time.monotonic()
        with self._lock:
            hit = self._ok.get(username)
            if hit and hit[1] > now and hmac.compare_digest(hit[0], digest):
                return True
        try:
            self._connect(username, password)
        except psycopg.Error:
            return False
        with self._lock:
            self._ok[username] = (digest, now + self._ttl)
        return True


def _connect_as(username: str, password: str) -> None:
    url = make_url(get_settings().database_url)
    with psycopg.connect(
        host=url.host or "localhost",
        port=url.port or 5432,
        dbname=url.database,
        user=username,
        password=password,
        connect_timeout=5,
    ):
        pass


_logins = DatabaseLogins(_connect_as, DB_LOGIN_CACHE_SECONDS)


def _ensure_mlflow_user(username: str) -> None:
    """The MLflow user of a database login, so MLflow's permissions apply to it."""
    from mlflow.server.auth import store

    if not store.has_user(username):
        # A random password nobody knows: this user logs in through the database only.
        store.create_user(username, secrets.token_urlsafe(24) + "Aa1!", is_admin=False)


def _job_token_login() -> Any:
    """The request's credentials if they are a live job token of their user, else None."""
    auth = request.authorization
    if auth is None or not auth.username or not job_tokens.is_token(auth.password or ""):
        return None
    answer = g.get("mlmanager_job_token_login")
    if answer is None:  # MLflow authenticates several times per request
        with get_engine(get_settings()).connect() as conn:
            answer = job_tokens.valid(conn, auth.username, auth.password or "")
        g.mlmanager_job_token_login = answer
    return auth if answer else None


def authenticate_request_database() -> Any:
    """MLflow ``authorization_function`` for AUTH_BACKEND=database.

    MLflow calls it several times per request (our guard, its own check, its admin
    check); a database user fails MLflow's password check (a deliberately slow hash)
    each time, so the answer is kept for the rest of the request.
    """
    answer = g.get("mlmanager_database_login")
    if answer is None:
        answer = g.mlmanager_database_login = _authenticate_database()
    return answer


def _authenticate_database() -> Any:
    from mlflow.server.auth import authenticate_request_basic_auth, make_basic_auth_response

    auth = request.authorization
    if auth is None or not auth.username or auth.password is None:
        return make_basic_auth_response()
    # MLflow's own users (the bootstrap admin) keep working.
    mlflow_result = authenticate_request_basic_auth()
    if not isinstance(mlflow_result, Response):
        return mlflow_result
    if _logins.check(auth.username, auth.password):
        _ensure_mlflow_user(auth.username)
        return auth
    return make_basic_auth_response()
