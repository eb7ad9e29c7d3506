"""The framework's ceiling: a minimal aiohttp JSON endpoint, served exactly as the API is
(``service.api.server.serve_processes``: same runner, uvloop, backlog, SO_REUSEPORT for N
processes). ``GET /v1/accounts`` encodes the seed's three-account list with orjson on every
request, so the gap to the API is our middlewares, auth, the database and the models.

With ``--database-url``, ``GET /v1/accounts/{id}`` also exists: one primary-key SELECT of
the account through the service's pool, the row written as JSON, nothing else (no
middleware, no auth). That is the framework-plus-driver ceiling: what one database round
trip per request costs before any of our code runs.

    python -m bench.ceiling --port 8099 --processes 1 [--database-url URL]
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from devkit.stack import SEED_ACCOUNTS
from service.api.models import ROW_JSON
from service.core.db import Pool, create_pool
from service.core.settings import Settings

PAYLOAD = {"accounts": SEED_ACCOUNTS}


JSON = "application/json"


async def accounts(_: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(PAYLOAD), content_type=JSON)


POOL = web.AppKey("pool", Pool)
GET_BY_ID = """
SELECT id, platform, platform_user_id, username, display_name, avatar_url, is_active,
       connected_at, last_used_at
FROM accounts WHERE id = $1
"""


def create_app(database_url: str | None = None) -> web.Application:
    app = web.Application()
    app.router.add_get("/v1/accounts", accounts)
    if database_url is None:
        return app

    async def database(app: web.Application) -> AsyncIterator[None]:
        app[POOL] = await create_pool(Settings(database_url=database_url))
        yield
        await app[POOL].close()

    async def account(request: web.Request) -> web.Response:
        row = await request.app[POOL].fetchrow(GET_BY_ID, request.match_info["account_id"])
        if row is None:
            raise web.HTTPNotFound()
        return web.Response(body=orjson.dumps(dict(row), option=ROW_JSON), content_type=JSON)

    app.cleanup_ctx.append(database)
    app.router.add_get("/v1/accounts/{account_id}", account)
    return app


def main(argv: list[str] | None = None) -> int:
    from service.api.server import serve_processes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--database-url", help="also serve GET /v1/accounts/{id} from there")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    serve_processes(lambda: create_app(args.database_url), args.host, args.port, args.processes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
