"""X (API v2, OAuth 2.0 user tokens). The API and the database call it "twitter".

| call | answer | outcome | reason |
|---|---|---|---|
| verify `GET /2/users/me` | 200 | valid | |
| | 401 (problem `Unauthorized`; v1.1 code 89) | dead, try_refresh | token_expired past the stored expiry, else token_revoked |
| | 403 problem `usage-capped` | transient, platform-wide | quota_exceeded |
| | 403 problem `user-suspended` | unknown | account_deactivated |
| | 403 other (`client-forbidden`, not permitted) | unknown | unexpected_response |
| refresh `POST /2/oauth2/token` | 200 | valid + rotated pair | |
| | other 4xx (400 `invalid_request`, UNCONFIRMED) | unknown | refresh_rejected (dead after a dead verify) |
| revoke `POST /2/oauth2/revoke` | 200 | revoked | |
| | 401 | already_invalid | |
| any | 429 (`x-rate-limit-reset` epoch), 5xx, timeout, refused | transient | rate_limited, server_error, timeout, connection_error |
| any | other 4xx | unknown | unexpected_response |

Connect (OAuth 2.0 authorization code + PKCE S256, confidential client):
authorize `https://x.com/i/oauth2/authorize` with `offline.access` (else no refresh token);
code -> `POST /2/oauth2/token` with Basic client auth (public clients: `client_id` in the
form); profile `GET /2/users/me?user.fields=profile_image_url` (the token answer names no
user). The code lives 30 seconds: the exchange happens in the callback request.
"""  # noqa: E501

from __future__ import annotations

from typing import ClassVar

from service.platforms.base import AccountRef, CheckResult, RevokeResult, TokenSet
from service.platforms.http import (
    HTTPAdapter,
    Reply,
    as_revoke,
    basic,
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

BASE_URL = "https://api.x.com"
SCOPES = ("tweet.read", "tweet.write", "users.read", "media.write", "offline.access")


class TwitterAdapter(HTTPAdapter, OAuthConnect):
    name = "twitter"
    supports_refresh = True
    supports_revoke = True
    uses_pkce = True
    connect_endpoints: ClassVar[dict[str, Endpoint]] = {
        "authorize": ("https://x.com", "/i/oauth2/authorize")
    }

    def authorize_url(self, request: AuthorizeRequest) -> str:
        return with_query(
            self.endpoint("authorize"),
            {
                "response_type": "code",
                "client_id": self.credentials.get("client_id", ""),
                "redirect_uri": request.redirect_uri,
                "scope": " ".join(SCOPES),
                "state": request.state,
                "code_challenge": request.code_challenge,
                "code_challenge_method": "S256",
            },
        )

    async def exchange(self, request: CodeExchange) -> list[Connected]:
        form = {
            "grant_type": "authorization_code",
            "code": request.code,
            "redirect_uri": request.redirect_uri,
            "code_verifier": request.code_verifier or "",
        }
        reply = await self.call(
            "POST", f"{self.base_url}/2/oauth2/token", headers=self._client_auth(form), data=form
        )
        tokens = token_set(require_ok(reply, "token"), "token")
        reply = await self.call(
            "GET",
            f"{self.base_url}/2/users/me",
            params={"user.fields": "profile_image_url"},
            headers=bearer(tokens.access_token),
        )
        body = require_ok(reply, "profile")
        username = required_text(body, "profile", "data", "username")
        profile = Profile(
            platform_user_id=required_text(body, "profile", "data", "id"),
            username=username,
            display_name=text(body, "data", "name") or username,
            avatar_url=text(body, "data", "profile_image_url"),
        )
        return [Connected(profile, tokens)]

    async def verify(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        reply = await self.call(
            "GET", f"{self.base_url}/2/users/me", headers=bearer(tokens.access_token)
        )
        if reply.status == 200:
            return valid(reply)
        return classify_error(reply, tokens)

    async def refresh(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token or ""}
        reply = await self.call(
            "POST", f"{self.base_url}/2/oauth2/token", headers=self._client_auth(form), data=form
        )
        if reply.status == 200 and isinstance(access := dig(reply.body, "access_token"), str):
            scope = dig(reply.body, "scope")
            return valid(
                reply,
                TokenSet(
                    access_token=access,
                    refresh_token=dig(reply.body, "refresh_token") or tokens.refresh_token,
                    access_expires_at=expires_in(dig(reply.body, "expires_in")),
                    scopes=tuple(scope.split()) if isinstance(scope, str) else tokens.scopes,
                ),
            )
        return transient(reply) or unknown(reply, _code(reply), "refresh_rejected")

    async def revoke(self, account: AccountRef, tokens: TokenSet) -> RevokeResult:
        form = {"token": tokens.refresh_token or tokens.access_token}
        reply = await self.call(
            "POST", f"{self.base_url}/2/oauth2/revoke", headers=self._client_auth(form), data=form
        )
        if reply.status == 200:
            return as_revoke(valid(reply))
        return as_revoke(classify_error(reply, tokens))

    def _client_auth(self, form: dict[str, str]) -> dict[str, str]:
        """Confidential clients authenticate with Basic; public clients send client_id."""
        client_id = self.credentials.get("client_id", "")
        if secret := self.credentials.get("client_secret"):
            return basic(client_id, secret)
        form["client_id"] = client_id
        return {}


def classify_error(reply: Reply, tokens: TokenSet) -> CheckResult:
    if result := transient(reply):
        return result
    code = _code(reply)
    if reply.status == 401:
        return dead(expired_or_revoked(tokens), reply, code, try_refresh=True)
    if reply.status == 403 and code == "usage-capped":
        return later("quota_exceeded", reply, code, platform_wide=True)
    if reply.status == 403 and code == "user-suspended":
        return unknown(reply, code, "account_deactivated")
    return unknown(reply, code)


def _code(reply: Reply) -> str | None:
    """The problem type's last segment, the v1.1 error code, or the OAuth error."""
    problem = dig(reply.body, "type")
    if isinstance(problem, str) and problem != "about:blank":
        return problem.rstrip("/").rsplit("/", 1)[-1]
    errors = dig(reply.body, "errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("code"))
    for key in ("error", "title"):
        if isinstance(value := dig(reply.body, key), str):
            return value
    return None
