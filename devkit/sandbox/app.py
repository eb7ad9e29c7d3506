"""The platform sandbox app: ``/{platform}/...`` answers like the platform, ``/sandbox/...``
is the control API.

- ``POST /sandbox/tokens`` ``{"token", "state", "fail_times"?, "retry_after"?, "delay_ms"?}``
  (or a list of them) sets how a token is answered at every endpoint it is presented to.
- ``GET /sandbox/calls?platform=&token=&limit=`` the calls answered (most recent last), and
  ``in_flight``: the tokens of the calls received and not answered yet.
- ``DELETE /sandbox/calls`` clears the log; ``POST /sandbox/reset`` clears states and log.
- ``POST /sandbox/login`` says who is signed in at a platform and what they answer at its
  consent screen; the authorize paths, code exchanges and profile answers are in
  ``consent.py``. App credentials: ``app_credentials(platform_settings)``, the same ones a
  service pointed at this sandbox uses.
- ``POST /sandbox/push`` sends a signed platform push notice (see ``push.py``); the RISC
  issuer's keys are at ``GET /google/oauth2/v3/certs``.

The per-request path does no logging and no allocation beyond the answer, so one core
serves thousands of requests per second; ``latency_ms`` adds a fixed delay to every answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from devkit.sandbox import consent
from devkit.sandbox.answers import PLATFORMS, SCENARIOS, Ask, Platform
from devkit.sandbox.push import add_push
from devkit.sandbox.state import SETTABLE_STATES, SandboxState, TokenState
from service.platforms.config import PlatformSettings, app_credentials

SANDBOX_STATE = web.AppKey("sandbox_state", SandboxState)
KNOWN_STATES = SETTABLE_STATES | SCENARIOS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_sandbox_app(
    latency_ms: float = 0,
    platform_settings: PlatformSettings | None = None,
    *,
    credentials: Mapping[str, str] | None = None,
    push_target: str | None = None,
) -> web.Application:
    """`push_target`: the service base URL `POST /sandbox/push` sends notices to by default."""
    app = web.Application()
    state = SandboxState()
    app[SANDBOX_STATE] = state
    latency = latency_ms / 1000
    apps = app_credentials(platform_settings or PlatformSettings())
    connect = _connect_routes(state, apps)
    for platform in PLATFORMS:
        for method, path, kind, where in platform.routes:
            handler = _platform_handler(state, platform, kind, where, latency)
            full = f"/{platform.name}{path}"
            if (exchange := connect.pop((method, full), None)) is not None:
                handler = _by_grant(exchange, handler)  # one token endpoint, two grants
            app.router.add_route(method, full, handler)
    for (method, path), handler in connect.items():
        app.router.add_route(method, path, handler)
    app.router.add_post("/sandbox/login", login)
    app.router.add_post("/sandbox/tokens", set_tokens)
    app.router.add_get("/sandbox/calls", get_calls)
    app.router.add_delete("/sandbox/calls", clear_calls)
    app.router.add_post("/sandbox/reset", reset)
    add_push(app, credentials=credentials, target=push_target)
    return app


def _connect_routes(
    state: SandboxState, apps: dict[str, tuple[str, str]]
) -> dict[tuple[str, str], Handler]:
    routes: dict[tuple[str, str], Handler] = {}
    for name, path in consent.AUTHORIZE_PATHS.items():
        routes[("GET", f"/{name}{path}")] = consent.authorize_handler(state, name, apps)
    for name, (method, path) in consent.EXCHANGE_PATHS.items():
        routes[(method, f"/{name}{path}")] = consent.exchange_handler(state, name, apps)
    for name in ("instagram", "threads"):
        routes[("GET", f"/{name}/access_token")] = consent.long_lived_handler(state, name, apps)
    routes[("GET", "/facebook/{version}/oauth/access_token")] = consent.facebook_token_handler(
        state, apps
    )
    routes[("GET", "/facebook/{version}/me/accounts")] = consent.facebook_pages_handler(state)
    routes[("POST", "/mastodon/api/v1/apps")] = consent.mastodon_apps_handler(state)
    routes[("GET", "/linkedin/v2/userinfo")] = consent.linkedin_userinfo_handler(state)
    for (method, path), handler in consent.bluesky_handlers(state).items():
        routes[(method, f"/bluesky{path}")] = handler
    return routes


def _by_grant(exchange: Handler, other: Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        form = await request.post()  # cached: the chosen handler reads it again
        if form.get("grant_type") == "authorization_code":
            return await exchange(request)
        return await other(request)

    return handle


async def login(request: web.Request) -> web.Response:
    try:
        platform, who = consent.parse_login(orjson.loads(await request.read()))
    except (orjson.JSONDecodeError, ValueError) as exc:
        return _json(400, {"error": str(exc)})
    request.app[SANDBOX_STATE].consent.logins[platform] = who
    return _json(200, {"platform": platform, "user": who.user["id"], "decision": who.decision})


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
        if platform.name == "mastodon" and kind == "revoke":
            form = {k: str(v) for k, v in (await request.post()).items()}
            if consent.mastodon_revoke_refused(state.consent, token, form):
                state.record(platform.name, request.method, request.path, token, 403)
                body = {
                    "error": "unauthorized_client",
                    "error_description": "You are not authorized to revoke this token",
                }
                return _json(403, body)
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
        if status == 200 and kind in ("verify", "verify_me"):
            body = consent.profile_answer(state.consent, platform.name, kind, token, body)
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
