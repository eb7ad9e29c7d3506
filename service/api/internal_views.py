"""Handlers of the internal API (service keys only; see service.api.internal_app)."""

from __future__ import annotations

from aiohttp import web

from service.api.internal_models import ServiceKeyInfo
from service.api.service_auth import service_principal
from service.api.views import json_response


async def whoami(request: web.Request) -> web.Response:
    who = service_principal(request)
    return json_response(ServiceKeyInfo(id=who.key_id, name=who.name, scopes=sorted(who.scopes)))
