"""Pydantic models of the internal API: the bodies it serialises and parses, and the source of
its OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from service.api.models import Timestamp
from service.core.ids import Platform


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceKeyInfo(_Model):
    """The service key a request authenticated with (never the key itself)."""

    id: str
    name: str
    scopes: list[str]


class IssuedCredentials(_Model):
    """A usable token for publishing as the account. Never cache it (Cache-Control: no-store)."""

    account_id: str
    platform: Platform
    platform_user_id: str
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - a token type, not a secret
    expires_at: Timestamp | None
    scopes: list[str]
    instance_url: str | None


USAGE_RESULTS = ("published", "auth_failed", "failed")


class UsageReport(_Model):
    """What happened when the publisher used the account's credentials."""

    result: Literal["published", "auth_failed", "failed"]
    # when it happened (default: now); `published` moves last_used_at to it, never back
    at: AwareDatetime | None = None
    platform_status: Annotated[int, Field(ge=100, le=599, strict=True)] | None = None
    platform_error: Annotated[str, Field(max_length=1000)] | None = None


class UsageAccepted(_Model):
    account_id: str
    result: Literal["published", "auth_failed", "failed"]
    # published: whether last_used_at moved; auth_failed: whether a check was queued now
    # (false: one is queued or ran moments ago)
    last_used_at: Timestamp | None = None
    check_queued: bool | None = None
