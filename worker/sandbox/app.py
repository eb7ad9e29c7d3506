"""The platform sandbox app: ``/{platform}/...`` answers like the platform, ``/sandbox/...``
is the control API.

- ``POST /sandbox/tokens`` ``{"token", "state", "fail_times"?, "retry_after"?, "delay_ms"?}``
  (or a list of them) sets how a token is answered at every endpoint it is presented to.
- ``GET /sandbox/calls?platform=&token=&limit=`` the calls answered (most recent last), and
  ``in_flight``: the tokens of the calls received and not answered yet.
- ``DELETE /sandbox/calls`` clears the log; ``POST /sandbox/reset`` clears states and log.

The per-request path does no logging and no allocation beyond the answer, so one core
serves thousands of requests per second; ``latency_ms`` adds a fixed delay to every answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from worker.sandbox.answers import PLATFORMS, SCENARIOS, Ask, Platform
from worker.sandbox.state import SETTABLE_STATES, SandboxState, TokenState

SANDBOX_STATE = web.AppKey("sandbox_state", SandboxState)
KNOWN_STATES = SETTABLE_STATES | SCENARIOS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_sandbox_app(latency_ms: float = 0) -> web.Application:
    app = web.Application()
    state = SandboxState()
    app[SANDBOX_STATE] = state
    latency = latency_ms / 1000
    for platform in PLATFORMS:
        for method, path, kind, where in platform.routes:
            handler = _platform_handler(state, platform, kind, where, latency)
            app.router.add_route(method, f"/{platform.name}{path}", handler)
    app.router.add_post("/sandbox/tokens", set_tokens)
    app.router.add_get("/sandbox/calls", get_calls)
    app.router.add_delete("/sandbox/calls", clear_calls)
    app.router.add_post("/sandbox/reset", reset)
    return app


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    payload = b"" if body is None else orjson.dumps(body)
    return web.Response(
        status=status, body=payload, headers=headers, content_type="application/json"
    )


def _platform_handler(
    state: SandboxState, platform: Platform, kind: str, where: str, latency: float
) -> Handler:
    source, _, field = where.partition(":")

    async def handle(request: web.Request) -> web.Response:
        if source == "bearer":
            auth = request.headers.get("Authorization", "")
            token = auth[7:] if auth[:7].lower() == "bearer " else ""
        elif source == "query":
            token = request.query.get(field, "")
        else:
            token = str((await request.post()).get(field, ""))
        name, entry = state.resolve(token)
        if latency:
            await asyncio.sleep(latency)
        if name == "slow":
            state.in_flight[token] += 1
            try:
                await asyncio.sleep(entry.delay if entry else 0)
            finally:
                state.in_flight[token] -= 1
            name = "valid"
        ask = Ask(kind, name, token, entry.retry_after if entry else 60.0, state, platform.rotates)
        status, body, headers = platform.answer(ask)
        if kind == "revoke" and status == 200:
            state.tokens[token] = TokenState("revoked")
        state.record(platform.name, request.method, request.path, token, status)
        return _json(status, body, headers)

    return handle


async def set_tokens(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
        items = body if isinstance(body, list) else [body]
        parsed = [_token_state(item) for item in items]
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError) as exc:
        return _json(400, {"error": str(exc), "states": sorted(KNOWN_STATES)})
    tokens = request.app[SANDBOX_STATE].tokens
    for token, entry in parsed:
        tokens[token] = entry
    return _json(200, {"count": len(parsed)})


def _token_state(item: Any) -> tuple[str, TokenState]:
    if not isinstance(item, dict) or not isinstance(item.get("token"), str):
        raise ValueError('each item needs "token" and "state"')
    state = item.get("state")
    if state not in KNOWN_STATES:
        raise ValueError(f"unknown state {state!r}")
    return item["token"], TokenState(
        state,
        fail_times=int(item.get("fail_times", 1)),
        retry_after=float(item.get("retry_after", 60)),
        delay=float(item.get("delay_ms", 5000)) / 1000,
    )


async def get_calls(request: web.Request) -> web.Response:
    state = request.app[SANDBOX_STATE]
    platform, token = request.query.get("platform"), request.query.get("token")
    calls = [
        call.as_json()
        for call in state.calls
        if (platform is None or call.platform == platform)
        and (token is None or call.token == token)
    ]
    if (limit := request.query.get("limit", "")).isdigit():
        calls = calls[-int(limit) :]
    in_flight = sorted(t for t, n in state.in_flight.items() if n > 0)
    return _json(200, {"total": state.total, "calls": calls, "in_flight": in_flight})


async def clear_calls(request: web.Request) -> web.Response:
    request.app[SANDBOX_STATE].calls.clear()
    return _json(200, {"ok": True})


async def reset(request: web.Request) -> web.Response:
    request.app[SANDBOX_STATE].reset()
    return _json(200, {"ok": True})


def serve(host: str, port: int, latency_ms: float = 0) -> None:
    """Run the sandbox until interrupted (on uvloop when it is installed)."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=loop_factory) as runner,
    ):
        runner.run(_serve(host, port, latency_ms))


async def _serve(host: str, port: int, latency_ms: float) -> None:
    runner = web.AppRunner(create_sandbox_app(latency_ms), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=1024).start()
        print(f"platform sandbox on http://{host}:{port} (latency {latency_ms:g} ms)", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
