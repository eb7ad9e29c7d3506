"""Every typed application key in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from arq.connections import ArqRedis

from service.core.db import Pool
from service.core.settings import Settings
from service.core.vault import Vault

if TYPE_CHECKING:
    from service.api.auth import Authenticator, Principal
    from service.api.connect import ConnectService
    from service.api.credentials import Issuer
    from service.api.metrics import ApiMetrics
    from service.api.push.risc import RiscVerifier
    from service.api.service_auth import ServiceAuthenticator

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", Pool)
REDIS = web.AppKey("redis", ArqRedis)
# seals webhook endpoint secrets
VAULT = web.AppKey("vault", Vault)
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator")
METRICS: web.AppKey[ApiMetrics] = web.AppKey("metrics")
ISSUER: web.AppKey[Issuer] = web.AppKey("issuer")
SERVICE_AUTHENTICATOR: web.AppKey[ServiceAuthenticator] = web.AppKey("service_authenticator")
CONNECT: web.AppKey[ConnectService] = web.AppKey("connect")
RISC: web.AppKey[RiscVerifier] = web.AppKey("risc_verifier")
REQUEST_ID = web.RequestKey("request_id", str)
# a chunked body the size check already read
READ_BODY = web.RequestKey("read_body", bytes)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
