"""The OpenAPI document describes every route of ML Manager's REST API, so the
property-based API test (schemathesis, tests/integration/test_api.py) calls them all."""

from __future__ import annotations

import re

from flask import Flask

from mlflow_server.api import blueprint
from mlflow_server.schemas import API_PREFIX, openapi_document


def test_every_route_of_the_blueprint_is_in_the_openapi_document() -> None:
    app = Flask(__name__)
    app.register_blueprint(blueprint)
    routes = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith(f"{blueprint.name}.")
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    documented = {
        (path, method) for path, ops in openapi_document()["paths"].items() for method in ops
    }
    # The document does not describe itself.
    assert routes - documented == {(f"{API_PREFIX}/openapi.json", "get")}
    assert documented - routes == set()
