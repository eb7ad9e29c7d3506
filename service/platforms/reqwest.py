"""The platform calls' HTTP transport for the worker: pyreqwest (reqwest, Rust's HTTP
client, under asyncio). The same request and the same `Reply` as `HTTPAdapter.call` makes
through aiohttp, for about 0.08 ms of CPU per call instead of aiohttp's 0.2 (measured on
the sweep's verify calls, BENCHMARKS.md): at thousands of checks a second per worker
process the client is most of the worker's CPU.

No redirect is followed, no cookie is kept, no proxy from the environment is used, and
nothing here logs; a timeout or a
connection failure becomes a `Reply` with `failure` set, like the aiohttp path.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pyreqwest.client import Client, ClientBuilder
from pyreqwest.exceptions import PyreqwestError

from service.platforms.http import Reply, parse_json


class ReqwestTransport:
    def __init__(self, *, max_connections: int) -> None:
        self.client: Client = (
            ClientBuilder()
            .follow_redirects(False)
            # like aiohttp's session (trust_env off): HTTP(S)_PROXY in the environment is
            # not a reason to send tokens somewhere else
            .no_proxy()
            .max_connections(max_connections)
            .pool_idle_timeout(timedelta(seconds=60))
            .build()
        )
        self._timeouts: dict[float, timedelta] = {}

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        data: Mapping[str, str] | None,
        timeout_seconds: float,
        json: Any = None,
    ) -> Reply:
        limit = self._timeouts.get(timeout_seconds)
        if limit is None:
            limit = self._timeouts[timeout_seconds] = timedelta(seconds=timeout_seconds)
        try:
            builder = self.client.request(method, url).timeout(limit)
            if headers:
                builder = builder.headers(dict(headers))
            if params:
                builder = builder.query(dict(params))
            if data is not None:
                builder = builder.form(dict(data))
            elif json is not None:
                builder = builder.body_json(json)
            response = await builder.build().send()
            raw = bytes(await response.bytes())
            return Reply(response.status, parse_json(raw), response.headers)
        except TimeoutError:  # pyreqwest's connect/read/pool timeouts are TimeoutErrors
            return Reply(0, failure="timeout")
        except PyreqwestError:  # refused, reset, DNS, a URL it cannot parse
            return Reply(0, failure="connection_error")

    async def close(self) -> None:
        await self.client.close()
        # Drop the client and collect now, while the interpreter is whole: a reqwest
        # object (a client, or an error's details held by a reference cycle) freed during
        # interpreter shutdown aborts the process (PyGILState_Release, exit code 134).
        del self.client
        gc.collect()
