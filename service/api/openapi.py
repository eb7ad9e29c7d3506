"""The OpenAPI 3.1 document, generated from the pydantic models that serialise responses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from service.api import webhook_openapi
from service.api.models import (
    HEALTH_STATUSES,
    Account,
    AccountEventList,
    AccountHealth,
    AccountList,
    AccountPage,
    ErrorBody,
)
from service.core.ids import PLATFORMS

_MODELS: tuple[type[BaseModel], ...] = (
    Account,
    AccountList,
    AccountPage,
    AccountHealth,
    AccountEventList,
    ErrorBody,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("ErrorBody"), description)


_AUTH_ERRORS = {
    "401": {
        **_error("Missing, malformed, unknown or revoked API key."),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "429": _error("Too many failed authentication attempts from this client."),
    "503": _error("A dependency is temporarily unavailable."),
}

_ACCOUNT_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "Account id, e.g. acc_abc123.",
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 500},
}
_CURSOR = {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}}


def build_openapi() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (m, "serialization") for m in (*_MODELS, *webhook_openapi.RESPONSE_MODELS)
    ]
    models += [(m, "validation") for m in webhook_openapi.REQUEST_MODELS]
    _, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    list_schema = {"oneOf": [_ref("AccountList"), _ref("AccountPage")]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Octopost Accounts API",
            "version": "1.0.0",
            "description": "Connected social media accounts: list, get, disconnect; webhook "
            "endpoints that receive their changes.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/accounts": {
                "get": {
                    "operationId": "listAccounts",
                    "summary": "List connected accounts",
                    "parameters": [
                        {
                            "name": "platform",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": list(PLATFORMS)},
                        },
                        {
                            "name": "is_active",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["true", "false"]},
                        },
                        {
                            "name": "status",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": list(HEALTH_STATUSES)},
                        },
                        _LIMIT,
                        _CURSOR,
                    ],
                    "responses": {
                        "200": {
                            **_json(
                                list_schema,
                                "Accounts in connected_at order. With limit "
                                "or cursor the page fields are present.",
                            ),
                            "links": {
                                "GetAccount": {
                                    "operationId": "getAccount",
                                    "parameters": {"id": "$response.body#/accounts/0/id"},
                                },
                            },
                        },
                        "400": _error("A query parameter is invalid."),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/accounts/{id}": {
                "get": {
                    "operationId": "getAccount",
                    "summary": "Get an account",
                    "parameters": [_ACCOUNT_ID],
                    "responses": {
                        "200": _json(_ref("Account"), "The account."),
                        "404": _error("No such account in this workspace."),
                        **_AUTH_ERRORS,
                    },
                },
                "delete": {
                    "operationId": "disconnectAccount",
                    "summary": "Disconnect an account and revoke its tokens",
                    "parameters": [_ACCOUNT_ID],
                    "responses": {
                        "204": {"description": "Disconnected."},
                        "404": _error("No such account, or already disconnected."),
                        **_AUTH_ERRORS,
                    },
                },
            },
            "/v1/accounts/{id}/health": {
                "get": {
                    "operationId": "getAccountHealth",
                    "summary": "Token health of an account",
                    "parameters": [_ACCOUNT_ID],
                    "responses": {
                        "200": _json(_ref("AccountHealth"), "Health state."),
                        "404": _error("No such account in this workspace."),
                        **_AUTH_ERRORS,
                    },
                }
            },
            "/v1/accounts/{id}/events": {
                "get": {
                    "operationId": "listAccountEvents",
                    "summary": "Transitions of an account, newest first",
                    "parameters": [_ACCOUNT_ID, _LIMIT, _CURSOR],
                    "responses": {
                        "200": _json(_ref("AccountEventList"), "Events."),
                        "400": _error("A query parameter is invalid."),
                        "404": _error("No such account in this workspace."),
                        **_AUTH_ERRORS,
                    },
                }
            },
            **webhook_openapi.webhook_paths(_error, _AUTH_ERRORS, _LIMIT, _CURSOR),
        },
    }
