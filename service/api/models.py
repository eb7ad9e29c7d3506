"""Pydantic models: the exact bodies the API serialises, and the source of the OpenAPI schema."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, PlainSerializer, WithJsonSchema

from service.core.ids import Platform


def format_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the second, as the seed shows."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Timestamp = Annotated[
    datetime,
    PlainSerializer(format_timestamp, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "example": "2026-03-15T10:00:00Z"}),
]


HealthStatus = Literal[
    "unchecked", "healthy", "degraded", "expired", "revoked", "deactivated", "disconnected"
]
HEALTH_STATUSES: tuple[str, ...] = HealthStatus.__args__  # type: ignore[attr-defined]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Account(_Model):
    """A connected social media account (the seed's Account Object, field for field)."""

    id: str
    platform: Platform
    platform_user_id: str
    username: str
    display_name: str
    avatar_url: str | None
    is_active: bool
    connected_at: Timestamp
    last_used_at: Timestamp | None


ACCOUNT_FIELDS = tuple(Account.model_fields)

# The hot read path writes database rows straight to JSON: the row's first columns are the
# Account fields in order (repository.accounts.PUBLIC_COLUMNS), and its timestamps are timestamptz,
# which asyncpg returns as UTC datetimes that these options write exactly as
# format_timestamp does. Validating every row into the model first was most of a page's cost
# (BENCHMARKS.md); the models remain the schema (OpenAPI) and the tests hold the
# bodies to them.
ROW_JSON = orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS


def _account(row: Sequence[Any]) -> dict[str, Any]:
    # by position: a row may carry more columns after the Account's (a batch number)
    return dict(zip(ACCOUNT_FIELDS, row, strict=False))


def account_json(row: Sequence[Any]) -> bytes:
    return orjson.dumps(_account(row), option=ROW_JSON)


def account_list_json(
    rows: Sequence[Sequence[Any]], *, has_more: bool | None = None, next_cursor: str | None
) -> bytes:
    """AccountList, or AccountPage when has_more is given."""
    body: dict[str, Any] = {"accounts": [_account(r) for r in rows]}
    if has_more is not None:
        body["has_more"] = has_more
        body["next_cursor"] = next_cursor
    return orjson.dumps(body, option=ROW_JSON)


class AccountList(_Model):
    accounts: list[Account]


class AccountPage(_Model):
    """The list, when the caller asked for a page (`limit` or `cursor`)."""

    accounts: list[Account]
    has_more: bool
    next_cursor: str | None


class AccountHealth(_Model):
    id: str
    is_active: bool
    status: HealthStatus
    reason: str | None
    last_checked_at: Timestamp | None
    next_check_at: Timestamp | None
    consecutive_transient_failures: int


class AccountEvent(_Model):
    id: int
    kind: str
    reason: str | None
    detail: dict[str, Any] | None
    created_at: Timestamp


class AccountEventList(_Model):
    events: list[AccountEvent]
    has_more: bool
    next_cursor: str | None


class ErrorDetail(_Model):
    type: str
    message: str


class ErrorBody(_Model):
    error: ErrorDetail


class Health(_Model):
    status: str
    checks: dict[str, str] = {}
