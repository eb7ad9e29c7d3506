"""The public contract: bodies, statuses and headers exactly as the seed documents them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import SEED_ACCOUNTS, Api, with_tokens

JSON = "application/json; charset=utf-8"


async def body(resp: Any) -> Any:
    assert resp.headers["Content-Type"].startswith("application/json"), await resp.text()
    return await resp.json()


async def test_list_returns_the_seed_bodies_in_connected_order(api: Api, seeded: str) -> None:
    r = await api.request("GET", "/v1/accounts", seeded)
    assert r.status == 200, await r.text()
    assert await body(r) == {"accounts": SEED_ACCOUNTS}
    assert r.headers["X-Request-Id"]


async def test_get_returns_the_account_object(api: Api, seeded: str) -> None:
    r = await api.request("GET", "/v1/accounts/acc_abc123", seeded)
    assert r.status == 200, await r.text()
    assert await body(r) == SEED_ACCOUNTS[0]
    # field order as the seed shows it
    assert list((await r.json()).keys()) == list(SEED_ACCOUNTS[0].keys())


async def test_nullable_fields_are_null(api: Api, make_key: Any, import_lines: Any) -> None:
    key = await make_key("nulls")
    line = with_tokens(
        {"platform": "youtube", "platform_user_id": "UC1", "username": "chan", "display_name": "C"}
    )
    (account_id,) = await import_lines("nulls", [line])
    assert account_id.startswith("acc_")
    r = await api.request("GET", f"/v1/accounts/{account_id}", key)
    got = await body(r)
    assert got["avatar_url"] is None and got["last_used_at"] is None
    assert got["is_active"] is True
    assert got["connected_at"].endswith("Z") and len(got["connected_at"]) == 20


async def test_disconnect_is_204_then_gone_then_404(api: Api, seeded: str) -> None:
    r = await api.request("DELETE", "/v1/accounts/acc_ghi789", seeded)
    assert r.status == 204, await r.text()
    assert await r.read() == b""
    r = await api.request("GET", "/v1/accounts/acc_ghi789", seeded)
    assert r.status == 404
    assert await body(r) == {"error": {"type": "not_found", "message": "account not found"}}
    r = await api.request("GET", "/v1/accounts", seeded)
    assert [a["id"] for a in (await body(r))["accounts"]] == ["acc_abc123", "acc_def456"]
    r = await api.request("DELETE", "/v1/accounts/acc_ghi789", seeded)
    assert r.status == 404
    assert (await body(r))["error"]["type"] == "not_found"


async def test_disconnect_erases_tokens_and_writes_outbox_and_event(
    api: Api, seeded: str, pool: Any
) -> None:
    r = await api.request("DELETE", "/v1/accounts/acc_abc123", seeded)
    assert r.status == 204
    assert (
        await pool.fetchval("SELECT count(*) FROM account_tokens WHERE account_id = 'acc_abc123'")
        == 0
    )
    rev = await pool.fetchrow("SELECT * FROM revocations WHERE account_id = 'acc_abc123'")
    assert rev["status"] == "pending" and rev["sealed"] is not None
    kinds = await pool.fetch(
        "SELECT kind FROM account_events WHERE account_id = 'acc_abc123' ORDER BY id"
    )
    assert [k["kind"] for k in kinds] == ["connected", "disconnected"]


async def test_unknown_ids_are_404(api: Api, seeded: str) -> None:
    for account_id in (
        "acc_nope",
        "acc_abc123'--",
        "acc_%E2%98%83",
        "a" * 10_000,
        "acc_abc123%00",
        "..%2F..%2Fetc",
    ):
        for method in ("GET", "DELETE"):
            r = await api.request(method, f"/v1/accounts/{account_id}", seeded)
            assert r.status == 404, (account_id, method, await r.text())
            assert (await body(r))["error"]["type"] == "not_found"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic b2N0Og==",
        "Bearer not_a_key",
        "Bearer oct_live_" + "A" * 32,  # well formed, unknown
        "Token oct_live_" + "A" * 32,
    ],
)
async def test_bad_credentials_are_401_with_challenge(
    api: Api, seeded: str, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    for method, path in (
        ("GET", "/v1/accounts"),
        ("GET", "/v1/accounts/acc_abc123"),
        ("DELETE", "/v1/accounts/acc_abc123"),
    ):
        r = await api.request(method, path, headers=headers)
        assert r.status == 401, await r.text()
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await body(r))["error"]["type"] == "unauthorized"
    # nothing was deleted by the attempts
    r = await api.request("GET", "/v1/accounts/acc_abc123", seeded)
    assert r.status == 200


@pytest.mark.parametrize(
    ("header", "message"),
    [
        # not `Bearer <token>`: malformed, and the message says what to send
        (None, "missing Authorization header; use 'Bearer oct_live_...'"),
        ("Bearer", "malformed Authorization header; use 'Bearer oct_live_...'"),
        ("Bearer ", "malformed Authorization header; use 'Bearer oct_live_...'"),
        ("Basic b2N0Og==", "malformed Authorization header; use 'Bearer oct_live_...'"),
        (
            "Bearer oct_live_a oct_live_b",
            "malformed Authorization header; use 'Bearer oct_live_...'",
        ),
        # a Bearer token that is no key of ours, whatever its shape: unknown
        ("Bearer oct_live_bogus", "invalid or revoked API key"),
        ("Bearer not_a_key", "invalid or revoked API key"),
        ("bearer oct_live_" + "A" * 32, "invalid or revoked API key"),
    ],
)
async def test_malformed_header_and_unknown_key_are_told_apart(
    api: Api, header: str | None, message: str
) -> None:
    headers = {} if header is None else {"Authorization": header}
    r = await api.request("GET", "/v1/accounts", headers=headers)
    assert r.status == 401
    assert (await body(r))["error"] == {"type": "unauthorized", "message": message}


async def test_revoked_key_stops_working(api: Api, seeded: str, pool: Any, settings: Any) -> None:
    r = await api.request("GET", "/v1/accounts", seeded)
    assert r.status == 200
    await pool.execute("UPDATE api_keys SET revoked_at = now()")
    # A fresh app has an empty key cache; the running one honours revocation within
    # key_cache_seconds (covered in the reliability suite).
    from service.api.app import create_app

    app = create_app(settings, pool=pool)
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(app)) as client:
        r2 = await client.get("/v1/accounts", headers={"Authorization": f"Bearer {seeded}"})
        assert r2.status == 401


async def test_last_used_at_of_key_is_recorded(api: Api, seeded: str, pool: Any) -> None:
    assert await pool.fetchval("SELECT last_used_at FROM api_keys") is None
    r = await api.request("GET", "/v1/accounts", seeded)
    assert r.status == 200
    assert await pool.fetchval("SELECT last_used_at FROM api_keys") is not None


async def test_workspaces_cannot_see_or_touch_each_other(
    api: Api, seeded: str, make_key: Any, import_lines: Any
) -> None:
    other = await make_key("globex")
    (theirs,) = await import_lines(
        "globex",
        [
            with_tokens(
                {
                    "platform": "twitter",
                    "platform_user_id": "1234567890",
                    "username": "globex",
                    "display_name": "Globex",
                }
            )
        ],
    )
    r = await api.request("GET", "/v1/accounts", other)
    assert [a["id"] for a in (await body(r))["accounts"]] == [theirs]
    for method in ("GET", "DELETE"):
        r = await api.request(method, "/v1/accounts/acc_abc123", other)
        assert r.status == 404
        assert await body(r) == {"error": {"type": "not_found", "message": "account not found"}}
        r = await api.request(method, f"/v1/accounts/{theirs}", seeded)
        assert r.status == 404
    for suffix in ("/health", "/events"):
        r = await api.request("GET", f"/v1/accounts/acc_abc123{suffix}", other)
        assert r.status == 404
    r = await api.request("GET", "/v1/accounts?platform=twitter", other)
    assert [a["id"] for a in (await body(r))["accounts"]] == [theirs]
    r = await api.request("GET", "/v1/accounts/acc_abc123", seeded)
    assert r.status == 200


async def test_filters(api: Api, seeded: str) -> None:
    r = await api.request("GET", "/v1/accounts?platform=bluesky", seeded)
    assert [a["id"] for a in (await body(r))["accounts"]] == ["acc_def456"]
    r = await api.request("GET", "/v1/accounts?is_active=false", seeded)
    assert [a["id"] for a in (await body(r))["accounts"]] == ["acc_ghi789"]
    r = await api.request("GET", "/v1/accounts?is_active=true&platform=twitter", seeded)
    assert [a["id"] for a in (await body(r))["accounts"]] == ["acc_abc123"]
    r = await api.request("GET", "/v1/accounts?platform=myspace", seeded)
    assert r.status == 400


@pytest.mark.parametrize(
    "query",
    [
        "platform=",
        "platform=TWITTER",
        "is_active=yes",
        "is_active=1",
        "limit=0",
        "limit=501",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=%EF%BC%91",  # a full-width digit
        "limit=99999999999999999999999",
        "cursor=",
        "cursor=garbage",
        "cursor=" + "A" * 2000,
        "status=sleepy",
        "limit=1&limit=2",
    ],
)
async def test_bad_query_values_are_400(api: Api, seeded: str, query: str) -> None:
    r = await api.request("GET", f"/v1/accounts?{query}", seeded)
    assert r.status == 400, await r.text()
    assert (await body(r))["error"]["type"] == "invalid_request"


async def test_pagination_walks_everything_once(api: Api, make_key: Any, import_lines: Any) -> None:
    key = await make_key("big")
    lines = [
        with_tokens(
            {
                "platform": "mastodon",
                "platform_user_id": str(i),
                "username": f"u{i}@example.social",
                "display_name": f"U{i}",
                # equal timestamps exercise the id tie-break
                "connected_at": f"2026-01-01T00:00:{i // 3:02d}Z",
            }
        )
        for i in range(25)
    ]
    created = await import_lines("big", lines)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        path = "/v1/accounts?limit=7" + (f"&cursor={cursor}" if cursor else "")
        r = await api.request("GET", path, key)
        page = await body(r)
        assert r.status == 200, page
        assert set(page) == {"accounts", "has_more", "next_cursor"}
        seen += [a["id"] for a in page["accounts"]]
        pages += 1
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert pages == 4
    assert sorted(seen) == sorted(created) and len(seen) == 25
    r = await api.request("GET", "/v1/accounts", key)
    assert [a["id"] for a in (await body(r))["accounts"]] == seen


async def test_tampered_cursor_is_400(api: Api, seeded: str) -> None:
    r = await api.request("GET", "/v1/accounts?limit=1", seeded)
    cursor = (await body(r))["next_cursor"]
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    r = await api.request("GET", f"/v1/accounts?limit=1&cursor={flipped}", seeded)
    assert r.status == 400


async def test_wrong_methods_are_405_json(api: Api, seeded: str) -> None:
    for method, path in (
        ("POST", "/v1/accounts"),
        ("PUT", "/v1/accounts/acc_abc123"),
        ("PATCH", "/v1/accounts/acc_abc123"),
        ("DELETE", "/v1/accounts"),
    ):
        r = await api.request(method, path, seeded)
        assert r.status == 405, await r.text()
        assert (await body(r))["error"]["type"] == "method_not_allowed"
        assert "Allow" in r.headers


async def test_unknown_path_is_404_json(api: Api) -> None:
    r = await api.request("GET", "/nope")
    assert r.status == 404
    assert await body(r) == {"error": {"type": "not_found", "message": "no such endpoint"}}


async def test_huge_headers_and_bodies_are_4xx(api: Api, seeded: str) -> None:
    # an oversized header is refused by aiohttp's parser, before the app: its own plain 400
    r = await api.request("GET", "/v1/accounts", seeded, headers={"X-Big": "a" * 20_000})
    assert r.status == 400
    assert r.headers["Content-Type"].startswith("text/plain")
    r = await api.request("DELETE", "/v1/accounts/acc_abc123", seeded, data=b"x" * 200_000)
    assert r.status == 413, await r.text()
    assert (await body(r))["error"]["type"] == "payload_too_large"


async def test_request_id_is_echoed_when_sane(api: Api) -> None:
    r = await api.request("GET", "/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["X-Request-Id"] == "abc-123"
    r = await api.request("GET", "/healthz", headers={"X-Request-Id": "bad id <script>"})
    assert r.headers["X-Request-Id"] != "bad id <script>" and r.headers["X-Request-Id"]


async def test_health_endpoints_and_metrics(api: Api, seeded: str) -> None:
    r = await api.request("GET", "/healthz")
    assert r.status == 200 and (await r.json())["status"] == "ok"
    r = await api.request("GET", "/readyz")
    assert r.status == 200, await r.text()
    assert (await r.json())["checks"] == {"postgres": "ok", "redis": "ok"}
    await api.request("GET", "/v1/accounts/acc_abc123", seeded)
    r = await api.request("GET", "/metrics")
    text = await r.text()
    assert (
        'octopost_http_requests_total{method="GET",route="/v1/accounts/{account_id}",status="200"}'
        in text
    )
    assert "octopost_http_request_duration_seconds_bucket" in text


async def test_openapi_describes_the_account_object(api: Api) -> None:
    r = await api.request("GET", "/v1/openapi.json")
    doc = await body(r)
    assert doc["openapi"].startswith("3.1")
    account = doc["components"]["schemas"]["Account"]
    assert list(account["properties"]) == list(SEED_ACCOUNTS[0].keys())
    assert set(account["required"]) == set(SEED_ACCOUNTS[0].keys())
    assert {"/v1/accounts", "/v1/accounts/{id}"} <= set(doc["paths"])


async def test_health_and_events_of_an_account(api: Api, seeded: str) -> None:
    r = await api.request("GET", "/v1/accounts/acc_abc123/health", seeded)
    h = await body(r)
    assert h["id"] == "acc_abc123" and h["status"] == "unchecked" and h["is_active"] is True
    r = await api.request("GET", "/v1/accounts/acc_abc123/events", seeded)
    ev = await body(r)
    assert [e["kind"] for e in ev["events"]] == ["connected"]
