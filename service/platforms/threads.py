"""Threads (``graph.threads.net``): the Graph envelope of ``meta.py``; Threads-specific
subcodes and throttling codes are UNCONFIRMED, so only code 190 / "Error validating access
token" is dead. Tokens last 60 days and are refreshed with ``th_refresh_token``.

| call | answer | outcome | reason |
|---|---|---|---|
| verify `GET /v1.0/me?fields=id,username` | 200 | valid | |
| refresh `GET /refresh_access_token?grant_type=th_refresh_token` | 200 | valid + new 60-day token | |
| either | Graph error | see `meta.py` | |
| revoke | none found (UNCONFIRMED) | unsupported | |

Connect: authorize `https://threads.com/oauth/authorize` with the *Threads* app id
(`threads_basic`, `threads_content_publish`; no PKCE) -> `POST /oauth/access_token` (form,
secret in the body; 1 h token) -> `GET /access_token?grant_type=th_exchange_token` (60
days) -> `GET /v1.0/me?fields=id,username,name,threads_profile_picture_url`.
"""  # noqa: E501

from __future__ import annotations

from typing import Any, ClassVar

from service.platforms.meta import GraphMeAdapter
from service.platforms.oauth import Endpoint, Profile, required_text, text

BASE_URL = "https://graph.threads.net"


class ThreadsAdapter(GraphMeAdapter):
    name = "threads"
    version = "v1.0"
    me_fields = "id,username"
    refresh_grant = "th_refresh_token"
    exchange_grant = "th_exchange_token"
    scopes = ("threads_basic", "threads_content_publish")
    profile_fields = "id,username,name,threads_profile_picture_url"
    connect_endpoints: ClassVar[dict[str, Endpoint]] = {
        "authorize": ("https://threads.com", "/oauth/authorize"),
        "code": ("https://graph.threads.net", "/oauth/access_token"),
    }

    def profile(self, body: Any) -> Profile:
        username = required_text(body, "profile", "username")
        return Profile(
            platform_user_id=required_text(body, "profile", "id"),
            username=username,
            display_name=text(body, "name") or username,
            avatar_url=text(body, "threads_profile_picture_url"),
        )
