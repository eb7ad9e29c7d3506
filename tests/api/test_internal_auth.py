"""The internal listener and service keys: who gets in, with which scope, and where."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from arq.connections import ArqRedis
from yarl import URL

from devkit.embedded import free_port
from service.api.internal_app import create_internal_app
from service.api.server import AppRunner
from service.api.service_auth import requires_scope
from service.core import api_keys
from service.core.repository import service_keys
from service.core.settings import Settings
from tests.api.internal_helpers import ApiWithInternal, api_process_env
from tests.conftest import Api
from tests.test_cli import run


async def error_of(r: aiohttp.ClientResponse) -> dict[str, Any]:
    assert r.headers["Content-Type"].startswith("application/json"), await r.text()
    body: dict[str, Any] = await r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    error: dict[str, Any] = body["error"]
    return error


async def test_service_key_authenticates_on_the_internal_listener(
    internal: Api, make_service_key: Any
) -> None:
    key = await make_service_key("publisher", ("credentials", "connect"))
    r = await internal.request("GET", "/internal/v1/service-key", key)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["name"] == "publisher" and body["scopes"] == ["connect", "credentials"]
    assert body["id"].startswith("svk_")
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["X-Request-Id"]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Basic abc",
        "Bearer ",
        "Bearer oct_svc_short",
        "Bearer oct_svc_" + "x" * 32,  # well formed, unknown
    ],
)
async def test_missing_malformed_or_unknown_service_keys_are_401(
    internal: Api, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = await internal.request("GET", "/internal/v1/service-key", headers=headers)
    assert r.status == 401, await r.text()
    assert (await error_of(r))["type"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_customer_key_is_401_on_the_internal_api(internal: Api, make_key: Any) -> None:
    customer = await make_key("acme")
    r = await internal.request("GET", "/internal/v1/service-key", customer)
    assert r.status == 401
    error = await error_of(r)
    assert error["type"] == "unauthorized" and "oct_svc_" in error["message"]


async def test_a_service_key_is_401_on_the_public_api(
    api: Api, make_service_key: Any, seeded: str
) -> None:
    key = await make_service_key("publisher", ("credentials", "connect"))
    for path in ("/v1/accounts", "/v1/accounts/acc_abc123"):
        r = await api.request("GET", path, key)
        assert r.status == 401, await r.text()
        assert (await error_of(r))["type"] == "unauthorized"


async def test_the_public_listener_answers_404_for_internal_paths(
    api: Api, make_service_key: Any, seeded: str
) -> None:
    key = await make_service_key()
    for method, path in (
        ("GET", "/internal/v1/service-key"),
        ("GET", "/internal/v1/openapi.json"),
        ("POST", "/internal/v1/accounts/acc_abc123/credentials"),
        ("POST", "/internal/v1/accounts/acc_abc123/usage"),
        ("GET", "/internal"),
    ):
        for auth in (key, seeded, None):
            r = await api.request(method, path, auth)
            assert r.status == 404, (method, path, await r.text())
            assert await error_of(r) == {"type": "not_found", "message": "no such endpoint"}


async def test_a_revoked_service_key_is_401_once_the_cache_forgets(
    settings: Settings, pool: asyncpg.Pool, redis: ArqRedis, make_service_key: Any
) -> None:
    app = create_internal_app(
        settings.model_copy(update={"key_cache_seconds": 0}), pool=pool, redis=redis
    )
    runner = AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            client = Api(URL(f"http://127.0.0.1:{port}"), http)
            key = await make_service_key()
            r = await client.request("GET", "/internal/v1/service-key", key)
            assert r.status == 200, await r.text()
            revoked = await service_keys.revoke_service_key(pool, "-", api_keys.hash_api_key(key))
            assert len(revoked) == 1
            r = await client.request("GET", "/internal/v1/service-key", key)
            assert r.status == 401
            assert await error_of(r) == {
                "type": "unauthorized",
                "message": "invalid or revoked service key",
            }
    finally:
        await runner.cleanup()


@pytest.fixture
async def scoped_route(
    settings: Settings, pool: asyncpg.Pool, redis: ArqRedis
) -> AsyncIterator[Api]:
    """The internal app with one more route that needs the `connect` scope, as the connect
    flow's routes are added (service.api.internal_app.add_routes)."""

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = create_internal_app(settings, pool=pool, redis=redis)
    app.router.add_get("/internal/v1/needs-connect", requires_scope("connect", ok))
    runner = AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as http:
        yield Api(URL(f"http://127.0.0.1:{port}"), http)
    await runner.cleanup()


async def test_a_valid_key_without_the_scope_is_403(
    scoped_route: Api, make_service_key: Any
) -> None:
    publisher = await make_service_key("publisher", ("credentials",))
    r = await scoped_route.request("GET", "/internal/v1/needs-connect", publisher)
    assert r.status == 403
    assert await error_of(r) == {
        "type": "forbidden",
        "message": "this service key lacks the 'connect' scope",
    }
    connect = await make_service_key("connect", ("connect",))
    r = await scoped_route.request("GET", "/internal/v1/needs-connect", connect)
    assert r.status == 200, await r.text()


def test_requires_scope_refuses_an_unknown_scope() -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response()

    with pytest.raises(ValueError, match="unknown scope"):
        requires_scope("admin", ok)


