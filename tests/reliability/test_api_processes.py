"""`octopost api --processes 2`: gunicorn's arbiter and two aiohttp children on one port.

A child killed with SIGKILL is replaced and the port keeps answering; /metrics describes
the whole server (every child's requests, a dead child's included), whichever child
answers it.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from devkit.embedded import free_port
from service.core.db import Pool
from service.core.settings import Settings
from tests.conftest import ROOT
from tests.reliability.conftest import api_env

DEADLINE = 60.0
HEALTHZ_COUNT = re.compile(
    r'^octopost_http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)$', re.M
)


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.base = f"http://127.0.0.1:{port}"

    def children(self) -> list[psutil.Process]:
        return [p for p in psutil.Process(self.proc.pid).children() if p.is_running()]

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def server(settings: Settings, tmp_path: Path, pool: Pool) -> Iterator[Server]:
    """The API with two children (the pool fixture has migrated the database)."""
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "api", "--port", str(port), "--processes", "2"],
            cwd=ROOT,
            env=api_env(settings, OCTOPOST_LOG_LEVEL="INFO"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Server(proc, port, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(proc.pid).children():
                    child.kill()
                proc.kill()
                proc.wait(10)


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], server: Server) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert server.proc.poll() is None, f"the server exited:\n{server.logs()[-3000:]}"
        assert time.monotonic() < deadline, (
            f"timed out waiting for {what}:\n{server.logs()[-3000:]}"
        )
        await asyncio.sleep(0.05)


class Conn:
    """One keep-alive HTTP/1.1 connection (so the test knows its local port)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.local_port: int = writer.get_extra_info("sockname")[1]

    @classmethod
    async def open(cls, server: Server) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        return cls(reader, writer)

    async def get(self, path: str) -> tuple[int, str]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        head = (await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)).decode()
        status = int(head.split()[1])
        length = int(re.search(r"(?im)^content-length: *(\d+)", head)[1])  # type: ignore[index]
        body = await asyncio.wait_for(self.reader.readexactly(length), 30)
        return status, body.decode()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def healthz_count(conn: Conn) -> float:
    status, text = await conn.get("/metrics")
    assert status == 200
    match = HEALTHZ_COUNT.search(text)
    return float(match[1]) if match else 0.0


def serving_child(server: Server, local_port: int) -> int | None:
    """The pid of the child holding our connection from local_port."""
    for child in server.children():
        for conn in child.net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == local_port and conn.laddr.port == server.port:
                pid: int = child.pid
                return pid
    return None


async def test_metrics_sum_every_child_and_a_killed_child_is_replaced(server: Server) -> None:
    async with aiohttp.ClientSession() as probe:

        async def up() -> bool:
            if len(server.children()) != 2:
                return False
            try:
                async with probe.get(f"{server.base}/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for("two children serving", up, server)
    # Keep-alive connections, each held by one child, until both children hold some:
    # then each child has answered requests of its own.
    conns: list[Conn] = [await Conn.open(server)]
    served_by: dict[int, list[Conn]] = {}
    # the readiness probes' requests so far, counted by every child
    sent = int(await healthz_count(conns[0]))
    try:
        deadline = time.monotonic() + DEADLINE
        while len(served_by) < 2:
            assert time.monotonic() < deadline, f"one child took every connection: {served_by}"
            conn = await Conn.open(server)
            conns.append(conn)
            assert (await conn.get("/healthz"))[0] == 200
            sent += 1
            pid = serving_child(server, conn.local_port)
            if pid is not None:
                served_by.setdefault(pid, []).append(conn)
        for child_conns in served_by.values():
            for conn in child_conns:
                for _ in range(5):
                    assert (await conn.get("/healthz"))[0] == 200
                    sent += 1
        # whichever child answers /metrics (each on its own connection), it counts them all
        for child_conns in served_by.values():
            assert await healthz_count(child_conns[0]) == sent

        # SIGKILL one child: the arbiter starts another, the port keeps answering
        victim = next(iter(served_by))
        before = {p.pid for p in server.children()}
        psutil.Process(victim).kill()

        async def replaced() -> bool:
            pids = {p.pid for p in server.children()}
            return victim not in pids and len(pids) == 2 and bool(pids - before)

        await wait_for("the killed child replaced", replaced, server)
        for _ in range(10):
            conn = await Conn.open(server)
            conns.append(conn)
            assert (await conn.get("/healthz"))[0] == 200
            sent += 1
        # the dead child's requests still count
        assert await healthz_count(conns[-1]) == sent
    finally:
        for conn in conns:
            conn.writer.close()
    assert "Traceback" not in server.logs(), server.logs()[-3000:]
