"""LinkedIn. Verify *is* token introspection, so a token is only ever marked dead on
introspection's word: API calls answer ``REVOKED_ACCESS_TOKEN`` spuriously right after
authorisation (the trap), introspection does not.

| call | answer | outcome | reason |
|---|---|---|---|
| verify `POST /oauth/v2/introspectToken` | 200 `active: true` | valid | |
| | 200 `active: false`, `status: expired` | dead, try_refresh | token_expired |
| | 200 `active: false`, `status: revoked` or other | dead | token_revoked |
| | 400 (bad client id or token), 401 (bad client secret) | unknown | unexpected_response |
| refresh `POST /oauth/v2/accessToken` (MDP partners only) | 200 | valid + new pair | |
| | other 4xx (400 `invalid_request`, UNCONFIRMED) | unknown | refresh_rejected (dead after a dead verify) |
| revoke `POST /oauth/v2/revoke` (UNCONFIRMED endpoint) | 200 | revoked | |
| | other 4xx | failed | |
| any | 429 (no headers; daily limits reset at midnight UTC) | transient | rate_limited, retry at midnight UTC |
| any | 5xx, timeout, refused | transient | server_error, timeout, connection_error |

Connect (3-legged OAuth + OpenID Connect, no PKCE, as Nango runs it): authorize
`https://www.linkedin.com/oauth/v2/authorization` (`openid profile email w_member_social`);
code -> `POST /oauth/v2/accessToken` with `client_id` + `client_secret` in the form (a
refresh token comes only for MDP partners); profile `GET https://api.linkedin.com/v2/userinfo`
-> `sub` (stored as `urn:li:person:{sub}`, the author URN), `name`, `picture`, `email`.
Userinfo has no handle (``vanityName`` needs the restricted `r_basicprofile`): the username
is the e-mail, else the `sub`. A declined consent comes back as `user_cancelled_login` /
`user_cancelled_authorize`.
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from service.platforms.base import AccountRef, CheckResult, RevokeResult, TokenSet
from service.platforms.http import (
    HTTPAdapter,
    Reply,
    as_revoke,
    bearer,
    dead,
    dig,
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
    Endpoint,
    OAuthConnect,
    Profile,
    require_ok,
    required_text,
    text,
    token_set,
    with_query,
)

BASE_URL = "https://www.linkedin.com"


SCOPES = ("openid", "profile", "email", "w_member_social")
_DECLINED = {"access_denied", "user_cancelled_login", "user_cancelled_authorize"}


class LinkedInAdapter(HTTPAdapter, OAuthConnect):
    name = "linkedin"
    supports_refresh = True
    supports_revoke = True
    connect_endpoints: ClassVar[dict[str, Endpoint]] = {
        "authorize": ("https://www.linkedin.com", "/oauth/v2/authorization"),
        "userinfo": ("https://api.linkedin.com", "/v2/userinfo"),
    }

    def authorize_url(self, request: AuthorizeRequest) -> str:
        return with_query(
            self.endpoint("authorize"),
            {
                "response_type": "code",
                "client_id": self.credentials.get("client_id", ""),
                "redirect_uri": request.redirect_uri,
                "state": request.state,
                "scope": " ".join(SCOPES),
            },
        )

    def denied(self, query: Mapping[str, str]) -> bool:
        return query.get("error") in _DECLINED

    async def exchange(self, request: CodeExchange) -> list[Connected]:
        form = self._form() | {
            "grant_type": "authorization_code",
            "code": request.code,
            "redirect_uri": request.redirect_uri,
        }
        reply = await self.call("POST", f"{self.base_url}/oauth/v2/accessToken", data=form)
        tokens = token_set(require_ok(reply, "token"), "token")
        reply = await self.call(
            "GET", self.endpoint("userinfo"), headers=bearer(tokens.access_token)
        )
        body = require_ok(reply, "userinfo")
        sub = required_text(body, "userinfo", "sub")
        profile = Profile(
            platform_user_id=f"urn:li:person:{sub}",
            username=text(body, "email") or sub,
            display_name=text(body, "name") or sub,
            avatar_url=text(body, "picture"),
        )
        return [Connected(profile, tokens)]

    async def verify(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        reply = await self.call(
            "POST",
            f"{self.base_url}/oauth/v2/introspectToken",
            data=self._form(tokens.access_token),
        )
        if result := _transient(reply):
            return result
        if reply.status != 200:
            return unknown(reply, _code(reply))
        if dig(reply.body, "active") is True:
            return valid(reply)
        status = dig(reply.body, "status")
        if status == "expired":
            return dead("token_expired", reply, status, try_refresh=True)
        return dead("token_revoked", reply, status if isinstance(status, str) else None)

    async def refresh(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        form = self._form()
        form |= {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token or ""}
        reply = await self.call("POST", f"{self.base_url}/oauth/v2/accessToken", data=form)
        if reply.status == 200 and isinstance(access := dig(reply.body, "access_token"), str):
            return valid(
                reply,
                TokenSet(
                    access_token=access,
                    refresh_token=dig(reply.body, "refresh_token") or tokens.refresh_token,
                    access_expires_at=expires_in(dig(reply.body, "expires_in")),
                    # refreshing does not extend the refresh token's life
                    refresh_expires_at=expires_in(dig(reply.body, "refresh_token_expires_in"))
                    or tokens.refresh_expires_at,
                    scopes=tokens.scopes,
                ),
            )
        return _transient(reply) or unknown(reply, _code(reply), "refresh_rejected")

    async def revoke(self, account: AccountRef, tokens: TokenSet) -> RevokeResult:
        reply = await self.call(
            "POST", f"{self.base_url}/oauth/v2/revoke", data=self._form(tokens.access_token)
        )
        if reply.status == 200:
            return as_revoke(valid(reply))
        return as_revoke(_transient(reply) or unknown(reply, _code(reply)))

    def _form(self, token: str | None = None) -> dict[str, str]:
        form = {
            "client_id": self.credentials.get("client_id", ""),
            "client_secret": self.credentials.get("client_secret", ""),
        }
        if token is not None:
            form["token"] = token
        return form


def _transient(reply: Reply) -> CheckResult | None:
    if reply.status == 429:  # no headers: the daily budget comes back at midnight UTC
        return later("rate_limited", reply, retry_after=seconds_until_midnight("UTC"))
    return transient(reply)


def _code(reply: Reply) -> str | None:
    for key in ("error", "code", "serviceErrorCode"):
        if (value := dig(reply.body, key)) is not None:
            return str(value)
    return None
