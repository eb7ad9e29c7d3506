"""The sandbox's control API, its call log and its added latency."""

from __future__ import annotations

import time

import aiohttp
from aiohttp.test_utils import TestServer

from devkit.sandbox.app import create_sandbox_app
from tests.platforms.rows import Sandbox


async def test_unknown_state_is_refused(sandbox: Sandbox) -> None:
    async with sandbox.http.post(
        f"{sandbox.url}/sandbox/tokens", json={"token": "t", "state": "sleepy"}
    ) as r:
        assert r.status == 400, await r.text()
        body = await r.json()
    assert body["error"] == "unknown state 'sleepy'"
    assert "rate_limited" in body["states"]


async def test_states_can_be_set_in_bulk_and_calls_are_logged(sandbox: Sandbox) -> None:
    items = [{"token": "bulk-1", "state": "revoked"}, {"token": "bulk-2", "state": "expired"}]
    async with sandbox.http.post(f"{sandbox.url}/sandbox/tokens", json=items) as r:
        assert r.status == 200, await r.text()
        assert await r.json() == {"count": 2}
    url = f"{sandbox.url}/mastodon/api/v1/accounts/verify_credentials"
    async with sandbox.http.get(url, headers={"Authorization": "Bearer bulk-1"}) as r:
        assert r.status == 401
        assert await r.json() == {"error": "The access token was revoked"}
    [call] = await sandbox.calls("bulk-1")
    assert {k: v for k, v in call.items() if k != "at"} == {
        "platform": "mastodon",
        "method": "GET",
        "path": "/mastodon/api/v1/accounts/verify_credentials",
        "token": "bulk-1",
        "status": 401,
    }


async def test_reset_clears_states_and_calls() -> None:
    server = TestServer(create_sandbox_app(), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(str(server.make_url(""))) as http:
            async with http.post("/sandbox/tokens", json={"token": "t", "state": "revoked"}) as r:
                assert r.status == 200
            headers = {"Authorization": "Bearer t"}
            async with http.get("/twitter/2/users/me", headers=headers) as r:
                assert r.status == 401
            async with http.delete("/sandbox/calls") as r:
                assert r.status == 200
            async with http.get("/sandbox/calls") as r:
                assert await r.json() == {"total": 1, "calls": [], "in_flight": []}
            async with http.post("/sandbox/reset") as r:
                assert r.status == 200
            async with http.get("/twitter/2/users/me", headers=headers) as r:
                assert r.status == 200, await r.text()  # unknown tokens are valid
            async with http.get("/sandbox/calls", params={"platform": "twitter"}) as r:
                [call] = (await r.json())["calls"]
                assert call["status"] == 200
    finally:
        await server.close()


async def test_added_latency() -> None:
    server = TestServer(create_sandbox_app(latency_ms=50), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(str(server.make_url(""))) as http:
            started = time.monotonic()
            async with http.get(
                "/tiktok/v2/user/info/", headers={"Authorization": "Bearer t"}
            ) as r:
                assert r.status == 200
            assert time.monotonic() - started >= 0.05
    finally:
        await server.close()
