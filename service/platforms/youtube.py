"""YouTube (Google OAuth + YouTube Data API). Access tokens last 1 h, so the refresh grant
is the authoritative check; verify asks for the user's channel (1 quota unit), which also
proves the channel still exists. Google does not rotate refresh tokens.

| call | answer | outcome | reason |
|---|---|---|---|
| verify `GET /youtube/v3/channels?part=id&mine=true` (API base URL) | 200 with items | valid | |
| | 200 without items (no channel) | unknown | account_deactivated |
| | 401 (`UNAUTHENTICATED`, `authError`) | dead, try_refresh | token_expired past the stored expiry, else token_revoked |
| | 403 `quotaExceeded` (daily project quota, trap) | transient, platform-wide | quota_exceeded, retry at midnight Pacific (UNCONFIRMED) |
| | 403 `rateLimitExceeded` / `userRateLimitExceeded` | transient | rate_limited |
| | 403 `authenticatedUserAccountClosed` / `…Suspended`, `youtubeSignupRequired` | unknown | account_deactivated |
| refresh `POST /token` | 200 | valid + new access token | |
| | 400 `invalid_grant` "Token has been expired or revoked." | dead | refresh_failed |
| | `internal_failure`, `server_error`, `temporarily_unavailable` | transient | server_error |
| | other (`invalid_client`, `unauthorized_client`: our config) | unknown | unexpected_response |
| revoke `POST /revoke?token=` (the refresh token: the whole grant goes) | 200 | revoked | |
| | 400 `invalid_token` | already_invalid | |
| any | 429, 5xx, timeout, refused | transient | |

Connect (Google OAuth 2.0 for web servers): authorize
`https://accounts.google.com/o/oauth2/v2/auth` with `access_type=offline`, `prompt=consent`
(a refresh token on every consent, not only the first) and PKCE S256; scopes
`openid email profile` (the Google `sub`, and eligibility for RISC push revocations) plus
`youtube.upload` and `youtube.readonly`. Code -> `POST /token` with the secret in the form;
the `id_token` (read without checking its signature: it came straight from the token
endpoint over TLS) gives the `sub`, stored as the authorizing user. The channel is
`GET /youtube/v3/channels?part=snippet&mine=true` -> `items[0]` (id, title, customUrl,
thumbnail): an account owning several channels connects its first.
"""  # noqa: E501

from __future__ import annotations

from typing import ClassVar

import aiohttp

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
    seconds_until_midnight,
    transient,
    unknown,
    valid,
)
from service.platforms.oauth import (
    AuthorizeRequest,
    CodeExchange,
    Connected,
    ConnectFailed,
    Endpoint,
    OAuthConnect,
    Profile,
    require_ok,
    required_text,
    text,
    token_set,
    unverified_claims,
    with_query,
)

BASE_URL = "https://oauth2.googleapis.com"
API_BASE_URL = "https://www.googleapis.com"

_ACCOUNT_STATES = {
    "authenticatedUserAccountClosed",
    "authenticatedUserAccountSuspended",
    "youtubeSignupRequired",
}
_RATE_LIMITS = {"rateLimitExceeded", "userRateLimitExceeded"}
_RETRYABLE_OAUTH = {"internal_failure", "server_error", "temporarily_unavailable"}


SCOPES = (
    "openid",
    "email",
    "profile",
    "https://www.googleapis.com/auth/youtube.upload",
    "https://www.googleapis.com/auth/youtube.readonly",
)


