"""X webhooks (X Activity API): the CRC challenge and `oauth.revoke` events.

CRC: `GET ?crc_token=T` -> {"response_token": "sha256=" + base64(HMAC-SHA256(consumer
secret, T))}. Each POST carries `x-twitter-webhooks-signature: sha256=` + base64 of the
HMAC-SHA256 of the raw body under the same secret. Payload:
{"data": {"event_uuid", "event_type": "oauth.revoke", "payload": {"user_id", "app_id",
"date_time"}}}.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson

from service.api.errors import BadRequest, InvalidSignature
from service.api.push import plain_id
from service.core.notices import Action, Notice, Subject, digest

HEADER = "x-twitter-webhooks-signature"
REVOKE = "oauth.revoke"


def sign(secret: str, message: bytes) -> str:
    mac = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(mac).decode()


def crc_response(secret: str, crc_token: str) -> dict[str, str]:
    return {"response_token": sign(secret, crc_token.encode())}


def verify(header: str | None, body: bytes, secret: str) -> None:
    if not header:
        raise InvalidSignature(f"{HEADER} header is missing")
    if not hmac.compare_digest(sign(secret, body).encode(), header.strip().encode()):
        raise InvalidSignature(f"{HEADER} does not match the body")


def notices(body: bytes) -> list[Notice]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not JSON") from None
    if not isinstance(data, dict) or "data" not in data:
        raise BadRequest('body must be a JSON object with "data"')
    events = data["data"] if isinstance(data["data"], list) else [data["data"]]
    out: list[Notice] = []
    for event in events:
        if not isinstance(event, dict):
            raise BadRequest("each event must be a JSON object")
        if event.get("event_type") != REVOKE:
            continue
        payload = event.get("payload")
        if not isinstance(payload, dict):
            raise BadRequest("oauth.revoke without a payload")
        user = plain_id(payload.get("user_id"), "payload.user_id")
        uuid = event.get("event_uuid")
        key = plain_id(uuid, "event_uuid") if uuid is not None else digest(orjson.dumps(event))
        detail: dict[str, Any] = {
            k: payload[k] for k in ("app_id", "date_time") if isinstance(payload.get(k), str)
        }
        out.append(
            Notice(
                id=f"twitter:{key}",
                platform="twitter",
                event=REVOKE,
                action=Action.revoke,
                subject_type=Subject.user,
                subject=user,
                reason="deauthorized_at_platform",
                detail=detail,
            )
        )
    return out
