"""Opaque pagination cursors: the sort key of the last item, signed against tampering.

The signature is not a secret-keeping device (a cursor only ever positions a listing inside
the caller's own workspace); it makes a hand-edited or garbage cursor a clear 400 instead of
a silently wrong page. Since the signing key is no secret, a cursor with a valid signature
can still carry anything: every part is validated as if it came straight from the client.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import UTC, datetime

import orjson

from service.api.errors import BadRequest
from service.core.ids import ID_RE

_KEY = b"octopost-cursor-v1"
# Event ids (and webhook attempt ids, "wha") are a PostgreSQL bigint.
_MAX_EVENT_ID = 2**63 - 1


def _sign(payload: bytes) -> bytes:
    return hmac.new(_KEY, payload, hashlib.sha256).digest()[:12]


def encode(kind: str, *parts: str) -> str:
    payload = orjson.dumps([kind, *parts])
    return base64.urlsafe_b64encode(_sign(payload) + payload).decode().rstrip("=")


def _account_parts(parts: list[str]) -> bool:
    # An id we never issue (a NUL byte, say) would reach PostgreSQL as a 500.
    return ID_RE.fullmatch(parts[1]) is not None


def _event_parts(parts: list[str]) -> bool:
    # str.isdigit() accepts "²", which int() refuses; and event ids are a bigint.
    value = parts[0]
    return value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= _MAX_EVENT_ID


# What the parts of each kind may hold, checked on every decode.
_VALID_PARTS = {"acc": _account_parts, "evt": _event_parts, "wha": _event_parts}


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
    parts: list[str] = data[1:]
    valid = _VALID_PARTS.get(kind)
    if valid is not None and not valid(parts):
        raise BadRequest("cursor is not valid")
    return parts


def encode_account(connected_at: datetime, account_id: str) -> str:
    return encode("acc", connected_at.astimezone(UTC).isoformat(), account_id)


def decode_account(cursor: str) -> tuple[datetime, str]:
    at, account_id = decode("acc", cursor, 2)
    try:
        connected_at = datetime.fromisoformat(at)
    except ValueError:
        raise BadRequest("cursor is not valid") from None
    if connected_at.tzinfo is None:  # we only ever write UTC offsets
        raise BadRequest("cursor is not valid")
    return connected_at, account_id
