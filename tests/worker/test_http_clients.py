"""The worker's two HTTP clients for platform calls (reqwest, the default, and aiohttp) give
the same outcome for every kind of answer: valid, revoked, server error, no answer in
time, a 429 with Retry-After, and a refresh (a form POST whose answer holds new tokens)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from service.core.settings import Settings
from tests.worker.conftest import Sandbox, SweepRunner
from tests.worker.test_health import account, iso, state


@pytest.mark.parametrize("client", ["reqwest", "aiohttp"])
async def test_both_clients_give_the_same_outcomes(
    client: str,
    sweep: SweepRunner,
    sandbox: Sandbox,
    import_lines: Any,
    pool: asyncpg.Pool,
    worker_settings: Settings,
) -> None:
    await sandbox.set("hc-revoked", "revoked")
    await sandbox.set("hc-error", "error")
    await sandbox.set("hc-slow", "slow", delay_ms=4000)
    await sandbox.set("hc-limited", "rate_limited", retry_after=300)
    lines = [
        account("mastodon", "ok", access_token="hc-ok"),
        account("mastodon", "revoked", access_token="hc-revoked"),
        account("facebook", "error", access_token="hc-error"),
        account("youtube", "slow", access_token="hc-slow", refresh_token="hc-slow"),
        account("bluesky", "limited", access_token="hc-limited", refresh_token="hc-limited"),
        account(
            "twitter", "soon", access_token="hc-at", refresh_token="hc-rt",
            token_expires_at=iso(timedelta(minutes=5)),
        ),
    ]  # fmt: skip
    ok, revoked, error, slow, limited, soon = await import_lines("acme", lines)
    settings = worker_settings.model_copy(update={"worker_http_client": client})
    result = await sweep(settings=settings)
    assert result["checked"] == 6 and result["refreshed"] == 1, dict(result)
    assert (result["healthy"], result["deactivated"], result["transient"]) == (2, 1, 3)
    now = datetime.now(UTC)
    assert (await state(pool, ok))["health_status"] == "healthy"
    s = await state(pool, revoked)
    assert (s["is_active"], s["health_status"]) == (False, "revoked")
    for transient in (error, slow):
        s = await state(pool, transient)
        assert s["is_active"] is True and s["transient_failures"] == 1
    s = await state(pool, limited)  # Retry-After read from the answer's headers
    assert s["is_active"] is True and s["next_check_at"] >= now + timedelta(seconds=250)
    s = await state(pool, soon)
    assert (s["is_active"], s["health_status"]) == (True, "healthy")
    assert [c["path"] for c in await sandbox.calls(token="hc-rt")] == ["/twitter/2/oauth2/token"]


EXIT_SCRIPT = """
import asyncio
from service.platforms.reqwest import ReqwestTransport

async def main():
    transport = ReqwestTransport(max_connections=4)
    for _ in range(3):
        reply = await transport.request(
            "GET", "http://127.0.0.1:{port}/x", headers=None, params=None, data=None,
            timeout_seconds=2,
        )
        assert reply.failure == "connection_error", reply
    await transport.close()
    KEEP.append(transport)

KEEP = []
asyncio.run(main())
"""


def test_a_process_that_used_reqwest_exits_cleanly() -> None:
    """reqwest objects freed during interpreter shutdown used to abort the process (exit
    134, PyGILState_Release) about three times in four after a failed call; close() frees
    them first. Four runs, each of which would have aborted most of the time."""
    import subprocess
    import sys

    from devkit.embedded import free_port
    from tests.conftest import ROOT

    script = EXIT_SCRIPT.format(port=free_port())
    for _ in range(4):
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("client", ["reqwest", "aiohttp"])
async def test_both_clients_send_a_json_body(client: str) -> None:
    # Bluesky's createSession and other JSON posts go through the same call
    import aiohttp
    from aiohttp import web

    from service.platforms.mastodon import MastodonAdapter
    from service.platforms.reqwest import ReqwestTransport

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {"type": request.content_type, "body": await request.json()}, status=201
        )

    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    transport = ReqwestTransport(max_connections=2) if client == "reqwest" else None
    try:
        async with aiohttp.ClientSession() as session:
            adapter = MastodonAdapter(session, f"http://127.0.0.1:{port}")
            adapter.transport = transport
            reply = await adapter.call(
                "POST", f"http://127.0.0.1:{port}/echo", json={"identifier": "ada", "n": 1}
            )
    finally:
        if transport is not None:
            await transport.close()
        await runner.cleanup()
    assert (reply.status, reply.body) == (
        201,
        {"type": "application/json", "body": {"identifier": "ada", "n": 1}},
    )
