"""The framework's ceiling: a minimal aiohttp JSON endpoint, served exactly as the API is
(``service.server.serve_processes``: same runner, uvloop, backlog, SO_REUSEPORT for N
processes). The handler encodes the seed's three-account list with orjson on every request,
so the gap to the API is our middlewares, auth, the database and the models, nothing else.

    python -m bench.ceiling --port 8099 --processes 1
"""

from __future__ import annotations

import argparse
import logging

import orjson
from aiohttp import web

PAYLOAD = {
    "accounts": [
        {
            "id": "acc_abc123",
            "platform": "twitter",
            "platform_user_id": "1234567890",
            "username": "octopost",
            "display_name": "Octopost",
            "avatar_url": "https://pbs.twimg.com/profile_images/abc/photo.jpg",
            "is_active": True,
            "connected_at": "2026-03-15T10:00:00Z",
            "last_used_at": "2026-04-03T12:05:00Z",
        },
        {
            "id": "acc_def456",
            "platform": "bluesky",
            "platform_user_id": "did:plc:abc123",
            "username": "octopost.bsky.social",
            "display_name": "Octopost",
            "avatar_url": "https://cdn.bsky.app/avatars/abc.jpg",
            "is_active": True,
            "connected_at": "2026-03-16T11:00:00Z",
            "last_used_at": "2026-04-03T12:05:00Z",
        },
        {
            "id": "acc_ghi789",
            "platform": "linkedin",
            "platform_user_id": "urn:li:person:abc",
            "username": "octopost",
            "display_name": "Octopost Inc.",
            "avatar_url": "https://media.licdn.com/dms/image/abc/photo.jpg",
            "is_active": False,
            "connected_at": "2026-03-20T09:00:00Z",
            "last_used_at": "2026-03-28T16:00:00Z",
        },
    ]
}


async def accounts(_: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(PAYLOAD), content_type="application/json")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/v1/accounts", accounts)
    return app


def main(argv: list[str] | None = None) -> int:
    from service.server import serve_processes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    serve_processes(create_app, args.host, args.port, args.processes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
