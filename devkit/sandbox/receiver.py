"""`octopost webhook-receiver`: a local endpoint that prints what it receives, checking each
signature with the `standardwebhooks` package the way a customer's receiver would. For
trying webhooks against `octopost dev`; never part of the service."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def create_receiver_app(secret: str | None) -> web.Application:
    hook = Webhook(secret) if secret else None

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        if hook is None:
            check = "signature not checked (start with --secret whsec_...)"
        else:
            try:
                hook.verify(body, headers)
                check = "signature verified"
            except WebhookVerificationError as exc:
                print(f"REFUSED {headers.get('webhook-id')}: {exc}", flush=True)
                return web.Response(status=400, text="bad signature")
        try:
            payload = orjson.loads(body)
            kind = payload.get("type") if isinstance(payload, dict) else None
        except orjson.JSONDecodeError:
            payload, kind = body.decode(errors="replace"), None
        print(
            f"{kind} {headers.get('webhook-id')} ({check})\n"
            + orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode(),
            flush=True,
        )
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", receive)
    return app


async def _serve(host: str, port: int, secret: str | None) -> None:
    runner = web.AppRunner(create_receiver_app(secret), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"receiving webhooks on http://{host}:{port}/ (Ctrl-C to stop)", file=sys.stderr)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def serve(host: str, port: int, secret: str | None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(host, port, secret))
