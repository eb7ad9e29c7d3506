"""Bearer API keys: parse, resolve (with a short cache), and throttle brute force."""

from __future__ import annotations

import hmac
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeVar

import asyncpg

from service.api.errors import TooManyRequests, Unauthorized
from service.core.api_keys import hash_api_key, is_well_formed_key
from service.core.db import Pool
from service.core.repository import workspaces

# last_used_at is advisory; writing it more than once a minute per key is waste.
TOUCH_INTERVAL_SECONDS = 60.0
UNKNOWN_KEY = "invalid or revoked API key"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    workspace_id: int


P = TypeVar("P", bound="KeyPrincipal")


class KeyPrincipal(Protocol):
    @property
    def key_id(self) -> str: ...


@dataclass(slots=True)
class _Cached(Generic[P]):
    principal: P
    expires_at: float


class FailureLimiter:
    """Failed authentications per client address, in a fixed one-minute window."""

    def __init__(self, per_minute: int, max_clients: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_clients = max_clients
        self._windows: dict[str, tuple[float, int]] = {}

    def retry_after(self, client: str, now: float) -> int | None:
        if self.per_minute <= 0:
            return None
        window = self._windows.get(client)
        if window is None or now - window[0] >= 60.0 or window[1] < self.per_minute:
            return None
        return max(1, int(60.0 - (now - window[0])) + 1)

    def record_failure(self, client: str, now: float) -> None:
        if self.per_minute <= 0:
            return
        start, count = self._windows.get(client, (now, 0))
        if now - start >= 60.0:
            start, count = now, 0
        if len(self._windows) >= self.max_clients and client not in self._windows:
            self._windows = {c: w for c, w in self._windows.items() if now - w[0] < 60.0}
            if len(self._windows) >= self.max_clients:
                return
        self._windows[client] = (start, count + 1)


class KeyAuthenticator(ABC, Generic[P]):
    """A Bearer key of one kind: parsed, refused before any lookup when it cannot be one we
    issued, resolved by its hash with a short cache, `last_used_at` touched at most once a
    minute, and failures throttled per client address. Customer keys on the public listener
    and service keys on the internal one differ only in the hooks below."""

    # how a key of this kind looks, for the messages ("Bearer oct_live_...")
    key_hint: ClassVar[str]
    unknown: ClassVar[str]
    # a Bearer token that cannot be a key of this kind (another kind, or garbage)
    not_ours: ClassVar[str]

    def __init__(
        self, pool: Pool, *, cache_seconds: float, cache_size: int, failures_per_minute: int
    ) -> None:
        self.pool = pool
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self.limiter = FailureLimiter(failures_per_minute)
        self._cache: OrderedDict[bytes, _Cached[P]] = OrderedDict()
        self._touched: dict[str, float] = {}

    @abstractmethod
    def well_formed(self, key: str) -> bool: ...

    @abstractmethod
    async def resolve(self, digest: bytes) -> asyncpg.Record | None: ...

    @abstractmethod
    def principal(self, row: asyncpg.Record) -> P: ...

    @abstractmethod
    async def touch(self, key_id: str) -> None: ...

    async def authenticate(self, header: str | None, client: str) -> P:
        now = time.monotonic()
        retry = self.limiter.retry_after(client, now)
        if retry is not None:
            raise TooManyRequests(
                "too many failed authentication attempts; slow down",
                headers={"Retry-After": str(retry)},
            )
        if not header:
            self.limiter.record_failure(client, now)
            raise Unauthorized(f"missing Authorization header; use '{self.key_hint}'")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or any(c.isspace() for c in key):
            self.limiter.record_failure(client, now)
            raise Unauthorized(f"malformed Authorization header; use '{self.key_hint}'")
        if not self.well_formed(key):  # a Bearer token, just not one we could have issued
            self.limiter.record_failure(client, now)
            raise Unauthorized(self.not_ours)
        digest = hash_api_key(key)
        cached = self._cache.get(digest)
        if cached is not None and cached.expires_at > now:
            return cached.principal
        row = await self.resolve(digest)
        # The lookup is by hash, so equality is already established; compare again in
        # constant time so no code path branches on a partial match.
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            self._cache.pop(digest, None)
            self.limiter.record_failure(client, now)
            raise Unauthorized(self.unknown)
        principal = self.principal(row)
        self._remember(digest, principal, now)
        last = self._touched.get(principal.key_id, -TOUCH_INTERVAL_SECONDS)
        if now - last >= TOUCH_INTERVAL_SECONDS:
            self._touched[principal.key_id] = now
            await self.touch(principal.key_id)
        return principal

    def _remember(self, digest: bytes, principal: P, now: float) -> None:
        if self.cache_seconds <= 0:
            return
        self._cache[digest] = _Cached(principal, now + self.cache_seconds)
        self._cache.move_to_end(digest)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


class Authenticator(KeyAuthenticator[Principal]):
    """Customer keys (`oct_live_`), on the public listener."""

    key_hint = "Bearer oct_live_..."
    unknown = not_ours = UNKNOWN_KEY

    def well_formed(self, key: str) -> bool:
        return is_well_formed_key(key)

    async def resolve(self, digest: bytes) -> asyncpg.Record | None:
        return await workspaces.resolve_key(self.pool, digest)

    def principal(self, row: asyncpg.Record) -> Principal:
        return Principal(row["id"], row["workspace_id"])

    async def touch(self, key_id: str) -> None:
        await workspaces.touch_key(self.pool, key_id)
