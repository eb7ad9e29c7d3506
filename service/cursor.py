"""Opaque pagination cursors: the sort key of the last item, signed against tampering.

The signature is not a secret-keeping device (a cursor only ever positions a listing inside
the caller's own workspace); it makes a hand-edited or garbage cursor a clear 400 instead of
a silently wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import UTC, datetime

import orjson

from service.errors import BadRequest

_KEY = b"octopost-cursor-v1"


def _sign(payload: bytes) -> bytes:
    return hmac.new(_KEY, payload, hashlib.sha256).digest()[:12]


def encode(kind: str, *parts: str) -> str:
    payload = orjson.dumps([kind, *parts])
    return base64.urlsafe_b64encode(_sign(payload) + payload).decode().rstrip("=")


def decode(kind: str, cursor: str, arity: int) -> list[str]:
    if len(cursor) > 512:
        raise BadRequest("cursor is not valid")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        sig, payload = raw[:12], raw[12:]
        if not hmac.compare_digest(sig, _sign(payload)):
            raise ValueError("bad signature")
        data = orjson.loads(payload)
    except (ValueError, binascii.Error, orjson.JSONDecodeError, UnicodeError):
        raise BadRequest("cursor is not valid") from None
    if (
        not isinstance(data, list)
        or len(data) != arity + 1
        or data[0] != kind
        or not all(isinstance(p, str) for p in data)
    ):
        raise BadRequest("cursor is not valid")
    return data[1:]


def encode_account(connected_at: datetime, account_id: str) -> str:
    return encode("acc", connected_at.astimezone(UTC).isoformat(), account_id)


def decode_account(cursor: str) -> tuple[datetime, str]:
    at, account_id = decode("acc", cursor, 2)
    try:
        return datetime.fromisoformat(at), account_id
    except ValueError:
        raise BadRequest("cursor is not valid") from None
