"""Webhook tests: a real receiver over HTTP that verifies with the `standardwebhooks`
package, the API on a real port, the dispatcher running in the test's event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from arq.connections import ArqRedis
from standardwebhooks.webhooks import Webhook
from yarl import URL

from devkit.embedded import free_port
from service.api.app import create_app
from service.api.server import AppRunner
from service.core.settings import Settings
from service.core.vault import Vault
from tests.conftest import Api
from tests.worker.revocation_helpers import Sandbox, running_sandbox, wait_for
from worker.metrics import WorkerMetrics
from worker.webhooks import WebhookDispatcher

__all__ = ["Sandbox", "wait_for"]


@dataclass
class Answer:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    def verified(self, secret: str) -> Any:
        """The payload, if the signature verifies with this secret (raises otherwise)."""
        return Webhook(secret).verify(self.body, self.headers)


class Receiver:
    """Records every request; answers each path from its script, then with its default."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.scripts: dict[str, list[Answer]] = {}
        self.defaults: dict[str, Answer] = {}
        self.base = ""
        self.in_flight: dict[str, int] = {}
        self.most_in_flight: dict[str, int] = {}

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return str(URL(self.base).with_host(host)) + path.lstrip("/")

    def script(self, path: str, *answers: Answer, default: Answer | None = None) -> None:
        self.scripts[path] = list(answers)
        if default is not None:
            self.defaults[path] = default

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(request.path, dict(request.headers), body, time.monotonic()))
        queue = self.scripts.get(request.path)
        answer = queue.pop(0) if queue else self.defaults.get(request.path, Answer())
        path = request.path
        self.in_flight[path] = self.in_flight.get(path, 0) + 1
        self.most_in_flight[path] = max(self.most_in_flight.get(path, 0), self.in_flight[path])
        try:
            if answer.delay:
                await asyncio.sleep(answer.delay)
        finally:
            self.in_flight[path] -= 1
        return web.Response(status=answer.status, headers=answer.headers, text="ok")

    async def wait(self, path: str, n: int = 1, within: float = 20.0) -> list[Received]:
        async def enough() -> bool:
            return len(self.at(path)) >= n

        await wait_for(enough, within=within, what=f"{n} deliveries to {path}")
        return self.at(path)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rec.base = f"http://127.0.0.1:{port}/"
    yield rec
    await runner.cleanup()


@pytest.fixture
def wsettings(settings: Settings) -> Settings:
    """Receivers on 127.0.0.1 allowed; a short schedule and a fast relay."""
    return settings.model_copy(
        update={
            "allow_private_hosts": True,
            "webhook_retry_schedule": "0,0.2,0.2,0.2",
            "webhook_relay_seconds": 0.1,
            "webhook_timeout_seconds": 5.0,
            "revoke_backoff_base_seconds": 0.05,
            "revoke_relay_grace_seconds": 0.0,
        }
    )


@asynccontextmanager
async def serving(settings: Settings, pool: asyncpg.Pool, redis: ArqRedis) -> AsyncIterator[Api]:
    runner = AppRunner(create_app(settings, pool=pool, redis=redis), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(URL(f"http://127.0.0.1:{port}"), session)
    finally:
        await runner.cleanup()


@pytest.fixture
async def wapi(wsettings: Settings, pool: asyncpg.Pool, redis: ArqRedis) -> AsyncIterator[Api]:
    async with serving(wsettings, pool, redis) as api:
        yield api


@asynccontextmanager
async def dispatching(
    settings: Settings, pool: asyncpg.Pool, vault: Vault
) -> AsyncIterator[WebhookDispatcher]:
    dispatcher = WebhookDispatcher(settings, pool, vault, WorkerMetrics())
    await dispatcher.start()
    try:
        await asyncio.wait_for(dispatcher.listening.wait(), 10)
        yield dispatcher
    finally:
        await dispatcher.close()


@pytest.fixture
async def dispatcher(
    wsettings: Settings, pool: asyncpg.Pool, vault: Vault
) -> AsyncIterator[WebhookDispatcher]:
    async with dispatching(wsettings, pool, vault) as d:
        yield d


@pytest.fixture(scope="module")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with running_sandbox() as sandbox:
        yield sandbox


async def create_endpoint(api: Api, key: str, url: str, **extra: Any) -> dict[str, Any]:
    async with await api.request(
        "POST", "/v1/webhook_endpoints", key, json={"url": url, **extra}
    ) as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 201, body
        return body


async def call(api: Api, method: str, path: str, key: str | None, **kwargs: Any) -> tuple[int, Any]:
    async with await api.request(method, path, key, **kwargs) as r:
        raw = await r.read()
        return r.status, orjson.loads(raw) if raw else None
