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

Connect (app password, ``connect_app_password``; the AT Protocol OAuth flow with PAR and
DPoP is not implemented): handle -> DID with `com.atproto.identity.resolveHandle` at the
entryway (not the DNS TXT / `/.well-known/atproto-did` lookups the spec prefers) -> the DID
document (`https://plc.directory/{did}`, or `https://{host}/.well-known/did.json` for
did:web) -> the PDS (`#atproto_pds`), whose host is checked like any other; the document's
`alsoKnownAs` must name the handle -> `com.atproto.server.createSession` at that PDS, whose
`did` must be the resolved one -> `app.bsky.actor.getProfile`. The DID is the account's id;
the app password is used once and never stored.
"""  # noqa: E501

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp

from service.platforms.base import AccountRef, CheckResult, RevokeResult, TokenSet
from service.platforms.hosts import HostRefused, check_public_host, normalise_host
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
from service.platforms.oauth import Connected, ConnectFailed, Profile, required_text, text

BASE_URL = "https://bsky.social"  # for accounts that carry no PDS URL
PLC_DIRECTORY = "https://plc.directory"

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
        plc_url: str = PLC_DIRECTORY,
        allow_private_hosts: bool = False,
    ) -> None:
        super().__init__(session, base_url, credentials, timeout=timeout)
        self.pin_base_url = pin_base_url  # the sandbox stands in for every PDS
        self.plc_url = plc_url.rstrip("/")
        self.allow_private_hosts = allow_private_hosts

    async def connect_app_password(self, handle: str, app_password: str) -> Connected:
        """``ConnectFailed`` with error ``invalid_credentials`` when the handle does not
        resolve or the PDS refuses the password; ``host_refused`` for a private PDS."""
        try:
            handle = normalise_host(handle.lstrip("@"))
        except HostRefused:
            raise ConnectFailed("handle", error="invalid_credentials") from None
        reply = await self.call(
            "GET",
            f"{self.base_url}/xrpc/com.atproto.identity.resolveHandle",
            params={"handle": handle},
        )
        if reply.status == 400:
            raise ConnectFailed("resolve_handle", code=_code(reply), error="invalid_credentials")
        did = required_text(require_body(reply, "resolve_handle"), "resolve_handle", "did")
        pds = await self._pds(did, handle)
        base = self.base_url if self.pin_base_url else pds
        reply = await self.call(
            "POST",
            f"{base}/xrpc/com.atproto.server.createSession",
            json={"identifier": handle, "password": app_password},
        )
        if reply.status in (400, 401):
            raise ConnectFailed("create_session", code=_code(reply), error="invalid_credentials")
        body = require_body(reply, "create_session")
        if text(body, "did") != did:
            raise ConnectFailed("create_session", code="did_mismatch", status=reply.status)
        access = required_text(body, "create_session", "accessJwt")
        refresh = required_text(body, "create_session", "refreshJwt")
        reply = await self.call(
            "GET",
            f"{base}/xrpc/app.bsky.actor.getProfile",
            params={"actor": did},
            headers=bearer(access),
        )
        view = reply.body if reply.status == 200 else {}
        current = text(body, "handle") or handle
        profile = Profile(
            platform_user_id=did,
            username=current,
            display_name=text(view, "displayName") or current,
            avatar_url=text(view, "avatar"),
            instance_url=pds,
        )
        tokens = TokenSet(
            access_token=access,
            refresh_token=refresh,
            access_expires_at=jwt_expiry(access),
            refresh_expires_at=jwt_expiry(refresh),
            scopes=("com.atproto.appPass",),
        )
        return Connected(profile, tokens)

    async def _pds(self, did: str, handle: str) -> str:
        """The PDS named by the DID document, checked in both directions and for host."""
        if did.startswith("did:plc:"):
            url = f"{self.plc_url}/{did}"
        elif did.startswith("did:web:"):
            host = await self._host(unquote(did[len("did:web:") :]))
            url = f"https://{host}/.well-known/did.json"
        else:
            raise ConnectFailed("did", code="unsupported_did_method")
        doc = require_body(await self.call("GET", url), "did_document")
        aliases = dig(doc, "alsoKnownAs")
        if not isinstance(aliases, list) or f"at://{handle}" not in aliases:
            raise ConnectFailed("did_document", code="handle_not_in_document")
        endpoint = None
        for service in dig(doc, "service") or []:
            if (
                isinstance(service, dict)
                and str(service.get("id", "")).endswith("#atproto_pds")
                and service.get("type") == "AtprotoPersonalDataServer"
            ):
                endpoint = text(service, "serviceEndpoint")
        if endpoint is None or not endpoint.startswith(("https://", "http://")):
            raise ConnectFailed("did_document", code="no_pds")
        host = urlsplit(endpoint).hostname or ""
        await self._host(host)
        return endpoint.rstrip("/")

    async def _host(self, host: str) -> str:
        try:
            return await check_public_host(host, allow_private=self.allow_private_hosts)
        except HostRefused as exc:
            raise ConnectFailed("pds_host", code=str(exc), error="host_refused") from None

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


def require_body(reply: Reply, step: str) -> Any:
    if reply.status != 200 or not isinstance(reply.body, dict):
        raise ConnectFailed(step, code=reply.failure or _code(reply), status=reply.status)
    return reply.body


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
