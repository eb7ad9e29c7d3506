"""Facebook (Pages, Graph API). No refresh grant: Page tokens from a long-lived user token
do not expire; they die on password change, lost page role or app removal.

| call | answer | outcome | reason |
|---|---|---|---|
| verify `GET /v21.0/debug_token?input_token=…` (app token `id|secret`) | 200 `data.is_valid: true` | valid | |
| | 200 `data.is_valid: false` | dead | `data.error.subcode` (shape UNCONFIRMED) as in `meta.py`, else token_expired past `expires_at`, else token_revoked |
| | Graph error | as `meta.py`, except that code 190 here is about the *app* token: unknown, app_credentials_rejected | |
| verify without app credentials: `GET /v21.0/me?fields=id` | 200 | valid | |
| | Graph error | see `meta.py` | |
| revoke `DELETE /v21.0/{user-id}/permissions` | 200 `{"success": true}` | revoked | |
| | Graph dead (190) | already_invalid | |
| any | 429, 5xx, timeout, refused; throttle codes with usage headers | transient | |

Connect (Facebook Login, manual flow; no PKCE: its OIDC + PKCE flow is "still in
testing"): dialog `https://www.facebook.com/v21.0/dialog/oauth` -> `GET /oauth/access_token`
(client id, redirect_uri, secret and code in the query) -> `grant_type=fb_exchange_token`
(the long-lived user token, so the Page tokens derived from it do not expire) -> `GET /me`
(the Facebook user: the authorizing user of every Page) -> `GET /me/accounts` (each Page
with its own token). Each Page is one account; a Page listed without an `access_token`
(not ticked at the Page selection) is skipped, never stored with the user token.
"""  # noqa: E501

from __future__ import annotations

import time
from typing import ClassVar
from urllib.parse import quote

from service.platforms.base import AccountRef, CheckResult, RevokeResult, TokenOutcome, TokenSet
from service.platforms.http import HTTPAdapter, as_revoke, dead, dig, unknown, valid
from service.platforms.meta import classify_graph_error, dead_reason
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

BASE_URL = "https://graph.facebook.com"
VERSION = "v21.0"


SCOPES = ("pages_show_list", "pages_read_engagement", "pages_manage_posts", "public_profile")
PAGE_FIELDS = "id,name,username,access_token,picture.type(large)"


class FacebookAdapter(HTTPAdapter, OAuthConnect):
    name = "facebook"
    supports_revoke = True
    connect_endpoints: ClassVar[dict[str, Endpoint]] = {
        "authorize": ("https://www.facebook.com", f"/{VERSION}/dialog/oauth")
    }

    def authorize_url(self, request: AuthorizeRequest) -> str:
        return with_query(
            self.endpoint("authorize"),
            {
                "client_id": self.credentials.get("app_id", ""),
                "redirect_uri": request.redirect_uri,
                "state": request.state,
                "response_type": "code",
                "scope": ",".join(SCOPES),
            },
        )

    async def exchange(self, request: CodeExchange) -> list[Connected]:
        app_id = self.credentials.get("app_id", "")
        secret = self.credentials.get("app_secret", "")
        token_url = f"{self.base_url}/{VERSION}/oauth/access_token"
        reply = await self.call(
            "GET",
            token_url,
            params={
                "client_id": app_id,
                "redirect_uri": request.redirect_uri,
                "client_secret": secret,
                "code": request.code,
            },
        )
        short = required_text(require_ok(reply, "token"), "token", "access_token")
        reply = await self.call(
            "GET",
            token_url,
            params={
                "grant_type": "fb_exchange_token",
                "client_id": app_id,
                "client_secret": secret,
                "fb_exchange_token": short,
            },
        )
        user_token = token_set(require_ok(reply, "long_lived"), "long_lived").access_token
        reply = await self.call(
            "GET",
            f"{self.base_url}/{VERSION}/me",
            params={"fields": "id,name", "access_token": user_token},
        )
        user_id = required_text(require_ok(reply, "me"), "me", "id")
        reply = await self.call(
            "GET",
            f"{self.base_url}/{VERSION}/me/accounts",
            params={"fields": PAGE_FIELDS, "access_token": user_token},
        )
        pages = dig(require_ok(reply, "pages"), "data")
        connected = []
        for page in pages if isinstance(pages, list) else []:
            page_id, page_token = text(page, "id"), text(page, "access_token")
            if page_id is None or page_token is None:
                continue
            if request.page_id is not None and page_id != request.page_id:
                continue
            name = text(page, "name") or page_id
            profile = Profile(
                platform_user_id=page_id,
                username=text(page, "username") or page_id,
                display_name=name,
                avatar_url=text(page, "picture", "data", "url"),
                authorizing_user_id=user_id,
            )
            connected.append(Connected(profile, TokenSet(page_token, scopes=SCOPES)))
        return connected

    async def verify(self, account: AccountRef, tokens: TokenSet) -> CheckResult:
        app_id, secret = self.credentials.get("app_id"), self.credentials.get("app_secret")
        if not (app_id and secret):
            reply = await self.call(
                "GET",
                f"{self.base_url}/{VERSION}/me",
                params={"fields": "id", "access_token": tokens.access_token},
            )
            return valid(reply) if reply.status == 200 else classify_graph_error(reply)

        reply = await self.call(
            "GET",
            f"{self.base_url}/{VERSION}/debug_token",
            params={"input_token": tokens.access_token, "access_token": f"{app_id}|{secret}"},
        )
        data = dig(reply.body, "data")
        if reply.status != 200 or not isinstance(data, dict):
            result = classify_graph_error(reply)
            if result.outcome is TokenOutcome.dead:  # our app token was refused, not theirs
                return unknown(reply, result.error_code, "app_credentials_rejected")
            return result
        if data.get("is_valid") is True:
            return valid(reply)
        subcode = dig(data, "error", "subcode")
        if isinstance(subcode, int):
            reason = dead_reason(subcode)
        elif isinstance(exp := data.get("expires_at"), int) and 0 < exp <= time.time():
            reason = "token_expired"
        else:
            reason = "token_revoked"
        code = dig(data, "error", "code")
        label = f"{code}/{subcode}" if code and subcode else (str(code) if code else None)
        return dead(reason, reply, label)

    async def revoke(self, account: AccountRef, tokens: TokenSet) -> RevokeResult:
        reply = await self.call(
            "DELETE",
            f"{self.base_url}/{VERSION}/{quote(account.platform_user_id, safe='')}/permissions",
            params={"access_token": tokens.access_token},
        )
        if reply.status == 200 and dig(reply.body, "error") is None:
            return as_revoke(valid(reply))
        return as_revoke(classify_graph_error(reply))
