"""Handlers of /v1/webhook_endpoints: the workspace's own endpoints only (another
workspace's endpoint is a 404, exactly like an id that does not exist)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, TypeVar

import asyncpg
import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from service.api import appkeys, cursor
from service.api.errors import BadRequest, Conflict, NotFound, RequestTimeout
from service.api.views import DEFAULT_PAGE, _limit_param, _one, json_response, principal
from service.api.webhook_models import (
    CreateWebhookEndpoint,
    EventAccepted,
    UpdateWebhookEndpoint,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookEndpoint,
    WebhookEndpointList,
    WebhookEndpointWithSecret,
)
from service.core.ids import is_plausible_id
from service.core.repository import webhooks as repo
from service.core.webhooks import (
    ACCOUNT_EVENT_TYPES,
    UrlRefused,
    address_allowed,
    check_url,
    new_endpoint_id,
    new_secret,
)

log = logging.getLogger("octopost.api")

ROTATION_OVERLAP_SECONDS = 24 * 3600.0
RESOLVE_SECONDS = 3.0
BODY_READ_SECONDS = 10.0
CURSOR_KIND = "wha"

M = TypeVar("M", bound=BaseModel)


async def _body(request: web.Request, model: type[M]) -> M:
    raw = request.get(appkeys.READ_BODY)
    if raw is None:
        try:
            async with asyncio.timeout(BODY_READ_SECONDS):
                raw = await request.read()
        except TimeoutError:
            raise RequestTimeout("the request body did not arrive in time") from None
    if not raw:
        raise BadRequest("a JSON body is required")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in err["loc"])
            parts.append(f"{where}: {err['msg']}" if where else err["msg"])
        raise BadRequest("; ".join(parts)) from None


async def _checked_url(request: web.Request, url: str) -> str:
    settings = request.app[appkeys.SETTINGS]
    try:
        host = check_url(
            url, production=settings.is_production, allow_private=settings.allow_private_hosts
        )
    except UrlRefused as exc:
        raise BadRequest(str(exc)) from None
    if settings.allow_private_hosts:
        return url
    # A name that resolves to a private address now is refused now; one that does not
    # resolve yet is accepted (deliveries check the address they are about to call anyway).
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
    except (OSError, TimeoutError):
        return url
    if any(not address_allowed(str(info[4][0])) for info in infos):
        raise BadRequest("url host resolves to a loopback, private or link-local address")
    return url


def _endpoint_id(request: web.Request) -> str:
    endpoint_id = request.match_info["endpoint_id"]
    if not is_plausible_id(endpoint_id):
        raise NotFound("webhook endpoint not found")
    return endpoint_id


def _endpoint(row: asyncpg.Record, **extra: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "url": row["url"],
        "events": list(row["events"]),
        "description": row["description"],
        "enabled": row["enabled"],
        "created_at": row["created_at"],
        **extra,
    }


async def create_endpoint(request: web.Request) -> web.Response:
    who = principal(request)
    body = await _body(request, CreateWebhookEndpoint)
    url = await _checked_url(request, body.url)
    endpoint_id = new_endpoint_id()
    secret = new_secret()
    sealed = request.app[appkeys.VAULT].seal(endpoint_id, secret.encode())
    row = await repo.insert_endpoint(
        request.app[appkeys.POOL],
        endpoint_id,
        who.workspace_id,
        url=url,
        events=list(body.events or ACCOUNT_EVENT_TYPES),
        description=body.description,
        key_id=sealed.key_id,
        sealed=sealed.blob,
    )
    log.info("webhook endpoint created endpoint_id=%s", endpoint_id)
    return json_response(WebhookEndpointWithSecret(**_endpoint(row, secret=secret)), status=201)


async def list_endpoints(request: web.Request) -> web.Response:
    rows = await repo.list_endpoints(request.app[appkeys.POOL], principal(request).workspace_id)
    return json_response(
        WebhookEndpointList(webhook_endpoints=[WebhookEndpoint(**_endpoint(r)) for r in rows])
    )


async def get_endpoint(request: web.Request) -> web.Response:
    row = await repo.get_endpoint(
        request.app[appkeys.POOL], _endpoint_id(request), principal(request).workspace_id
    )
    if row is None:
        raise NotFound("webhook endpoint not found")
    return json_response(WebhookEndpoint(**_endpoint(row)))


async def update_endpoint(request: web.Request) -> web.Response:
    who = principal(request)
    endpoint_id = _endpoint_id(request)
    body = await _body(request, UpdateWebhookEndpoint)
    if not body.model_fields_set:
        raise BadRequest("give at least one of: url, events, description, enabled")
    url = await _checked_url(request, body.url) if body.url is not None else None
    row = await repo.update_endpoint(
        request.app[appkeys.POOL],
        endpoint_id,
        who.workspace_id,
        url=url,
        events=list(body.events) if body.events is not None else None,
        description=body.description,
        enabled=body.enabled,
    )
    if row is None:
        raise NotFound("webhook endpoint not found")
    return json_response(WebhookEndpoint(**_endpoint(row)))


async def delete_endpoint(request: web.Request) -> web.Response:
    endpoint_id = _endpoint_id(request)
    if not await repo.delete_endpoint(
        request.app[appkeys.POOL], endpoint_id, principal(request).workspace_id
    ):
        raise NotFound("webhook endpoint not found")
    log.info("webhook endpoint deleted endpoint_id=%s", endpoint_id)
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    endpoint_id = _endpoint_id(request)
    secret = new_secret()
    sealed = request.app[appkeys.VAULT].seal(endpoint_id, secret.encode())
    row = await repo.rotate_secret(
        request.app[appkeys.POOL],
        endpoint_id,
        principal(request).workspace_id,
        key_id=sealed.key_id,
        sealed=sealed.blob,
        overlap_seconds=ROTATION_OVERLAP_SECONDS,
    )
    if row is None:
        raise NotFound("webhook endpoint not found")
    log.info("webhook secret rotated endpoint_id=%s", endpoint_id)
    return json_response(WebhookEndpointWithSecret(**_endpoint(row, secret=secret)))


async def _enabled_endpoint(request: web.Request, endpoint_id: str) -> None:
    enabled = await repo.endpoint_enabled(
        request.app[appkeys.POOL], endpoint_id, principal(request).workspace_id
    )
    if enabled is None:
        raise NotFound("webhook endpoint not found")
    if not enabled:
        raise Conflict("the webhook endpoint is disabled; enable it with PATCH first")


async def send_test(request: web.Request) -> web.Response:
    endpoint_id = _endpoint_id(request)
    await _enabled_endpoint(request, endpoint_id)
    event_id = await repo.send_test(
        request.app[appkeys.POOL], endpoint_id, principal(request).workspace_id
    )
    if event_id is None:  # deleted between the two statements
        raise NotFound("webhook endpoint not found")
    return json_response(EventAccepted(event_id=event_id), status=202)


async def list_deliveries(request: web.Request) -> web.Response:
    endpoint_id = _endpoint_id(request)
    limit = _limit_param(request) or DEFAULT_PAGE
    raw_cursor = _one(request, "cursor")
    before: int | None = None
    if raw_cursor is not None:
        (value,) = cursor.decode(CURSOR_KIND, raw_cursor, 1)
        before = int(value)
    pool = request.app[appkeys.POOL]
    if await repo.endpoint_enabled(pool, endpoint_id, principal(request).workspace_id) is None:
        raise NotFound("webhook endpoint not found")
    rows = await repo.list_attempts(pool, endpoint_id, before=before, limit=limit + 1)
    has_more = len(rows) > limit
    rows = rows[:limit]
    return json_response(
        WebhookDeliveryPage(
            deliveries=[
                WebhookDelivery(
                    event_id=r["event_id"],
                    type=r["type"],
                    attempt=r["attempt"],
                    result=r["result"],
                    response_status=r["response_status"],
                    error=r["error"],
                    created_at=r["created_at"],
                )
                for r in rows
            ],
            has_more=has_more,
            next_cursor=cursor.encode(CURSOR_KIND, str(rows[-1]["id"])) if has_more else None,
        )
    )


async def retry_delivery(request: web.Request) -> web.Response:
    endpoint_id = _endpoint_id(request)
    event_id = request.match_info["event_id"]
    await _enabled_endpoint(request, endpoint_id)
    if not is_plausible_id(event_id) or not await repo.retry_delivery(
        request.app[appkeys.POOL], endpoint_id, event_id
    ):
        raise NotFound("this endpoint has no delivery of that event")
    return json_response(EventAccepted(event_id=event_id), status=202)


def add_routes(app: web.Application) -> None:
    base = "/v1/webhook_endpoints"
    one = base + "/{endpoint_id}"
    app.router.add_post(base, create_endpoint)
    app.router.add_get(base, list_endpoints, allow_head=False)
    app.router.add_get(one, get_endpoint, allow_head=False)
    app.router.add_patch(one, update_endpoint)
    app.router.add_delete(one, delete_endpoint)
    app.router.add_post(one + "/rotate_secret", rotate_secret)
    app.router.add_post(one + "/test", send_test)
    app.router.add_get(one + "/deliveries", list_deliveries, allow_head=False)
    app.router.add_post(one + "/deliveries/{event_id}/retry", retry_delivery)
