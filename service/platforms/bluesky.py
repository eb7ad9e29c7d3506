"""Bluesky (AT Protocol app-password sessions: accessJwt + refreshJwt) on the account's PDS.

Modelled on the official agent (packages/api/src/atp-agent.ts): 401 or 400 ``ExpiredToken``
on a call means "refresh"; only a refused refresh ends the session.

| call | answer | outcome | reason |
|---|---|---|---|
| verify `GET /xrpc/com.atproto.server.getSession` | 200, `active` not false | valid | |
| | 200, `active: false` | unknown (account state, not the token) | account_deactivated (error_code = `status`) |
| | 400 `ExpiredToken` / `InvalidToken`, 401 | unknown, try_refresh (trap: never dead) | token_expired / token_revoked |
| | 401 `AccountTakedown` / `AccountDeactivated` | unknown | account_deactivated |
| refresh `POST /xrpc/com.atproto.server.refreshSession` | 200 | valid + rotated pair (expiry from the JWT `exp`) | |
| | 400 `ExpiredToken` / `InvalidToken` / `InvalidDID`, other 401 | dead | refresh_failed |
| | 401 `AccountTakedown` / `AccountDeactivated` | unknown | account_deactivated |
| revoke `POST /xrpc/com.atproto.server.deleteSession` (refreshJwt) | 200 | revoked | |
| | 400 `ExpiredToken` / `InvalidToken`, 401 | already_invalid | |
| any | 400/401 `use_dpop_nonce` | transient | dpop_nonce (retry with the nonce) |
| any | 429 (`RateLimit-Reset` epoch, `Retry-After`), 5xx, timeout, refused | transient | rate_limited, ... |
| any | other 4xx | unknown | unexpected_response |
"""  # noqa: E501

from __future__ import annotations

import aiohttp

from service.platforms.base import AccountRef, CheckResult, RevokeResult, TokenSet
from service.platforms.http import (
    HTTPAdapter,
    Reply,
    as_revoke,
    bearer,
    dead,
    dig,
    jwt_expiry,
    later,
    transient,
    unknown,
    valid,
)

BASE_URL = "https://bsky.social"  # for accounts that carry no PDS URL

_ACCOUNT_STATES = {"AccountTakedown", "AccountDeactivated"}
_DEAD_REFRESH = {"ExpiredToken", "InvalidToken", "InvalidDID"}


class BlueskyAdapter(HTTPAdapter):
    name = "bluesky"
    supports_refresh = True
    supports_revoke = True

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        credentials: dict[str, str] | None = None,
        *,
        timeout: float = 10.0,
        pin_base_url: bool = False,
    ) -> None:
        super().__init__(session, base_url, credentials, timeout=timeout)
        self.pin_base_url = pin_base_url  # the sandbox stands in for every PDS

    def pds(self, account: AccountRef) -> str:
        if self.pin_base_url or not account.instance_url:
            return self.base_url
        return account.instance_url.rstrip("/")

    async def verify(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        url = f"{self.pds(account)}/xrpc/com.atproto.server.getSession"
        reply = await self.call("GET", url, headers=bearer(tokens.access_token))
        if reply.status == 200:
            if dig(reply.body, "active") is False:
                return unknown(reply, dig(reply.body, "status"), "account_deactivated")
            return valid(reply)
        if result := _common(reply):
            return result
        code = _code(reply)
        if reply.status == 401 or code in ("ExpiredToken", "InvalidToken"):
            reason = "token_expired" if code == "ExpiredToken" else "token_revoked"
            return unknown(reply, code, reason, try_refresh=True)
        return unknown(reply, code)

    async def refresh(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        url = f"{self.pds(account)}/xrpc/com.atproto.server.refreshSession"
        reply = await self.call("POST", url, headers=bearer(tokens.refresh_token or ""))
        access, refresh = dig(reply.body, "accessJwt"), dig(reply.body, "refreshJwt")
        if reply.status == 200 and isinstance(access, str) and isinstance(refresh, str):
            new = TokenSet(
                access_token=access,
                refresh_token=refresh,
                access_expires_at=jwt_expiry(access),
                refresh_expires_at=jwt_expiry(refresh),
                scopes=tokens.scopes,
            )
            return valid(reply, new)
        if result := _common(reply):
            return result
        code = _code(reply)
        if reply.status == 401 or code in _DEAD_REFRESH:
            return dead("refresh_failed", reply, code)
        return unknown(reply, code)

    async def revoke(self, account: AccountRef, tokens: TokenSet) -> RevokeResult:
        url = f"{self.pds(account)}/xrpc/com.atproto.server.deleteSession"
        token = tokens.refresh_token or tokens.access_token
        reply = await self.call("POST", url, headers=bearer(token))
        if reply.status == 200:
            return as_revoke(valid(reply))
        if result := _common(reply):
            return as_revoke(result)
        code = _code(reply)
        if reply.status == 401 or code in _DEAD_REFRESH:
            return as_revoke(dead("token_revoked", reply, code))
        return as_revoke(unknown(reply, code))


def _common(reply: Reply) -> CheckResult | None:
    if result := transient(reply):
        return result
    code = _code(reply)
    if code == "use_dpop_nonce":
        return later("dpop_nonce", reply, code, retry_after=0)
    if code in _ACCOUNT_STATES:
        return unknown(reply, code, "account_deactivated")
    return None


def _code(reply: Reply) -> str | None:
    code = dig(reply.body, "error")
    return code if isinstance(code, str) else None
