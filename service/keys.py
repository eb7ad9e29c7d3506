"""Every typed application key in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import asyncpg
from aiohttp import web
from arq.connections import ArqRedis

from service.settings import Settings
from service.vault import Vault

if TYPE_CHECKING:
    from service.auth import Authenticator
    from service.metrics import ApiMetrics

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", ArqRedis)
# seals webhook endpoint secrets
VAULT = web.AppKey("vault", Vault)
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator")
METRICS: web.AppKey[ApiMetrics] = web.AppKey("metrics")
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
REQUEST_ID = web.RequestKey("request_id", str)
# a chunked body the size check already read
READ_BODY = web.RequestKey("read_body", bytes)
