"""Service keys on the internal listener: parse, resolve (with a short cache), throttle brute
force, and check each route's scope. Customer keys never authenticate here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from service.api.auth import KeyAuthenticator
from service.api.errors import Forbidden
from service.core.api_keys import is_well_formed_service_key
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


class ServiceAuthenticator(KeyAuthenticator[ServicePrincipal]):
    """Service keys (`oct_svc_`), on the internal listener: a customer key is refused before
    any lookup, as is a service key on the public listener."""

    key_hint = "Bearer oct_svc_..."
    unknown = "invalid or revoked service key"
    not_ours = "not a service key; the internal API takes 'Bearer oct_svc_...'"

    def well_formed(self, key: str) -> bool:
        return is_well_formed_service_key(key)

    async def resolve(self, digest: bytes) -> asyncpg.Record | None:
        return await service_keys.resolve_service_key(self.pool, digest)

    def principal(self, row: asyncpg.Record) -> ServicePrincipal:
        return ServicePrincipal(row["id"], row["name"], frozenset(row["scopes"]))

    async def touch(self, key_id: str) -> None:
        await service_keys.touch_service_key(self.pool, key_id)


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
