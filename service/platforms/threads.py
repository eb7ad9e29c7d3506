"""Threads (``graph.threads.net``): the Graph envelope of ``meta.py``; Threads-specific
subcodes and throttling codes are UNCONFIRMED, so only code 190 / "Error validating access
token" is dead. Tokens last 60 days and are refreshed with ``th_refresh_token``.

| call | answer | outcome | reason |
|---|---|---|---|
| verify `GET /v1.0/me?fields=id,username` | 200 | valid | |
| refresh `GET /refresh_access_token?grant_type=th_refresh_token` | 200 | valid + new 60-day token | |
| either | Graph error | see `meta.py` | |
| revoke | none found (UNCONFIRMED) | unsupported | |
"""  # noqa: E501

from __future__ import annotations

from service.platforms.meta import GraphMeAdapter

BASE_URL = "https://graph.threads.net"


class ThreadsAdapter(GraphMeAdapter):
    name = "threads"
    version = "v1.0"
    me_fields = "id,username"
    refresh_grant = "th_refresh_token"
