"""Customer API keys: their form, their hash, the prefix shown to people."""

from __future__ import annotations

import hashlib
import re

from service.core.ids import random_string

KEY_PREFIX = "oct_live_"
KEY_DISPLAY_CHARS = len(KEY_PREFIX) + 6
_KEY_RE = re.compile(r"oct_live_[A-Za-z0-9]{16,128}")
# Service keys (the internal listener's) look different on purpose: neither kind of key
# parses as the other, so a key presented to the wrong listener is refused before any lookup.
SERVICE_KEY_PREFIX = "oct_svc_"
SERVICE_KEY_DISPLAY_CHARS = len(SERVICE_KEY_PREFIX) + 6
_SERVICE_KEY_RE = re.compile(r"oct_svc_[A-Za-z0-9]{16,128}")


def new_api_key() -> str:
    return KEY_PREFIX + random_string(32)


def new_key_id() -> str:
    return "key_" + random_string(12)


def is_well_formed_key(key: str) -> bool:
    return _KEY_RE.fullmatch(key) is not None


def hash_api_key(key: str) -> bytes:
    # Keys carry 190 bits of randomness, so a fast hash is safe: there is nothing to
    # brute-force that is cheaper than guessing the key itself.
    return hashlib.sha256(key.encode()).digest()


def key_display_prefix(key: str) -> str:
    return key[:KEY_DISPLAY_CHARS]


def new_service_key() -> str:
    return SERVICE_KEY_PREFIX + random_string(32)


def new_service_key_id() -> str:
    return "svk_" + random_string(12)


def is_well_formed_service_key(key: str) -> bool:
    return _SERVICE_KEY_RE.fullmatch(key) is not None


def service_key_display_prefix(key: str) -> str:
    return key[:SERVICE_KEY_DISPLAY_CHARS]
