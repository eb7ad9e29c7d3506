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

_ACCOUNT_DISABLED = ("login is currently disabled", "confirmed e-mail", "pending approval")
_OUT_OF_SCOPE = "outside the authorized scopes"


class MastodonAdapter(HTTPAdapter):
    name = "mastodon"
    supports_revoke = True

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        credentials: dict[str, str] | None = None,
        *,
        timeout: float = 10.0,
        pin_base_url: bool = False,
        apps: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(session, base_url, credentials, timeout=timeout)
        self.pin_base_url = pin_base_url  # the sandbox stands in for every instance
        self.apps = dict(apps or {})  # instance host -> (client_id, client_secret)

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
        client_id, client_secret = self.apps.get(urlsplit(base).hostname or "", ("", ""))
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
