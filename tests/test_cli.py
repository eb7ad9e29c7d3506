"""The `octopost` command as ops run it: a real subprocess against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.core.db import migrate
from service.core.settings import Settings
from service.core.vault import new_key
from tests.conftest import SEED_ACCOUNTS, Api, with_tokens


def run(
    settings: Settings, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "OCTOPOST_TOKEN_KEYS": settings.token_keys,
        "OCTOPOST_DATA_DIR": str(settings.data_dir),
        "OCTOPOST_ENV": "test",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def jsonl(lines: list[dict[str, Any]]) -> str:
    return "\n".join(orjson.dumps(line).decode() for line in lines) + "\n"


SECRET_LINES = [
    with_tokens(
        a, access_token=f"SECRET-ACCESS-{a['id']}", refresh_token=f"SECRET-REFRESH-{a['id']}"
    )
    for a in SEED_ACCOUNTS
]


async def test_migrations_apply_once(settings: Settings, pool: Any) -> None:
    assert await migrate(settings.database_url) == []
    r = run(settings, "migrate")
    assert r.returncode == 0, r.stderr
    assert "up to date" in r.stdout
    versions = await pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert [v["version"] for v in versions] == sorted({v["version"] for v in versions})


async def test_keys_create_list_revoke(settings: Settings, pool: Any, api: Api) -> None:
    r = run(settings, "keys", "create", "--workspace", "acme")
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("oct_live_")
    assert await pool.fetchval("SELECT count(*) FROM api_keys") == 1
    # only the hash is stored
    dump = await pool.fetchval("SELECT string_agg(t::text, ',') FROM api_keys t")
    assert key not in dump and key[len("oct_live_") :] not in dump
    response = await api.request("GET", "/v1/accounts", key)
    assert response.status == 200 and await response.json() == {"accounts": []}

    listing = run(settings, "keys", "list")
    assert listing.returncode == 0 and "acme" in listing.stdout and key not in listing.stdout
    prefix = key[:15]
    assert prefix in listing.stdout
    r2 = run(settings, "keys", "revoke", prefix)
    assert r2.returncode == 0, r2.stderr
    assert await pool.fetchval("SELECT revoked_at IS NOT NULL FROM api_keys")
    assert run(settings, "keys", "revoke", prefix).returncode == 1


async def test_import_prints_ids_in_order_and_stores_no_plaintext(
    settings: Settings, pool: Any
) -> None:
    r = run(settings, "accounts", "import", "--workspace", "acme", "-", stdin=jsonl(SECRET_LINES))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [a["id"] for a in SEED_ACCOUNTS]
    for table in ("accounts", "account_tokens", "account_events"):
        dump = await pool.fetchval(f"SELECT coalesce(string_agg(t::text, ','), '') FROM {table} t")
        assert "SECRET-" not in dump, table
    assert "SECRET-" not in r.stdout + r.stderr


async def test_import_reconnect_keeps_id_and_reactivates(settings: Settings, pool: Any) -> None:
    line = {
        "platform": "mastodon",
        "platform_user_id": "42",
        "username": "ann@mastodon.example",
        "display_name": "Ann",
        "access_token": "tok-1",
    }
    first = run(settings, "accounts", "import", "--workspace", "acme", "-", stdin=jsonl([line]))
    assert first.returncode == 0, first.stderr
    (account_id,) = first.stdout.split()
    row = await pool.fetchrow("SELECT instance_url FROM accounts WHERE id = $1", account_id)
    assert row["instance_url"] == "https://mastodon.example"
    await pool.execute(
        "UPDATE accounts SET is_active = false, health_status = 'revoked', "
        "health_reason = 'token_revoked', transient_failures = 3 WHERE id = $1",
        account_id,
    )
    again = run(
        settings,
        "accounts",
        "import",
        "--workspace",
        "acme",
        "-",
        stdin=jsonl([{**line, "access_token": "tok-2", "display_name": "Ann B"}]),
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == [account_id]
    row = await pool.fetchrow("SELECT * FROM accounts WHERE id = $1", account_id)
    assert row["is_active"] is True and row["health_status"] == "unchecked"
    assert row["health_reason"] is None and row["transient_failures"] == 0
    assert row["display_name"] == "Ann B"
    assert (
        await pool.fetchval(
            "SELECT generation FROM account_tokens WHERE account_id = $1", account_id
        )
        == 2
    )
    kinds = await pool.fetch(
        "SELECT kind FROM account_events WHERE account_id = $1 ORDER BY id", account_id
    )
    assert [k["kind"] for k in kinds] == ["connected", "reconnected"]
    # another workspace importing the same platform identity gets its own account
    other = run(settings, "accounts", "import", "--workspace", "globex", "-", stdin=jsonl([line]))
    assert other.returncode == 0 and other.stdout.split() != [account_id]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "JSON object"),
        (
            '{"platform": "myspace", "platform_user_id": "1", "username": "u", "display_name": "d",'
            ' "access_token": "t"}',
            "platform",
        ),
        (
            '{"platform": "twitter", "username": "u", "display_name": "d", "access_token": "t"}',
            "platform_user_id",
        ),
        (
            '{"platform": "twitter", "platform_user_id": "1", "username": "u", "display_name": "d"}',
            "access_token",
        ),
        (
            '{"platform": "mastodon", "platform_user_id": "1", "username": "nohost",'
            ' "display_name": "d", "access_token": "t"}',
            "instance_url",
        ),
        (
            '{"platform": "twitter", "platform_user_id": "9", "username": "u", "display_name": "d",'
            ' "access_token": "t", "token_expires_at": "2026-01-01T00:00:00"}',
            "timezone",
        ),
        (
            '{"platform": "twitter", "platform_user_id": "9", "username": "u", "display_name": "d",'
            ' "access_token": "t", "surprise": 1}',
            "surprise",
        ),
        (
            '{"id": "acc_abc123", "platform": "twitter", "platform_user_id": "9", "username": "u",'
            ' "display_name": "d", "access_token": "t"}',
            "already used",
        ),
    ],
)
async def test_a_bad_line_writes_nothing(
    settings: Settings, pool: Any, bad: str, message: str, make_key: Any, import_lines: Any
) -> None:
    await make_key("other")
    await import_lines("other", [with_tokens(SEED_ACCOUNTS[0])])
    before = await pool.fetchval("SELECT count(*) FROM accounts")
    good = jsonl([with_tokens(SEED_ACCOUNTS[1]), with_tokens(SEED_ACCOUNTS[2])])
    lines = good.splitlines()
    text = "\n".join([lines[0], bad, lines[1]]) + "\n"
    r = run(settings, "accounts", "import", "--workspace", "acme", "-", stdin=text)
    assert r.returncode == 2
    assert "line 2" in r.stderr and message in r.stderr, r.stderr
    assert r.stdout == ""
    assert await pool.fetchval("SELECT count(*) FROM accounts") == before
    assert await pool.fetchval("SELECT count(*) FROM account_tokens") == before


async def test_import_from_file_and_duplicate_identity(
    settings: Settings, tmp_path: Path, pool: Any
) -> None:
    f = tmp_path / "accounts.jsonl"
    f.write_text(jsonl([with_tokens(SEED_ACCOUNTS[0]), with_tokens(SEED_ACCOUNTS[0])]))
    r = run(settings, "accounts", "import", "--workspace", "acme", str(f))
    assert r.returncode == 2 and "line 2" in r.stderr
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 0


async def test_token_key_rotation_reencrypts_everything(
    settings: Settings, pool: Any, vault: Any
) -> None:
    r = run(settings, "accounts", "import", "--workspace", "acme", "-", stdin=jsonl(SECRET_LINES))
    assert r.returncode == 0, r.stderr
    new = f"k2:{new_key()}"
    rotated = run(
        settings, "tokens", "rotate", env={"OCTOPOST_TOKEN_KEYS": f"{new},{settings.token_keys}"}
    )
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 3" in rotated.stdout
    assert {r["key_id"] for r in await pool.fetch("SELECT key_id FROM account_tokens")} == {"k2"}
    # the new key alone opens them, and they still hold the same tokens
    from service.core.vault import Sealed, Vault

    only_new = Vault.from_config(new)
    row = await pool.fetchrow(
        "SELECT key_id, sealed FROM account_tokens WHERE account_id = 'acc_abc123'"
    )
    assert only_new.open_tokens("acc_abc123", Sealed(row["key_id"], row["sealed"])) == (
        "SECRET-ACCESS-acc_abc123",
        "SECRET-REFRESH-acc_abc123",
    )


def test_production_refuses_to_start_without_keys(settings: Settings) -> None:
    r = run(
        settings,
        "accounts",
        "import",
        "--workspace",
        "acme",
        "-",
        stdin="",
        env={"OCTOPOST_ENV": "production", "OCTOPOST_TOKEN_KEYS": ""},
    )
    assert r.returncode != 0 and "OCTOPOST_TOKEN_KEYS" in r.stderr
    r = run(
        settings,
        "api",
        "--port",
        "1",
        env={"OCTOPOST_ENV": "production", "OCTOPOST_TOKEN_KEYS": ""},
    )
    assert r.returncode != 0 and "OCTOPOST_TOKEN_KEYS" in r.stderr


def test_development_creates_a_key_file_and_says_so(settings: Settings, tmp_path: Path) -> None:
    r = run(
        settings,
        "accounts",
        "import",
        "--workspace",
        "dev",
        "-",
        stdin="",
        env={"OCTOPOST_TOKEN_KEYS": "", "OCTOPOST_DATA_DIR": str(tmp_path)},
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "token-keys").exists()
    assert "development token key" in r.stderr
    assert oct(os.stat(tmp_path / "token-keys").st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("token", ["abc\r\nX-Injected: 1", "has space", "tab\there", "nul\x00"])
async def test_tokens_with_whitespace_or_control_characters_are_refused(
    settings: Settings, pool: Any, token: str
) -> None:
    line = {
        "platform": "twitter",
        "platform_user_id": "1",
        "username": "u",
        "display_name": "d",
        "access_token": "ok",
        "refresh_token": token,
    }
    for variant in (line, {**line, "access_token": token, "refresh_token": None}):
        r = run(settings, "accounts", "import", "--workspace", "acme", "-", stdin=jsonl([variant]))
        assert r.returncode == 2 and "line 1" in r.stderr, r.stderr
        assert token not in r.stderr
    assert await pool.fetchval("SELECT count(*) FROM accounts") == 0
