"""Service keys on the internal listener: parse, resolve (with a short cache), throttle brute
force, and check each route's scope. Customer keys never authenticate here."""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from service.api.auth import TOUCH_INTERVAL_SECONDS, FailureLimiter
from service.api.errors import Forbidden, TooManyRequests, Unauthorized
from service.core.api_keys import hash_api_key, is_well_formed_service_key
from service.core.repository import service_keys

# What a service key may be allowed to do. `credentials`: fetch tokens and report usage
# (the publisher); `connect`: run the connect flow for a customer.
SCOPES = ("credentials", "connect")


@dataclass(frozen=True, slots=True)
class ServicePrincipal:
    key_id: str
    name: str
    scopes: frozenset[str]


SERVICE_PRINCIPAL = web.RequestKey("service_principal", ServicePrincipal)


@dataclass(slots=True)
class _Cached:
    principal: ServicePrincipal
    expires_at: float


class ServiceAuthenticator:
    """The customer Authenticator's twin for service keys: same hash, cache and limiter."""

    def __init__(
        self, pool: asyncpg.Pool, *, cache_seconds: float, cache_size: int, failures_per_minute: int
    ) -> None:
        self.pool = pool
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self.limiter = FailureLimiter(failures_per_minute)
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()
        self._touched: dict[str, float] = {}

    async def authenticate(self, header: str | None, client: str) -> ServicePrincipal:
        now = time.monotonic()
        retry = self.limiter.retry_after(client, now)
        if retry is not None:
            raise TooManyRequests(
                "too many failed authentication attempts; slow down",
                headers={"Retry-After": str(retry)},
            )
        if not header:
            self.limiter.record_failure(client, now)
            raise Unauthorized("missing Authorization header; use 'Bearer oct_svc_...'")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not is_well_formed_service_key(key):
            self.limiter.record_failure(client, now)
            raise Unauthorized(
                "malformed Authorization header; the internal API takes a service key "
                "('Bearer oct_svc_...')"
            )
        digest = hash_api_key(key)
        cached = self._cache.get(digest)
        if cached is not None and cached.expires_at > now:
            return cached.principal
        row = await service_keys.resolve_service_key(self.pool, digest)
        # found by hash, so equal already; compared again in constant time on purpose
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            self._cache.pop(digest, None)
            self.limiter.record_failure(client, now)
            raise Unauthorized("invalid or revoked service key")
        principal = ServicePrincipal(row["id"], row["name"], frozenset(row["scopes"]))
        if self.cache_seconds > 0:
            self._cache[digest] = _Cached(principal, now + self.cache_seconds)
            self._cache.move_to_end(digest)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        last = self._touched.get(principal.key_id, -TOUCH_INTERVAL_SECONDS)
        if now - last >= TOUCH_INTERVAL_SECONDS:
            self._touched[principal.key_id] = now
            await service_keys.touch_service_key(self.pool, principal.key_id)
        return principal


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requires_scope(scope: str, handler: Handler) -> Handler:
    """The handler, answering 403 to a valid service key that lacks ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def scoped(request: web.Request) -> web.StreamResponse:
        if scope not in request[SERVICE_PRINCIPAL].scopes:
            raise Forbidden(f"this service key lacks the '{scope}' scope")
        return await handler(request)

    scoped.__name__ = handler.__name__
    scoped.__doc__ = handler.__doc__
    return scoped


def service_principal(request: web.Request) -> ServicePrincipal:
    return request[SERVICE_PRINCIPAL]
