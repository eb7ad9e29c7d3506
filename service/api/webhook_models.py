"""Bodies of the webhook endpoint API: what it takes and what it answers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from service.api.models import Timestamp
from service.core.webhooks import ACCOUNT_EVENT_TYPES, MAX_URL_LENGTH

EventType = Literal[
    "account.connected",
    "account.reconnected",
    "account.deactivated",
    "account.reactivated",
    "account.disconnected",
    "account.revocation_failed",
]
assert EventType.__args__ == ACCOUNT_EVENT_TYPES  # type: ignore[attr-defined]


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("must not name an event type twice")
    return values


Url = Annotated[str, StringConstraints(min_length=1, max_length=MAX_URL_LENGTH)]
Events = Annotated[
    list[EventType],
    Field(min_length=1, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_unique),
]
# PostgreSQL text cannot hold U+0000
Description = Annotated[str, StringConstraints(max_length=500, pattern=r"^[^\x00]*$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookEndpoint(_Model):
    id: str
    url: str
    events: list[EventType]
    description: str
    enabled: bool
    created_at: Timestamp


class WebhookEndpointWithSecret(WebhookEndpoint):
    """Creation and rotation only: the signing secret is never shown again."""

    secret: str


class WebhookEndpointList(_Model):
    webhook_endpoints: list[WebhookEndpoint]


class WebhookDelivery(_Model):
    """One attempt (attempt 0: not sent, the endpoint was disabled when the event came)."""

    event_id: str
    type: str
    attempt: int
    result: Literal["delivered", "retrying", "failed"]
    response_status: int | None
    error: str | None
    created_at: Timestamp


class WebhookDeliveryPage(_Model):
    deliveries: list[WebhookDelivery]
    has_more: bool
    next_cursor: str | None


class EventAccepted(_Model):
    event_id: str


class CreateWebhookEndpoint(_Model):
    url: Url
    events: Events | None = None
    description: Description = ""


class UpdateWebhookEndpoint(_Model):
    """At least one field; null leaves a field as it is."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"minProperties": 1})

    url: Url | None = None
    events: Events | None = None
    description: Description | None = None
    enabled: bool | None = None
