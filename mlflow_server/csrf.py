"""Cross-site request forgery: refused on every call that changes state.

Browsers send cached HTTP basic-auth credentials with cross-site requests too, so a
page elsewhere could make a logged-in user's browser submit, cancel, undeploy or switch
handlers. :func:`refuse_forgery` applies two rules (``auth.guard`` runs it first, before any
authentication):

1. On our routes a body must be JSON, or absent. A cross-site page can send only form
   or ``text/plain`` bodies without a CORS preflight, which this server never grants.
2. On every route, a request that says where it comes from (``Origin``, else
   ``Referer``) must come from this server (same host and port). Browsers send
   ``Origin`` on every POST, PUT, PATCH and DELETE (the Fetch standard; ``null`` from
   an opaque origin is refused), so a bodiless cross-site POST fails here. Clients that
   are not browsers (the ``mlmanager`` CLI, MLflow's client, curl) send neither header.

MLflow's own routes get only rule 2: its clients upload artifacts as
``application/octet-stream``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Request

from shared.errors import InvalidPayload, NotAuthorized

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def refuse_forgery(request: Request, ours: bool) -> None:
    """Raise if this request may come from another site's page.

    A non-JSON body is an :class:`InvalidPayload` (400: our routes take JSON anyway);
    another site's ``Origin``/``Referer`` is :class:`NotAuthorized` (403).
    """
    if request.method not in STATE_CHANGING:
        return
    if ours and request.mimetype and not request.is_json:
        raise InvalidPayload(
            f"{request.method} {request.path} takes a JSON body "
            f"(Content-Type: application/json) or none, not {request.mimetype}",
            field="body",
        )
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if source is None:
        return
    host = "" if source == "null" else urlsplit(source).netloc
    if host.lower() != request.host.lower():
        raise NotAuthorized(
            f"a {request.method} sent from another site ({source[:200]}) is refused"
        )
