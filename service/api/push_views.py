"""Receivers for platform push notices, on the public listener under /platform-events.

No API key: the platform's signature is the credential. A receiver verifies the notice,
records it in the inbox (committed), queues the job that applies it, then answers. Nothing
is recorded for a notice that does not verify; a redelivered one gets the same answer.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from pydantic import SecretStr

from service.api import appkeys
from service.api.errors import BadRequest, NotFound
from service.api.models import format_timestamp
from service.api.push import meta, risc, tiktok, twitter
from service.api.push.risc import RiscVerifier
from service.core import ids
from service.core.jobs import enqueue_notice
from service.core.notices import Notice
from service.core.repository import notices as inbox
from service.core.settings import Settings

log = logging.getLogger("octopost.push")

PREFIX = "/platform-events"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
MAX_CRC_TOKEN = 1024


def _secret(value: SecretStr, what: str) -> str:
    secret = value.get_secret_value()
    if not secret:
        # an empty key would let anyone sign: the receiver is off
        raise NotFound(f"{what} notices are not configured on this service")
    return secret


def _meta_platform(request: web.Request) -> tuple[str, str]:
    platform = request.match_info["platform"]
    if platform not in meta.PLATFORMS:
        raise NotFound("no such endpoint")
    settings = request.app[appkeys.SETTINGS]
    return platform, _secret(getattr(settings, f"{platform}_app_secret"), platform)


async def _signed_request(request: web.Request) -> str:
    if request.content_type not in FORM_TYPES:
        raise BadRequest("expected a form body with the field signed_request")
    try:
        form = await request.post()
    except ValueError:
        raise BadRequest("the form body could not be read") from None
    value = form.get("signed_request")
    if not isinstance(value, str):
        raise BadRequest("form field signed_request is missing")
    return value


async def _record(request: web.Request, notice: Notice, *, with_code: bool = False) -> str | None:
    """Write the inbox row, then queue its job; the confirmation code of its first delivery."""
    code = ids.random_string(24) if with_code else None
    row = await inbox.record(request.app[appkeys.POOL], notice, code)
    log.info(
        "platform notice %s notice_id=%s platform=%s event=%s action=%s",
        "received" if row["inserted"] else "redelivered",
        notice.id,
        notice.platform,
        notice.event,
        notice.action.value,
    )
    # After commit; a Redis outage here only delays it until the relay queues it.
    if row["status"] == "pending":
        await enqueue_notice(request.app[appkeys.REDIS], notice.id)
    confirmation: str | None = row["confirmation_code"]
    return confirmation


async def meta_deauthorize(request: web.Request) -> web.Response:
    platform, secret = _meta_platform(request)
    notice = meta.notice(platform, meta.DEAUTHORIZE, await _signed_request(request), secret)
    await _record(request, notice)
    return web.json_response({"received": True})


async def meta_data_deletion(request: web.Request) -> web.Response:
    platform, secret = _meta_platform(request)
    notice = meta.notice(platform, meta.DATA_DELETION, await _signed_request(request), secret)
    code = await _record(request, notice, with_code=True)
    base = request.app[appkeys.SETTINGS].public_base_url.rstrip("/")
    return web.json_response({"url": f"{base}{PREFIX}/deletions/{code}", "confirmation_code": code})


async def deletion_status(request: web.Request) -> web.Response:
    code = request.match_info["code"]
    row = None
    if ids.ID_RE.fullmatch(code):
        row = await inbox.get_deletion(request.app[appkeys.POOL], code)
    if row is None:
        raise NotFound("no data deletion request has this confirmation code")
    done = row["status"] == "applied"
    return web.json_response(
        {
            "confirmation_code": row["confirmation_code"],
            "platform": row["platform"],
            "status": "completed" if done else "pending",
            "accounts_deleted": row["matched"] if done else None,
            "received_at": format_timestamp(row["received_at"]),
            "completed_at": format_timestamp(row["applied_at"]) if done else None,
        }
    )


async def tiktok_event(request: web.Request) -> web.Response:
    settings = request.app[appkeys.SETTINGS]
    secret = _secret(settings.tiktok_client_secret, "TikTok")
    body = await request.read()
    tiktok.verify(
        request.headers.get(tiktok.HEADER),
        body,
        secret,
        now=time.time(),
        tolerance=settings.tiktok_signature_tolerance_seconds,
    )
    for notice in tiktok.notices(body):
        await _record(request, notice)
    return web.json_response({"received": True})


async def google_event(request: web.Request) -> web.Response:
    verifier = request.app.get(appkeys.RISC)
    if verifier is None:
        raise NotFound("Google RISC notices are not configured on this service")
    body = await request.read()
    try:
        token = body.decode("ascii").strip()
    except UnicodeDecodeError:
        raise BadRequest("the body must be a security event token (a JWT)") from None
    claims = await verifier.verify(token)
    for notice in risc.notices(claims, verifier.issuer):
        await _record(request, notice)
    return web.json_response({"received": True}, status=202)


async def twitter_crc(request: web.Request) -> web.Response:
    secret = _secret(request.app[appkeys.SETTINGS].twitter_consumer_secret, "X")
    values = request.query.getall("crc_token", [])
    if len(values) != 1 or not values[0] or len(values[0]) > MAX_CRC_TOKEN:
        raise BadRequest("query parameter crc_token is required (once)")
    return web.json_response(twitter.crc_response(secret, values[0]))


async def twitter_event(request: web.Request) -> web.Response:
    secret = _secret(request.app[appkeys.SETTINGS].twitter_consumer_secret, "X")
    body = await request.read()
    twitter.verify(request.headers.get(twitter.HEADER), body, secret)
    for notice in twitter.notices(body):
        await _record(request, notice)
    return web.json_response({"received": True})


def risc_verifier(settings: Settings) -> RiscVerifier | None:
    if not settings.youtube_client_id:
        return None
    return RiscVerifier(
        settings.google_risc_jwks_url,
        settings.google_risc_issuer,
        settings.youtube_client_id,
        refetch_seconds=settings.google_risc_jwks_refetch_seconds,
    )


def add_routes(app: web.Application) -> None:
    verifier = risc_verifier(app[appkeys.SETTINGS])
    if verifier is not None:
        app[appkeys.RISC] = verifier
    r = app.router
    r.add_post(PREFIX + "/{platform}/deauthorize", meta_deauthorize)
    r.add_post(PREFIX + "/{platform}/data-deletion", meta_data_deletion)
    r.add_get(PREFIX + "/deletions/{code}", deletion_status, allow_head=False)
    r.add_post(PREFIX + "/tiktok", tiktok_event)
    r.add_post(PREFIX + "/google", google_event)
    r.add_get(PREFIX + "/twitter", twitter_crc, allow_head=False)
    r.add_post(PREFIX + "/twitter", twitter_event)
