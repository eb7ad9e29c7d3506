"""The webhook endpoint operations of the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service.api.webhook_models import (
    CreateWebhookEndpoint,
    EventAccepted,
    UpdateWebhookEndpoint,
    WebhookDeliveryPage,
    WebhookEndpoint,
    WebhookEndpointList,
    WebhookEndpointWithSecret,
)

RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    WebhookEndpoint,
    WebhookEndpointWithSecret,
    WebhookEndpointList,
    WebhookDeliveryPage,
    EventAccepted,
)
REQUEST_MODELS: tuple[type[BaseModel], ...] = (CreateWebhookEndpoint, UpdateWebhookEndpoint)

_ENDPOINT_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "Webhook endpoint id, e.g. we_abc123.",
}
_EVENT_ID = {
    "name": "event_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "Event id (the webhook-id header), e.g. evt_...",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def webhook_paths(
    error: Any, auth_errors: dict[str, Any], limit: dict[str, Any], cursor: dict[str, Any]
) -> dict[str, Any]:
    not_found = {"404": error("No such webhook endpoint in this workspace.")}
    invalid = {"400": error("The body or a parameter is invalid (the message says which).")}
    disabled = {"409": error("The endpoint is disabled; enable it with PATCH first.")}
    return {
        "/v1/webhook_endpoints": {
            "post": {
                "operationId": "createWebhookEndpoint",
                "summary": "Register a webhook endpoint (the secret is shown only here)",
                "requestBody": _body("CreateWebhookEndpoint"),
                "responses": {
                    "201": {
                        **_json("WebhookEndpointWithSecret", "Created, with its secret."),
                        "links": {
                            name: {
                                "operationId": operation,
                                "parameters": {"id": "$response.body#/id"},
                            }
                            for name, operation in (
                                ("GetWebhookEndpoint", "getWebhookEndpoint"),
                                ("UpdateWebhookEndpoint", "updateWebhookEndpoint"),
                                ("DeleteWebhookEndpoint", "deleteWebhookEndpoint"),
                                ("RotateWebhookSecret", "rotateWebhookSecret"),
                                ("TestWebhookEndpoint", "testWebhookEndpoint"),
                                ("ListWebhookDeliveries", "listWebhookDeliveries"),
                            )
                        },
                    },
                    **invalid,
                    **auth_errors,
                },
            },
            "get": {
                "operationId": "listWebhookEndpoints",
                "summary": "List the workspace's webhook endpoints",
                "responses": {
                    "200": _json("WebhookEndpointList", "Endpoints, oldest first."),
                    **auth_errors,
                },
            },
        },
        "/v1/webhook_endpoints/{id}": {
            "get": {
                "operationId": "getWebhookEndpoint",
                "summary": "Get a webhook endpoint",
                "parameters": [_ENDPOINT_ID],
                "responses": {
                    "200": _json("WebhookEndpoint", "The endpoint."),
                    **not_found,
                    **auth_errors,
                },
            },
            "patch": {
                "operationId": "updateWebhookEndpoint",
                "summary": "Change url, events, description or enabled",
                "description": "Re-enabling does not replay the events that failed meanwhile; "
                "retry them one by one.",
                "parameters": [_ENDPOINT_ID],
                "requestBody": _body("UpdateWebhookEndpoint"),
                "responses": {
                    "200": _json("WebhookEndpoint", "The endpoint as changed."),
                    **invalid,
                    **not_found,
                    **auth_errors,
                },
            },
            "delete": {
                "operationId": "deleteWebhookEndpoint",
                "summary": "Delete a webhook endpoint",
                "parameters": [_ENDPOINT_ID],
                "responses": {
                    "204": {"description": "Deleted."},
                    **not_found,
                    **auth_errors,
                },
            },
        },
        "/v1/webhook_endpoints/{id}/rotate_secret": {
            "post": {
                "operationId": "rotateWebhookSecret",
                "summary": "New signing secret; the old one also signs for 24 hours",
                "parameters": [_ENDPOINT_ID],
                "responses": {
                    "200": _json("WebhookEndpointWithSecret", "The endpoint with its new secret."),
                    **not_found,
                    **auth_errors,
                },
            }
        },
        "/v1/webhook_endpoints/{id}/test": {
            "post": {
                "operationId": "testWebhookEndpoint",
                "summary": "Send a webhook.test event to this endpoint",
                "parameters": [_ENDPOINT_ID],
                "responses": {
                    "202": _json("EventAccepted", "Queued for delivery."),
                    **not_found,
                    **disabled,
                    **auth_errors,
                },
            }
        },
        "/v1/webhook_endpoints/{id}/deliveries": {
            "get": {
                "operationId": "listWebhookDeliveries",
                "summary": "Delivery attempts, newest first",
                "parameters": [_ENDPOINT_ID, limit, cursor],
                "responses": {
                    "200": _json("WebhookDeliveryPage", "A page of attempts."),
                    **invalid,
                    **not_found,
                    **auth_errors,
                },
            }
        },
        "/v1/webhook_endpoints/{id}/deliveries/{event_id}/retry": {
            "post": {
                "operationId": "retryWebhookDelivery",
                "summary": "Send an event to this endpoint again, from the first retry step",
                "parameters": [_ENDPOINT_ID, _EVENT_ID],
                "responses": {
                    "202": _json("EventAccepted", "Queued for delivery."),
                    "404": error("No such endpoint, or it never had this event."),
                    **disabled,
                    **auth_errors,
                },
            }
        },
    }
