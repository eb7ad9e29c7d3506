"""TikTok (Login Kit v2). Every answer carries ``{"error": {"code", "message", "log_id"}}``
(``"ok"`` on success); the OAuth endpoints answer ``{"error": "invalid_grant", ...}``.
Lifetimes come from ``expires_in`` / ``refresh_expires_in``: the docs disagree (2 h/180 d
vs 24 h/365 d). The refresh token rotates.

| call | answer | outcome | reason |
|---|---|---|---|
| verify `GET /v2/user/info/?fields=open_id` | 200, code `ok` | valid | |
| | `access_token_invalid` (401) | dead, try_refresh | token_expired past the stored expiry, else token_revoked |
| | `scope_not_authorized` (401), `scope_permission_missed` | unknown | permission_missing |
| | `reached_active_user_cap` (app daily cap, trap) | transient, platform-wide | quota_exceeded |
| | `rate_limit_exceeded` (429), `internal_error` (500) | transient | rate_limited, server_error |
| | `spam_risk_*` (about content, trap), other | unknown | unexpected_response |
| refresh `POST /v2/oauth/token/` | 200 with `access_token` | valid + rotated pair | |
| | `invalid_grant` (HTTP status UNCONFIRMED; the body is documented) | dead | refresh_failed |
| | other OAuth error | unknown | unexpected_response |
| revoke `POST /v2/oauth/revoke/` | 200 `{}` | revoked | |
| | `access_token_invalid` | already_invalid | |
| any | 429, 5xx, timeout, refused | transient | |

Connect (Login Kit for Web): authorize `https://www.tiktok.com/v2/auth/authorize/` with
`client_key` and a comma-separated `scope`; no PKCE (the docs require `code_verifier` only
for desktop and mobile apps); code -> `POST /v2/oauth/token/` with `client_key` +
`client_secret` in the form -> `open_id`, a rotating refresh token and both lifetimes;
profile `GET /v2/user/info/?fields=open_id,union_id,avatar_url,display_name,username`
(`username` needs `user.info.profile`). `open_id` is per app: it is the account's id.
"""  # noqa: E501

from __future__ import annotations

from typing import ClassVar

from service.platforms.base import AccountRef, CheckResult, RevokeResult, TokenSet
from service.platforms.http import (
    HTTPAdapter,
    Reply,
    as_revoke,
    bearer,
    dead,
    dig,
    expired_or_revoked,
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
    Endpoint,
    OAuthConnect,
    Profile,
    require_ok,
    required_text,
    text,
    token_set,
    with_query,
)

BASE_URL = "https://open.tiktokapis.com"

_SCOPE_CODES = {"scope_not_authorized", "scope_permission_missed"}


SCOPES = ("user.info.basic", "user.info.profile", "video.publish", "video.upload")
PROFILE_FIELDS = "open_id,union_id,avatar_url,display_name,username"


class TikTokAdapter(HTTPAdapter, OAuthConnect):
    name = "tiktok"
    supports_refresh = True
    supports_revoke = True
    connect_endpoints: ClassVar[dict[str, Endpoint]] = {
        "authorize": ("https://www.tiktok.com", "/v2/auth/authorize/")
    }

    def authorize_url(self, request: AuthorizeRequest) -> str:
        return with_query(
            self.endpoint("authorize"),
            {
                "client_key": self.credentials.get("client_key", ""),
                "response_type": "code",
                "scope": ",".join(SCOPES),
                "redirect_uri": request.redirect_uri,
                "state": request.state,
            },
        )

    async def exchange(self, request: CodeExchange) -> list[Connected]:
        form = self._client() | {
            "code": request.code,
            "grant_type": "authorization_code",
            "redirect_uri": request.redirect_uri,
        }
        reply = await self.call("POST", f"{self.base_url}/v2/oauth/token/", data=form)
        body = (
            reply.body
            if reply.status == 200 and _code(reply) is None
            else require_ok(reply, "token")
        )
        tokens = token_set(body, "token")
        reply = await self.call(
            "GET",
            f"{self.base_url}/v2/user/info/",
            params={"fields": PROFILE_FIELDS},
            headers=bearer(tokens.access_token),
        )
        if reply.status != 200 or _code(reply) not in (None, "ok"):
            require_ok(reply, "profile")  # raises with the platform's code
        open_id = required_text(reply.body, "profile", "data", "user", "open_id")
        name = text(reply.body, "data", "user", "display_name")
        username = text(reply.body, "data", "user", "username") or name or open_id
        profile = Profile(
            platform_user_id=open_id,
            username=username,
            display_name=name or username,
            avatar_url=text(reply.body, "data", "user", "avatar_url"),
        )
        return [Connected(profile, tokens)]

    async def verify(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        reply = await self.call(
            "GET",
            f"{self.base_url}/v2/user/info/",
            params={"fields": "open_id"},
            headers=bearer(tokens.access_token),
        )
        return classify(reply, tokens)

    async def refresh(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        form = self._client() | {
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token or "",
        }
        reply = await self.call("POST", f"{self.base_url}/v2/oauth/token/", data=form)
        body = reply.body
        if reply.status == 200 and isinstance(access := dig(body, "access_token"), str):
            scope = dig(body, "scope")
            return valid(
                reply,
                TokenSet(
                    access_token=access,
                    refresh_token=dig(body, "refresh_token") or tokens.refresh_token,
                    access_expires_at=expires_in(dig(body, "expires_in")),
                    refresh_expires_at=expires_in(dig(body, "refresh_expires_in")),
                    scopes=tuple(scope.split(",")) if isinstance(scope, str) else tokens.scopes,
                ),
            )
        if result := transient(reply):
            return result
        code = _code(reply)
        if code == "invalid_grant":
            return dead("refresh_failed", reply, code)
        return unknown(reply, code)

    async def revoke(self, account: AccountRef, tokens: TokenSet) -> RevokeResult:
        form = self._client() | {"token": tokens.access_token}
        reply = await self.call("POST", f"{self.base_url}/v2/oauth/revoke/", data=form)
        return as_revoke(classify(reply, tokens))

    def _client(self) -> dict[str, str]:
        return {
            "client_key": self.credentials.get("client_key", ""),
            "client_secret": self.credentials.get("client_secret", ""),
        }


def classify(reply: Reply, tokens: TokenSet) -> CheckResult:
    code = _code(reply)
    if reply.status == 200 and code in (None, "ok"):
        return valid(reply)
    if result := transient(reply):
        return result
    if code == "access_token_invalid":
        return dead(expired_or_revoked(tokens), reply, code, try_refresh=True)
    if code in _SCOPE_CODES:
        return unknown(reply, code, "permission_missing")
    if code == "reached_active_user_cap":
        return later("quota_exceeded", reply, code, platform_wide=True)
    if code == "rate_limit_exceeded":
        return later("rate_limited", reply, code)
    if code == "internal_error":
        return later("server_error", reply, code)
    return unknown(reply, code)


def _code(reply: Reply) -> str | None:
    """``error.code`` on the API, ``error`` on the OAuth endpoints."""
    error = dig(reply.body, "error")
    if isinstance(error, dict):
        error = error.get("code")
    return error if isinstance(error, str) else None
