"""Retry-after headers, settings and the secrecy of tokens."""

from __future__ import annotations

import email.utils

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from service.core.ids import PLATFORMS
from service.platforms.base import AccountRef, CheckResult, TokenOutcome, TokenSet
from service.platforms.config import PlatformSettings
from service.platforms.http import Reply, retry_after_seconds
from service.platforms.registry import build_adapters

NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z
BUC = {"123": [{"type": "pages", "call_count": 99, "estimated_time_to_regain_access": 7}]}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "42"}, 42),
        ({"Retry-After": email.utils.formatdate(NOW + 90, usegmt=True)}, 90),
        ({"RateLimit-Reset": str(int(NOW) + 120)}, 120),  # Bluesky: epoch
        ({"RateLimit-Reset": "15"}, 15),  # IETF draft: delta
        ({"x-rate-limit-reset": str(int(NOW) + 300)}, 300),  # X: epoch
        ({"X-RateLimit-Reset": "2025-06-15T15:11:40.000Z"}, 300),  # Mastodon: ISO 8601
        ({"X-Business-Use-Case-Usage": orjson.dumps(BUC).decode()}, 420),  # Meta: minutes
        ({"X-App-Usage": '{"call_count": 100}'}, None),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(CIMultiDict(headers), now=NOW) == expected


def test_tokens_stay_out_of_reprs() -> None:
    tokens = TokenSet("secret-access", "secret-refresh")
    result = CheckResult(TokenOutcome.valid, new_tokens=tokens)
    reply = Reply(200, {"access_token": "secret-access"})
    for text in (repr(tokens), repr(result), repr(reply)):
        assert "secret" not in text, text


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCTOPOST_SANDBOX_URL", "http://sandbox:8900/")
    monkeypatch.setenv("OCTOPOST_TWITTER_CLIENT_SECRET", "hush")
    monkeypatch.setenv(
        "OCTOPOST_MASTODON_APPS",
        '{"mastodon.social": {"client_id": "cid", "client_secret": "hush"}}',
    )
    settings = PlatformSettings()
    assert "hush" not in repr(settings)
    assert settings.mastodon_apps["mastodon.social"].client_id == "cid"
    assert settings.twitter_client_secret.get_secret_value() == "hush"


async def test_sandbox_url_points_every_adapter_at_the_sandbox() -> None:
    async with aiohttp.ClientSession() as http:
        sandboxed = build_adapters(http, PlatformSettings(sandbox_url="http://sb:1/"))
        real = build_adapters(http, PlatformSettings(sandbox_url=None))
    assert list(sandboxed) == list(PLATFORMS)
    for name, adapter in sandboxed.items():
        assert adapter.base_url == f"http://sb:1/{name}"
    assert real["twitter"].base_url == "https://api.x.com"
    assert real["youtube"].base_url == "https://oauth2.googleapis.com"

    pds = AccountRef("a", "bluesky", "did:plc:x", instance_url="https://pds.example/")
    instance = AccountRef("a", "mastodon", "1", instance_url="https://mastodon.social")
    assert real["bluesky"].pds(pds) == "https://pds.example"  # type: ignore[attr-defined]
    assert sandboxed["bluesky"].pds(pds) == "http://sb:1/bluesky"  # type: ignore[attr-defined]
    assert real["mastodon"].instance(instance) == "https://mastodon.social"  # type: ignore[attr-defined]
    assert sandboxed["mastodon"].instance(instance) == "http://sb:1/mastodon"  # type: ignore[attr-defined]