class YouTubeAdapter(HTTPAdapter, OAuthConnect):
    name = "youtube"
    supports_refresh = True
    supports_revoke = True
    uses_pkce = True
    connect_endpoints: ClassVar[dict[str, Endpoint]] = {
        "authorize": ("https://accounts.google.com", "/o/oauth2/v2/auth")
    }

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        credentials: dict[str, str] | None = None,
        *,
        timeout: float = 10.0,
        api_base_url: str = API_BASE_URL,
    ) -> None:
        super().__init__(session, base_url, credentials, timeout=timeout)
        self.api_base_url = api_base_url.rstrip("/")

    def authorize_url(self, request: AuthorizeRequest) -> str:
        return with_query(
            self.endpoint("authorize"),
            {
                "client_id": self.credentials.get("client_id", ""),
                "redirect_uri": request.redirect_uri,
                "response_type": "code",
                "scope": " ".join(SCOPES),
                "state": request.state,
                "access_type": "offline",
                "prompt": "consent",
                "include_granted_scopes": "true",
                "code_challenge": request.code_challenge,
                "code_challenge_method": "S256",
            },
        )

    async def exchange(self, request: CodeExchange) -> list[Connected]:
        form = {
            "code": request.code,
            "client_id": self.credentials.get("client_id", ""),
            "client_secret": self.credentials.get("client_secret", ""),
            "redirect_uri": request.redirect_uri,
            "grant_type": "authorization_code",
            "code_verifier": request.code_verifier or "",
        }
        reply = await self.call("POST", f"{self.base_url}/token", data=form)
        body = require_ok(reply, "token")
        tokens = token_set(body, "token")
        sub = text(unverified_claims(text(body, "id_token") or ""), "sub")
        reply = await self.call(
            "GET",
            f"{self.api_base_url}/youtube/v3/channels",
            params={"part": "snippet", "mine": "true"},
            headers=bearer(tokens.access_token),
        )
        items = dig(require_ok(reply, "channels"), "items")
        if not isinstance(items, list) or not items:
            raise ConnectFailed("channels", code="no_channel", status=reply.status)
        channel = items[0]
        title = text(channel, "snippet", "title")
        handle = text(channel, "snippet", "customUrl")
        channel_id = required_text(channel, "channels", "id")
        thumbnails = dig(channel, "snippet", "thumbnails")
        avatar = None
        for size in ("high", "medium", "default"):
            if avatar := text(thumbnails, size, "url"):
                break
        profile = Profile(
            platform_user_id=channel_id,
            username=handle or title or channel_id,
            display_name=title or handle or channel_id,
            avatar_url=avatar,
            authorizing_user_id=sub,
        )
        return [Connected(profile, tokens)]

    async def verify(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        reply = await self.call(
            "GET",
            f"{self.api_base_url}/youtube/v3/channels",
            params={"part": "id", "mine": "true"},
            headers=bearer(tokens.access_token),
        )
        if reply.status == 200:
            return (
                valid(reply)
                if dig(reply.body, "items")
                else unknown(reply, "no_channel", "account_deactivated")
            )
        if result := transient(reply):
            return result
        code = _api_reason(reply)
        if reply.status == 401:
            return dead(expired_or_revoked(tokens), reply, code, try_refresh=True)
        if code == "quotaExceeded":
            retry = seconds_until_midnight("America/Los_Angeles")
            return later("quota_exceeded", reply, code, platform_wide=True, retry_after=retry)
        if code in _RATE_LIMITS:
            return later("rate_limited", reply, code)
        if code in _ACCOUNT_STATES:
            return unknown(reply, code, "account_deactivated")
        return unknown(reply, code)

    async def refresh(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token or "",
            "client_id": self.credentials.get("client_id", ""),
            "client_secret": self.credentials.get("client_secret", ""),
        }
        reply = await self.call("POST", f"{self.base_url}/token", data=form)
        if reply.status == 200 and isinstance(access := dig(reply.body, "access_token"), str):
            scope = dig(reply.body, "scope")
            return valid(
                reply,
                TokenSet(
                    access_token=access,
                    refresh_token=dig(reply.body, "refresh_token") or tokens.refresh_token,
                    access_expires_at=expires_in(dig(reply.body, "expires_in")),
                    refresh_expires_at=tokens.refresh_expires_at,
                    scopes=tuple(scope.split()) if isinstance(scope, str) else tokens.scopes,
                ),
            )
        return classify_oauth(reply)

    async def revoke(self, account: AccountRef, tokens: TokenSet) -> RevokeResult:
        token = tokens.refresh_token or tokens.access_token
        reply = await self.call(
            "POST",
            f"{self.base_url}/revoke",
            params={"token": token},
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        if reply.status == 200:
            return as_revoke(valid(reply))
        return as_revoke(classify_oauth(reply))


def classify_oauth(reply: Reply) -> CheckResult:
    if result := transient(reply):
        return result
    code = dig(reply.body, "error")
    code = code if isinstance(code, str) else None
    if code in ("invalid_grant", "invalid_token"):
        return dead("refresh_failed" if code == "invalid_grant" else "token_revoked", reply, code)
    if code in _RETRYABLE_OAUTH:
        return later("server_error", reply, code)
    return unknown(reply, code)


def _api_reason(reply: Reply) -> str | None:
    """``error.errors[0].reason`` of a Google API error, else ``error.status``."""
    errors = dig(reply.body, "error", "errors")
    if isinstance(errors, list) and errors and isinstance(reason := dig(errors[0], "reason"), str):
        return reason
    status = dig(reply.body, "error", "status")
    return status if isinstance(status, str) else None
