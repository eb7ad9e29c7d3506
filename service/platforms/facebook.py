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
"""  # noqa: E501

from __future__ import annotations

import time
from urllib.parse import quote

from service.platforms.base import AccountRef, CheckResult, RevokeResult, TokenOutcome, TokenSet
from service.platforms.http import HTTPAdapter, as_revoke, dead, dig, unknown, valid
from service.platforms.meta import classify_graph_error, dead_reason

BASE_URL = "https://graph.facebook.com"
VERSION = "v21.0"


class FacebookAdapter(HTTPAdapter):
    name = "facebook"
    supports_revoke = True

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
