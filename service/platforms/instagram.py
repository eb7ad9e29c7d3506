"""Instagram API with Instagram Login (``graph.instagram.com``): the Graph envelope of
``meta.py``. Tokens last 60 days and are refreshed with ``ig_refresh_token``.

| call | answer | outcome | reason |
|---|---|---|---|
| verify `GET /v21.0/me?fields=user_id,username` | 200 | valid | |
| refresh `GET /refresh_access_token?grant_type=ig_refresh_token` | 200 | valid + new 60-day token | |
| either | Graph error | see `meta.py` (code 190 dead; 4/17/32/341 throttled; "An unknown error occurred", code 1: transient) | |
| revoke | none documented for Instagram Login (UNCONFIRMED) | unsupported | |

Connect (Instagram API with Instagram Login, no Facebook Page needed): authorize
`https://www.instagram.com/oauth/authorize` (`instagram_business_basic`,
`instagram_business_content_publish`; no PKCE) -> `POST https://api.instagram.com/oauth/access_token`
(form, secret in the body; read flat or wrapped in `data`) -> `GET /access_token?grant_type=ig_exchange_token`
(60 days) -> `GET /v21.0/me?fields=user_id,username,name,profile_picture_url`; `user_id`
is the account's id. Meta appends `#_` to the redirect: browsers drop fragments.

Accounts connected through Facebook Login for Business hold Page tokens: they follow
Facebook (debug_token, ``DELETE /{user-id}/permissions``), not this adapter.
"""  # noqa: E501

from __future__ import annotations

from typing import Any, ClassVar

from service.platforms.meta import GraphMeAdapter
from service.platforms.oauth import Endpoint, Profile, required_text, text

BASE_URL = "https://graph.instagram.com"


class InstagramAdapter(GraphMeAdapter):
    name = "instagram"
    version = "v21.0"
    me_fields = "user_id,username"
    refresh_grant = "ig_refresh_token"
    exchange_grant = "ig_exchange_token"
    scopes = ("instagram_business_basic", "instagram_business_content_publish")
    profile_fields = "user_id,username,name,profile_picture_url"
    connect_endpoints: ClassVar[dict[str, Endpoint]] = {
        "authorize": ("https://www.instagram.com", "/oauth/authorize"),
        "code": ("https://api.instagram.com", "/oauth/access_token"),
    }

    def profile(self, body: Any) -> Profile:
        username = required_text(body, "profile", "username")
        return Profile(
            platform_user_id=text(body, "user_id") or required_text(body, "profile", "id"),
            username=username,
            display_name=text(body, "name") or username,
            avatar_url=text(body, "profile_picture_url"),
        )
