"""Mastodon, on the account's own instance. Tokens never expire and there is no refresh.

| call | answer | outcome | reason |
|---|---|---|---|
| verify `GET /api/v1/accounts/verify_credentials` | 200 | valid | |
| | 401 "The access token was revoked" / "…is invalid" | dead | token_revoked |
| | 403 "…outside the authorized scopes" | ask `GET /api/v1/apps/verify_credentials` instead | (its answer) |
| | 403 "login is currently disabled", unconfirmed e-mail, pending approval (trap) | unknown | account_deactivated |
| | 422 (app-only token), other 4xx | unknown | unexpected_response |
| revoke `POST /oauth/revoke` (client_id, client_secret, token) | 200 `{}` (idempotent) | revoked | |
| | 403 `unauthorized_client` | failed | |
| any | 429 (`X-RateLimit-Reset` ISO 8601 or epoch), 5xx, timeout, refused | transient | rate_limited, ... |

Connect (per-instance dynamic registration): the instance host is checked first
(``hosts.check_public_host``); `POST /api/v1/apps` registers the app once per instance (the
caller stores and reuses it); authorize `https://{instance}/oauth/authorize` with PKCE S256
(the only method, Mastodon >= 4.3; older instances ignore it); code -> `POST /oauth/token`
with `client_id` + `client_secret` in the form (no refresh token, no expiry); profile
`GET /api/v1/accounts/verify_credentials`. The account is (instance, account id); its
username is `username@instance`, the form `octopost accounts import` derives instances from.
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import aiohttp

from service.platforms.base import (
    AccountRef,
    CheckResult,
    RevokeOutcome,
    RevokeResult,
    TokenOutcome,
    TokenSet,
)
from service.platforms.hosts import check_public_host
from service.platforms.http import (
    HTTPAdapter,
    Reply,
    as_revoke,
    bearer,
    dead,
    dig,
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
    text,
    token_set,
    with_query,
)

_ACCOUNT_DISABLED = ("login is currently disabled", "confirmed e-mail", "pending approval")
_OUT_OF_SCOPE = "outside the authorized scopes"
SCOPES = "read:accounts write:statuses write:media"
CLIENT_NAME = "Octopost"


class MastodonAdapter(HTTPAdapter, OAuthConnect):
    name = "mastodon"
    supports_revoke = True
    uses_pkce = True

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        credentials: dict[str, str] | None = None,
        *,
        timeout: float = 10.0,
        pin_base_url: bool = False,
        apps: Mapping[str, tuple[str, str]] | None = None,
        allow_private_hosts: bool = False,
    ) -> None:
        super().__init__(session, base_url, credentials, timeout=timeout)
        self.pin_base_url = pin_base_url  # the sandbox stands in for every instance
        self.apps = dict(apps or {})  # instance host -> (client_id, client_secret)
        # apps the connect flow registered (kept in the database): the caller fills these in,
        # as an adapter never reads the database; configured ones win
        self.registered: dict[str, tuple[str, str]] = {}
        self.allow_private_hosts = allow_private_hosts
        self.endpoints = {}

    async def checked_host(self, instance: str) -> str:
        """The instance's host name, or ``HostRefused`` (private, IP literal, malformed)."""
        return await check_public_host(instance, allow_private=self.allow_private_hosts)

    def instance_base(self, host: str) -> str:
        return self.base_url if self.pin_base_url else f"https://{host}"

    async def register_app(self, host: str, redirect_uri: str) -> tuple[str, str]:
        """``(client_id, client_secret)`` of a new app on the instance."""
        reply = await self.call(
            "POST",
            f"{self.instance_base(host)}/api/v1/apps",
            data={"client_name": CLIENT_NAME, "redirect_uris": redirect_uri, "scopes": SCOPES},
        )
        body = require_ok(reply, "register_app")
        return (
            required_text(body, "register_app", "client_id"),
            required_text(body, "register_app", "client_secret"),
        )

    def authorize_url(self, request: AuthorizeRequest) -> str:
        return with_query(
            f"{self.instance_base(request.instance or '')}/oauth/authorize",
            {
                "response_type": "code",
                "client_id": request.client_id or "",
                "redirect_uri": request.redirect_uri,
                "scope": SCOPES,
                "state": request.state,
                "code_challenge": request.code_challenge,
                "code_challenge_method": "S256",
            },
        )

    async def exchange(self, request: CodeExchange) -> list[Connected]:
        host = request.instance or ""
        base = self.instance_base(host)
        form = {
            "grant_type": "authorization_code",
            "code": request.code,
            "client_id": request.client_id or "",
            "client_secret": request.client_secret or "",
            "redirect_uri": request.redirect_uri,
            "code_verifier": request.code_verifier or "",
            "scope": SCOPES,
        }
        reply = await self.call("POST", f"{base}/oauth/token", data=form)
        tokens = token_set(require_ok(reply, "token"), "token")
        reply = await self.call(
            "GET",
            f"{base}/api/v1/accounts/verify_credentials",
            headers=bearer(tokens.access_token),
        )
        body = require_ok(reply, "profile")
        username = required_text(body, "profile", "username")
        profile = Profile(
            platform_user_id=required_text(body, "profile", "id"),
            username=f"{username}@{host}",
            display_name=text(body, "display_name") or username,
            avatar_url=text(body, "avatar"),
            instance_url=f"https://{host}",
        )
        return [Connected(profile, tokens)]

    def instance(self, account: AccountRef) -> str:
        if self.pin_base_url or not account.instance_url:
            return self.base_url
        return account.instance_url.rstrip("/")

    async def verify(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        if not (base := self.instance(account)):
            return CheckResult(TokenOutcome.unknown, reason="no_instance_url")
        reply = await self.call(
            "GET", f"{base}/api/v1/accounts/verify_credentials", headers=bearer(tokens.access_token)
        )
        if reply.status == 403 and _OUT_OF_SCOPE in _message(reply):
            # a token without read:accounts/profile is still checkable (Mastodon >= 4.3)
            reply = await self.call(
                "GET", f"{base}/api/v1/apps/verify_credentials", headers=bearer(tokens.access_token)
            )
        return classify(reply)

    async def revoke(self, account: AccountRef, tokens: TokenSet) -> RevokeResult:
        if not (base := self.instance(account)):
            return RevokeResult(RevokeOutcome.failed, error_code="no_instance_url")
        # the app is the instance's (registered at connect, or configured), whatever base URL
        # the call goes to (the sandbox stands in for every instance)
        host = urlsplit(account.instance_url or base).hostname or ""
        client_id, client_secret = self.apps.get(host) or self.registered.get(host, ("", ""))
        form = {
            "client_id": client_id,
            "client_secret": client_secret,
            "token": tokens.access_token,
        }
        reply = await self.call("POST", f"{base}/oauth/revoke", data=form)
        return as_revoke(classify(reply))


def classify(reply: Reply) -> CheckResult:
    if reply.status == 200:
        return valid(reply)
    if result := transient(reply):
        return result
    message = _message(reply)
    if reply.status == 401:
        return dead("token_revoked", reply, message)
    if reply.status == 403 and any(text in message for text in _ACCOUNT_DISABLED):
        return unknown(reply, message, "account_deactivated")
    return unknown(reply, message or None)


def _message(reply: Reply) -> str:
    message = dig(reply.body, "error")
    return message if isinstance(message, str) else ""
