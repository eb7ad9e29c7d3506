"""Every typed application key in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import asyncpg
from aiohttp import web
from arq.connections import ArqRedis

from service.settings import Settings

if TYPE_CHECKING:
    from service.auth import Authenticator
    from service.credentials import Issuer
    from service.metrics import ApiMetrics
    from service.service_auth import ServiceAuthenticator

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", ArqRedis)
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator")
METRICS: web.AppKey[ApiMetrics] = web.AppKey("metrics")
ISSUER: web.AppKey[Issuer] = web.AppKey("issuer")
SERVICE_AUTHENTICATOR: web.AppKey[ServiceAuthenticator] = web.AppKey("service_authenticator")
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
REQUEST_ID = web.RequestKey("request_id", str)
