"""The reliability suite's tools: the API as a real subprocess, private servers it can stop,
and synchronous seeding for the tests (schemathesis, hypothesis) that are not coroutines."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import orjson
import pytest

from devkit.embedded import free_port
from service.core import api_keys, ids
from service.core.db import migrate
from service.core.importer import import_accounts, parse_lines
from service.core.repository import workspaces
from service.core.settings import Settings
from service.core.vault import Vault
from tests.conftest import ROOT

# The platform sandbox and the in-process burst worker, for the whole-run secrets test.
from tests.worker.conftest import (  # noqa: F401
    fresh_sandbox,
    platform_settings,
    sandbox,
    sweep,
    worker_settings,
)

T = TypeVar("T")

ERROR_KEYS = {"error"}
ERROR_FIELDS = {"type", "message"}


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a loop of its own, in a thread of its own, so sync
    tests can use asyncpg without touching the session's event loop."""

    async def main() -> T:
        return await factory()

    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        return executor.submit(asyncio.run, main()).result()


def assert_error_body(status: int, headers: Any, body: bytes) -> dict[str, Any]:
    """The one error format: JSON `{"error": {"type", "message"}}` and a request id."""
    h = {k.lower(): v[0] if isinstance(v, list) else v for k, v in headers.items()}
    assert h.get("content-type", "").startswith("application/json"), (status, body[:300])
    assert h.get("x-request-id"), (status, h)
    doc = orjson.loads(body)
    assert set(doc) == ERROR_KEYS, doc
    assert set(doc["error"]) == ERROR_FIELDS, doc
    assert isinstance(doc["error"]["type"], str) and doc["error"]["type"], doc
    assert isinstance(doc["error"]["message"], str) and doc["error"]["message"], doc
    error: dict[str, Any] = doc["error"]
    return error


@dataclass
class ApiProcess:
    """`python -m service.cli api` on a free port, its stderr kept in a file."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ApiProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "api", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=1) as r:  # noqa: S310
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the API did not come up:\n{self.logs()}")
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def api_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment for a subprocess of ours: only the settings we mean, nothing from the
    developer's shell that could point it elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOPOST_")}
    env.update(
        {
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "OCTOPOST_TOKEN_KEYS": settings.token_keys,
            "OCTOPOST_ENV": "test",
            "OCTOPOST_DATA_DIR": str(settings.data_dir),
            "OCTOPOST_LOG_LEVEL": "DEBUG",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


@pytest.fixture
def spawn_api(
    settings: Settings, tmp_path: Path, pool: asyncpg.Pool
) -> Iterator[Callable[..., ApiProcess]]:
    """Start API subprocesses for this test (migrated database); all are stopped after it."""
    started: list[ApiProcess] = []

    def spawn(settings_: Settings | None = None, **env: str) -> ApiProcess:
        s = settings_ or settings
        api = ApiProcess(api_env(s, **env), tmp_path / f"api-{len(started)}.log")
        started.append(api)
        return api.start()

    yield spawn
    for api in started:
        api.kill()


# ----------------------------------------------------------------- sync seeding


async def create_key(conn: asyncpg.Connection, workspace: str) -> str:
    key = api_keys.new_api_key()
    async with conn.transaction():
        workspace_id = await workspaces.ensure_workspace(conn, workspace)
        await workspaces.insert_key(
            conn,
            api_keys.new_key_id(),
            workspace_id,
            api_keys.key_display_prefix(key),
            api_keys.hash_api_key(key),
        )
    return key


async def import_into(
    conn: asyncpg.Connection, vault: Vault, workspace: str, lines: list[dict[str, Any]]
) -> list[str]:
    parsed = parse_lines(orjson.dumps(line).decode() for line in lines)
    async with conn.transaction():
        workspace_id = await workspaces.ensure_workspace(conn, workspace)
        return await import_accounts(conn, vault, workspace_id, parsed)


def account_line(platform: str, user: str, **extra: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "platform": platform,
        "platform_user_id": user,
        "username": f"{user}@mastodon.example" if platform == "mastodon" else user,
        "display_name": user.title(),
        "access_token": f"at-{user}-{ids.random_string(12)}",
        "refresh_token": f"rt-{user}-{ids.random_string(12)}",
    }
    line.update(extra)
    return line


async def migrated(url: str) -> None:
    await migrate(url)
