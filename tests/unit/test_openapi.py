"""The OpenAPI document describes every route of ML Manager's REST API, so the
property-based API test (schemathesis, tests/integration/test_api.py) calls them all."""

from __future__ import annotations

import re

from flask import Flask

from mlflow_server.api import blueprint
from mlflow_server.model_route import model_blueprint
from mlflow_server.part_route import part_blueprint
from mlflow_server.schemas import API_PREFIX, openapi_document
from shared.multipart import PART_PATH


def test_every_route_of_the_blueprints_is_in_the_openapi_document() -> None:
    app = Flask(__name__)
    app.register_blueprint(blueprint)
    app.register_blueprint(model_blueprint)
    app.register_blueprint(part_blueprint)
    names = (f"{blueprint.name}.", f"{model_blueprint.name}.", f"{part_blueprint.name}.")
    routes = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith(names)
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    documented = {
        (path, method) for path, ops in openapi_document()["paths"].items() for method in ops
    }
    # The document does not describe itself.
    assert routes - documented == {(f"{API_PREFIX}/openapi.json", "get")}
    assert documented - routes == set()


def test_a_deployment_documents_its_target_and_a_typed_spec_per_target() -> None:
    schemas = openapi_document()["components"]["schemas"]
    deployment = schemas["DeploymentOut"]["properties"]
    assert "description" in deployment["target"]
    # One member per target, chosen by `target` (a discriminated union inside the nullable).
    union = next(member for member in deployment["spec"]["anyOf"] if "oneOf" in member)
    assert union["discriminator"]["propertyName"] == "target"
    specs = {ref["$ref"] for ref in union["oneOf"]}
    assert specs == {
        "#/components/schemas/DatabaseDeploymentSpec",
        "#/components/schemas/KubernetesDeploymentSpec",
        "#/components/schemas/SageMakerDeploymentSpec",
        "#/components/schemas/AzureDeploymentSpec",
    }
    azure = schemas["AzureDeploymentSpec"]["properties"]
    assert {"endpoint_name", "region", "url", "workspace"} <= set(azure)
    sagemaker = schemas["SageMakerDeploymentSpec"]["properties"]
    assert {"endpoint_name", "region", "url"} <= set(sagemaker)
    database = schemas["DatabaseDeploymentSpec"]["properties"]
    assert database["target"]["const"] == "database"
    assert {"db_schema", "db_table", "trigger", "representation_id", "mode"} <= set(database)
    assert {"drift", "stats", "details"} <= set(deployment)


def test_the_model_route_is_documented_as_read_with_a_deployment_token() -> None:
    """A serving pod sends its deployment's bearer token, not a user's basic credentials,
    and gets a zip whose SHA-256 is in a header."""
    document = openapi_document()
    operation = document["paths"][f"{API_PREFIX}/deployments/{{deployment_id}}/model"]["get"]
    assert operation["security"] == [{"deploymentToken": []}]
    scheme = document["components"]["securitySchemes"]["deploymentToken"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    ok = operation["responses"]["200"]
    assert list(ok["content"]) == ["application/zip"]
    assert "X-Model-SHA256" in ok["headers"]
    assert {"401", "404"} <= set(operation["responses"])


def test_the_part_route_is_documented_as_authorized_by_its_signature() -> None:
    """MLflow's client PUTs a part without credentials: the signed URL is the credential."""
    operation = openapi_document()["paths"][f"{PART_PATH}/{{upload_id}}/{{part_number}}"]["put"]
    assert operation["security"] == []
    required = {p["name"] for p in operation["parameters"] if p["required"]}
    assert required == {"upload_id", "part_number", "key", "expires", "signature"}
    assert list(operation["requestBody"]["content"]) == ["application/octet-stream"]
    assert "ETag" in operation["responses"]["200"]["headers"]
    assert {"400", "403", "404", "503"} <= set(operation["responses"])
