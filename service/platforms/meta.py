"""The Meta Graph error envelope, shared by Facebook, Instagram and Threads, and the
``/me`` + ``refresh_access_token`` adapter that Instagram and Threads both are.

``{"error": {"code", "error_subcode", "type", "message", "is_transient", "fbtrace_id"}}``

| answer | outcome | reason |
|---|---|---|
| code 4 (app), 341 (app limit) | transient, platform-wide | throttled (retry from usage headers) |
| code 17 (user), 32 (page), 613 (UNCONFIRMED) | transient | throttled |
| code 368 (temporary policy block) | transient | throttled |
| code 1, 2 (service) | transient | server_error |
| `is_transient: true`, any code | transient | server_error |
| code 190, or 102 without subcode, or "Error validating access token" | dead | by subcode: 463 token_expired; 459 checkpoint, 464 unconfirmed user: user_action_required; else (458, 460, 467, ...) token_revoked |
| code 10, 200-299 (a permission removed) | unknown | permission_missing |
| other | unknown | unexpected_response |

Community-only signals (Postiz: ``REVOKED_ACCESS_TOKEN``, subcodes 33/490/1404078, "session
has been invalidated") count as dead only when they come with code 190, which they do.
The Graph error code is reported as ``code`` or ``code/subcode``.
"""  # noqa: E501

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from service.platforms.base import AccountRef, CheckResult, TokenSet
from service.platforms.http import (
    HTTPAdapter,
    Reply,
    dead,
    dig,
    expires_in,
    later,
    transient,
    unknown,
    valid,
)
from service.platforms.oauth import (
    AuthorizeRequest,
    CodeExchange,
    Connected,
    OAuthConnect,
    Profile,
    require_ok,
    required_text,
    token_set,
    with_query,
)

THROTTLE_CODES = {4: True, 341: True, 17: False, 32: False, 613: False, 368: False}  # -> app-wide
SERVICE_CODES = {1, 2}
USER_ACTION_SUBCODES = {459, 464}
EXPIRED_SUBCODE = 463


def classify_graph_error(reply: Reply) -> CheckResult:
    """Any non-2xx Graph answer (or a 2xx that carries an ``error`` object)."""
    if result := transient(reply):
        return result
    error = dig(reply.body, "error")
    if not isinstance(error, dict):
        return unknown(reply, None)
    code, subcode = _int(error.get("code")), _int(error.get("error_subcode"))
    label = f"{code}/{subcode}" if subcode else str(code)
    message = error.get("message")
    if code in THROTTLE_CODES:
        return later("throttled", reply, label, platform_wide=THROTTLE_CODES[code])
    if code in SERVICE_CODES or error.get("is_transient") is True:
        return later("server_error", reply, label)
    if (
        code == 190
        or (code == 102 and not subcode)
        or (isinstance(message, str) and message.startswith("Error validating access token"))
    ):
        return dead(dead_reason(subcode), reply, label)
    if code == 10 or 200 <= code <= 299:
        return unknown(reply, label, "permission_missing")
    return unknown(reply, label)


def dead_reason(subcode: int) -> str:
    if subcode == EXPIRED_SUBCODE:
        return "token_expired"
    if subcode in USER_ACTION_SUBCODES:
        return "user_action_required"
    return "token_revoked"


def _int(value: object) -> int:
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else 0


class GraphMeAdapter(HTTPAdapter, OAuthConnect):
    """Verify with ``GET /{version}/me``; refresh the long-lived token itself with
    ``GET /refresh_access_token`` (it must be >= 24 h old and unexpired). There is no
    separate refresh token: ``refresh`` sends the access token.

    Connect (Instagram Login, Threads): authorize (no PKCE) -> ``POST`` the code with
    ``client_id`` + ``client_secret`` in the form (endpoint ``code``) for a short-lived
    token -> ``GET /access_token?grant_type={exchange_grant}`` for the 60-day one -> the
    profile from ``/{version}/me``."""

    supports_refresh = True
    refresh_needs_refresh_token = False
    refresh_ahead_seconds = 7 * 86400.0
    version: ClassVar[str]
    me_fields: ClassVar[str]
    refresh_grant: ClassVar[str]
    exchange_grant: ClassVar[str]
    scopes: ClassVar[tuple[str, ...]]
    profile_fields: ClassVar[str]

    def authorize_url(self, request: AuthorizeRequest) -> str:
        return with_query(
            self.endpoint("authorize"),
            {
                "client_id": self.credentials.get("client_id", ""),
                "redirect_uri": request.redirect_uri,
                "response_type": "code",
                "scope": ",".join(self.scopes),
                "state": request.state,
            },
        )

    async def exchange(self, request: CodeExchange) -> list[Connected]:
        form = {
            "client_id": self.credentials.get("client_id", ""),
            "client_secret": self.credentials.get("client_secret", ""),
            "grant_type": "authorization_code",
            "redirect_uri": request.redirect_uri,
            "code": request.code,
        }
        reply = await self.call("POST", self.endpoint("code"), data=form)
        body = require_ok(reply, "code")
        # Instagram's answer has been documented flat and wrapped in "data": [...]
        if isinstance(data := dig(body, "data"), list) and data:
            body = data[0]
        short = required_text(body, "code", "access_token")
        reply = await self.call(
            "GET",
            f"{self.base_url}/access_token",
            params={
                "grant_type": self.exchange_grant,
                "client_secret": self.credentials.get("client_secret", ""),
                "access_token": short,
            },
        )
        tokens = token_set(require_ok(reply, "long_lived"), "long_lived")
        granted = dig(body, "permissions")
        if isinstance(granted, str | list) and not tokens.scopes:
            items = granted.split(",") if isinstance(granted, str) else granted
            tokens = replace(tokens, scopes=tuple(s for s in items if isinstance(s, str)))
        reply = await self.call(
            "GET",
            f"{self.base_url}/{self.version}/me",
            params={"fields": self.profile_fields, "access_token": tokens.access_token},
        )
        return [Connected(self.profile(require_ok(reply, "profile")), tokens)]

    def profile(self, body: Any) -> Profile:
        raise NotImplementedError

    async def verify(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        reply = await self.call(
            "GET",
            f"{self.base_url}/{self.version}/me",
            params={"fields": self.me_fields, "access_token": tokens.access_token},
        )
        if reply.status == 200 and dig(reply.body, "error") is None:
            return valid(reply)
        return classify_graph_error(reply)

    async def refresh(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        reply = await self.call(
            "GET",
            f"{self.base_url}/refresh_access_token",
            params={"grant_type": self.refresh_grant, "access_token": tokens.access_token},
        )
        if reply.status == 200 and isinstance(access := dig(reply.body, "access_token"), str):
            return valid(
                reply,
                TokenSet(
                    access_token=access,
                    refresh_token=tokens.refresh_token,
                    access_expires_at=expires_in(dig(reply.body, "expires_in")),
                    scopes=tokens.scopes,
                ),
            )
        return classify_graph_error(reply)
