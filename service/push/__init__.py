"""Platform push notices: each platform's signed notice verified and turned into `Notice`s.

Verification is pure (no I/O) except the RISC key set; recording and applying a notice are
elsewhere (service/push_views.py writes the inbox, worker/notices.py applies it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    # is_active false, status revoked, tokens erased
    revoke = "revoke"
    # the same, status deactivated: the platform account is disabled or deleted
    deactivate = "deactivate"
    # disconnect (as a DELETE, without a platform call), erase tokens and profile fields
    delete_data = "delete_data"
    # nothing flips: the account is checked now
    check = "check"


class Subject(StrEnum):
    # the platform user id: the account's own (platform_user_id) or the user who granted it
    # (authorizing_user_id: the Facebook user behind a Page, the Google sub behind a channel)
    user = "user"
    # base64(SHA-512(SHA-512(refresh token)))
    refresh_digest = "refresh_digest"
    # hex SHA-256 of the refresh token's first 16 characters
    refresh_prefix_digest = "refresh_prefix_digest"


@dataclass(frozen=True, slots=True)
class Notice:
    id: str  # derived from the notice itself: a redelivery has the same id
    platform: str  # the accounts' platform (youtube for Google RISC)
    event: str  # the platform's name for it
    action: Action
    subject_type: Subject
    subject: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


def digest(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()[:32]


def plain_id(value: Any, what: str) -> str:
    """A platform's user id or event id: a non-empty string (or integer) of sane length."""
    from service.errors import BadRequest

    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest(f"{what} is missing or not a string")
    text = str(value)
    if not text or len(text) > 256 or any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise BadRequest(f"{what} is not a plausible identifier")
    return text
