"""The connect routes: the public OAuth callback, and the internal connect-session routes
(scope ``connect``). ``connect_context`` gives an app the ``ConnectService`` they call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from pydantic import ValidationError

from service.api import appkeys
from service.api.connect import CALLBACK_PATH, ConnectService, SessionRequest, describe
from service.api.errors import BadRequest, NotFound
from service.api.models import format_timestamp
from service.api.service_auth import requires_scope
from service.core.ids import is_plausible_id
from service.core.settings import Settings
from service.platforms.config import PlatformSettings
from service.platforms.oauth import OAuthConnect
from service.platforms.registry import build_adapters

SESSIONS_PATH = "/internal/v1/connect-sessions"

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def connect_context(
    settings: Settings,
    platform_settings: PlatformSettings | None = None,
    *,
    shared: web.Application | None = None,
) -> CleanupContext:
    """A cleanup context (after the pool's) that builds the adapters on a client session of
    their own, or borrows the ``ConnectService`` of ``shared`` (the public app)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        if shared is not None and appkeys.CONNECT in shared:
            app[appkeys.CONNECT] = shared[appkeys.CONNECT]
            yield
            return
        async with aiohttp.ClientSession() as http:
            adapters = build_adapters(http, platform_settings or PlatformSettings())
            app[appkeys.CONNECT] = ConnectService(settings, app[appkeys.POOL], adapters)
            yield

    return context


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    def default(value: object) -> str:
        if isinstance(value, datetime):
            return format_timestamp(value)
        raise TypeError

    return web.Response(
        body=orjson.dumps(body, default=default, option=orjson.OPT_PASSTHROUGH_DATETIME),
        status=status,
        content_type="application/json",
    )


# --- public ------------------------------------------------------------------------------


async def oauth_callback(request: web.Request) -> web.StreamResponse:
    """The platform sends the browser here. No key: the state is the credential."""
    platform = request.match_info["platform"]
    service = request.app[appkeys.CONNECT]
    if not isinstance(service.adapters.get(platform), OAuthConnect) or platform == "bluesky":
        raise NotFound("no such endpoint")
    query = {}
    for name in ("state", "code", "error"):
        values = request.query.getall(name, [])
        if len(values) > 1:
            raise BadRequest(f"query parameter '{name}' given more than once")
        if values:
            query[name] = values[0]
    outcome = await service.callback(platform, query)
    return web.Response(
        status=302,
        headers={
            "Location": outcome.location,
            "Cache-Control": "no-store",
            # the callback URL held the code: the next page must not see it in a Referer
            "Referrer-Policy": "no-referrer",
        },
    )


def add_public_routes(app: web.Application) -> None:
    app.router.add_get(CALLBACK_PATH, oauth_callback, allow_head=False)


# --- internal ----------------------------------------------------------------------------


async def create_session(request: web.Request) -> web.Response:
    try:
        raw = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(raw, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        body = SessionRequest.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest(describe(exc)) from None
    return _json(await request.app[appkeys.CONNECT].create(body), status=201)


async def get_session(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    found = None
    if is_plausible_id(session_id):
        found = await request.app[appkeys.CONNECT].get(session_id)
    if found is None:
        raise NotFound(f"no connect session {session_id!r}")
    return _json(found)


def add_internal_routes(app: web.Application) -> None:
    r = app.router
    r.add_post(SESSIONS_PATH, requires_scope("connect", create_session))
    r.add_get(
        f"{SESSIONS_PATH}/{{session_id}}",
        requires_scope("connect", get_session),
        allow_head=False,
    )
