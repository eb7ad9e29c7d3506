"""What an operator sees when something expected goes wrong: one line that names what failed
and what to do, exit status 1 (2 for a usage error), and no traceback unless --debug.
Real subprocesses; the "unreachable server" is a TCP port nobody listens on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from yarl import URL

from devkit.embedded import free_port
from service.cli import _context, explain
from service.core.settings import Settings
from tests.conftest import Api
from tests.test_cli import run

# Every command that talks to PostgreSQL or Redis, with arguments that would otherwise work.
COMMANDS: list[tuple[str, ...]] = [
    ("migrate",),
    ("keys", "create", "--workspace", "acme"),
    ("keys", "list"),
    ("keys", "revoke", "key_doesnotexist"),
    ("keys", "revoke", "oct_live_" + "A" * 32),
    ("accounts", "import", "--workspace", "acme", "-"),
    ("accounts", "disconnect", "acc_abc123"),
    ("accounts", "disconnect", "--workspace", "acme"),
    ("tokens", "rotate"),
    ("sweep",),
    ("sweep", "--wait", "--timeout", "5"),
    ("sweeps",),
    ("revocations",),
    ("revocations", "--all"),
    ("worker", "--burst"),
    ("dev", "--port", "0"),
]
IMPORT_LINE = (
    '{"platform": "twitter", "platform_user_id": "1", "username": "u", "display_name": "U", '
    '"connected_at": "2026-03-15T10:00:00Z", "access_token": "t"}\n'
)


def closed_port() -> int:
    """A port nobody listens on (bound a moment ago, then released)."""
    return free_port()


def stderr_lines(r: Any) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_against_unreachable_servers_is_one_line(
    settings: Settings, tmp_path: Path, command: tuple[str, ...]
) -> None:
    db_url = f"postgresql://nobody:s3cret@127.0.0.1:{closed_port()}/x"
    redis_url = f"redis://127.0.0.1:{closed_port()}/0"
    if command[0] == "dev":
        command = ("dev", "--port", str(free_port()))
    r = run(
        settings,
        *command,
        stdin=IMPORT_LINE,
        env={
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "OCTOPOST_DATA_DIR": str(tmp_path),
        },
    )
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = stderr_lines(r)
    # arq's worker logs its connection retries first; the verdict is always the last line,
    # and for every other command the only one
    ours = [line for line in lines if line.startswith("octopost: ")]
    assert len(ours) == 1 and lines[-1] == ours[0], r.stderr
    if command[0] != "worker":
        assert lines == ours, r.stderr
    verdict = ours[0]
    assert "s3cret" not in r.stderr + r.stdout  # a password never printed
    assert (
        f"cannot reach PostgreSQL at postgresql://nobody:***@127.0.0.1:{URL(db_url).port}/x "
        "(connection refused); is it running? check DATABASE_URL"
    ) in verdict or (
        f"cannot reach Redis at {redis_url} (connection refused); is it running? check REDIS_URL"
    ) in verdict, verdict


def test_debug_adds_the_traceback(settings: Settings) -> None:
    env = {"DATABASE_URL": f"postgresql://nobody@127.0.0.1:{closed_port()}/x"}
    r = run(settings, "--debug", "keys", "list", env=env)
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "ConnectionRefusedError" in r.stderr
    assert r.stderr.splitlines()[-1].startswith("octopost: cannot reach PostgreSQL at ")


def test_a_missing_database_and_a_refused_login_are_named(settings: Settings) -> None:
    missing = str(URL(settings.database_url).with_path("/no_such_db"))
    r = run(settings, "keys", "list", env={"DATABASE_URL": missing})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert stderr_lines(r) == [
        f'octopost: PostgreSQL at {missing} answered: database "no_such_db" does not exist; '
        "create it (`createdb NAME`) or point DATABASE_URL at an existing one"
    ]
    nobody = str(URL(settings.database_url).with_user("nobody_here"))
    r = run(settings, "migrate", env={"DATABASE_URL": nobody})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    (line,) = stderr_lines(r)
    assert line.startswith(f"octopost: PostgreSQL at {nobody} answered: ") and "nobody_here" in line


async def test_a_database_without_the_schema_says_migrate(settings: Settings) -> None:
    name = "octopost_unmigrated"
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
        url = str(URL(settings.database_url).with_path(f"/{name}"))
        r = await asyncio.to_thread(run, settings, "keys", "list", env={"DATABASE_URL": url})
        assert r.returncode == 1 and "Traceback" not in r.stderr
        (line,) = stderr_lines(r)
        assert line.endswith("; run `octopost migrate` first"), line
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def test_a_missing_file_and_bad_arguments(settings: Settings, pool: Any, tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    r = run(settings, "accounts", "import", "--workspace", "acme", str(missing))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert stderr_lines(r) == [f"octopost: no such file or directory: {missing}"]
    # usage errors: 2
    r = run(settings, "accounts", "disconnect")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert stderr_lines(r) == [
        "octopost: give account ids, or --workspace NAME (and optionally --platform)"
    ]
    r = run(settings, "sweep", "--account", "acc_nobody")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert stderr_lines(r)[-1].startswith("octopost: no connected account 'acc_nobody'; ")
    r = run(settings, "keys", "frobnicate")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run(settings, "sweeps", "--limit", "many")
    assert r.returncode == 2 and "Traceback" not in r.stderr


async def test_no_running_dev_stack_is_said_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """In development with nothing set and no dev.env, the defaults were tried: the message
    says that no `octopost dev` runs and how to start one. (In-process: a subprocess would
    try this machine's port 5432, where a system PostgreSQL may serve anything.)"""
    for var in ("DATABASE_URL", "REDIS_URL", "OCTOPOST_ENV"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OCTOPOST_DATA_DIR", str(tmp_path))
    port = closed_port()
    with pytest.raises(OSError) as refused:
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/octopost")
    explained = explain(refused.value, _context(found_stack=False))
    assert explained is not None
    message, status = explained
    assert status == 1
    assert message.startswith(
        f"no running `octopost dev` was found ({tmp_path}/dev.env is missing or its process "
        "is gone) and DATABASE_URL is not set, so the default "
        "postgresql://postgres@127.0.0.1:5432/octopost was tried: connection refused; "
        "start the stack with `python3 dev.py` in another shell, or set DATABASE_URL"
    ), message
    # with DATABASE_URL set, it is about that server instead
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{port}/octopost")
    explained = explain(refused.value, _context(found_stack=False))
    assert explained is not None and explained[0].startswith(
        f"cannot reach PostgreSQL at postgresql://postgres@127.0.0.1:{port}/octopost "
    )
    # a bug is not an expected failure: its traceback stays
    assert explain(KeyError("x"), _context(found_stack=False)) is None


async def test_revoke_by_the_key_itself_or_the_listed_prefix(
    settings: Settings, pool: Any, api: Api
) -> None:
    keys = []
    for _ in range(3):
        r = await asyncio.to_thread(run, settings, "keys", "create", "--workspace", "acme")
        assert r.returncode == 0, r.stderr
        keys.append(r.stdout.strip().splitlines()[-1])
    leaked, listed, other = keys

    # the key a user holds is enough
    r = await asyncio.to_thread(run, settings, "keys", "revoke", leaked)
    assert r.returncode == 0, r.stderr
    assert leaked not in r.stdout + r.stderr  # not echoed back
    assert (await api.request("GET", "/v1/accounts", leaked)).status == 401
    assert (await api.request("GET", "/v1/accounts", other)).status == 200
    r = await asyncio.to_thread(run, settings, "keys", "revoke", leaked)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert stderr_lines(r) == [
        f"octopost: no active key matches {leaked[:15]}... (the key given): it is revoked "
        "already or never existed here; `octopost keys list` shows the keys of this database"
    ]

    # what `keys list` prints is what `keys revoke` takes, "..." and all
    listing = await asyncio.to_thread(run, settings, "keys", "list")
    row = next(line for line in listing.stdout.splitlines() if listed[:15] in line)
    shown_prefix = row.split()[1]
    assert shown_prefix == listed[:15]
    r = await asyncio.to_thread(run, settings, "keys", "revoke", shown_prefix + "...")
    assert r.returncode == 0, r.stderr
    assert (await api.request("GET", "/v1/accounts", listed)).status == 401
    assert (await api.request("GET", "/v1/accounts", other)).status == 200
    assert await pool.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL") == 1


async def test_empty_listings_print_no_table_header(settings: Settings, pool: Any) -> None:
    for command, message in (
        (("revocations",), "no pending or failed revocations"),
        (("revocations", "--status", "done"), "no done revocations"),
        (("sweeps",), "no sweeps yet; start one with `octopost sweep`"),
        (
            ("keys", "list"),
            "no API keys yet; create one with `octopost keys create --workspace NAME`",
        ),
    ):
        r = await asyncio.to_thread(run, settings, *command)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "", command
        assert r.stderr.strip() == message
