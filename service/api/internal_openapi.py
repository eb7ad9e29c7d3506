"""The OpenAPI 3.1 document of the internal API, generated from its pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.api.internal_models import ServiceKeyInfo
from service.api.models import ErrorBody

OPENAPI_PATH = "/internal/v1/openapi.json"

_MODELS: tuple[type[BaseModel], ...] = (ServiceKeyInfo, ErrorBody)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("ErrorBody"), description)


AUTH_ERRORS = {
    "401": {
        **_error("Missing, malformed, unknown or revoked service key (customer keys included)."),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "429": _error("Too many failed authentication attempts from this client."),
    "503": _error("A dependency is temporarily unavailable."),
}


def scoped(scope: str) -> dict[str, Any]:
    """The 403 of a route that needs ``scope``, and the scope itself as an extension."""
    return {"403": _error(f"The service key lacks the '{scope}' scope.")}


def _paths() -> dict[str, Any]:
    return {
        "/internal/v1/service-key": {
            "get": {
                "operationId": "getServiceKey",
                "summary": "The service key this request authenticated with",
                "responses": {
                    "200": _json(_ref("ServiceKeyInfo"), "Its id, name and scopes."),
                    **AUTH_ERRORS,
                },
            }
        },
    }


def build_internal_openapi() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "serialization") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Octopost Accounts internal API",
            "version": "1.0.0",
            "description": "For other Octopost services, with service keys (oct_svc_...): "
            "credentials for publishing, usage reports. Served on the internal listener only.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {"serviceKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"serviceKey": []}],
        "paths": _paths(),
    }
