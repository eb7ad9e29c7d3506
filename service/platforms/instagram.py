"""Instagram API with Instagram Login (``graph.instagram.com``): the Graph envelope of
``meta.py``. Tokens last 60 days and are refreshed with ``ig_refresh_token``.

| call | answer | outcome | reason |
|---|---|---|---|
| verify `GET /v21.0/me?fields=user_id,username` | 200 | valid | |
| refresh `GET /refresh_access_token?grant_type=ig_refresh_token` | 200 | valid + new 60-day token | |
| either | Graph error | see `meta.py` (code 190 dead; 4/17/32/341 throttled; "An unknown error occurred", code 1: transient) | |
| revoke | none documented for Instagram Login (UNCONFIRMED) | unsupported | |

Accounts connected through Facebook Login for Business hold Page tokens: they follow
Facebook (debug_token, ``DELETE /{user-id}/permissions``), not this adapter.
"""  # noqa: E501

from __future__ import annotations

from service.platforms.meta import GraphMeAdapter

BASE_URL = "https://graph.instagram.com"


class InstagramAdapter(GraphMeAdapter):
    name = "instagram"
    version = "v21.0"
    me_fields = "user_id,username"
    refresh_grant = "ig_refresh_token"
