"""`octopost api --internal-port` as a real subprocess, for the tests of the internal API."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from devkit.embedded import free_port
from service.core.settings import Settings
from tests.conftest import ROOT


def api_process_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOPOST_")}
    env.update(
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        OCTOPOST_TOKEN_KEYS=settings.token_keys,
        OCTOPOST_ENV="test",
        OCTOPOST_DATA_DIR=str(settings.data_dir),
        OCTOPOST_LOG_LEVEL="DEBUG",
        OCTOPOST_AUTH_FAILURES_PER_MINUTE="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class ApiWithInternal:
    env: dict[str, str]
    log_path: Path
    processes: int = 1
    port: int = field(default_factory=free_port)
    internal_port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def internal(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def start(self, within: float = 60.0) -> ApiWithInternal:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "service.cli",
                "api",
                "--port",
                str(self.port),
                "--internal-port",
                str(self.internal_port),
                "--processes",
                str(self.processes),
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.proc.returncode is None, self.logs()
                try:
                    async with (
                        http.get(f"{self.base}/healthz") as a,
                        http.get(f"{self.internal}/healthz") as b,
                    ):
                        # every process is up once each has logged both listeners
                        up = self.logs().count("serving on") >= 2 * self.processes
                        if a.status == b.status == 200 and up:
                            return self
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, self.logs()
                await asyncio.sleep(0.1)

    async def stop(self, within: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), within)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        assert self.proc.returncode is not None
        return self.proc.returncode
