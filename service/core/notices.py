"""Platform push notices as the service understands them: what a verified notice names and
what it asks for. Verification is the HTTP face's (service/api/push/); the inbox is
repository/notices.py; applying a notice is the worker's (worker/notices.py)."""

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
