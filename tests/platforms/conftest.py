from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from devkit.sandbox.app import create_sandbox_app
from service.platforms.base import PlatformAdapter
from service.platforms.registry import build_adapters

from .rows import Sandbox, sandbox_settings


@pytest_asyncio.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture(scope="session")
async def sandbox(http: aiohttp.ClientSession) -> AsyncIterator[Sandbox]:
    server = TestServer(create_sandbox_app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield Sandbox(str(server.make_url("")).rstrip("/"), http)
    finally:
        await server.close()


@pytest.fixture(scope="session")
def adapters(sandbox: Sandbox, http: aiohttp.ClientSession) -> dict[str, PlatformAdapter]:
    return build_adapters(http, sandbox_settings(sandbox.url))


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
