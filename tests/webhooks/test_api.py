"""/v1/webhook_endpoints: the contract, its errors, and one workspace never touching
another's endpoints."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis

from service.core.settings import Settings
from service.core.webhooks import ACCOUNT_EVENT_TYPES, UrlRefused, address_allowed, check_url
from tests.conftest import Api
from tests.webhooks.conftest import Receiver, call, create_endpoint, serving
from worker.webhooks import _retry_after

ENDPOINT_KEYS = {"id", "url", "events", "description", "enabled", "created_at"}


async def test_create_list_get_patch_delete(wapi: Api, make_key: Any) -> None:
    key = await make_key("acme")
    created = await create_endpoint(
        wapi, key, "https://hooks.example.com/octopost", description="billing"
    )
    assert set(created) == ENDPOINT_KEYS | {"secret"}
    assert created["id"].startswith("we_")
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["events"] == list(ACCOUNT_EVENT_TYPES)
    assert (created["enabled"], created["description"]) == (True, "billing")
    public = {k: v for k, v in created.items() if k != "secret"}

    status, body = await call(wapi, "GET", "/v1/webhook_endpoints", key)
    assert (status, body) == (200, {"webhook_endpoints": [public]})
    status, body = await call(wapi, "GET", f"/v1/webhook_endpoints/{created['id']}", key)
    assert (status, body) == (200, public)

    status, body = await call(
        wapi,
        "PATCH",
        f"/v1/webhook_endpoints/{created['id']}",
        key,
        json={"events": ["account.disconnected"], "enabled": False, "description": ""},
    )
    assert status == 200, body
    assert body == {
        **public,
        "events": ["account.disconnected"],
        "enabled": False,
        "description": "",
    }

    status, body = await call(wapi, "DELETE", f"/v1/webhook_endpoints/{created['id']}", key)
    assert (status, body) == (204, None)
    status, body = await call(wapi, "GET", f"/v1/webhook_endpoints/{created['id']}", key)
    assert status == 404 and body["error"]["type"] == "not_found", body
    status, body = await call(wapi, "DELETE", f"/v1/webhook_endpoints/{created['id']}", key)
    assert status == 404, body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "url: Field required"),
        ({"url": "https://x.example", "events": ["account.exploded"]}, "events.0"),
        ({"url": "https://x.example", "events": []}, "events"),
        (
            {"url": "https://x.example", "events": ["account.connected"] * 2},
            "must not name an event type twice",
        ),
        ({"url": "https://x.example", "secret": "mine"}, "secret: Extra inputs"),
        ({"url": "ftp://x.example"}, "url must be http(s)"),
        ({"url": "https://user:pw@x.example"}, "credentials"),
        ({"url": "https://x.example", "description": "a" * 501}, "description"),
    ],
)
async def test_create_refuses_bad_bodies(
    wapi: Api, make_key: Any, body: dict[str, Any], message: str
) -> None:
    key = await make_key("acme")
    status, answer = await call(wapi, "POST", "/v1/webhook_endpoints", key, json=body)
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request"
    assert message in answer["error"]["message"], answer


async def test_bodies_that_are_not_json_objects(wapi: Api, make_key: Any) -> None:
    key = await make_key("acme")
    for raw in (b"", b"{", b"[1]", b"\xff"):
        status, answer = await call(wapi, "POST", "/v1/webhook_endpoints", key, data=raw)
        assert status == 400, answer
        assert answer["error"]["type"] == "invalid_request"
    created = await create_endpoint(wapi, key, "https://x.example/")
    status, answer = await call(
        wapi, "PATCH", f"/v1/webhook_endpoints/{created['id']}", key, json={}
    )
    assert status == 400 and "at least one" in answer["error"]["message"], answer
    status, answer = await call(
        wapi, "PATCH", f"/v1/webhook_endpoints/{created['id']}", key, json={"url": None}
    )
    assert status == 200 and answer == {k: v for k, v in created.items() if k != "secret"}


async def test_private_hosts_are_refused_at_creation(
    settings: Settings, pool: asyncpg.Pool, redis: ArqRedis, make_key: Any
) -> None:
    key = await make_key("acme")
    strict = settings.model_copy(update={"allow_private_hosts": False})
    async with serving(strict, pool, redis) as api:
        for url in (
            "http://127.0.0.1:9000/hook",
            "http://[::1]/hook",
            "http://10.0.0.5/",
            "http://169.254.169.254/latest/meta-data",
            "http://2130706433/",
            "http://localhost:8080/",
            "http://printer.local/",
        ):
            status, answer = await call(
                api, "POST", "/v1/webhook_endpoints", key, json={"url": url}
            )
            assert status == 400, (url, answer)
            assert "url host" in answer["error"]["message"], answer
        # and on a change of url
        created = await create_endpoint(api, key, "https://hooks.example.com/")
        status, answer = await call(
            api,
            "PATCH",
            f"/v1/webhook_endpoints/{created['id']}",
            key,
            json={"url": "http://127.0.0.1/"},
        )
        assert status == 400, answer
    production = strict.model_copy(update={"env": "production"})
    production.__dict__.pop("is_production", None)  # a cached_property model_copy carried over
    async with serving(production, pool, redis) as api:
        status, answer = await call(
            api, "POST", "/v1/webhook_endpoints", key, json={"url": "http://hooks.example.com/"}
        )
        assert status == 400 and answer["error"]["message"] == "url must use https", answer


def test_which_addresses_are_public() -> None:
    for address in (
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
        "not-an-ip",
    ):
        assert not address_allowed(address), address
    for address in ("93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert address_allowed(address), address
    with pytest.raises(UrlRefused):
        check_url("https://0x7f.1/", production=True, allow_private=False)
    assert (
        check_url("https://localhost/", production=True, allow_private=False, delivering=True)
        == "localhost"
    )


def test_retry_after_in_seconds_or_as_a_date() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)
    assert _retry_after("120", now) == 120.0
    assert _retry_after("Tue, 01 Dec 2026 08:01:00 GMT", now) == 60.0
    assert _retry_after("99999999", now) == 86400.0
    assert _retry_after("soon", now) is None
    assert _retry_after(None, now) is None


async def test_another_workspace_s_endpoint_is_a_404_for_everything(
    wapi: Api, make_key: Any, receiver: Receiver
) -> None:
    key_a = await make_key("acme")
    key_b = await make_key("globex")
    theirs = await create_endpoint(wapi, key_b, receiver.url("/b"))
    base = f"/v1/webhook_endpoints/{theirs['id']}"
    for method, path, body in (
        ("GET", base, None),
        ("PATCH", base, {"enabled": False}),
        ("DELETE", base, None),
        ("POST", base + "/rotate_secret", None),
        ("POST", base + "/test", None),
        ("GET", base + "/deliveries", None),
        ("POST", base + "/deliveries/evt_0123/retry", None),
    ):
        status, answer = await call(wapi, method, path, key_a, json=body)
        assert status == 404, (method, path, answer)
        assert answer["error"]["type"] == "not_found"
    status, answer = await call(wapi, "GET", "/v1/webhook_endpoints", key_a)
    assert (status, answer) == (200, {"webhook_endpoints": []})
    # untouched for its owner
    status, answer = await call(wapi, "GET", base, key_b)
    assert status == 200 and answer["enabled"] is True, answer
    assert receiver.received == []


async def test_auth_is_the_accounts_api_s(wapi: Api) -> None:
    status, answer = await call(wapi, "GET", "/v1/webhook_endpoints", None)
    assert status == 401 and answer["error"]["type"] == "unauthorized", answer
    status, answer = await call(wapi, "POST", "/v1/webhook_endpoints", "oct_live_" + "x" * 32)
    assert status == 401, answer


@pytest.mark.usefixtures("dispatcher")
async def test_test_event_and_paginated_deliveries(
    wapi: Api, make_key: Any, receiver: Receiver
) -> None:
    key = await make_key("acme")
    hook = await create_endpoint(wapi, key, receiver.url("/t"), events=["account.connected"])
    sent = []
    for _ in range(3):
        status, body = await call(wapi, "POST", f"/v1/webhook_endpoints/{hook['id']}/test", key)
        assert status == 202, body
        sent.append(body["event_id"])
    received = await receiver.wait("/t", 3)
    payloads = [r.verified(hook["secret"]) for r in received]
    assert sorted(p["id"] for p in payloads) == sorted(sent)
    assert {p["type"] for p in payloads} == {"webhook.test"}
    assert payloads[0]["data"] == {"webhook_endpoint_id": hook["id"]}

    async def all_recorded() -> bool:
        _, page = await call(wapi, "GET", f"/v1/webhook_endpoints/{hook['id']}/deliveries", key)
        return len(page["deliveries"]) == 3

    from tests.webhooks.conftest import wait_for

    await wait_for(all_recorded, what="three attempts recorded")
    path = f"/v1/webhook_endpoints/{hook['id']}/deliveries"
    status, first = await call(wapi, "GET", path, key, params={"limit": "2"})
    assert status == 200 and first["has_more"] is True, first
    status, second = await call(
        wapi, "GET", path, key, params={"limit": "2", "cursor": first["next_cursor"]}
    )
    assert status == 200 and second["has_more"] is False and second["next_cursor"] is None
    events = [d["event_id"] for d in first["deliveries"] + second["deliveries"]]
    assert sorted(events) == sorted(sent) and len(events) == 3
    assert set(first["deliveries"][0]) == {
        "event_id",
        "type",
        "attempt",
        "result",
        "response_status",
        "error",
        "created_at",
    }
    times = [d["created_at"] for d in first["deliveries"] + second["deliveries"]]
    assert times == sorted(times, reverse=True)
    status, bad = await call(wapi, "GET", path, key, params={"cursor": "garbage"})
    assert status == 400 and bad["error"]["type"] == "invalid_request", bad


async def test_openapi_documents_the_webhook_endpoints(wapi: Api) -> None:
    status, doc = await call(wapi, "GET", "/v1/openapi.json", None)
    assert status == 200
    assert {
        "/v1/webhook_endpoints",
        "/v1/webhook_endpoints/{id}",
        "/v1/webhook_endpoints/{id}/rotate_secret",
        "/v1/webhook_endpoints/{id}/test",
        "/v1/webhook_endpoints/{id}/deliveries",
        "/v1/webhook_endpoints/{id}/deliveries/{event_id}/retry",
    } <= set(doc["paths"])
    schema = doc["components"]["schemas"]["WebhookEndpointWithSecret"]
    assert set(schema["properties"]) == ENDPOINT_KEYS | {"secret"}
    assert set(doc["paths"]["/v1/webhook_endpoints/{id}"]) == {"get", "patch", "delete"}


async def test_token_key_rotation_reseals_webhook_secrets(
    wapi: Api, make_key: Any, settings: Settings, pool: asyncpg.Pool
) -> None:
    from service.core.vault import Sealed, Vault, new_key
    from tests.worker.revocation_helpers import octopost

    key = await make_key("acme")
    hook = await create_endpoint(wapi, key, "https://hooks.example.com/")
    status, rotated = await call(
        wapi, "POST", f"/v1/webhook_endpoints/{hook['id']}/rotate_secret", key
    )
    assert status == 200
    new = f"k2:{new_key()}"
    r = octopost(
        settings, "tokens", "rotate", env={"OCTOPOST_TOKEN_KEYS": f"{new},{settings.token_keys}"}
    )
    assert r.returncode == 0, r.stderr
    assert "re-encrypted 2" in r.stdout, r.stdout
    row = await pool.fetchrow("SELECT * FROM webhook_endpoints")
    only_new = Vault.from_config(new)
    assert (
        only_new.open(hook["id"], Sealed(row["key_id"], row["sealed"])).decode()
        == rotated["secret"]
    )
    previous = Sealed(row["previous_key_id"], row["previous_sealed"])
    assert only_new.open(hook["id"], previous).decode() == hook["secret"]
    assert hook["secret"] not in r.stdout + r.stderr
