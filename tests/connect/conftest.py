"""The connect flow end to end: the public and internal listeners on real ports, the
platform sandbox playing the consent screens, a "dashboard" the browser lands on, and a
browser (an aiohttp client following redirects) in between."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from arq.connections import ArqRedis
from yarl import URL

from devkit.embedded import free_port
from devkit.sandbox.app import create_sandbox_app
from service.api.app import create_app
from service.api.internal_app import create_internal_app
from service.api.server import AppRunner
from service.core.jobs import enqueue_sweep
from service.core.repository import sweeps
from service.core.settings import Settings
from service.platforms.config import PlatformSettings
from worker.assembly import make_worker

OAUTH_PLATFORMS = [
    "twitter",
    "linkedin",
    "tiktok",
    "youtube",
    "threads",
    "instagram",
    "facebook",
    "mastodon",
]


async def _serve(app: web.Application) -> tuple[AppRunner, int]:
    runner = AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def _dashboard(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path, "query": dict(request.query)})


@dataclass
class Stack:
    public: str
    internal: str
    dashboard: str
    sandbox: str
    http: aiohttp.ClientSession
    service_key: str
    customer_key: str
    settings: Settings
    platform_settings: PlatformSettings

    @property
    def redirect_url(self) -> str:
        return f"{self.dashboard}/connected"

    async def login(self, platform: str, user: dict[str, Any], **extra: Any) -> None:
        body = {"platform": platform, "user": user, **extra}
        async with self.http.post(f"{self.sandbox}/sandbox/login", json=body) as r:
            assert r.status == 200, await r.text()

    async def create(self, platform: str, **fields: Any) -> tuple[int, dict[str, Any]]:
        body = {"workspace": "acme", "platform": platform, **fields}
        if platform != "bluesky":
            body.setdefault("redirect_url", self.redirect_url)
        if platform == "mastodon":
            body.setdefault("instance", "mastodon.example")
        async with self.http.post(
            f"{self.internal}/internal/v1/connect-sessions",
            json=body,
            headers={"Authorization": f"Bearer {self.service_key}"},
        ) as r:
            return r.status, await r.json()

    async def session(self, session_id: str) -> dict[str, Any]:
        async with self.http.get(
            f"{self.internal}/internal/v1/connect-sessions/{session_id}",
            headers={"Authorization": f"Bearer {self.service_key}"},
        ) as r:
            assert r.status == 200, await r.text()
            body: dict[str, Any] = await r.json()
            return body

    async def browse(self, url: str) -> dict[str, str]:
        """Open ``url`` as a browser would; the query the dashboard was sent back with."""
        async with aiohttp.ClientSession() as browser, browser.get(url) as r:
            assert r.status == 200, await r.text()
            assert str(r.url).startswith(self.dashboard), r.url
            landed: dict[str, Any] = await r.json()
            assert landed["path"] == "/connected"
            return landed["query"]  # type: ignore[no-any-return]

    async def callback_url(self, authorize_url: str) -> str:
        """Only the consent screen's redirect: the callback URL with code and state."""
        async with self.http.get(authorize_url, allow_redirects=False) as r:
            assert r.status == 302, await r.text()
            return r.headers["Location"]

    async def connect(self, platform: str, **fields: Any) -> dict[str, str]:
        status, body = await self.create(platform, **fields)
        assert status == 201, body
        return await self.browse(body["authorize_url"])

    async def account(self, account_id: str, what: str = "") -> tuple[int, dict[str, Any]]:
        async with self.http.get(
            f"{self.public}/v1/accounts/{account_id}{what}",
            headers={"Authorization": f"Bearer {self.customer_key}"},
        ) as r:
            return r.status, await r.json()

    async def calls(self, **params: str) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.sandbox}/sandbox/calls", params=params) as r:
            calls: list[dict[str, Any]] = (await r.json())["calls"]
            return calls


@pytest.fixture
async def sandbox_url() -> AsyncIterator[tuple[str, PlatformSettings]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    platform_settings = PlatformSettings(
        sandbox_url=url, allow_private_hosts=True, request_timeout_seconds=5
    )
    runner = AppRunner(create_sandbox_app(platform_settings=platform_settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield url, platform_settings
    await runner.cleanup()


@pytest.fixture
async def stack(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: ArqRedis,
    sandbox_url: tuple[str, PlatformSettings],
    make_service_key: Callable[..., Any],
    make_key: Callable[[str], Any],
) -> AsyncIterator[Stack]:
    sandbox, platform_settings = sandbox_url
    dash_app = web.Application()
    dash_app.router.add_get("/connected", _dashboard)
    dash_runner, dash_port = await _serve(dash_app)
    dashboard = f"http://127.0.0.1:{dash_port}"
    public_port = free_port()
    ours = settings.model_copy(
        update={
            "public_base_url": f"http://127.0.0.1:{public_port}",
            "connect_redirect_origins": f"{dashboard}, https://app.octopost.example",
        }
    )
    public = AppRunner(
        create_app(ours, pool=pool, redis=redis, platform_settings=platform_settings),
        access_log=None,
    )
    await public.setup()
    await web.TCPSite(public, "127.0.0.1", public_port).start()
    internal, internal_port = await _serve(
        create_internal_app(ours, pool=pool, redis=redis, platform_settings=platform_settings)
    )
    service_key = await make_service_key("dashboard", ("connect",))
    customer_key = await make_key("acme")
    async with aiohttp.ClientSession() as http:
        yield Stack(
            public=f"http://127.0.0.1:{public_port}",
            internal=f"http://127.0.0.1:{internal_port}",
            dashboard=dashboard,
            sandbox=sandbox,
            http=http,
            service_key=service_key,
            customer_key=customer_key,
            settings=ours,
            platform_settings=platform_settings,
        )
    await internal.cleanup()
    await public.cleanup()
    await dash_runner.cleanup()


@pytest.fixture
def sweep(stack: Stack, pool: asyncpg.Pool, redis: ArqRedis) -> Callable[..., Any]:
    """A manual sweep run by a burst worker in this process against the same sandbox."""

    async def run(account: str | None = None) -> asyncpg.Record:
        sweep_id = await sweeps.create_sweep(pool, "manual", None, account)
        await enqueue_sweep(redis, sweep_id)
        worker = make_worker(
            stack.settings,
            platform_settings=stack.platform_settings,
            burst=True,
            handle_signals=False,
            cron_jobs=[],
            poll_delay=0.05,
        )
        try:
            await worker.main()
        finally:
            await worker.close()
        row = await sweeps.get_sweep(pool, sweep_id)
        assert row is not None
        return row

    return run


def user(platform: str, n: int = 1) -> dict[str, Any]:
    ids = {"bluesky": f"did:plc:user{n}", "youtube": f"UCchannel{n}"}
    handle = f"user{n}.bsky.social" if platform == "bluesky" else f"{platform}_user{n}"
    return {
        "id": ids.get(platform, f"{platform}-{1000 + n}"),
        "username": handle,
        "name": f"User {n} of {platform}",
        "avatar_url": f"https://cdn.sandbox.example/{platform}/{n}.jpg",
    }


def url_of(value: str) -> URL:
    return URL(value)
