"""The OpenAPI 3.1 document of the internal API, generated from its pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.api.internal_models import (
    IssuedCredentials,
    ServiceKeyInfo,
    UsageAccepted,
    UsageReport,
)
from service.api.models import ErrorBody

OPENAPI_PATH = "/internal/v1/openapi.json"

_MODELS: tuple[type[BaseModel], ...] = (
    ServiceKeyInfo,
    IssuedCredentials,
    UsageAccepted,
    ErrorBody,
)
_INPUT_MODELS: tuple[type[BaseModel], ...] = (UsageReport,)

_ACCOUNT_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "Account id, e.g. acc_abc123 (any workspace's).",
}


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
    """The 403 of a route that needs ``scope``."""
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
        "/internal/v1/accounts/{id}/credentials": {
            "post": {
                "operationId": "issueCredentials",
                "summary": "A usable access token for publishing as the account",
                "description": "Refreshed first when it expires within the refresh margin "
                "(one platform call however many ask at once). Audited as a "
                "`credentials_issued` account event. Scope: credentials.",
                "x-scope": "credentials",
                "parameters": [_ACCOUNT_ID],
                "responses": {
                    "200": {
                        **_json(_ref("IssuedCredentials"), "The token. Never cache it."),
                        "headers": {"Cache-Control": {"schema": {"const": "no-store"}}},
                    },
                    "404": _error("No such account, or disconnected."),
                    "409": _error(
                        "account_inactive: the account's tokens are dead (the message names "
                        "its status and reason); no_credentials: none stored."
                    ),
                    **scoped("credentials"),
                    **AUTH_ERRORS,
                    "503": {
                        **_error(
                            "platform_unavailable: the refresh failed for now and the current "
                            "token has expired (see Retry-After); or a dependency is down."
                        ),
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    },
                },
            }
        },
        "/internal/v1/accounts/{id}/usage": {
            "post": {
                "operationId": "reportUsage",
                "summary": "What happened when the publisher used the credentials",
                "description": "published: last_used_at moves to `at` (never back). "
                "auth_failed: the worker checks the account within seconds (a burst makes "
                "one check) and decides by the sweep's rules. failed: nothing changes. "
                "Scope: credentials.",
                "x-scope": "credentials",
                "parameters": [_ACCOUNT_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("UsageReport")}},
                },
                "responses": {
                    "202": _json(_ref("UsageAccepted"), "Accepted."),
                    "400": _error("The body is not valid (the message names the field)."),
                    "404": _error("No such account, or disconnected."),
                    **scoped("credentials"),
                    **AUTH_ERRORS,
                },
            }
        },
    }


def build_internal_openapi() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "serialization") for m in _MODELS] + [(m, "validation") for m in _INPUT_MODELS],
        ref_template="#/components/schemas/{model}",
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
