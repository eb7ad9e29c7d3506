"""Identifiers: random ids of every kind, the id syntax, the platform list."""

from __future__ import annotations

import os
import re
import secrets
import string
import threading
from typing import Literal, get_args

_ALPHABET = string.ascii_letters + string.digits
# Ids we ever hand out are short and plain; anything else cannot exist, so it is a 404
# without touching the database.
ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
Platform = Literal[
    "twitter",
    "bluesky",
    "mastodon",
    "linkedin",
    "threads",
    "instagram",
    "facebook",
    "tiktok",
    "youtube",
]
# The one list of the nine platforms: the schema shows the Literal, code iterates this.
PLATFORMS: tuple[str, ...] = get_args(Platform)


# Random bytes below 248 (4 * 62) map evenly onto the alphabet and the rest are dropped, so
# every character is uniform. One C call instead of a secrets.choice per character: request
# ids are made on every request.
_EVEN = 256 - 256 % len(_ALPHABET)
_UNIFORM = bytes(_ALPHABET.encode()[b % len(_ALPHABET)] for b in range(_EVEN)).ljust(256, b"?")
_BIASED = bytes(range(_EVEN, 256))


class _RandomBytes:
    """os.urandom read 4 KB at a time: a system call per request id showed up in the API's
    profile (BENCHMARKS.md). Each byte is handed out once; a forked child starts with an
    empty buffer, so processes never share bytes."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.buffer = b""
        self.offset = 0

    def take(self, n: int) -> bytes:
        with self.lock:
            if self.offset + n > len(self.buffer):
                self.buffer, self.offset = secrets.token_bytes(max(self.size, n)), 0
            out = self.buffer[self.offset : self.offset + n]
            self.offset += n
            return out

    def forget(self) -> None:
        self.lock = threading.Lock()
        self.buffer, self.offset = b"", 0


_random = _RandomBytes()
os.register_at_fork(after_in_child=_random.forget)


def random_string(length: int) -> str:
    out = b""
    while len(out) < length:
        out += _random.take(length + 8).translate(_UNIFORM, _BIASED)
    return out[:length].decode()


def new_account_id() -> str:
    return "acc_" + random_string(16)


def new_revocation_id() -> str:
    return "rev_" + random_string(16)


def is_plausible_id(value: str) -> bool:
    return ID_RE.fullmatch(value) is not None
