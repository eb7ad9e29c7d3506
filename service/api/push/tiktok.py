"""TikTok webhooks: `TikTok-Signature: t=<unix s>,s=<hex HMAC-SHA256(client secret, t + "." +
raw body)>`; the body is JSON {client_key, event, create_time, user_openid, content} where
`content` is itself a JSON string. Only `authorization.removed` concerns us; TikTok has
already revoked the user's tokens when it arrives.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from service.api.errors import BadRequest, InvalidSignature
from service.api.push import plain_id
from service.core.notices import Action, Notice, Subject, digest

REMOVED = "authorization.removed"
HEADER = "TikTok-Signature"

# content.reason -> (action, reason): 0 unknown, 1 user disconnected in the TikTok app,
# 2 account deleted, 3 age changed, 4 account banned, 5 developer revoked.
REASONS: dict[int, tuple[Action, str]] = {
    0: (Action.revoke, "deauthorized_at_platform"),
    1: (Action.revoke, "deauthorized_at_platform"),
    2: (Action.deactivate, "platform_account_deleted"),
    3: (Action.revoke, "platform_age_changed"),
    4: (Action.deactivate, "platform_account_banned"),
    5: (Action.revoke, "revoked_by_developer"),
}


def verify(header: str | None, body: bytes, secret: str, *, now: float, tolerance: float) -> None:
    if not header:
        raise InvalidSignature(f"{HEADER} header is missing")
    fields: dict[str, str] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, value)
    t, s = fields.get("t", ""), fields.get("s", "")
    if not (t.isascii() and t.isdigit() and len(t) <= 12) or not s:
        raise InvalidSignature(f"{HEADER} must be t=<unix seconds>,s=<hex signature>")
    expected = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), s.lower().encode()):
        raise InvalidSignature(f"{HEADER} does not match the body")
    if abs(now - int(t)) > tolerance:
        raise InvalidSignature(f"{HEADER} timestamp is more than {tolerance:.0f} s from now")


def notices(body: bytes) -> list[Notice]:
    """What a verified body asks for: nothing for events other than authorization.removed."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        raise BadRequest("body must be a JSON object with an event")
    if data["event"] != REMOVED:
        return []
    user = plain_id(data.get("user_openid"), "user_openid")
    code = _reason_code(data.get("content"))
    action, reason = REASONS.get(code, REASONS[0])
    detail: dict[str, Any] = {"tiktok_reason": code}
    if isinstance(data.get("create_time"), int):
        detail["create_time"] = data["create_time"]
    return [
        Notice(
            id=f"tiktok:{digest(body)}",
            platform="tiktok",
            event=REMOVED,
            action=action,
            subject_type=Subject.user,
            subject=user,
            reason=reason,
            detail=detail,
        )
    ]


def _reason_code(content: Any) -> int:
    # `content` is a JSON string ("{\"reason\": 1 }"); a missing or odd one is "unknown"
    if isinstance(content, str):
        try:
            content = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise BadRequest("content is not a JSON string") from None
    if isinstance(content, dict):
        reason = content.get("reason")
        if isinstance(reason, int) and not isinstance(reason, bool):
            return reason
    return 0
