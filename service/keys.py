"""Every typed application key in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from arq.connections import ArqRedis

from service.db import Pool
from service.settings import Settings

if TYPE_CHECKING:
    from service.auth import Authenticator
    from service.metrics import ApiMetrics

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", Pool)
REDIS = web.AppKey("redis", ArqRedis)
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator")
METRICS: web.AppKey[ApiMetrics] = web.AppKey("metrics")
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
REQUEST_ID = web.RequestKey("request_id", str)