async def test_internal_openapi_is_served_without_a_key(internal: Api) -> None:
    r = await internal.request("GET", "/internal/v1/openapi.json")
    assert r.status == 200, await r.text()
    doc = await r.json()
    assert doc["openapi"].startswith("3.1")
    assert {
        "/internal/v1/service-key",
        "/internal/v1/accounts/{id}/credentials",
        "/internal/v1/accounts/{id}/usage",
    } <= set(doc["paths"])
    issued = doc["components"]["schemas"]["IssuedCredentials"]
    assert list(issued["properties"]) == [
        "account_id",
        "platform",
        "platform_user_id",
        "access_token",
        "token_type",
        "expires_at",
        "scopes",
        "instance_url",
    ]
    assert all(p.startswith("/internal/v1/") for p in doc["paths"])


async def test_failed_service_key_attempts_are_throttled(
    settings: Settings, pool: asyncpg.Pool, redis: ArqRedis
) -> None:
    app = create_internal_app(
        settings.model_copy(update={"auth_failures_per_minute": 3}), pool=pool, redis=redis
    )
    runner = AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            client = Api(URL(f"http://127.0.0.1:{port}"), http)
            statuses = []
            for _ in range(5):
                r = await client.request("GET", "/internal/v1/service-key", "oct_svc_" + "y" * 32)
                statuses.append(r.status)
                await r.read()
            assert statuses == [401, 401, 401, 429, 429]
            assert int(r.headers["Retry-After"]) >= 1
    finally:
        await runner.cleanup()


async def test_service_keys_create_list_revoke(
    settings: Settings, pool: asyncpg.Pool, internal: Api
) -> None:
    r = await asyncio.to_thread(
        run, settings, "service-keys", "create", "--name", "publisher", "--scope", "credentials"
    )
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("oct_svc_") and api_keys.is_well_formed_service_key(key)
    dump = await pool.fetchval("SELECT string_agg(t::text, ',') FROM service_keys t")
    assert key not in dump and key[len("oct_svc_") :] not in dump
    r2 = await internal.request("GET", "/internal/v1/service-key", key)
    assert (await r2.json())["scopes"] == ["credentials"]

    listing = await asyncio.to_thread(run, settings, "service-keys", "list")
    assert listing.returncode == 0, listing.stderr
    assert "publisher" in listing.stdout and key[:14] in listing.stdout
    assert key not in listing.stdout and "active" in listing.stdout

    # revoke by the key itself (by id and prefix work as for customer keys)
    revoked = await asyncio.to_thread(run, settings, "service-keys", "revoke", key)
    assert revoked.returncode == 0, revoked.stderr
    assert "publisher" in revoked.stdout
    again = await asyncio.to_thread(run, settings, "service-keys", "revoke", key)
    assert again.returncode == 1 and "no active service key" in again.stderr
    row = await pool.fetchrow("SELECT id, prefix, revoked_at FROM service_keys")
    assert row["revoked_at"] is not None
    listing = await asyncio.to_thread(run, settings, "service-keys", "list")
    assert "revoked" in listing.stdout

    for args in (("--scope", "credentials,admin"), ("--scope", " , ")):
        bad = await asyncio.to_thread(run, settings, "service-keys", "create", "--name", "x", *args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
        assert "--scope takes a comma-separated list of: credentials, connect" in bad.stderr
    bad = await asyncio.to_thread(
        run, settings, "service-keys", "create", "--name", " ", "--scope", "connect"
    )
    assert bad.returncode == 2 and "--name" in bad.stderr
    # by id and by display prefix
    for how in ("id", "prefix"):
        made = await asyncio.to_thread(
            run, settings, "service-keys", "create", "--name", how, "--scope", "connect"
        )
        new = made.stdout.strip().splitlines()[-1]
        row = await pool.fetchrow(
            "SELECT id, prefix FROM service_keys WHERE key_hash = $1", api_keys.hash_api_key(new)
        )
        out = await asyncio.to_thread(run, settings, "service-keys", "revoke", row[how])
        assert out.returncode == 0 and row["id"] in out.stdout, out.stderr


async def test_octopost_api_serves_the_internal_listener_in_the_same_process(
    settings: Settings, pool: asyncpg.Pool, make_service_key: Any, seeded: str, tmp_path: Any
) -> None:
    key = await make_service_key()
    api = await ApiWithInternal(api_process_env(settings), tmp_path / "api.log").start()
    try:
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {key}"}
            async with http.get(f"{api.internal}/internal/v1/service-key", headers=auth) as r:
                assert r.status == 200, await r.text()
            async with http.get(f"{api.base}/internal/v1/service-key", headers=auth) as r:
                assert r.status == 404
            async with http.get(f"{api.internal}/internal/v1/openapi.json") as r:
                assert r.status == 200
            # the public API is where it was, and only there
            customer = {"Authorization": f"Bearer {seeded}"}
            async with http.get(f"{api.base}/v1/accounts", headers=customer) as r:
                assert r.status == 200
            async with http.get(f"{api.internal}/v1/accounts", headers=customer) as r:
                assert r.status == 404
    finally:
        assert await api.stop() == 0, api.logs()
    assert "Traceback" not in api.logs()
