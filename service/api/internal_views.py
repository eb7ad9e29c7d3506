"""Handlers of the internal API (service keys only; see service.api.internal_app)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from service.api import appkeys
from service.api.errors import BadRequest, NotFound, RequestTimeout
from service.api.internal_models import ServiceKeyInfo, UsageAccepted, UsageReport
from service.api.models import ROW_JSON
from service.api.service_auth import service_principal
from service.api.views import _account_id, json_response
from service.core.jobs import enqueue_reported_check
from service.core.repository import credentials as repo

log = logging.getLogger("octopost.internal")

BODY_READ_SECONDS = 10.0
# A clock between services may run a little ahead; more than this is a wrong timestamp.
MAX_FUTURE = timedelta(minutes=5)


async def whoami(request: web.Request) -> web.Response:
    who = service_principal(request)
    return json_response(ServiceKeyInfo(id=who.key_id, name=who.name, scopes=sorted(who.scopes)))


async def issue_credentials(request: web.Request) -> web.Response:
    who = service_principal(request)
    issuer = request.app[appkeys.ISSUER]
    issued = await issuer.issue(_account_id(request))
    # audited before the token leaves: no record, no token
    await issuer.record(issued, who.key_id, who.name)
    log.debug(
        "credentials issued account_id=%s platform=%s service_key=%s refreshed=%s",
        issued.account_id,
        issued.platform,
        who.key_id,
        issued.refreshed,
    )
    # IssuedCredentials (the schema) field for field, written straight to JSON as the public
    # read path writes rows: validating a model per request costs more than the rest
    body = {
        "account_id": issued.account_id,
        "platform": issued.platform,
        "platform_user_id": issued.platform_user_id,
        "access_token": issued.access_token,
        "token_type": "bearer",
        "expires_at": issued.expires_at,
        "scopes": list(issued.scopes),
        "instance_url": issued.instance_url,
    }
    return web.Response(body=orjson.dumps(body, option=ROW_JSON), content_type="application/json")


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        async with asyncio.timeout(BODY_READ_SECONDS):
            raw = await request.read()
    except TimeoutError:
        raise RequestTimeout("the request body did not arrive in time") from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _field_error(exc: ValidationError) -> BadRequest:
    first = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    return BadRequest(f"field '{field}': {first['msg']}")


async def report_usage(request: web.Request) -> web.Response:
    account_id = _account_id(request)
    try:
        report = UsageReport.model_validate(await _json_object(request))
    except ValidationError as exc:
        raise _field_error(exc) from None
    now = datetime.now(UTC)
    at = report.at or now
    if at - now > MAX_FUTURE:
        raise BadRequest("field 'at': more than 5 minutes in the future")
    pool = request.app[appkeys.POOL]
    if report.result == "published":
        row = await repo.mark_used(pool, account_id, at)
        if row is None:
            raise NotFound("account not found")
        accepted = UsageAccepted(
            account_id=account_id, result=report.result, last_used_at=row["last_used_at"]
        )
    else:
        active = await repo.is_active(pool, account_id)
        if active is None:
            raise NotFound("account not found")
        queued = None
        if report.result == "auth_failed":
            # an inactive account was found dead already: checking it again tells nothing
            queued = active and await enqueue_reported_check(request.app[appkeys.REDIS], account_id)
            log.info(
                "auth failure reported account_id=%s platform_status=%s check_queued=%s "
                "service_key=%s",
                account_id,
                report.platform_status,
                queued,
                service_principal(request).key_id,
            )
        accepted = UsageAccepted(account_id=account_id, result=report.result, check_queued=queued)
    return json_response(accepted, status=202)
