"""Thin handlers: parse the request, call the repository, serialise a model."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web
from pydantic import BaseModel

from service.api import appkeys, cursor
from service.api.appkeys import PRINCIPAL
from service.api.auth import Principal
from service.api.errors import BadRequest, NotFound, ServiceUnavailable
from service.api.models import (
    HEALTH_STATUSES,
    AccountEvent,
    AccountEventList,
    AccountHealth,
    account_json,
    account_list_json,
)
from service.core.ids import PLATFORMS, is_plausible_id, new_revocation_id
from service.core.jobs import enqueue_revocation
from service.core.repository import accounts, events

log = logging.getLogger("octopost.api")

MAX_PAGE = 500
DEFAULT_PAGE = 100


def json_body(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=model.__pydantic_serializer__.to_json(model),
        status=status,
        content_type="application/json",
    )


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"query parameter '{name}' given more than once")
    return values[0] if values else None


def _bool_param(request: web.Request, name: str) -> bool | None:
    value = _one(request, name)
    if value is None:
        return None
    if value in ("true", "false"):
        return value == "true"
    raise BadRequest(f"query parameter '{name}' must be 'true' or 'false'")


def _choice_param(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    value = _one(request, name)
    if value is None or value in choices:
        return value
    raise BadRequest(f"query parameter '{name}' must be one of: {', '.join(choices)}")


def _limit_param(request: web.Request) -> int | None:
    value = _one(request, "limit")
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise BadRequest(f"query parameter 'limit' must be an integer from 1 to {MAX_PAGE}")
    return int(value)


def _account_id(request: web.Request) -> str:
    account_id = request.match_info["account_id"]
    if not is_plausible_id(account_id):
        raise NotFound("account not found")
    return account_id


async def list_accounts(request: web.Request) -> web.Response:
    who = principal(request)
    platform = is_active = status = limit = raw_cursor = after = None
    if request.query_string:  # the plain list, the common call, parses nothing
        platform = _choice_param(request, "platform", PLATFORMS)
        is_active = _bool_param(request, "is_active")
        status = _choice_param(request, "status", HEALTH_STATUSES)
        limit = _limit_param(request)
        raw_cursor = _one(request, "cursor")
        after = cursor.decode_account(raw_cursor) if raw_cursor is not None else None
    paged = limit is not None or raw_cursor is not None
    page = (limit or DEFAULT_PAGE) if paged else None
    rows = await accounts.list_accounts(
        request.app[appkeys.POOL],
        who.workspace_id,
        platform=platform,
        is_active=is_active,
        status=status,
        after=after,
        limit=page + 1 if page is not None else None,
    )
    if page is None:
        return json_body(account_list_json(rows, next_cursor=None))
    has_more = len(rows) > page
    rows = rows[:page]
    next_cursor = (
        cursor.encode_account(rows[-1]["connected_at"], rows[-1]["id"]) if has_more else None
    )
    return json_body(account_list_json(rows, has_more=has_more, next_cursor=next_cursor))


async def get_account(request: web.Request) -> web.Response:
    row = await accounts.get_account(
        request.app[appkeys.POOL], _account_id(request), principal(request).workspace_id
    )
    if row is None:
        raise NotFound("account not found")
    return json_body(account_json(row))


async def disconnect_account(request: web.Request) -> web.Response:
    account_id = _account_id(request)
    row = await accounts.disconnect(
        request.app[appkeys.POOL], account_id, principal(request).workspace_id, new_revocation_id()
    )
    if row is None:
        raise NotFound("account not found")
    log.info("account disconnected account_id=%s platform=%s", row["id"], row["platform"])
    # After commit: the outbox row is durable, so a Redis failure here only delays the
    # platform-side revocation until the relay picks it up.
    if row["revocation_id"] is not None and appkeys.REDIS in request.app:
        await enqueue_revocation(request.app[appkeys.REDIS], row["revocation_id"])
    return web.Response(status=204)


async def account_health(request: web.Request) -> web.Response:
    row = await accounts.get_health(
        request.app[appkeys.POOL], _account_id(request), principal(request).workspace_id
    )
    if row is None:
        raise NotFound("account not found")
    return json_response(
        AccountHealth(
            id=row["id"],
            is_active=row["is_active"],
            status=row["health_status"],
            reason=row["health_reason"],
            last_checked_at=row["last_checked_at"],
            next_check_at=row["next_check_at"],
            consecutive_transient_failures=row["transient_failures"],
        )
    )


async def account_events(request: web.Request) -> web.Response:
    who = principal(request)
    account_id = _account_id(request)
    limit = _limit_param(request) or DEFAULT_PAGE
    raw_cursor = _one(request, "cursor")
    before: int | None = None
    if raw_cursor is not None:
        (value,) = cursor.decode("evt", raw_cursor, 1)
        if not value.isdigit():
            raise BadRequest("cursor is not valid")
        before = int(value)
    pool = request.app[appkeys.POOL]
    if await accounts.get_account(pool, account_id, who.workspace_id) is None:
        raise NotFound("account not found")
    rows = await events.list_events(
        pool, account_id, who.workspace_id, before=before, limit=limit + 1
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    return json_response(
        AccountEventList(
            events=[
                AccountEvent(
                    id=r["id"],
                    kind=r["kind"],
                    reason=r["reason"],
                    detail=orjson.loads(r["detail"]) if r["detail"] else None,
                    created_at=r["created_at"],
                )
                for r in rows
            ],
            has_more=has_more,
            next_cursor=cursor.encode("evt", str(rows[-1]["id"])) if has_more else None,
        )
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        async with request.app[appkeys.POOL].acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1", timeout=2)
        checks["postgres"] = "ok"
    except Exception as exc:  # any failure means "not ready"; the kind is reported
        checks["postgres"] = f"unavailable ({type(exc).__name__})"
    try:
        await request.app[appkeys.REDIS].ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable ({type(exc).__name__})"
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        raise ServiceUnavailable(f"not ready: {', '.join(failed)} unreachable")
    return web.json_response({"status": "ready", "checks": checks})
