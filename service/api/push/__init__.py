"""Each platform's signed push notice verified and turned into `Notice`s.

Verification is pure (no I/O) except the RISC key set; recording and applying a notice are
elsewhere (service/api/push_views.py writes the inbox, worker/notices.py applies it).
"""

from __future__ import annotations

from typing import Any

from service.api.errors import BadRequest


def plain_id(value: Any, what: str) -> str:
    """A platform's user id or event id: a non-empty string (or integer) of sane length."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest(f"{what} is missing or not a string")
    text = str(value)
    if not text or len(text) > 256 or any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise BadRequest(f"{what} is not a plausible identifier")
    return text
