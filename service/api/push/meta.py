"""Meta (Facebook, Instagram, Threads): the deauthorize and data deletion callbacks.

Both POST a form field `signed_request` = base64url(HMAC-SHA256(app secret, payload)) "."
payload, where payload is base64url(JSON {"user_id", "algorithm": "HMAC-SHA256",
"issued_at", ...}). The HMAC is over the still-encoded payload (Meta's parse_signed_request).
The signature is checked before the JSON is read; `algorithm` must say HMAC-SHA256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import orjson

from service.api.errors import BadRequest, InvalidSignature
from service.api.push import plain_id
from service.core.notices import Action, Notice, Subject, digest

PLATFORMS = ("facebook", "instagram", "threads")
DEAUTHORIZE = "deauthorize"
DATA_DELETION = "data_deletion"
MAX_SIGNED_REQUEST = 8192


def b64url_decode(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64url")
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True)


def parse_signed_request(signed_request: str, app_secret: str) -> dict[str, Any]:
    """The verified payload; 401 if the signature is wrong, 400 if it is malformed."""
    if not signed_request or len(signed_request) > MAX_SIGNED_REQUEST:
        raise BadRequest("signed_request is missing or too long")
    encoded_sig, sep, payload = signed_request.partition(".")
    if not sep or not encoded_sig or not payload:
        raise BadRequest("signed_request is not <signature>.<payload>")
    try:
        sig = b64url_decode(encoded_sig)
    except (binascii.Error, ValueError):
        raise BadRequest("signed_request signature is not base64url") from None
    expected = hmac.new(app_secret.encode(), payload.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(sig, expected):
        raise InvalidSignature("signed_request signature does not match")
    try:
        data = orjson.loads(b64url_decode(payload))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise BadRequest("signed_request payload is not base64url JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("signed_request payload is not a JSON object")
    if str(data.get("algorithm", "")).upper() != "HMAC-SHA256":
        raise BadRequest("signed_request algorithm must be HMAC-SHA256")
    return data


def notice(platform: str, kind: str, signed_request: str, app_secret: str) -> Notice:
    data = parse_signed_request(signed_request, app_secret)
    user_id = plain_id(data.get("user_id"), "signed_request user_id")
    payload = signed_request.partition(".")[2]
    detail: dict[str, Any] = {}
    if isinstance(data.get("issued_at"), int):
        detail["issued_at"] = data["issued_at"]
    if kind == DATA_DELETION:
        action, reason = Action.delete_data, "platform_data_deletion"
    else:
        action, reason = Action.revoke, "deauthorized_at_platform"
    return Notice(
        id=f"{platform}:{kind}:{digest(payload)}",
        platform=platform,
        event=kind,
        action=action,
        subject_type=Subject.user,
        subject=user_id,
        reason=reason,
        detail=detail,
    )
